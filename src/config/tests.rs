//! The settings' tests: the shipped file, flags over the file, refusals.

use super::*;

#[test]
fn the_shipped_config_file_equals_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/roomcache.toml");
    let from_file = Settings::from_file(&path).unwrap();
    assert_eq!(from_file, Settings::default());
}

#[test]
fn flags_override_the_file_and_are_validated() {
    let args = SettingsArgs {
        config: Some(PathBuf::from("/dev/null")),
        server_name: Some("example.org".into()),
        writers: Some(vec!["ep1".parse().unwrap(), "ep2".parse().unwrap()]),
        ..Default::default()
    };
    let settings = Settings::load(&args).unwrap();
    assert_eq!(settings.server_name, "example.org");
    assert_eq!(
        settings.writers,
        vec!["ep1".parse::<WriterName>().unwrap(), "ep2".parse().unwrap()]
    );

    let bad = SettingsArgs {
        config: Some(PathBuf::from("/dev/null")),
        schema: Some("Bad-Schema".into()),
        ..Default::default()
    };
    assert!(matches!(
        Settings::load(&bad),
        Err(ConfigError::Invalid { key: "schema", .. })
    ));
}

#[test]
fn a_named_config_file_must_exist() {
    let args = SettingsArgs {
        config: Some(PathBuf::from("/nonexistent/typo.toml")),
        ..Default::default()
    };
    let error = Settings::load(&args).unwrap_err();
    assert!(matches!(error, ConfigError::Missing { .. }));
    assert_eq!(
        error.to_string(),
        "config file /nonexistent/typo.toml does not exist"
    );
}

#[test]
fn an_invalid_log_directive_or_socket_path_is_refused() {
    let args = SettingsArgs {
        config: Some(PathBuf::from("/dev/null")),
        log_level: Some("roomcache=verbose".into()),
        ..Default::default()
    };
    assert!(matches!(
        Settings::load(&args),
        Err(ConfigError::Invalid {
            key: "log_level",
            ..
        })
    ));
    let args = SettingsArgs {
        config: Some(PathBuf::from("/dev/null")),
        socket_path: Some(PathBuf::from(format!("/{}", "s".repeat(107)))),
        ..Default::default()
    };
    let error = Settings::load(&args).unwrap_err().to_string();
    assert!(
        error.contains("is 108 bytes long") && error.contains("at most 107 bytes"),
        "{error}"
    );
}
