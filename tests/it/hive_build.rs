//! Hive images end to end: the two fixture hives of the hive configuration manager's format
//! (`tests/hives/`: one on Wi-Fi, one on a static LAN) build on a Raspberry-Pi-OS-like base
//! into images whose filesystems, read back with the real tools, hold exactly the files,
//! owners and modes the modules promise; one hive value changed rebuilds only what reads
//! it; and no secret value reaches a manifest, a record, a log, `why`, or the remote cache.

#![allow(clippy::disallowed_methods)] // Tests run the image tools and the binary.

use std::path::{Path, PathBuf};

use crate::env::TestEnv;
use crate::http::TestServer;
use crate::testbase::sh;

pub(crate) const WIFI: &str = "hive_AbCd1234";
const LAN: &str = "hive_LanX0001";

/// Every secret value in the fixture hives.
pub(crate) const SECRETS: &[&str] = &[
    "SECRET-wifi-apiary",
    "SECRET-wifi-farm",
    "SECRET-SSH-PRIVATE-KEY-FIXTURE",
    "SECRETwgPrivateKeyFixture000000000000000000=",
    "SECRET-db-pass-1234567",
    "SECRET-admin-pw-16",
];

pub(crate) fn workspace(server: &TestServer) -> Option<TestEnv> {
    let env = crate::testbase::workspace_with_served_base(server)?;
    env.write("w4b.yaml", "hives: {image: //images:edge}\n");
    crate::testbase::stand_in_module_packages(&env);
    env.write(
        "defs/images/edge.yaml",
        "kind: image\nboard: //boards:pi4\nbase: //bases:test\nlayers: [//layers:packaged-units]\noutput: {compression: zstd, level: 3}\nservices:\n  sensor_manager:\n    source: {path: sensor-manager}\n",
    );
    env.write(
        "defs/images/sensor-manager/sensor_manager/__main__.py",
        "print('w4b sensor manager')\n",
    );
    for id in [WIFI, LAN] {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(repo.join(format!("tests/hives/{id}.yaml"))).unwrap();
        env.write(&format!("defs/hives/{id}.yaml"), &text);
    }
    Some(env)
}

/// The root partition of `out/<name>.img.zst`, extracted to a file.
pub(crate) fn root_partition(env: &TestEnv, name: &str) -> PathBuf {
    let img = env.root.path().join(format!("{name}.img"));
    sh(&format!(
        "zstd -q -d -f -o '{}' '{}'",
        img.display(),
        env.path(&format!("out/{name}.img.zst")).display()
    ));
    let t: serde_json::Value =
        serde_json::from_str(&sh(&format!("sfdisk --json '{}'", img.display()))).unwrap();
    let p = &t["partitiontable"]["partitions"][1];
    let root = env.root.path().join(format!("{name}.root"));
    sh(&format!(
        "dd if='{}' of='{}' bs=512 skip={} count={} status=none",
        img.display(),
        root.display(),
        p["start"],
        p["size"]
    ));
    sh(&format!("e2fsck -fn '{}'", root.display()));
    root
}

/// `debugfs` on an ext4 image.
pub(crate) fn debugfs(root: &Path, request: &str) -> String {
    sh(&format!(
        "debugfs -R '{request}' '{}' 2>/dev/null",
        root.display()
    ))
}

