//! The settings as a config file that `--config` reads back
//! (`roomcache config`), with the passwords of its URLs masked.
//!
//! Owns: [`Settings::to_toml_masked`] and [`mask_password`]. May not touch:
//! anything but text.

use super::Settings;

impl Settings {
    /// The settings as a config file that `--config` reads back, passwords
    /// masked (`***`) in the database and Redis URLs.
    pub(crate) fn to_toml_masked(&self) -> Result<String, toml::ser::Error> {
        let mut masked = self.clone();
        for url in [
            &mut masked.database_url,
            &mut masked.source_database_url,
            &mut masked.source_redis_url,
        ]
        .into_iter()
        .flatten()
        {
            *url = mask_password(url);
        }
        let unset: Vec<&str> = [
            ("database_url", masked.database_url.is_none()),
            ("metrics_address", masked.metrics_address.is_none()),
            ("source_database_url", masked.source_database_url.is_none()),
            ("source_redis_url", masked.source_redis_url.is_none()),
        ]
        .into_iter()
        .filter_map(|(key, unset)| unset.then_some(key))
        .collect();
        let mut text = String::from(
            "# roomcache's effective settings (defaults, config file, environment and flags \
             merged);\n# passwords are masked (***).\n",
        );
        if !unset.is_empty() {
            text.push_str(&format!("# unset: {}\n", unset.join(", ")));
        }
        text.push_str(&toml::to_string(&masked)?);
        Ok(text)
    }
}

/// `url` with its password replaced by `***`: the password of a URL's user
/// information (`scheme://user:password@host`), or the `password=` value
/// of a Postgres key=value connection string.
pub(crate) fn mask_password(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest_start = scheme_end + 3;
        let rest = &url[rest_start..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let Some(at) = authority.rfind('@') else {
            return url.to_owned();
        };
        let Some(colon) = authority[..at].find(':') else {
            return url.to_owned();
        };
        return format!(
            "{}{}***{}",
            &url[..rest_start],
            &authority[..=colon],
            &url[rest_start + at..]
        );
    }
    let mut masked = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(found) = find_key(rest, "password") {
        let after_key = &rest[found..];
        let Some(equals) = after_key.find('=') else {
            break;
        };
        let value_start = found + equals + 1;
        let value = rest[value_start..].trim_start();
        let value_start = rest.len() - value.len();
        let value_end = value_start + value_length(value);
        masked.push_str(&rest[..value_start]);
        masked.push_str("***");
        rest = &rest[value_end..];
    }
    masked.push_str(rest);
    masked
}

/// Where the key `key` (followed by optional spaces and `=`) starts in a
/// key=value connection string.
fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = text[from..].find(key) {
        let start = from + found;
        let before_ok = start == 0 || text.as_bytes()[start - 1].is_ascii_whitespace();
        let after = text[start + key.len()..].trim_start();
        if before_ok && after.starts_with('=') {
            return Some(start);
        }
        from = start + key.len();
    }
    None
}

/// The length of a key=value connection string's value at the start of
/// `value`: a quoted one (`'...'`, with `\'` and `\\` escapes) or up to the
/// next space.
fn value_length(value: &str) -> usize {
    let bytes = value.as_bytes();
    if bytes.first() != Some(&b'\'') {
        return value.find(char::is_whitespace).unwrap_or(value.len());
    }
    let mut index = 1;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' => index += 2,
            b'\'' => return index + 1,
            _ => index += 1,
        }
    }
    value.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_settings_read_back_with_passwords_masked() {
        let settings = Settings {
            database_url: Some("postgres://roomcache:s3cret%20x@db:5433/roomcache".into()),
            source_database_url: Some(
                "host=db user=roomcache_reader password='change me' dbname=synapse".into(),
            ),
            source_redis_url: Some("redis://:hunter2@127.0.0.1:6379/".into()),
            metrics_address: Some("127.0.0.1:9477".parse().unwrap()),
            writers: vec!["p1".parse().unwrap(), "p2".parse().unwrap()],
            ..Settings::default()
        };
        let text = settings.to_toml_masked().unwrap();
        for secret in ["s3cret", "change me", "hunter2"] {
            assert!(!text.contains(secret), "{text}");
        }
        let read_back: Settings = toml::from_str(&text).unwrap();
        let expected = Settings {
            database_url: Some("postgres://roomcache:***@db:5433/roomcache".into()),
            source_database_url: Some(
                "host=db user=roomcache_reader password=*** dbname=synapse".into(),
            ),
            source_redis_url: Some("redis://:***@127.0.0.1:6379/".into()),
            ..settings
        };
        assert_eq!(read_back, expected);
        assert_eq!(read_back.to_toml_masked().unwrap(), text);
        let defaults = Settings::default().to_toml_masked().unwrap();
        assert!(defaults.contains(
            "# unset: database_url, metrics_address, source_database_url, source_redis_url"
        ));
        assert_eq!(
            toml::from_str::<Settings>(&defaults).unwrap(),
            Settings::default()
        );
    }

    #[test]
    fn passwords_are_masked_in_every_url_form() {
        assert_eq!(
            mask_password("postgres://u@h/db"),
            "postgres://u@h/db",
            "no password"
        );
        assert_eq!(
            mask_password("postgres://u:p%40w@h/db?x=y@z"),
            "postgres://u:***@h/db?x=y@z"
        );
        assert_eq!(
            mask_password("password = 'a \\' b' host=h"),
            "password = *** host=h"
        );
        assert_eq!(
            mask_password("user=u password=x passwordless=y"),
            "user=u password=*** passwordless=y"
        );
    }
}
