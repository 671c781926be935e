//! Tests of hive loading: the fixture hives in the manager's format, image settings and
//! their environment overrides, secrets, and that no secret value reaches a diagnostic.

use std::collections::BTreeMap;
use std::path::Path;

use miette::{GraphicalReportHandler, GraphicalTheme};

use super::*;
use crate::defs::{DefsError, DefsErrorKind, Label, Loader, Pattern, Target, Workspace};
use crate::modules::testing;

const FIXTURE_WIFI: &str = include_str!("../../tests/hives/hive_AbCd1234.yaml");
const FIXTURE_LAN: &str = include_str!("../../tests/hives/hive_LanX0001.yaml");

const EDGE: &str = "kind: image
base: scratch
services:
  sensor_manager: {source: {path: ../services/sensor-manager}}
software:
  packages: [i2c-tools]
  python_packages: [w1thermsensor==2.3.0]
";

fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn loader(dir: &tempfile::TempDir, env: &[(&str, &str)], sets: &[&str]) -> Loader {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    let ws = Workspace::open(dir.path(), &env).unwrap();
    let sets: Vec<String> = sets.iter().map(|s| (*s).to_owned()).collect();
    Loader::new(ws, env, &sets).unwrap()
}

fn label(text: &str) -> Label {
    Label::parse(text, None).unwrap()
}

fn render(err: &DefsError) -> String {
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    handler.render_report(&mut out, err).unwrap();
    out
}

/// The fixtures of `modules::testing` have 45-character WireGuard keys, which no real key
/// is (32 bytes of base64 are 44 characters); the YAML fixtures use 44. Everything else
/// must be equal as written.
fn with_real_key_lengths(mut h: HiveImage) -> HiveImage {
    if let Some(s) = &mut h.hive.security {
        let fix = |k: &str| format!("{}=", &k[..43]);
        let private = fix(s.wireguard.private_key.expose());
        s.wireguard.private_key = Secret::new("security.wireguard.private_key", private);
        s.wireguard.public_key = fix(&s.wireguard.public_key);
        s.wireguard.peer_public_key = s.wireguard.peer_public_key.as_deref().map(fix);
    }
    h
}

fn two_hive_workspace() -> tempfile::TempDir {
    workspace(&[
        ("w4b.yaml", "hives: {image: //images:edge}\n"),
        ("defs/images/edge.yaml", EDGE),
        ("defs/hives/north.yaml", FIXTURE_WIFI),
        (
            "defs/images/lan.yaml",
            &format!("{EDGE}hive_file: ../../hives/hive_LanX0001.yaml\n"),
        ),
        ("hives/hive_LanX0001.yaml", FIXTURE_LAN),
    ])
}

#[test]
fn the_fixture_hives_in_the_managers_format_load_to_the_typed_fixtures() {
    let dir = two_hive_workspace();
    let l = loader(&dir, &[], &[]);

    let north = resolve(&l, &label("//hives:north")).unwrap();
    assert_eq!(north.image, label("//images:edge"));
    assert_eq!(north.config, with_real_key_lengths(testing::wifi_hive()));
    // Secrets are equal as text, and named by their key paths.
    let names: Vec<&str> = north.config.secrets().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "network.wifi[0].password",
            "network.wifi[1].password",
            "security.ssh.private_key",
            "security.wireguard.private_key",
            "security.database.password",
            "security.local_access.password"
        ]
    );
    let files: Vec<&str> = north.files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(files, ["defs/hives/north.yaml", "defs/images/edge.yaml"]);
    assert_eq!(
        north.locations["hive.network.wifi[1].ssid"].to_string(),
        "defs/hives/north.yaml:12:14"
    );
    assert_eq!(
        north.locations["image.software.packages[0]"].to_string(),
        "defs/images/edge.yaml:6:14"
    );
    assert_eq!(north.config.hostname(), "w4b-abcd1234");

    let lan = resolve(&l, &label("//images:lan")).unwrap();
    assert_eq!(lan.image, label("//images:lan"));
    assert_eq!(lan.config, with_real_key_lengths(testing::lan_hive()));
    let files: Vec<&str> = lan.files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(files, ["defs/images/lan.yaml", "hives/hive_LanX0001.yaml"]);
    assert_eq!(
        lan.locations["hive.network.lan.static.gateway"].to_string(),
        "hives/hive_LanX0001.yaml:12:47"
    );

    // A `hive:` section in the image is the same hive.
    let indented: String = FIXTURE_LAN
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    let dir2 = workspace(&[
        ("w4b.yaml", ""),
        ("defs/images/inline.yaml", &format!("{EDGE}hive:\n{indented}")),
    ]);
    let inline = resolve(&loader(&dir2, &[], &[]), &label("//images:inline")).unwrap();
    assert_eq!(inline.config, lan.config);
}

