//! The name of a writer (a homeserver instance that persists events).
//!
//! Owns: the one rule for writer names, used by the settings, the feed and
//! the token's text form alike. May not touch: anything else.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest writer name accepted, in bytes.
pub const MAX_WRITER_NAME_LENGTH: usize = 64;

/// A writer's (instance's) name: 1 to [`MAX_WRITER_NAME_LENGTH`] ASCII
/// letters, digits, `_`, `-` or `.`, so it can never break a token's text
/// form (`m3~writer.5`) or a log line. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriterName(Arc<str>);

/// Why a writer name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid writer name {0:?}: 1 to 64 ASCII letters, digits, '_', '-' or '.'")]
pub struct WriterNameError(pub String);

impl WriterName {
    /// Checks `name` against the writer-name rule.
    pub fn parse(name: &str) -> Result<WriterName, WriterNameError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_WRITER_NAME_LENGTH
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if valid {
            Ok(WriterName(Arc::from(name)))
        } else {
            Err(WriterNameError(name.to_owned()))
        }
    }

    /// `master`: the instance name of a Synapse without event-persister workers.
    pub fn master() -> WriterName {
        WriterName(Arc::from("master"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WriterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for WriterName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for WriterName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for WriterName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl std::str::FromStr for WriterName {
    type Err = WriterNameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        WriterName::parse(name)
    }
}

impl Serialize for WriterName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for WriterName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        WriterName::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_name_rule() {
        for good in [
            "master",
            "event_persister-1",
            "p1",
            "worker.2",
            &"a".repeat(64),
        ] {
            assert_eq!(
                WriterName::parse(good).map(|w| w.to_string()),
                Ok(good.to_owned())
            );
        }
        for bad in ["", "a b", "a~b", "é", "tab\t", &"a".repeat(65)] {
            assert_eq!(WriterName::parse(bad), Err(WriterNameError(bad.to_owned())));
        }
    }

    #[test]
    fn deserializing_applies_the_rule() {
        let name: WriterName = serde_json::from_str("\"p2\"").unwrap();
        assert_eq!(name, "p2");
        let error = serde_json::from_str::<WriterName>("\"p 2\"").unwrap_err();
        assert!(error.to_string().contains("invalid writer name"), "{error}");
    }
}