/// (mode, uid, gid) of a path, from `debugfs stat`.
fn stat(root: &Path, path: &str) -> (u32, u32, u32) {
    let s = debugfs(root, &format!("stat {path}"));
    let field = |name: &str| -> String {
        s.split(name)
            .nth(1)
            .unwrap_or_else(|| panic!("{path}: no `{name}` in {s}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let mode = u32::from_str_radix(&field("Mode:"), 8).unwrap();
    (
        mode & 0o7777,
        field("User:").parse().unwrap(),
        field("Group:").parse().unwrap(),
    )
}

#[test]
fn both_fixture_hives_build_into_images_with_the_promised_files() {
    let server = TestServer::start();
    let Some(env) = workspace(&server) else { return };
    let b = env.build(&[&format!("//hives:{WIFI}"), &format!("//hives:{LAN}")]);
    assert!(b.ok(), "{}", b.stderr());

    for (id, host) in [(WIFI, "w4b-abcd1234"), (LAN, "w4b-lanx0001")] {
        let root = root_partition(&env, id);
        assert_eq!(debugfs(&root, "cat /etc/hostname").trim(), host);
        assert!(debugfs(&root, "cat /etc/hosts").contains(host));
        assert_eq!(stat(&root, "/etc/wireguard/wg0.conf"), (0o600, 0, 0));
        assert!(debugfs(&root, "cat /etc/wireguard/wg0.conf").contains("AllowedIPs = 10.10.0.0/24"));
        assert_eq!(
            stat(&root, "/home/hiveadmin/.ssh/authorized_keys"),
            (0o600, 1000, 1000)
        );
        assert_eq!(stat(&root, "/home/hiveadmin/.ssh").0, 0o700);
        assert!(debugfs(&root, "cat /home/hiveadmin/.ssh/authorized_keys").contains("jo@example.com"));
        // The administrator, made at build time: `pi` (uid 1000) renamed, every other
        // line of the base's account files kept.
        let passwd = debugfs(&root, "cat /etc/passwd");
        assert!(
            passwd.contains("\nhiveadmin:x:1000:1000:,,,:/home/hiveadmin:/bin/bash\n"),
            "{passwd}"
        );
        assert!(
            passwd.starts_with("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:"),
            "{passwd}"
        );
        assert!(!passwd.contains("\npi:"), "{passwd}");
        let shadow = debugfs(&root, "cat /etc/shadow");
        let line = shadow
            .lines()
            .find(|l| l.starts_with("hiveadmin:"))
            .unwrap_or_else(|| panic!("{shadow}"));
        let fields: Vec<&str> = line.split(':').collect();
        assert!(fields[1].starts_with("$6$rounds=100000$"), "{line}");
        assert_eq!(
            fields[2], "19675",
            "the last change is the epoch's day (2023-11-14)"
        );
        assert!(!shadow.contains("SECRET"), "{shadow}");
        assert!(shadow.starts_with("root:*:19000:0:99999:7:::\n"), "{shadow}");
        assert_eq!(stat(&root, "/etc/shadow"), (0o640, 0, 42));
        let group = debugfs(&root, "cat /etc/group");
        for line in ["sudo:x:27:hiveadmin", "hiveadmin:x:1000:", "shadow:x:42:"] {
            assert!(group.lines().any(|l| l == line), "{line} in {group}");
        }
        // The groups the test base lacks are created (adm with Debian's gid).
        assert!(group.lines().any(|l| l == "adm:x:4:hiveadmin"), "{group}");
        for g in ["gpio", "i2c", "spi"] {
            assert!(
                group
                    .lines()
                    .any(|l| l.starts_with(&format!("{g}:x:")) && l.ends_with(":hiveadmin")),
                "{g} in {group}"
            );
        }
        assert_eq!(stat(&root, "/home/hiveadmin"), (0o700, 1000, 1000));
        assert_eq!(stat(&root, "/home/hiveadmin/.ssh"), (0o700, 1000, 1000));
        assert_eq!(
            debugfs(&root, "cat /home/hiveadmin/.bashrc"),
            "# ~/.bashrc\nalias ll=\"ls -l\"\n",
            "the base's home moved with the user"
        );
        assert!(!debugfs(&root, "ls /home").contains("pi"), "the old home is gone");
        assert!(
            debugfs(&root, "stat /etc/w4b/secrets/admin-password.hash").is_empty(),
            "no password hash outside /etc/shadow"
        );
        let firstboot = debugfs(&root, "ls /usr/local/lib/w4b/firstboot.d");
        assert!(
            !firstboot.contains("admin"),
            "no account on first boot: {firstboot}"
        );
        assert_eq!(stat(&root, "/usr/local/lib/w4b/firstboot").0, 0o755);
        assert!(debugfs(
            &root,
            "stat /etc/systemd/system/multi-user.target.wants/w4b-firstboot.service"
        )
        .contains("Type: symlink"));
        assert!(debugfs(&root, "ls /usr/local/lib/w4b/firstboot.d").contains("security-ssh-host-keys"));
        assert!(
            debugfs(&root, "cat /opt/w4b/sensor-manager/sensor_manager/__main__.py")
                .contains("sensor manager")
        );
        let sensors = debugfs(&root, "cat /etc/w4b/sensor_config.yaml");
        assert!(
            sensors.contains("temp_01") && sensors.contains("weight_01"),
            "{sensors}"
        );
        assert!(
            !debugfs(&root, "ls /etc/ssh").contains("ssh_host_"),
            "no host keys in the image"
        );
        assert_eq!(stat(&root, "/etc/nftables.conf").1, 0);
        let ssh = debugfs(&root, "cat /etc/ssh/sshd_config.d/10-w4b.conf");
        assert!(ssh.contains("PasswordAuthentication no"), "{ssh}");
    }
    let wifi = root_partition(&env, WIFI);
    let conns = debugfs(&wifi, "ls /etc/NetworkManager/system-connections");
    assert!(conns.matches(".nmconnection").count() >= 2, "{conns}");
    let lan = root_partition(&env, LAN);
    let conns = debugfs(&lan, "ls -l /etc/NetworkManager/system-connections");
    let file = conns
        .split_whitespace()
        .find(|w| w.ends_with(".nmconnection"))
        .unwrap_or_else(|| panic!("{conns}"))
        .to_owned();
    let keyfile = debugfs(
        &lan,
        &format!("cat /etc/NetworkManager/system-connections/{file}"),
    );
    assert!(keyfile.contains("192.168.1.100/24"), "{keyfile}");
    assert_eq!(
        stat(&lan, &format!("/etc/NetworkManager/system-connections/{file}")).0,
        0o600
    );

    // The generic validation and the hive checklist accept both images.
    for id in [WIFI, LAN] {
        let out = env.run(&["validate", &format!("out/{id}.img.zst"), "--board", "pi4"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        for rule in [
            "hostname",
            "units",
            "sshd",
            "wireguard",
            "networkmanager",
            "nftables",
            "secret_modes",
            "host_keys",
            "ports",
            "account",
        ] {
            assert!(
                stdout.contains(&format!("pass  {rule}")),
                "{rule} not passed: {stdout}"
            );
        }
        // The kernel's own view of the root filesystem agrees with our reader's (root only).
        if crate::kernel::is_root() && Path::new("/dev/loop-control").exists() {
            let out = env.run(&[
                "validate",
                &format!("out/{id}.img.zst"),
                "--board",
                "pi4",
                "--mount",
            ]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        } else {
            crate::oracle::unavailable(&format!("the kernel mount of {id} needs root and loop devices"));
        }
    }
}

#[test]
fn one_hive_value_rebuilds_only_the_modules_that_read_it() {
    let server = TestServer::start();
    let Some(env) = workspace(&server) else { return };
    let labels = [format!("//hives:{WIFI}"), format!("//hives:{LAN}")];
    let args: Vec<&str> = labels.iter().map(String::as_str).collect();
    let b = env.build(&args);
    assert!(b.ok(), "{}", b.stderr());

    // The collector interval is read by the sensor manager module only.
    let path = format!("defs/hives/{WIFI}.yaml");
    let text = String::from_utf8(env.read(&path)).unwrap();
    env.write(&path, &text.replacen("interval: 60", "interval: 30", 1));
    let again = env.build(&args);
    assert!(again.ok(), "{}", again.stderr());
    let ran = again.ran();
    let prefix = format!("//hives:{WIFI}#");
    assert!(ran.contains(&format!("{prefix}module:sensor_manager")), "{ran:?}");
    for untouched in [
        "module:system",
        "module:security",
        "module:software",
        "module:database",
        "module:monitoring",
    ] {
        assert!(
            !ran.contains(&format!("{prefix}{untouched}")),
            "{untouched} ran: {ran:?}"
        );
    }
    assert!(
        ran.iter().all(|s| !s.contains(LAN)),
        "the other hive's image rebuilt: {ran:?}"
    );
    let why = env.why(&labels[0]);
    let text = why.to_string();
    assert!(text.contains("module:sensor_manager"), "{text}");
    assert!(
        text.contains("\"interval\":30") || text.contains("interval"),
        "{text}"
    );
}

/// Every file below `dir`, recursively.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn no_secret_value_reaches_a_manifest_a_record_a_log_why_or_the_remote_cache() {
    let server = TestServer::start();
    let Some(env) = workspace(&server) else { return };
    let remote = env.root.path().join("remote");
    let (key, _) = env.keygen("ci");
    let key = key.to_str().unwrap();
    let label = format!("//hives:{WIFI}");
    let mut logs = Vec::new();
    let b = env.build(&[
        &label,
        "--remote-cache",
        remote.to_str().unwrap(),
        "--remote-sign-key",
        key,
    ]);
    assert!(b.ok(), "{}", b.stderr());
    // Regression: secret-free modules named the empty directory listing without storing
    // it, and every build warned that publishing them failed.
    assert!(!b.stderr().contains("remote cache failed"), "{}", b.stderr());
    logs.push(String::from_utf8_lossy(&b.output.stdout).into_owned());
    logs.push(b.stderr());
    // The administrator's password hash, read from the image: derived from a secret, it
    // may be in the image's /etc/shadow and nowhere else.
    let root = root_partition(&env, WIFI);
    let shadow = debugfs(&root, "cat /etc/shadow");
    let hash = shadow
        .lines()
        .find_map(|l| l.strip_prefix("hiveadmin:"))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("{shadow}"))
        .to_owned();
    assert!(hash.starts_with("$6$"), "{hash}");
    // A second build after a change, so `why` has something to explain.
    let path = format!("defs/hives/{WIFI}.yaml");
    let text = String::from_utf8(env.read(&path)).unwrap();
    env.write(&path, &text.replace("SECRET-wifi-farm", "SECRET-wifi-farm2"));
    let b = env.build(&[
        &label,
        "--remote-cache",
        remote.to_str().unwrap(),
        "--remote-sign-key",
        key,
    ]);
    assert!(b.ok(), "{}", b.stderr());
    logs.push(String::from_utf8_lossy(&b.output.stdout).into_owned());
    logs.push(b.stderr());
    for format in ["text", "json"] {
        let out = env.run(&["why", &label, "--format", format]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("module:system"),
            "why names the changed module"
        );
        logs.push(String::from_utf8_lossy(&out.stdout).into_owned());
        logs.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let show = env.run(&["hive", "show", &label]);
    logs.push(String::from_utf8_lossy(&show.stdout).into_owned());
    // An error message: a broken hive whose secrets are nearby.
    env.write(&path, &text.replace("priority: 2", "priority: 0"));
    let bad = env.run(&["build", &label]);
    assert!(!bad.status.success());
    logs.push(String::from_utf8_lossy(&bad.stderr).into_owned());
    env.write(&path, &text);

    let secrets: Vec<String> = SECRETS
        .iter()
        .map(|s| s.to_string())
        .chain(["SECRET-wifi-farm2".into(), hash.clone()])
        // The hash's digest part alone, in case something cut the `$6$…$` prefix off.
        .chain(hash.rsplit('$').next().map(str::to_owned))
        .collect();
    let remote_files = files_below(&remote);
    assert!(
        !remote_files.is_empty(),
        "the remote cache holds the shareable steps"
    );
    assert_no_secret(&env, WIFI, &logs, remote_files, &secrets);
}

/// No secret in any log, nor in the manifest and the other files of `out/` beside the
/// image, the local cache's records and build histories (what `why` reads), or `extra`
/// files (a remote cache). The image itself, and the local cache's blobs of it, carry
/// secrets by design.
fn assert_no_secret(env: &TestEnv, id: &str, logs: &[String], extra: Vec<PathBuf>, secrets: &[String]) {
    for (i, log) in logs.iter().enumerate() {
        for s in secrets {
            assert!(!log.contains(s.as_str()), "log {i} shows `{s}`:\n{log}");
        }
    }
    let manifest = env.path(&format!("out/{id}.manifest.json"));
    assert!(manifest.is_file(), "no manifest at {}", manifest.display());
    let mut files: Vec<PathBuf> = files_below(&env.path("out"))
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".img.zst"))
        .collect();
    let records = files_below(&env.cache.join("v1/records"));
    assert!(
        records.len() > 10,
        "the local records are where the test looks: {records:?}"
    );
    files.extend(records);
    files.extend(files_below(&env.cache.join("v1/meta")).into_iter().filter(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("history"))
    }));
    files.extend(extra);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for s in secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "`{s}` found in {}",
                f.display()
            );
        }
    }
}