#[test]
fn hives_are_listed_as_hives_and_built_on_their_image() {
    let dir = two_hive_workspace();
    let l = loader(&dir, &[], &[]);
    let listed: Vec<String> = l
        .list(&Pattern::parse("//...", None).unwrap())
        .unwrap()
        .iter()
        .map(|(l, k)| format!("{l} {k}"))
        .collect();
    assert_eq!(
        listed,
        ["//hives:north hive", "//images:edge image", "//images:lan image"]
    );

    // `image:` in the hive file wins over `w4b.yaml`.
    let own = FIXTURE_WIFI.replace(
        "hive_id: hive_AbCd1234",
        "image: //images:other\nhive_id: hive_AbCd1234",
    );
    let dir = workspace(&[
        ("w4b.yaml", "hives: {image: //images:edge}\n"),
        ("defs/images/edge.yaml", EDGE),
        (
            "defs/images/other.yaml",
            "kind: image\nbase: scratch\nsystem: {timezone: Europe/Paris}\n",
        ),
        ("defs/hives/north.yaml", &own),
    ]);
    let r = resolve(&loader(&dir, &[], &[]), &label("//hives:north")).unwrap();
    assert_eq!(r.image, label("//images:other"));
    assert_eq!(r.config.settings.system.timezone, "Europe/Paris");

    // No image anywhere.
    let dir = workspace(&[("w4b.yaml", ""), ("defs/hives/north.yaml", FIXTURE_WIFI)]);
    let err = resolve(&loader(&dir, &[], &[]), &label("//hives:north")).unwrap_err();
    assert!(matches!(err.kind(), DefsErrorKind::NoHiveImage { .. }), "{err:?}");

    // Not a hive.
    let dir = two_hive_workspace();
    let err = resolve(&loader(&dir, &[], &[]), &label("//images:edge")).unwrap_err();
    assert!(matches!(err.kind(), DefsErrorKind::NotAHive { .. }), "{err:?}");
}

#[test]
fn hives_do_not_extend_and_are_not_extended() {
    let dir = workspace(&[
        ("w4b.yaml", "hives: {image: //images:edge}\n"),
        ("defs/images/edge.yaml", EDGE),
        ("defs/hives/north.yaml", FIXTURE_WIFI),
        (
            "defs/hives/south.yaml",
            &format!("extends: :north\n{FIXTURE_WIFI}"),
        ),
        ("defs/hives/west.yaml", "extends: :north\nversion: \"2.0.0\"\n"),
    ]);
    let l = loader(&dir, &[], &[]);
    for name in ["//hives:south", "//hives:west"] {
        let err = l.load(&label(name)).unwrap_err();
        assert!(
            render(&err).contains("hives cannot use `extends`"),
            "{name}: {}",
            render(&err)
        );
    }
}

