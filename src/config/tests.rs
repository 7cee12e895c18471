//! Tests of the configuration: loading, precedence, typed values, every check.

use super::registries::endpoint;
use super::*;

#[test]
fn example_config_loads_without_warnings() {
    use clap::Parser;
    let cli = Cli::parse_from([
        "ociregistry",
        "--config-file",
        "config/example.yaml",
        "serve",
        "--port",
        "9",
    ]);
    let loaded = Config::load(&cli).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config.port, 9, "flags override the file");
    assert_eq!(loaded.config.pull_timeout, 60_000);
    assert_eq!(
        loaded
            .config
            .upstreams(&ProxyRules::default())
            .unwrap()
            .len(),
        1
    );
}

/// A configuration from YAML text on top of the defaults.
fn parsed(yaml: &str) -> Config {
    config::Config::builder()
        .add_source(File::from_str(DEFAULTS, FileFormat::Yaml))
        .add_source(File::from_str(yaml, FileFormat::Yaml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

#[test]
fn an_empty_admin_token_or_a_tokenless_admin_api_off_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    for bad in [
        "adminPort: 9\nadminToken: ''".to_string(),
        "adminPort: 9\nadminToken: '  '".to_string(),
        format!("adminPort: 9\nadminTokenFile: {}", empty.display()),
        "adminPort: 9\nadminHost: 0.0.0.0".to_string(),
        "adminPort: 9\nadminHost: 10.1.2.3".to_string(),
    ] {
        assert!(parsed(&bad).admin_token().is_err(), "{bad}");
    }
    for good in [
        "adminPort: 9",
        "adminPort: 9\nadminHost: '::1'",
        "adminPort: 9\nadminHost: localhost",
        "adminPort: 9\nadminHost: 0.0.0.0\nadminToken: s3cret",
        "adminHost: 0.0.0.0",
    ] {
        assert!(parsed(good).admin_token().is_ok(), "{good}");
    }
}

#[test]
fn deny_networks_default_and_a_bad_one_stops_start_up() {
    use clap::Parser;
    let load = |yaml: &str| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, yaml).unwrap();
        let file = file.to_str().unwrap().to_string();
        Config::load(&Cli::parse_from([
            "ociregistry",
            "--config-file",
            &file,
            "serve",
        ]))
    };
    let defaults = load("port: 1\n").unwrap().config;
    assert_eq!(defaults.upstreams.deny_networks, default_deny_networks());
    let set = load("upstreams:\n  denyNetworks: [127.0.0.2/32, 'fd00::/8']\n").unwrap();
    assert_eq!(set.config.upstreams.deny_networks.len(), 2);
    assert_eq!(
        set.config.upstreams.allow,
        allow_all(),
        "the other keys keep their defaults"
    );
    for (bad, says) in [
        ("10.0.0.1/8", "write 10.0.0.0/8"),
        ("10.0.0.0/40", "prefix is longer"),
        ("intranet", "not an IP address or CIDR network"),
    ] {
        let err = load(&format!("upstreams:\n  denyNetworks: ['{bad}']\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("upstreams.denyNetworks: "), "{err}");
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn nonsensical_limits_stop_start_up() {
    for bad in [
        "pullTimeout: 0",
        "maxConnections: 0",
        "headerTimeout: 0s",
        "maxFetches: 0",
        "maxFetchesPerRegistry: 0",
        "idleTimeout: never",
    ] {
        let c = parsed(bad);
        let checks = [
            c.timeouts().err(),
            c.client_limits().err(),
            c.fetch_limits().err(),
        ];
        assert!(checks.iter().any(Option::is_some), "{bad}");
    }
    let defaults = parsed("{}");
    assert!(defaults.timeouts().is_ok() && defaults.client_limits().is_ok());
    assert!(defaults.fetch_limits().is_ok());
}

#[test]
fn connection_limits_default_and_must_be_at_least_one() {
    let limits = parsed("port: 1\n").client_limits().unwrap();
    assert_eq!(
        (limits.max_connections, limits.max_per_client),
        (10_000, 1000)
    );
    for key in ["maxConnections", "maxConnectionsPerClient"] {
        let err = parsed(&format!("{key}: 0\n")).client_limits().unwrap_err();
        assert_eq!(err.to_string(), format!("{key}: must be at least 1"));
    }
}

#[test]
fn env_names() {
    assert_eq!(env_name("pullTimeout"), "OCIREGISTRY_PULL_TIMEOUT");
    assert_eq!(env_name("port"), "OCIREGISTRY_PORT");
}

#[test]
fn endpoints() {
    assert_eq!(
        endpoint("http://127.0.0.1:5000/").as_deref(),
        Some("http://127.0.0.1:5000")
    );
    assert_eq!(
        endpoint("https://r.example.com").as_deref(),
        Some("https://r.example.com")
    );
    for bad in ["ftp://x", "x", "http://", "http://u:p@x", "http://x/path"] {
        assert_eq!(endpoint(bad), None, "{bad}");
    }
}

/// Loads `yaml` as the config file, with the usual precedence.
fn load(yaml: &str) -> Result<Loaded, ConfigError> {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    Config::load(&Cli::parse_from([
        "ociregistry",
        "--config-file",
        file.to_str().unwrap(),
        "serve",
    ]))
}

#[test]
fn unknown_keys_are_reported_at_every_level_and_aliases_are_known() {
    let loaded = load(
        "colour: red\nregistries:\n  - name: a.example\n    mirror: 1\n    tls: {insecure_skip_verify: true, caa: x}\nupstreams: {denyNetwork: []}\n",
    )
    .unwrap();
    let mut warnings = loaded.warnings;
    warnings.sort();
    assert_eq!(
        warnings,
        [
            "unknown key colour ignored",
            "unknown key registries[0].mirror ignored",
            "unknown key registries[0].tls.caa ignored",
            "unknown key upstreams.denyNetwork ignored",
        ]
    );
}

#[test]
fn sizes_durations_and_choices_are_typed_when_loaded() {
    let loaded =
        load("maxBlobSize: 2Gi\nmaxCacheSize: 1000\ntagTtl: never\nkeepAlive: 5\n").unwrap();
    let c = loaded.config;
    assert_eq!(
        (c.max_blob_size, c.max_cache_size),
        (Size(2 << 30), Some(Size(1000)))
    );
    assert_eq!(
        (c.tag_ttl, c.keep_alive),
        (Span(None), Span(Some(Duration::from_secs(5))))
    );
    for (bad, path) in [
        ("maxBlobSize: lots", "maxBlobSize"),
        ("drainTimeout: 3x", "drainTimeout"),
        ("keepAlive: -1", "keepAlive"),
        ("defaultNs: 'not a host!'", "defaultNs"),
        ("upstreamMirror: ftp://x", "upstreamMirror"),
        ("pins: ['(']", "pins[0]"),
        ("logFormat: xml", "logFormat"),
        (
            "serverTlsConfig: {cert: c, key: k, clientAuth: maybe}",
            "serverTlsConfig.clientAuth",
        ),
        (
            "registries:\n  - name: r.example\n    scheme: ftp\n",
            "registries[0].scheme",
        ),
    ] {
        let err = load(bad).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{path}: ")), "{err}");
    }
}

#[test]
fn a_bad_value_names_its_path() {
    let err = load("registries:\n  - name: a.example\n    tls: {insecureSkipVerify: maybe}\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("registries[0].tls.insecureSkipVerify: "),
        "{err}"
    );
}

#[test]
fn password_sources_and_snake_case() {
    let entry: RegistryEntry = serde_json::from_value(serde_json::json!({
        "name": "r.example.com",
        "auth": {"user": "u", "password_from_env": "OCIREGISTRY_TEST_UNSET_VARIABLE"},
        "tls": {"insecure_skip_verify": true}
    }))
    .unwrap();
    assert!(entry.tls.as_ref().unwrap().insecure_skip_verify);
    let err = entry
        .settings(test_timeouts(), &ProxyRules::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("OCIREGISTRY_TEST_UNSET_VARIABLE"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "s3cret\n").unwrap();
    let auth = AuthEntry {
        user: "u".into(),
        password: None,
        password_from_env: None,
        password_file: Some(file),
    };
    assert_eq!(auth.credentials().unwrap().password, "s3cret");
    assert!(!format!("{auth:?}").contains("s3cret"));
}

#[test]
fn registry_proxies_are_http_and_never_shown() {
    let entry = |proxy: &str| -> RegistryEntry {
        serde_json::from_value(serde_json::json!({"name": "r.example", "proxy": proxy})).unwrap()
    };
    let https = entry("https://u:s3cret@proxy.example:3128");
    let err = https
        .settings(test_timeouts(), &ProxyRules::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("registries[r.example]: proxy: proxy scheme \"https\" is not supported"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    let http = entry("http://u:s3cret@proxy.example:3128");
    let settings = http
        .settings(test_timeouts(), &ProxyRules::default())
        .unwrap();
    for shown in [format!("{http:?}"), format!("{settings:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}

fn test_timeouts() -> Timeouts {
    Timeouts {
        connect: CONNECT_TIMEOUT,
        response: CONNECT_TIMEOUT,
        idle: Duration::from_secs(60),
    }
}

#[test]
fn parallel_fetch_is_per_registry_and_bounded() {
    let entry = |extra: &str| {
        format!(
            "registries:\n  - name: ghcr.io\n    parallelFetch: {{{extra}}}\n  - name: quay.io\n"
        )
    };
    let ok = parsed(&entry("minSize: 32Mi, connections: 8"));
    let settings = ok.upstreams(&ProxyRules::default()).unwrap();
    assert_eq!(
        settings[0].parallel,
        Some(ociregistry_actors::upstream::ParallelFetch {
            min_size: 32 << 20,
            connections: 8
        })
    );
    assert_eq!(settings[1].parallel, None, "off unless set");
    for bad in [
        "minSize: 32Mi, connections: 1",
        "minSize: 32Mi, connections: 64",
        "minSize: 1Ki, connections: 4",
    ] {
        let err = parsed(&entry(bad))
            .upstreams(&ProxyRules::default())
            .unwrap_err();
        assert!(err.to_string().contains("parallelFetch"), "{bad}: {err}");
    }
}