/// The Wi-Fi fixture hive as many hive files are: the SSH public key only (no private
/// key), and no hub key (`peer_public_key`): that comes from `hives.defaults`.
fn public_key_only_hive() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join(format!("tests/hives/{WIFI}.yaml"))).unwrap();
    let mut out = String::new();
    let mut in_private_key = false;
    for line in text.lines() {
        if line.starts_with("    private_key: |") {
            in_private_key = true;
            continue;
        }
        if in_private_key && line.starts_with("      ") {
            continue;
        }
        in_private_key = false;
        if !line.contains("peer_public_key") {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(!out.contains("SECRET-SSH-PRIVATE") && !out.contains("peer_public_key"));
    out
}

const HUB: &str = "hubKeyFromTheFleetDefaults00000000000000000=";
const HUB2: &str = "hubKeyAfterTheHubWasReplaced000000000000000=";

fn fleet_defaults(hub: &str) -> String {
    format!(
        "hives:\n  image: //images:edge\n  defaults:\n    security:\n      wireguard: {{peer_public_key: \"{hub}\"}}\n"
    )
}

#[test]
fn a_hive_with_only_the_ssh_public_key_gets_the_hubs_key_from_hives_defaults() {
    let server = TestServer::start();
    let Some(env) = workspace(&server) else { return };
    env.write("w4b.yaml", &fleet_defaults(HUB));
    env.write(&format!("defs/hives/{WIFI}.yaml"), &public_key_only_hive());
    let label = format!("//hives:{WIFI}");
    let mut logs = Vec::new();
    let b = env.build(&[&label]);
    assert!(b.ok(), "{}", b.stderr());
    logs.push(String::from_utf8_lossy(&b.output.stdout).into_owned());
    logs.push(b.stderr());

    let root = root_partition(&env, WIFI);
    assert_eq!(stat(&root, "/etc/wireguard/wg0.conf"), (0o600, 0, 0));
    let wg = debugfs(&root, "cat /etc/wireguard/wg0.conf");
    assert!(wg.contains(&format!("PublicKey = {HUB}")), "{wg}");
    assert!(
        debugfs(&root, "cat /home/hiveadmin/.ssh/authorized_keys").contains("jo@example.com"),
        "the public keys still reach the admin"
    );
    // The manifest names `w4b.yaml` among the definition files.
    let manifest = String::from_utf8(env.read(&format!("out/{WIFI}.manifest.json"))).unwrap();
    assert!(manifest.contains("w4b.yaml"), "{manifest}");

    // The fleet's hub key changes: only what reads it rebuilds, and `why` names the line
    // of `w4b.yaml` it came from.
    env.write("w4b.yaml", &fleet_defaults(HUB2));
    let again = env.build(&[&label]);
    assert!(again.ok(), "{}", again.stderr());
    logs.push(String::from_utf8_lossy(&again.output.stdout).into_owned());
    logs.push(again.stderr());
    let ran = again.ran();
    assert!(ran.contains(&format!("{label}#module:security")), "{ran:?}");
    assert!(!ran.contains(&format!("{label}#module:system")), "{ran:?}");
    let root = root_partition(&env, WIFI);
    assert!(debugfs(&root, "cat /etc/wireguard/wg0.conf").contains(&format!("PublicKey = {HUB2}")));
    let why = env.run(&["why", &label]);
    assert!(why.status.success(), "{}", String::from_utf8_lossy(&why.stderr));
    let text = String::from_utf8_lossy(&why.stdout).into_owned();
    assert!(text.contains("module:security"), "{text}");
    assert!(
        text.contains("w4b.yaml:5:36"),
        "why names the default's line: {text}"
    );
    assert!(text.contains(HUB2), "{text}");
    logs.push(text);
    let json = env.why(&label).to_string();
    assert!(json.contains("w4b.yaml:5:36"), "{json}");
    logs.push(json);

    let secrets: Vec<String> = SECRETS
        .iter()
        .filter(|s| !s.contains("SSH-PRIVATE"))
        .map(|s| s.to_string())
        .collect();
    assert_no_secret(&env, WIFI, &logs, Vec::new(), &secrets);
}