#[test]
fn image_settings_have_the_documented_defaults_and_read_the_old_keys() {
    let d = crate::defs::image_settings::defaults();
    assert_eq!(d.system.hostname_prefix, "w4b");
    assert_eq!(
        (
            d.system.timezone.as_str(),
            d.system.locale.as_str(),
            d.system.keyboard.as_str()
        ),
        ("UTC", "en_GB.UTF-8", "gb")
    );
    assert!(d.system.ssh_enabled && !d.system.ssh_password_auth && d.system.ssh_port == 22);
    assert!(d.firewall.enabled && d.firewall.allow_ports == [22] && d.vpn_enabled);
    assert!(d.sensor_manager.enabled && d.sensor_manager.auto_start && d.sensor_manager.metrics_port == 9101);
    assert_eq!(d.sensor_manager.source, None);
    assert!(d.monitoring.enabled && d.monitoring.node_exporter_port == 9100);
    assert_eq!(
        (
            d.monitoring.journal_max_use.as_str(),
            d.monitoring.health_interval
        ),
        ("200M", 300)
    );
    assert_eq!(
        (d.database.retention_days, d.database.compress_after_days),
        (30, 7)
    );
    assert!(d.software.packages.is_empty() && d.software.python_packages.is_empty());

    let old = "kind: image
base: scratch
system:
  hostname_prefix: bee
  timezone: Europe/Berlin
  locale: de_DE.UTF-8
  keyboard: de
  ssh: {enabled: true, password_auth: true, port: 2222}
security:
  firewall: {enabled: true, allow_ports: [2222, 80, 80]}
  vpn: {type: wireguard, enabled: false, server: vpn.example.org}
services:
  sensor_manager:
    enabled: true
    auto_start: false
    metrics_port: 9200
    source: {url: https://example.org/sm.tar.gz, sha256: ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB}
  monitoring: {enabled: false, metrics_port: 9300, journal_max_use: 1G, health_interval: 60}
  database: {type: timescaledb, retention_days: 90, compress_after_days: 3}
software: {packages: [vim], python_packages: [requests==2.31.0]}
";
    let dir = workspace(&[("w4b.yaml", ""), ("defs/images/old.yaml", old)]);
    let t = loader(&dir, &[], &[]).load(&label("//images:old")).unwrap();
    let Target::Image(img) = &t.target else { panic!() };
    let s = &img.settings;
    assert_eq!(s.system.hostname_prefix, "bee");
    assert_eq!((s.system.ssh_port, s.system.ssh_password_auth), (2222, true));
    assert_eq!(s.firewall.allow_ports, [80, 2222]);
    assert!(!s.vpn_enabled);
    assert_eq!(img.vpn_server.0.as_deref(), Some("vpn.example.org"));
    assert_eq!(
        s.sensor_manager.source,
        Some(SourceSpec::Url {
            url: "https://example.org/sm.tar.gz".into(),
            sha256: "ab".repeat(32)
        })
    );
    assert_eq!(
        (s.sensor_manager.metrics_port, s.monitoring.node_exporter_port),
        (9200, 9300)
    );
    assert_eq!(
        (s.database.retention_days, s.database.compress_after_days),
        (90, 3)
    );
    assert_eq!(
        s.software
            .packages
            .iter()
            .map(|p| p.value.as_str())
            .collect::<Vec<_>>(),
        ["vim"]
    );

    for (text, expected) in [
        (
            "system: {timezone: Europe/Berlim}",
            "did you mean `Europe/Berlin`?",
        ),
        ("system: {timzone: UTC}", "did you mean `timezone`?"),
        (
            "services: {sensor_manager: {metrics_port: 9100}}",
            "node exporter",
        ),
        (
            "services: {sensor_manager: {source: {path: ../../../x}}}",
            "inside the workspace",
        ),
        (
            "services: {sensor_manager: {source: {url: https://x/y.tgz}}}",
            "either `{url, sha256}`",
        ),
        ("services: {database: {password: x}}", "unknown key `password`"),
        ("security: {vpn: {type: openvpn}}", "unsupported VPN type"),
        ("system: {hostname_prefix: Bee_1}", "cannot start a host name"),
    ] {
        let dir = workspace(&[
            ("w4b.yaml", ""),
            (
                "defs/images/bad.yaml",
                &format!("kind: image\nbase: scratch\n{text}\n"),
            ),
        ]);
        let err = loader(&dir, &[], &[]).load(&label("//images:bad")).unwrap_err();
        let shown = render(&err);
        assert!(shown.contains(expected), "{text}: {shown}");
        assert!(
            shown.contains("defs/images/bad.yaml:3:"),
            "{text}: no location in {shown}"
        );
    }
}

#[test]
fn w4b_environment_variables_map_to_the_old_keys() {
    let dir = workspace(&[
        ("w4b.yaml", "hives: {image: //images:edge}\n"),
        ("defs/images/edge.yaml", EDGE),
        ("defs/hives/north.yaml", FIXTURE_WIFI),
    ]);
    let l = loader(
        &dir,
        &[
            ("W4B_TIMEZONE", "America/New_York"),
            ("W4B_HOSTNAME_PREFIX", "bee"),
            ("W4B_PI_MODEL", "pi5"),
            ("W4B_VPN_SERVER", "vpn.example.net"),
            ("W4B_HIVE_ID", "hive_Override"),
        ],
        &[],
    );
    let r = resolve(&l, &label("//hives:north")).unwrap();
    assert_eq!(r.config.settings.system.timezone, "America/New_York");
    assert_eq!(r.config.hive.hive_id, "hive_Override");
    assert_eq!(r.config.hostname(), "bee-override");
    let wg = &r.config.hive.security.as_ref().unwrap().wireguard;
    assert_eq!(wg.endpoint, "vpn.example.net:51820");
    assert_eq!(
        r.locations["image.system.timezone"].to_string(),
        "env W4B_TIMEZONE"
    );
    assert_eq!(r.locations["hive.hive_id"].to_string(), "env W4B_HIVE_ID");
    let edge = l.load(&label("//images:edge")).unwrap();
    let Target::Image(img) = &edge.target else {
        panic!()
    };
    assert_eq!(
        img.board.as_ref().map(|b| b.value.to_string()).as_deref(),
        Some("//boards:pi5")
    );

    let err = resolve(
        &loader(&dir, &[("W4B_TIMEZONE", "Mars/Olympus")], &[]),
        &label("//hives:north"),
    )
    .unwrap_err();
    let shown = render(&err);
    assert!(
        shown.contains("env W4B_TIMEZONE") && shown.contains("not an IANA time zone"),
        "{shown}"
    );
}

#[test]
fn secrets_come_from_the_environment_map_and_files_inside_the_workspace() {
    let hive = FIXTURE_WIFI
        .replace(
            "password: \"SECRET-wifi-apiary\"",
            "password: \"${env:WIFI_APIARY}\"",
        )
        .replace(
            "password: \"SECRET-wifi-farm\"",
            "password: {file: secrets/farm.txt}",
        )
        .replace("password: \"SECRET-db-pass-1234567\"", "password: \"${DB_PASS}\"");
    let dir = workspace(&[
        ("w4b.yaml", "hives: {image: //images:edge}\n"),
        ("defs/images/edge.yaml", EDGE),
        ("defs/hives/north.yaml", &hive),
        ("defs/hives/secrets/farm.txt", "SECRET-wifi-farm\n"),
    ]);
    let env = [
        ("WIFI_APIARY", "SECRET-wifi-apiary"),
        ("DB_PASS", "SECRET-db-pass-1234567"),
    ];
    let r = resolve(&loader(&dir, &env, &[]), &label("//hives:north")).unwrap();
    assert_eq!(r.config, with_real_key_lengths(testing::wifi_hive()));
    assert_eq!(r.secret_files, ["defs/hives/secrets/farm.txt"]);
    assert!(
        r.files.iter().all(|(p, _)| !p.contains("secrets")),
        "{:?}",
        r.files
    );

    // A missing variable names the key and the variable, never a value.
    let err = resolve(&loader(&dir, &env[1..], &[]), &label("//hives:north")).unwrap_err();
    let shown = render(&err);
    assert!(shown.contains("secret `network.wifi[0].password`"), "{shown}");
    assert!(shown.contains("`WIFI_APIARY` is not set"), "{shown}");
    assert!(shown.contains("w4b::defs::secret_source"), "{shown}");

    // Files must stay inside the workspace, also through symbolic links.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("pw"), "SECRET-outside").unwrap();
    for written in [
        "{file: ../../../../../etc/passwd}",
        "{file: /etc/passwd}",
        "{file: secrets/link}",
    ] {
        let hive = FIXTURE_WIFI.replace("password: \"SECRET-wifi-farm\"", &format!("password: {written}"));
        let dir = workspace(&[
            ("w4b.yaml", "hives: {image: //images:edge}\n"),
            ("defs/images/edge.yaml", EDGE),
            ("defs/hives/north.yaml", &hive),
        ]);
        std::fs::create_dir_all(dir.path().join("defs/hives/secrets")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("pw"),
            dir.path().join("defs/hives/secrets/link"),
        )
        .unwrap();
        let err = resolve(&loader(&dir, &[], &[]), &label("//hives:north")).unwrap_err();
        let shown = render(&err);
        assert!(shown.contains("outside the workspace"), "{written}: {shown}");
        assert!(!shown.contains("SECRET-outside"), "{shown}");
    }

    // `${env:…}` outside a secret position is not substituted, and is then just text.
    let dir = workspace(&[
        ("w4b.yaml", ""),
        (
            "defs/images/e.yaml",
            "kind: image\nbase: scratch\ndescription: ${env:X}\n",
        ),
    ]);
    let t = loader(&dir, &[("X", "x")], &[])
        .load(&label("//images:e"))
        .unwrap();
    let Target::Image(img) = &t.target else { panic!() };
    assert_eq!(img.description.as_deref(), Some("${env:X}"));
}

/// Every secret value of the fixture hive, and fragments long enough to recognise.
fn secret_values() -> Vec<String> {
    let h = with_real_key_lengths(testing::wifi_hive());
    let mut v: Vec<String> = h.secrets().iter().map(|s| s.expose().to_owned()).collect();
    v.push("SECRET-SSH-PRIVATE-KEY-FIXTURE".into());
    v.push("SECRET".into());
    v
}

#[test]
fn no_secret_value_appears_in_any_diagnostic() {
    // Break every rule near every secret: wrong types, bad siblings, a bad secret file.
    let bad = FIXTURE_WIFI
        .replace("priority: 2", "priority: 0")
        .replace("ssid: \"Farmhouse 2.4\"", "ssid: \"\"")
        .replace("port: 22", "port: 70000")
        .replace("client_ip: \"10.10.0.2/32\"", "client_ip: \"10.10.0.1/32\"")
        .replace("host: localhost", "host: \"not a host\"")
        .replace("username: hiveadmin", "username: root")
        .replace("hive_AbCd1234", "hive_bad");
    let dir = workspace(&[
        ("w4b.yaml", "hives: {image: //images:edge}\n"),
        ("defs/images/edge.yaml", EDGE),
        ("defs/hives/north.yaml", &bad),
    ]);
    let err = resolve(&loader(&dir, &[], &[]), &label("//hives:north")).unwrap_err();
    let DefsErrorKind::HiveInvalid { count, .. } = err.kind() else {
        panic!("{err:?}")
    };
    assert!(*count >= 6, "{}", render(&err));
    let shown = format!("{}\n{err:?}\n{err}", render(&err));
    // Neither messages nor the source lines shown around each problem (secret literals
    // are blanked out in them).
    for secret in secret_values() {
        assert!(!shown.contains(&secret), "secret {secret:?} in {shown}");
    }
    // A secret at a wrong type is described, not quoted.
    let wrong = FIXTURE_WIFI.replace("password: \"SECRET-wifi-farm\"", "password: [SECRET-wifi-farm]");
    let dir = workspace(&[
        ("w4b.yaml", "hives: {image: //images:edge}\n"),
        ("defs/images/edge.yaml", EDGE),
        ("defs/hives/north.yaml", &wrong),
    ]);
    let err = resolve(&loader(&dir, &[], &[]), &label("//hives:north")).unwrap_err();
    assert!(err.to_string().contains("found a list"), "{err}");
    // Not even the snippet shows the other secrets of the file.
    let shown = render(&err);
    assert!(!shown.contains("SECRET-wifi-apiary"), "{shown}");
}

#[test]
fn the_configuration_serialises_with_secrets_masked() {
    let dir = two_hive_workspace();
    let r = resolve(&loader(&dir, &[], &[]), &label("//hives:north")).unwrap();
    let json = serde_json::to_string(&r.config).unwrap();
    for secret in secret_values() {
        assert!(!json.contains(&secret), "{secret} in {json}");
    }
    assert!(json.contains("\"password\":\"***\""));
    assert!(!format!("{:?}", r.config).contains("SECRET"));
}

#[test]
fn check_file_validates_a_file_by_path() {
    let dir = workspace(&[("hive_AbCd1234.yaml", FIXTURE_WIFI), ("bad.yaml", "hive_id: x\n")]);
    let hive = check_file(None, &BTreeMap::new(), &dir.path().join("hive_AbCd1234.yaml")).unwrap();
    assert_eq!(hive, with_real_key_lengths(testing::wifi_hive()).hive);
    let err = check_file(None, &BTreeMap::new(), &dir.path().join("bad.yaml")).unwrap_err();
    let DefsErrorKind::HiveInvalid { count, .. } = err.kind() else {
        panic!("{err:?}")
    };
    // hive_id, and the six required sections besides.
    assert_eq!(*count, 8, "{}", render(&err));
}

#[test]
fn a_hive_file_past_the_size_limit_is_refused_unread() {
    let dir = workspace(&[("big.yaml", "")]);
    let limit = crate::defs::workspace::MAX_DEFINITION_BYTES;
    std::fs::File::create(dir.path().join("big.yaml"))
        .unwrap()
        .set_len(limit + 1)
        .unwrap();
    let err = check_file(None, &BTreeMap::new(), &dir.path().join("big.yaml")).unwrap_err();
    assert!(
        matches!(err.kind(), DefsErrorKind::TooLarge { path, size, .. } if path == "big.yaml" && *size == limit + 1),
        "{err:?}"
    );
}

#[test]
fn hive_validation_and_the_build_apply_one_wifi_password_rule() {
    use crate::modules::Module as _;
    // `hive validate` accepted a 3-character password that the build then refused.
    let hex64 = "0123456789abcdefABCDEF0123456789abcdef0123456789abcdef0123456789";
    let long = "x".repeat(63);
    let too_long = "x".repeat(64);
    let cases: &[(&str, bool)] = &[
        ("abc", false),
        ("seven77", false),
        ("eight888", true),
        (&long, true),
        (&too_long, false),
        (hex64, true),
        (&hex64[..63], true),
        ("caf\u{e9} au lait", false),
        ("with spaces inside", true),
    ];
    let dir = workspace(&[]);
    for (password, valid) in cases {
        let file = dir.path().join("hive_AbCd1234.yaml");
        let text = FIXTURE_WIFI.replace("\"SECRET-wifi-farm\"", &format!("\"{password}\""));
        std::fs::write(&file, text).unwrap();
        let validated = check_file(None, &BTreeMap::new(), &file);
        let mut cfg = testing::wifi_hive();
        for w in &mut cfg.hive.network.wifi {
            w.password = Secret::new(w.password.name.clone(), *password);
        }
        let built = crate::modules::system::System.generate(&cfg);
        assert_eq!(validated.is_ok(), *valid, "{password:?}: {:?}", validated.err());
        assert_eq!(built.is_ok(), *valid, "{password:?}: {:?}", built.err());
        if let Err(e) = validated {
            let shown = render(&e);
            assert!(shown.contains("is not a WPA password"), "{shown}");
            assert!(shown.contains("hive_AbCd1234.yaml:12:"), "{shown}");
        }
    }
}

/// The corpus of bad hive files under `tests/hive-corpus/`: each must fail, every
/// problem must carry a location, a `w4b::defs::` code and a `help:`, and the rendering
/// is pinned.
#[test]
fn every_bad_hive_is_diagnosed_with_location_and_help() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hive-corpus");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "corpus has only {} cases", cases.len());
    let env: BTreeMap<String, String> = [("SET_BUT_EMPTY".to_owned(), String::new())].into();
    for case in cases {
        let name = case.file_stem().unwrap().to_str().unwrap().to_owned();
        let err = match check_file(None, &env, &case) {
            Ok(_) => panic!("{name}: valid"),
            Err(e) => e,
        };
        let rendered = render(&err);
        assert!(rendered.contains("w4b::defs::"), "{name}: no code in\n{rendered}");
        assert!(rendered.contains("help:"), "{name}: no help in\n{rendered}");
        let locations = rendered
            .lines()
            .filter(|l| l.contains("─[") && l.trim_end().ends_with(']') && l.matches(':').count() >= 2)
            .count();
        let problems = match err.kind() {
            DefsErrorKind::HiveInvalid { count, .. } => *count,
            _ => 1,
        };
        assert_eq!(
            locations, problems,
            "{name}: a problem without file:line:col in\n{rendered}"
        );
        assert!(!rendered.contains("SECRET"), "{name}: a secret in\n{rendered}");
        insta::assert_snapshot!(format!("hive_corpus_{name}"), rendered);
    }
}

