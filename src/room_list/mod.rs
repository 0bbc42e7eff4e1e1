//! Room lists (spec `sliding-sync-tables.md` §6): the request, its filters,
//! the sort order, ranges and counts, and the entries of the answer.
//!
//! Owns: the JSON of `POST /v1/users/{user_id}/room_list` (request and
//! answer), its validation, the meaning of every filter and the range rules
//! of §6.9. May not touch: I/O, actors, SQL, locks — the read index
//! ([`crate::index`]) runs the fast path over its own layout, under its own
//! lock, with the helpers of this module. `request` is the request and its
//! validation, `answer` the answer and its range rules, `spaces` the
//! `spaces` filter's rule (MSC4186), `scan` the plain scan over rows that the
//! reads' fallback answers with and the index's tests hold the fast path to.

use serde_json::Value;

use crate::model::RoomId;

mod answer;
mod request;
pub(crate) mod scan;
mod spaces;

pub use answer::*;
pub use request::*;
pub(crate) use spaces::rooms_in_spaces;

/// The lowercase form `room_name_like` compares with.
#[derive(Debug, Clone)]
pub struct NameNeedle {
    lowercase: String,
    ascii: bool,
}

impl NameNeedle {
    pub fn new(text: &str) -> Self {
        let lowercase = text.to_lowercase();
        NameNeedle {
            ascii: lowercase.is_ascii(),
            lowercase,
        }
    }

    /// The needle, lowercase: a name matches when its Unicode lowercase
    /// form contains this.
    pub fn lowercase(&self) -> &str {
        &self.lowercase
    }

    /// Case-insensitive (Unicode lowercase) substring test; ASCII names are
    /// compared without allocating.
    pub fn matches(&self, name: &str) -> bool {
        let needle = self.lowercase.as_bytes();
        if self.ascii && name.is_ascii() {
            let Some((first, rest)) = needle.split_first() else {
                return true;
            };
            let Some(last_start) = name.len().checked_sub(needle.len()) else {
                return false;
            };
            let name = name.as_bytes();
            // Candidates start with the needle's first byte in either case.
            return name[..=last_start].iter().enumerate().any(|(i, byte)| {
                byte.to_ascii_lowercase() == *first
                    && name[i + 1..i + needle.len()].eq_ignore_ascii_case(rest)
            });
        }
        name.to_lowercase().contains(&self.lowercase)
    }
}

/// The DM rooms of an `m.direct` content (§6.5): every string element of
/// every array value that is a valid room ID.
pub fn direct_rooms(content: &Value) -> Vec<RoomId> {
    let Some(object) = content.as_object() else {
        return Vec::new();
    };
    object
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|s| RoomId::parse(s).ok())
        .collect()
}

/// The tag names of an `m.tag` content (§6.5): the keys of `content.tags`.
pub fn tag_names(content: &Value) -> Vec<String> {
    content
        .get("tags")
        .and_then(Value::as_object)
        .map(|tags| tags.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ranges_follow_section_6_9() {
        assert_eq!(range_bounds((0, 19), 5), 0..5);
        assert_eq!(range_bounds((3, 3), 5), 3..4);
        assert_eq!(range_bounds((5, 9), 5), 0..0);
        assert_eq!(range_bounds((4, 2), 5), 0..0);
        assert_eq!(range_bounds((0, u64::MAX), 2), 0..2);
        assert_eq!(needed_prefix(&[(0, 4), (10, 12), (9, 1)]), 13);
        assert_eq!(needed_prefix(&[]), 0);
        assert_eq!(needed_prefix(&[(3, 1)]), 0);
    }

    #[test]
    fn name_needle_is_case_insensitive_for_ascii_and_unicode() {
        let needle = NameNeedle::new("TeA");
        assert!(needle.matches("Afternoon tea"));
        assert!(needle.matches("TEAM"));
        assert!(!needle.matches("Te a"));
        assert!(NameNeedle::new("ÉCOLE").matches("une école"));
        assert!(NameNeedle::new("").matches("anything"));
        // The Kelvin sign lowercases to an ASCII 'k'.
        assert!(NameNeedle::new("k").matches("\u{212A}elvin"));
    }

    #[test]
    fn direct_rooms_take_strings_of_array_values_only() {
        let content = json!({
            "@a:hs": ["!one:hs", "!two:hs", 3, "not a room"],
            "@b:hs": "!three:hs",
            "@c:hs": ["!four:hs"]
        });
        let rooms: Vec<String> = direct_rooms(&content)
            .into_iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(rooms, vec!["!one:hs", "!two:hs", "!four:hs"]);
        assert!(direct_rooms(&json!(["!one:hs"])).is_empty());
    }

    #[test]
    fn tag_names_are_the_keys_of_content_tags() {
        let content = json!({"tags": {"m.favourite": {"order": 0.5}, "u.work": {}}});
        assert_eq!(tag_names(&content), vec!["m.favourite", "u.work"]);
        assert!(tag_names(&json!({"tags": []})).is_empty());
        assert!(tag_names(&json!({})).is_empty());
    }

    #[test]
    fn unknown_filter_fields_and_bad_shapes_do_not_parse() {
        let parse = |v: Value| serde_json::from_value::<RoomListRequest>(v);
        assert!(parse(json!({"lists": {"a": {"filters": {"is_dm": true}}}})).is_ok());
        let stable = parse(json!({"lists": {"a": {"filters": {"is_invited": true}}}})).unwrap();
        assert_eq!(stable.lists["a"].filters.is_invite, Some(true));
        assert!(parse(
            json!({"lists": {"a": {"filters": {"is_invite": true, "is_invited": true}}}})
        )
        .is_err());
        assert!(parse(json!({"lists": {"a": {"filters": {"is_tombstoned": true}}}})).is_err());
        assert!(parse(json!({"lists": {"a": {"filters": {"is_dm": "yes"}}}})).is_err());
        assert!(parse(json!({"lists": {"a": {"ranges": [[0, -1]]}}})).is_err());
        assert!(parse(json!({"lists": {"a": {"ranges": [[0, 1, 2]]}}})).is_err());
        assert!(parse(json!({"lists": {"a": {"timeline_limit": 1}}})).is_err());
        assert!(parse(json!({"lists": {}, "extra": 1})).is_err());
        let ok =
            parse(json!({"lists": {"a": {"filters": {"room_types": [null, "m.space"]}}}})).unwrap();
        assert_eq!(
            ok.lists["a"].filters.room_types,
            Some(vec![None, Some("m.space".to_owned())])
        );
    }

    #[test]
    fn validation_limits() {
        let mut request = RoomListRequest::default();
        assert_eq!(request.validate(), Err(RoomListError::ListCount));
        request.lists.insert("a".into(), ListRequest::default());
        assert_eq!(request.validate(), Ok(()));
        request.lists.insert(
            "b".into(),
            ListRequest {
                ranges: vec![(0, 1); MAX_RANGES + 1],
                ..ListRequest::default()
            },
        );
        assert_eq!(
            request.validate(),
            Err(RoomListError::RangeCount("b".into()))
        );
    }
}
