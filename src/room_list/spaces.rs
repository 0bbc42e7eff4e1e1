//! The `spaces` filter's rule (MSC4186): which rooms a list filtering on
//! spaces keeps. One pure function, used by the read index's fast path and
//! by the plain scan, so both apply the same rule.
//!
//! Owns: the rule. May not touch: where memberships and children are kept
//! (the callers pass them in as lookups).

use crate::model::{Membership, RoomId};

/// The rooms a list's `spaces` filter keeps, as MSC4186 says: the direct
/// children of every listed space *the user is joined to*, any of them
/// (OR across the spaces). A listed space the user is not joined to (left,
/// invited, knocking, banned, never a member) or that is unknown counts as
/// not listed; children that are spaces themselves are not looked into.
///
/// `membership_in(space)` is the user's current membership in the space
/// (`None`: none); `children_of(space)` its current children (the state
/// keys of its `m.space.child` events with a non-empty `via`). A child may
/// come more than once (from several spaces) unless `Rooms` is a set.
pub(crate) fn rooms_in_spaces<Child, Children, Rooms>(
    spaces: &[RoomId],
    membership_in: impl Fn(&RoomId) -> Option<Membership>,
    children_of: impl Fn(&RoomId) -> Children,
) -> Rooms
where
    Children: IntoIterator<Item = Child>,
    Rooms: FromIterator<Child>,
{
    spaces
        .iter()
        .filter(|space| membership_in(space) == Some(Membership::Join))
        .flat_map(children_of)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn room(name: &str) -> RoomId {
        RoomId::parse(&format!("!{name}:hs")).unwrap()
    }

    /// The rule over a user's memberships and the spaces' children.
    fn kept(
        spaces: &[&str],
        memberships: &[(&str, Membership)],
        children: &[(&str, &[&str])],
    ) -> BTreeSet<String> {
        let spaces: Vec<RoomId> = spaces.iter().map(|s| room(s)).collect();
        let memberships: BTreeMap<RoomId, Membership> =
            memberships.iter().map(|(r, m)| (room(r), *m)).collect();
        let children: BTreeMap<RoomId, Vec<RoomId>> = children
            .iter()
            .map(|(s, c)| (room(s), c.iter().map(|c| room(c)).collect()))
            .collect();
        let rooms: Vec<RoomId> = rooms_in_spaces(
            &spaces,
            |space| memberships.get(space).copied(),
            |space| children.get(space).cloned().unwrap_or_default(),
        );
        rooms
            .iter()
            .map(|child| child.as_str().trim_start_matches('!').replace(":hs", ""))
            .collect()
    }

    const CHILDREN: &[(&str, &[&str])] = &[
        ("space", &["a", "b", "sub"]),
        ("other", &["b", "c"]),
        ("sub", &["deep"]),
        ("left", &["d"]),
        ("invited", &["e"]),
    ];

    fn set(rooms: &[&str]) -> BTreeSet<String> {
        rooms.iter().map(|r| (*r).to_owned()).collect()
    }

    #[test]
    fn only_spaces_the_user_is_joined_to_count() {
        let memberships = [
            ("space", Membership::Join),
            ("other", Membership::Join),
            ("sub", Membership::Join),
            ("left", Membership::Leave),
            ("invited", Membership::Invite),
        ];
        // OR across the listed spaces; a child of two counts once.
        assert_eq!(
            kept(&["space", "other"], &memberships, CHILDREN),
            set(&["a", "b", "c", "sub"])
        );
        // No subspace navigation: `sub` is a child, its children are not.
        assert_eq!(
            kept(&["space"], &memberships, CHILDREN),
            set(&["a", "b", "sub"])
        );
        // A space left, one only invited to, one never a member of and an
        // unknown one keep nothing, and do not spoil the others.
        assert_eq!(kept(&["left"], &memberships, CHILDREN), set(&[]));
        assert_eq!(kept(&["invited"], &memberships, CHILDREN), set(&[]));
        assert_eq!(kept(&["nowhere"], &memberships, CHILDREN), set(&[]));
        assert_eq!(
            kept(
                &["left", "invited", "nowhere", "other"],
                &memberships,
                CHILDREN
            ),
            set(&["b", "c"])
        );
        for membership in [Membership::Knock, Membership::Ban] {
            assert_eq!(
                kept(&["space"], &[("space", membership)], CHILDREN),
                set(&[])
            );
        }
        // No spaces listed: nothing.
        assert_eq!(kept(&[], &memberships, CHILDREN), set(&[]));
    }
}