/// The Wi-Fi fixture as many hive files are: the SSH public key only, and no hub key.
fn without_private_and_peer_keys() -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in FIXTURE_WIFI.lines() {
        if line.starts_with("    private_key: |") {
            skip = true;
            continue;
        }
        if skip && line.starts_with("      ") {
            continue;
        }
        skip = false;
        if line.contains("peer_public_key") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        !out.contains("SECRET-SSH") && !out.contains("peer_public_key"),
        "{out}"
    );
    out
}

const HUB_KEY: &str = "hubDefaultKeyFromW4bYaml0000000000000000000=";

fn defaults_yaml(extra: &str) -> String {
    format!(
        "hives:\n  image: //images:edge\n  defaults:\n    security:\n      wireguard: {{peer_public_key: \"{HUB_KEY}\"}}\n{extra}"
    )
}

#[test]
fn hives_defaults_are_merged_under_every_hive_file_and_the_hive_file_wins() {
    let own_key = "ownHubKeyWrittenInTheHiveFile00000000000000=";
    let south = FIXTURE_WIFI
        .replace("hive_AbCd1234", "hive_South001")
        .replace("hubPublicKeyFixture000000000000000000000000=", own_key);
    let w4b = defaults_yaml("    metadata: {notes: \"one fleet\"}\n    collector: {interval: 999}\n");
    let dir = workspace(&[
        ("w4b.yaml", &w4b),
        ("defs/images/edge.yaml", EDGE),
        ("defs/hives/north.yaml", &without_private_and_peer_keys()),
        ("defs/hives/south.yaml", &south),
        (
            "defs/images/lan.yaml",
            &format!("{EDGE}hive_file: ../../hives/hive_LanX0001.yaml\n"),
        ),
        (
            "hives/hive_LanX0001.yaml",
            &FIXTURE_LAN.replace(
                "    peer_public_key: \"hubPublicKeyFixture000000000000000000000000=\"\n",
                "",
            ),
        ),
    ]);
    let l = loader(&dir, &[], &[]);

    // A defaulted value: its value and its location are `w4b.yaml`'s.
    let north = resolve(&l, &label("//hives:north")).unwrap();
    let sec = north.config.hive.security.as_ref().unwrap();
    assert_eq!(sec.ssh.private_key, None, "the private key is optional");
    assert_eq!(sec.wireguard.peer_public_key.as_deref(), Some(HUB_KEY));
    assert_eq!(
        north.locations["hive.security.wireguard.peer_public_key"].to_string(),
        "w4b.yaml:5:36"
    );
    assert_eq!(north.config.hive.metadata.notes.as_deref(), Some("one fleet"));
    assert_eq!(
        north.locations["hive.metadata.notes"].to_string(),
        "w4b.yaml:6:23"
    );
    // Maps merge key by key, and what the hive file says wins.
    assert_eq!(north.config.hive.collector.interval, 60);
    assert_eq!(
        north.locations["hive.collector.interval"].to_string(),
        "defs/hives/north.yaml:20:13"
    );
    assert_eq!(
        north.locations["hive.security.wireguard.client_ip"].to_string(),
        "defs/hives/north.yaml:57:16"
    );
    let files: Vec<&str> = north.files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        files,
        ["defs/hives/north.yaml", "defs/images/edge.yaml", "w4b.yaml"]
    );
    // No secret among the secrets any more for the absent private key.
    assert!(north
        .config
        .secrets()
        .iter()
        .all(|s| s.name != "security.ssh.private_key"));

    // An overridden value: the hive file's key and location.
    let south = resolve(&l, &label("//hives:south")).unwrap();
    let wg = &south.config.hive.security.as_ref().unwrap().wireguard;
    assert_eq!(wg.peer_public_key.as_deref(), Some(own_key));
    assert!(
        south.locations["hive.security.wireguard.peer_public_key"]
            .to_string()
            .starts_with("defs/hives/south.yaml:"),
        "{:?}",
        south.locations["hive.security.wireguard.peer_public_key"]
    );

    // A hive file named by an image gets the defaults too, and so does `hive validate`.
    let lan = resolve(&l, &label("//images:lan")).unwrap();
    let wg = &lan.config.hive.security.as_ref().unwrap().wireguard;
    assert_eq!(wg.peer_public_key.as_deref(), Some(HUB_KEY));
    assert!(lan.files.iter().any(|(p, _)| p == "w4b.yaml"));
    let ws = Workspace::open(dir.path(), &BTreeMap::new()).unwrap();
    let checked = check_file(
        Some(&ws),
        &BTreeMap::new(),
        &dir.path().join("defs/hives/north.yaml"),
    )
    .unwrap();
    assert_eq!(checked, north.config.hive);
    // Without the workspace's defaults the same file lacks the hub's key.
    let err = check_file(None, &BTreeMap::new(), &dir.path().join("defs/hives/north.yaml")).unwrap_err();
    assert!(
        render(&err).contains("hives.defaults.security.wireguard"),
        "{}",
        render(&err)
    );
}

