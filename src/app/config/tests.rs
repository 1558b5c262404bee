//! Loading, defaults and refusals of the configuration.
#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn defaults_and_overrides() {
    let s = Settings::load(None, Overrides::default()).unwrap();
    assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(s.keys.len(), 1);
    assert_eq!(s.keys[0].name, "default");
    let file: FileConfig =
        toml::from_str("listen = \"127.0.0.1:1\"\n[[keys]]\nname = \"pii\"\n").unwrap();
    let s = Settings::from_file(
        file,
        Overrides {
            listen: Some("127.0.0.1:2".parse().unwrap()),
            data_dir: None,
        },
    )
    .unwrap();
    assert_eq!(s.listen.port(), 2);
    assert_eq!(s.keys[0].name, "pii");
}

#[test]
fn bad_values_are_refused() {
    // Each refused for its own reason, named in the message: a test that
    // took any error (a TOML typo in the case itself) proved nothing.
    for (bad, why) in [
        (
            "[[keys]]\nname = \"../x\"\n",
            "invalid setting keys.name: \"../x\" must be",
        ),
        (
            "[[keys]]\nname = \"a\"\n[[keys]]\nname = \"a\"\n",
            "keys.name: \"a\" is listed twice",
        ),
        (
            "[data_keys]\nmax_records = 0\n",
            "data_keys.max_records: must be between 1 and 2^32",
        ),
        (
            "[data_keys]\nmax_records = 8589934592\n",
            "data_keys.max_records: must be between 1 and 2^32",
        ),
        ("unknown = 1\n", "unknown field `unknown`"),
        (
            "refresh_interval_secs = \"300\"\n",
            "invalid type: string \"300\", expected u64",
        ),
        (
            "log_level = \"[[[\"\n",
            "invalid setting log_level: \"[[[\" is not a tracing filter",
        ),
        (
            "log_level = \"envelope[call{key=pii}]=debug\"\n",
            "(field filters in braces are not accepted)",
        ),
        (
            "mode = \"aws\"\n",
            "invalid setting tls: AWS mode serves only over TLS",
        ),
        (
            "[aws]\nregion = \"us-east-1\"\n",
            "invalid setting aws: an [aws] section needs mode = \"aws\"",
        ),
        (
            "max_staleness_secs = 1\n",
            "max_staleness_secs: must be at least refresh_interval_secs",
        ),
    ] {
        let got = match toml::from_str::<FileConfig>(bad) {
            Err(e) => e.to_string(),
            Ok(f) => match Settings::from_file(f, Overrides::default()) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted: {bad}"),
            },
        };
        assert!(got.contains(why), "{bad:?}: {got}");
    }
}