/// `security` is all or nothing: the fleet's hub key in `hives.defaults` completes the hives
/// that configure their security and leaves a hive without one without one, rather than
/// giving it half a section that fails the manager's rules.
#[test]
fn a_hive_without_security_gets_none_from_the_fleets_hub_key() {
    let open = FIXTURE_WIFI
        .replace("hive_AbCd1234", "hive_Open0001")
        .split("\nsecurity:")
        .next()
        .unwrap()
        .to_owned()
        + "\n";
    assert!(!open.contains("security"), "{open}");
    let dir = workspace(&[
        ("w4b.yaml", &defaults_yaml("")),
        ("defs/images/edge.yaml", EDGE),
        ("defs/hives/open.yaml", &open),
        ("defs/hives/north.yaml", &without_private_and_peer_keys()),
    ]);
    let l = loader(&dir, &[], &[]);
    let hive = resolve(&l, &label("//hives:open")).unwrap_or_else(|e| panic!("{}", render(&e)));
    assert_eq!(hive.config.hive.security, None);
    let north = resolve(&l, &label("//hives:north")).unwrap();
    let wg = &north.config.hive.security.as_ref().unwrap().wireguard;
    assert_eq!(wg.peer_public_key.as_deref(), Some(HUB_KEY));
    // `hive validate FILE` reads it the same way.
    let ws = Workspace::open(dir.path(), &BTreeMap::new()).unwrap();
    let checked = check_file(
        Some(&ws),
        &BTreeMap::new(),
        &dir.path().join("defs/hives/open.yaml"),
    );
    assert!(
        checked.is_ok(),
        "{}",
        checked.err().map(|e| render(&e)).unwrap_or_default()
    );
}

#[test]
fn a_bad_key_in_hives_defaults_is_reported_at_its_line_of_w4b_yaml_with_the_hives_own_problems() {
    let w4b = "hives:\n  image: //images:edge\n  defaults:\n    security:\n      wireguard: {peer_pubkey: \"x\"}\n    collector: {interval: [1]}\n";
    let hive = without_private_and_peer_keys().replace("version: \"1.0.0\"", "version: \"1.0\"");
    let dir = workspace(&[
        ("w4b.yaml", w4b),
        ("defs/images/edge.yaml", EDGE),
        ("defs/hives/north.yaml", &hive),
    ]);
    let err = resolve(&loader(&dir, &[], &[]), &label("//hives:north")).unwrap_err();
    let shown = render(&err);
    let DefsErrorKind::HiveInvalid { count, .. } = err.kind() else {
        panic!("{shown}")
    };
    // The hive's bad version, the unknown key in the defaults, and the hub's key that is
    // then missing. (The collector's interval is the hive file's: the default's bad value
    // is overridden, so it is no problem.)
    assert_eq!(*count, 3, "{shown}");
    assert!(
        shown.contains("unknown key `peer_pubkey` in `security.wireguard`"),
        "{shown}"
    );
    assert!(shown.contains("╭─[w4b.yaml:5:19]"), "{shown}");
    assert!(shown.contains("did you mean `peer_public_key`?"), "{shown}");
    assert!(shown.contains("╭─[defs/hives/north.yaml:4:10]"), "{shown}");

    // Not a map at all: reported when the workspace is opened.
    let dir = workspace(&[("w4b.yaml", "hives: {defaults: [a]}\n")]);
    let err = Workspace::open(dir.path(), &BTreeMap::new()).unwrap_err();
    assert!(render(&err).contains("w4b.yaml:1:19"), "{}", render(&err));
}

#[test]
fn secrets_in_hives_defaults_are_secrets_read_relative_to_w4b_yaml() {
    let hive = without_private_and_peer_keys().replace("password: \"SECRET-db-pass-1234567\", ", "");
    assert!(!hive.contains("SECRET-db-pass"), "{hive}");
    let w4b = defaults_yaml("      database: {password: {file: fleet/db.txt}}\n");
    let dir = workspace(&[
        ("w4b.yaml", &w4b),
        ("fleet/db.txt", "SECRET-fleet-db\n"),
        ("defs/images/edge.yaml", EDGE),
        ("defs/hives/north.yaml", &hive),
    ]);
    let r = resolve(&loader(&dir, &[], &[]), &label("//hives:north")).unwrap();
    let db = &r.config.hive.security.as_ref().unwrap().database;
    assert_eq!(db.password.expose(), "SECRET-fleet-db");
    assert_eq!(db.password.name, "security.database.password");
    assert_eq!(r.secret_files, ["fleet/db.txt"]);
    assert!(
        !format!("{:?} {}", r.config, serde_json::to_string(&r.config).unwrap()).contains("SECRET-fleet")
    );

    // A literal secret in the defaults is blanked in diagnostics like one in a hive file.
    let w4b = defaults_yaml("      database: {password: \"SECRET-fleet-literal\", pasword: x}\n");
    let dir = workspace(&[
        ("w4b.yaml", &w4b),
        ("defs/images/edge.yaml", EDGE),
        ("defs/hives/north.yaml", &hive),
    ]);
    let err = resolve(&loader(&dir, &[], &[]), &label("//hives:north")).unwrap_err();
    let shown = format!("{}\n{err:?}", render(&err));
    assert!(
        shown.contains("unknown key `pasword` in `security.database`"),
        "{shown}"
    );
    assert!(shown.contains("w4b.yaml:6:"), "{shown}");
    assert!(!shown.contains("SECRET-fleet-literal"), "{shown}");
}

#[test]
fn the_raw_hive_keys_are_the_keys_defs_accepts_for_a_hive() {
    assert_eq!(
        crate::defs::de::struct_fields::<super::super::raw::RawHive>(),
        crate::defs::Kind::Hive.keys()
    );
}

#[test]
fn a_hives_test_key_merges_over_its_images_and_is_checked_like_the_images() {
    let edge = format!("{EDGE}test:\n  units_active: [ssh.service]\n  timeout: 900\n  boot_timeout: 400\n");
    let north = format!(
        "{FIXTURE_WIFI}test:\n  units_active: [w4b-sensors.service]\n  boot_timeout: 500\n  commands:\n    - {{name: sensors, run: 'ls /dev/i2c-1'}}\n"
    );
    let dir = workspace(&[
        ("w4b.yaml", "hives: {image: //images:edge}\n"),
        ("defs/images/edge.yaml", &edge),
        ("defs/hives/north.yaml", &north),
    ]);
    let l = loader(&dir, &[], &[]);
    let r = resolve(&l, &label("//hives:north")).unwrap();
    let hive_test = r.test.as_ref().expect("the hive's test");
    assert!(
        hive_test
            .span
            .location()
            .to_string()
            .starts_with("defs/hives/north.yaml:"),
        "{}",
        hive_test.span.location()
    );
    let t = l.load(&label("//images:edge")).unwrap();
    let Target::Image(image) = &t.target else { panic!() };
    let merged = image
        .test
        .clone()
        .unwrap()
        .value
        .merged(hive_test.value.clone())
        .spec();
    assert_eq!(merged.units_active, ["ssh.service", "w4b-sensors.service"]);
    assert_eq!((merged.timeout, merged.boot_timeout), (900, 500));
    assert_eq!(merged.commands[0].name, "sensors");

    // Problems in a hive's `test:` are reported with the hive's others, at their lines.
    let bad = format!(
        "{FIXTURE_WIFI}test:\n  unit_active: [x.service]\n  commands:\n    - {{name: a, run: 'true', stdout_regex: '(a'}}\n"
    );
    let dir = workspace(&[
        ("w4b.yaml", "hives: {image: //images:edge}\n"),
        ("defs/images/edge.yaml", EDGE),
        ("defs/hives/north.yaml", &bad),
    ]);
    let err = resolve(&loader(&dir, &[], &[]), &label("//hives:north")).unwrap_err();
    let shown = render(&err);
    assert!(shown.contains("unknown key `unit_active`"), "{shown}");
    assert!(shown.contains("units_active"), "{shown}");
    assert!(shown.contains("defs/hives/north.yaml:"), "{shown}");
    // The regular expression is checked once the keys are right.
    let bad =
        format!("{FIXTURE_WIFI}test:\n  commands:\n    - {{name: a, run: 'true', stdout_regex: '(a'}}\n");
    let dir = workspace(&[
        ("w4b.yaml", "hives: {image: //images:edge}\n"),
        ("defs/images/edge.yaml", EDGE),
        ("defs/hives/north.yaml", &bad),
    ]);
    let err = resolve(&loader(&dir, &[], &[]), &label("//hives:north")).unwrap_err();
    let shown = render(&err);
    assert!(shown.contains("not a valid regular expression"), "{shown}");

    // An image's `hive:` section may carry a `test:` too.
    let lan = format!(
        "{EDGE}hive:\n{}",
        FIXTURE_LAN
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
            + "  test: {units_active: [lan.service]}\n"
    );
    let dir = workspace(&[("w4b.yaml", ""), ("defs/images/lan.yaml", &lan)]);
    let r = resolve(&loader(&dir, &[], &[]), &label("//images:lan")).unwrap();
    assert_eq!(r.test.unwrap().units_active, ["lan.service"]);
}
