//! `w4b hive new` and the fleet commands, end to end through the binary: answered through a
//! pseudo-terminal and run with `--yes` and no terminal; the credentials judged by the
//! reference tools (`wg pubkey`, `ssh-keygen -y`); the next free VPN address for the next
//! hive; duplicates refused naming both files; `hive list`, `hive peers`, `hive keys`; and
//! the image of a new hive carrying its own keys.

#![allow(clippy::disallowed_methods)] // Tests run the binary and the oracles.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::env::TestEnv;

/// The hub's key and endpoint for every hive, as an operator writes them once.
const W4B_YAML: &str = "hives:\n  image: //images:edge\n  defaults:\n    security:\n      wireguard: {peer_public_key: \"hubPublicKeyFixture000000000000000000000000=\", endpoint: \"hub.example.org:51820\"}\n";

fn fleet_workspace() -> TestEnv {
    let env = TestEnv::new();
    env.write("w4b.yaml", W4B_YAML);
    env.write("defs/images/edge.yaml", "kind: image\nbase: scratch\n");
    env
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `w4b hive new --yes ARGS…` with no terminal: the new hive file's workspace path.
fn new_hive(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["hive", "new", "--yes"];
    all.extend_from_slice(args);
    let out = env.command().args(&all).stdin(Stdio::null()).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    stdout.trim().to_owned()
}

/// The hive id of a hive file path (`defs/hives/hive_X.yaml`).
fn id_of(file: &str) -> String {
    Path::new(file)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The text after `key: ` on the first line that has it, unquoted.
fn yaml_value(yaml: &str, key: &str) -> String {
    let line = yaml
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no `{key}` in {yaml}"));
    line.split_once(':')
        .unwrap()
        .1
        .trim()
        .trim_matches('"')
        .to_owned()
}

/// The WireGuard public key of a hive file `hive new` wrote (the `public_key` that is not
/// the SSH key).
fn wg_public(yaml: &str) -> String {
    yaml.lines()
        .filter(|l| l.trim_start().starts_with("public_key:") && !l.contains("ssh-"))
        .map(|l| l.split_once(':').unwrap().1.trim().trim_matches('"').to_owned())
        .next()
        .unwrap_or_else(|| panic!("no WireGuard public key in {yaml}"))
}

#[test]
fn hive_new_with_flags_and_no_terminal_writes_a_valid_hive_with_working_credentials() {
    let env = fleet_workspace();
    // Without `--yes` and without a terminal: an error that names the fix.
    let out = env
        .command()
        .args(["hive", "new"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("w4b::hive::no_terminal") && stderr.contains("--yes"),
        "{stderr}"
    );

    let file = new_hive(&env, &["--name", "Lindenhof Apiary"]);
    let id = id_of(&file);
    assert!(file.starts_with("defs/hives/hive_") && id.len() == 13, "{file}");
    let yaml = String::from_utf8(env.read(&file)).unwrap();
    assert_eq!(yaml_value(&yaml, "hive_id"), id);
    assert_eq!(yaml_value(&yaml, "name"), "Lindenhof Apiary");
    assert_eq!(yaml_value(&yaml, "client_ip"), "10.10.0.2/32");
    // Secrets in 0600 files, referred to, never inline.
    for f in ["ssh_ed25519", "wireguard.key", "db_password", "admin_password"] {
        use std::os::unix::fs::PermissionsExt as _;
        let p = env.path(&format!("secrets/{id}/{f}"));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
        let secret = std::fs::read_to_string(&p).unwrap();
        let first = secret.lines().nth(1).or(secret.lines().next()).unwrap();
        assert!(!yaml.contains(first), "{f} is inline");
        assert!(
            yaml.contains(&format!("{{file: \"../../secrets/{id}/{f}\"}}")),
            "{yaml}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(env.path(&format!("secrets/{id}/db_password")))
            .unwrap()
            .trim()
            .len(),
        20
    );
    assert_eq!(
        std::fs::read_to_string(env.path(&format!("secrets/{id}/admin_password")))
            .unwrap()
            .trim()
            .len(),
        16
    );

    // The hive validates, as a file and as a target.
    for target in [file.clone(), format!("//hives:{id}")] {
        let out = env.run(&["hive", "validate", &target]);
        assert!(out.status.success(), "{}", text(&out).1);
    }

    // The reference tools derive the public keys written into the hive file.
    if crate::oracle::have("wg") {
        let mut wg = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let private = std::fs::read(env.path(&format!("secrets/{id}/wireguard.key"))).unwrap();
        wg.stdin.take().unwrap().write_all(&private).unwrap();
        let out = wg.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            wg_public(&yaml),
            "the WireGuard public key"
        );
    }
    if crate::oracle::have("ssh-keygen") {
        let out = crate::oracle::run_ok(
            Command::new("ssh-keygen")
                .arg("-y")
                .arg("-f")
                .arg(env.path(&format!("secrets/{id}/ssh_ed25519"))),
        );
        let derived = String::from_utf8_lossy(&out.stdout);
        let key = |line: &str| line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let written = yaml
            .lines()
            .find(|l| l.contains("ssh-ed25519"))
            .unwrap()
            .split_once(": ")
            .unwrap()
            .1
            .trim_matches('"')
            .to_owned();
        assert_eq!(key(&derived), key(&written));
        assert!(written.ends_with(&format!(" hive-{id}")), "{written}");
    }
}

#[test]
fn the_next_hive_gets_the_next_address_and_duplicates_are_refused_naming_both_files() {
    let env = fleet_workspace();
    let first = new_hive(&env, &["--name", "One"]);
    let second = new_hive(&env, &["--name", "Two", "--timezone", "Europe/Berlin"]);
    let (a, b) = (id_of(&first), id_of(&second));
    let yaml_b = String::from_utf8(env.read(&second)).unwrap();
    assert_eq!(yaml_value(&yaml_b, "client_ip"), "10.10.0.3/32");

    let out = env.run(&["hive", "validate", "//hives/..."]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("2 hives valid"), "{}", text(&out).0);

    // `hive list` as JSON, in label order; `hive peers` for the hub.
    let out = env.run(&["hive", "list", "--message-format", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut expected = [
        (a.clone(), "10.10.0.2/32", "One"),
        (b.clone(), "10.10.0.3/32", "Two"),
    ];
    expected.sort();
    for (row, (id, ip, name)) in rows.as_array().unwrap().iter().zip(&expected) {
        assert_eq!(row["hive_id"], *id);
        assert_eq!(row["vpn_address"], *ip);
        assert_eq!(row["name"], *name);
        assert_eq!(row["image"], "//images:edge");
        assert_eq!(row["last_build"], serde_json::Value::Null);
    }
    let table = text(&env.run(&["hive", "list"])).0;
    assert!(
        table.starts_with("HIVE ") && table.contains("10.10.0.3/32") && table.contains("never"),
        "{table}"
    );
    let peers = text(&env.run(&["hive", "peers"])).0;
    assert!(
        peers.contains(&format!(
            "# {b} Two\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.10.0.3/32\n",
            wg_public(&yaml_b)
        )),
        "{peers}"
    );
    assert!(peers.contains("AllowedIPs = 10.10.0.3/32"), "{peers}");
    assert_eq!(peers.matches("[Peer]").count(), 2);

    // A copied hive file: its id and its address twice, each reported at both files.
    let copy = "defs/hives/copy.yaml";
    env.write(copy, &String::from_utf8(env.read(&first)).unwrap());
    let out = env.run(&["hive", "validate", "//hives/..."]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("w4b::hive::duplicate_id"), "{stderr}");
    assert!(stderr.contains("w4b::hive::duplicate_address"), "{stderr}");
    // Diagnostics wrap at 100 columns: compare without white space and margins.
    let squash = |t: &str| {
        t.chars()
            .filter(|c| !c.is_whitespace() && *c != '|')
            .collect::<String>()
    };
    let flat = squash(&stderr);
    let (x, y) = if "defs/hives/copy.yaml" < first.as_str() {
        ("defs/hives/copy.yaml", first.as_str())
    } else {
        (first.as_str(), "defs/hives/copy.yaml")
    };
    assert!(
        flat.contains(&squash(&format!("hive id `{a}` is used by both `{x}` and `{y}`"))),
        "{stderr}"
    );
    assert!(
        flat.contains(&squash(&format!(
            "VPN address `10.10.0.2/32` is given to both `{x} ({a})` and `{y} ({a})`"
        ))),
        "{stderr}"
    );
    assert!(
        flat.contains(&squash("`10.10.0.4/32` is the lowest free one")),
        "{stderr}"
    );
    // The next new hive still gets a free address, also when a `--set` would give every
    // hive one address (`10.10.0.3` then looked free): the files are read as written. (The
    // `--set` also reaches the image, which has no such key, so the new hive's own check
    // fails; the address is what this is about.)
    std::fs::remove_file(env.path(copy)).unwrap();
    let out = env
        .command()
        .args(["hive", "new", "--yes", "--name", "Four"])
        .args(["--set", "security.wireguard.client_ip=10.10.0.2/32"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(stderr.contains("at VPN address `10.10.0.4`"), "{stderr}");
    std::fs::remove_file(env.path(stdout.trim())).unwrap();
    let third = new_hive(&env, &["--name", "Three"]);
    assert_eq!(
        yaml_value(&String::from_utf8(env.read(&third)).unwrap(), "client_ip"),
        "10.10.0.4/32"
    );

    // An address outside the subnet is the hive's own problem, with the subnet named.
    let yaml = String::from_utf8(env.read(&third))
        .unwrap()
        .replace("10.10.0.4/32", "10.11.0.4/32");
    env.write(&third, &yaml);
    let out = env.run(&["hive", "validate", "//hives/..."]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    let flat = squash(&stderr);
    assert!(
        flat.contains(&squash("`10.11.0.4/32` is not a client address of the VPN")),
        "{stderr}"
    );
    assert!(flat.contains("hives.vpn"), "{stderr}");
}

#[test]
fn two_hive_news_at_once_take_turns_and_never_share_an_address() {
    let env = fleet_workspace();
    let first = new_hive(&env, &["--name", "One"]);
    // Another `hive new` holds the workspace: this one waits for it…
    let hives = std::fs::File::open(env.path("defs/hives")).unwrap();
    rustix::fs::flock(&hives, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let mut child = env
        .command()
        .args(["hive", "new", "--yes", "--name", "Two"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (mut pipe, seen) = (child.stderr.take().unwrap(), Arc::clone(&stderr));
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                seen.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stderr
        .lock()
        .unwrap()
        .contains("waiting for another `w4b hive new`")
    {
        assert!(Instant::now() < deadline, "{}", stderr.lock().unwrap());
        assert!(child.try_wait().unwrap().is_none(), "{}", stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    // …while the other one writes its hive, taking the next address, 10.10.0.3…
    let other = String::from_utf8(env.read(&first))
        .unwrap()
        .replace("10.10.0.2/32", "10.10.0.3/32");
    env.write("defs/hives/other.yaml", &other);
    drop(hives);
    // …and then reads the fleet again: it takes the one after.
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let stderr = stderr.lock().unwrap().clone();
    assert!(out.status.success(), "{stderr}");
    let second = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        yaml_value(&String::from_utf8(env.read(&second)).unwrap(), "client_ip"),
        "10.10.0.4/32",
        "{stderr}"
    );
}

/// White space and miette's margins out: diagnostics wrap at 100 columns.
fn squash(t: &str) -> String {
    t.chars().filter(|c| !c.is_whitespace() && *c != '|').collect()
}

#[test]
fn one_hive_is_validated_against_the_other_files_and_an_overriding_variable_is_named() {
    let env = fleet_workspace();
    let first = new_hive(&env, &["--name", "One"]);
    let second = new_hive(&env, &["--name", "Two"]);
    let (a, b) = (id_of(&first), id_of(&second));
    let out = env.run(&["hive", "validate", &format!("//hives:{b}")]);
    assert!(out.status.success(), "{}", text(&out).1);

    // A copied file validated on its own: its id and address are the first hive's.
    let copy = "defs/hives/copy.yaml";
    env.write(copy, &String::from_utf8(env.read(&first)).unwrap());
    let out = env.run(&["hive", "validate", "//hives:copy"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stdout.contains("is valid"), "{stdout}");
    let flat = squash(&stderr);
    assert!(
        flat.contains(&squash(&format!(
            "hive id `{a}` is used by both `{first}` and `{copy}`"
        ))),
        "{stderr}"
    );
    assert!(
        flat.contains(&squash(&format!(
            "VPN address `10.10.0.2/32` is given to both `{first} ({a})` and `{copy} ({a})`"
        ))),
        "{stderr}"
    );
    std::fs::remove_file(env.path(copy)).unwrap();

    // `W4B_HIVE_ID` gives the second hive the first one's id: the variable is named.
    let out = env
        .command()
        .args(["hive", "validate", &format!("//hives:{b}")])
        .env("W4B_HIVE_ID", &a)
        .output()
        .unwrap();
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        squash(&stderr).contains(&squash(&format!(
            "hive id `{a}` is used by both `{first}` and `{second}`, set for `{second}` by the environment variable `W4B_HIVE_ID`"
        ))),
        "{stderr}"
    );
    // Over the fleet it gives every hive one id: said so, with the way out.
    let out = env
        .command()
        .args(["hive", "validate", "//hives/..."])
        .env("W4B_HIVE_ID", "hive_Same0000")
        .output()
        .unwrap();
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let flat = squash(&stderr);
    assert!(
        flat.contains(&squash("both set by the environment variable `W4B_HIVE_ID`")),
        "{stderr}"
    );
    assert!(flat.contains(&squash("env -u W4B_HIVE_ID")), "{stderr}");

    // A fleet build with it is refused before anything is built: images that would share
    // one id (one host name on the VPN) are never made.
    let out = env
        .command()
        .args(["build", "//hives/..."])
        .env("W4B_HIVE_ID", "hive_Same0000")
        .output()
        .unwrap();
    let stderr = text(&out).1;
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    let flat = squash(&stderr);
    assert!(flat.contains("w4b::hive::fleet_conflict"), "{stderr}");
    assert!(
        flat.contains(&squash("both set by the environment variable `W4B_HIVE_ID`")),
        "{stderr}"
    );
    assert!(!stderr.contains("running "), "a step ran:\n{stderr}");
    assert!(!env.path("out").exists(), "something was exported");
}

#[test]
fn an_inline_password_beside_a_duplicate_address_is_masked_in_the_diagnostic() {
    let env = fleet_workspace();
    let first = new_hive(&env, &["--name", "One", "--inline-secrets"]);
    let yaml = String::from_utf8(env.read(&first)).unwrap();
    // The database password is on the line after `client_ip`: in the snippet's context.
    let password = yaml
        .lines()
        .find(|l| l.contains("database: {"))
        .and_then(|l| l.split("password: \"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no inline database password in {yaml}"))
        .to_owned();
    assert!(password.len() >= 16, "{password}");
    env.write("defs/hives/copy.yaml", &yaml);
    for pattern in ["//hives/...", "//hives:copy"] {
        let log = env.path(&format!("validate-{}.log", pattern.len()));
        let out = env
            .command()
            .args(["--log-file", log.to_str().unwrap(), "hive", "validate", pattern])
            .output()
            .unwrap();
        let stderr = text(&out).1;
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("w4b::hive::duplicate_address"), "{stderr}");
        assert!(stderr.contains("password: \"***\""), "{stderr}");
        assert!(!stderr.contains(&password), "{pattern}: {stderr}");
        // The log file has the problems too, masked the same way.
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.contains("[w4b::hive::duplicate_address]"), "{logged}");
        assert!(!logged.contains(&password), "{logged}");
    }
}

#[test]
fn hive_keys_rotate_replaces_only_the_credentials_asked_for() {
    let env = fleet_workspace();
    let file = new_hive(&env, &["--name", "Rotating"]);
    let id = id_of(&file);
    let before = String::from_utf8(env.read(&file)).unwrap();
    let secret = |f: &str| std::fs::read_to_string(env.path(&format!("secrets/{id}/{f}"))).unwrap();
    let (ssh, wg, db, admin) = (
        secret("ssh_ed25519"),
        secret("wireguard.key"),
        secret("db_password"),
        secret("admin_password"),
    );
    let out = env.run(&["hive", "keys", &format!("//hives:{id}"), "--rotate", "wireguard"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let after = String::from_utf8(env.read(&file)).unwrap();
    assert_ne!(secret("wireguard.key"), wg);
    assert_eq!(
        (
            secret("ssh_ed25519"),
            secret("db_password"),
            secret("admin_password")
        ),
        (ssh.clone(), db, admin)
    );
    // One line of the hive file changed: the WireGuard public key.
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(x, y)| x != y)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].0.trim_start().starts_with("public_key:"));
    assert_eq!(before.lines().count(), after.lines().count());
    let out = env.run(&["hive", "validate", &format!("//hives:{id}")]);
    assert!(out.status.success(), "{}", text(&out).1);

    let out = env.run(&[
        "hive",
        "keys",
        &format!("//hives:{id}"),
        "--rotate",
        "ssh",
        "--rotate",
        "passwords",
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_ne!(secret("ssh_ed25519"), ssh);
    let public = String::from_utf8(env.read(&file)).unwrap();
    let line = public.lines().find(|l| l.contains("ssh-ed25519")).unwrap();
    assert!(line.contains(secret("ssh_ed25519.pub").trim()), "{line}");
}

/// A pseudo-terminal whose output is collected by a thread, so the test can wait for a
/// prompt and answer it.
struct Pty {
    master: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    /// Opens a pseudo-terminal and returns it with its terminal side, for the child's
    /// standard streams.
    fn open() -> (Pty, std::fs::File) {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let terminal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(PathBuf::from(name.to_string_lossy().into_owned()))
            .unwrap();
        let master = std::fs::File::from(master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Reading ends with EIO once the child's side is closed.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        (Pty { master, seen }, terminal)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits until the `n`th (1-based) occurrence of `prompt` has been shown, then types
    /// `answer` and Enter.
    fn answer(&mut self, prompt: &str, n: usize, answer: &str) {
        let start = Instant::now();
        while self.text().matches(prompt).count() < n {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no prompt `{prompt}` (#{n}) in:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.master.write_all(format!("{answer}\n").as_bytes()).unwrap();
    }
}

#[test]
fn hive_new_on_a_terminal_asks_checks_the_answers_and_writes_them() {
    let env = fleet_workspace();
    let (mut pty, terminal) = Pty::open();
    let mut child = env
        .command()
        .args(["hive", "new"])
        .stdin(terminal.try_clone().unwrap())
        .stdout(terminal.try_clone().unwrap())
        .stderr(terminal)
        .spawn()
        .unwrap();
    pty.answer("Hive name: ", 1, "Heath Apiary");
    pty.answer("Location (address): ", 1, "Heideweg 3, Celle");
    pty.answer("Latitude [0]: ", 1, "95");
    pty.answer("Latitude [0]: ", 2, "52.62");
    pty.answer("Longitude [0]: ", 1, "10.08");
    pty.answer("Time zone (empty: the image's): ", 1, "Europe/Nowhere");
    pty.answer("Time zone (empty: the image's): ", 2, "Europe/Berlin");
    pty.answer("Image to build on [//images:edge]: ", 1, ":nope");
    pty.answer("Image to build on [//images:edge]: ", 2, "");
    pty.answer("Administrator's name [W4B Operator]: ", 1, "Jo Doe");
    pty.answer(
        "Administrator's e-mail [operator@example.org]: ",
        1,
        "jo@example.com",
    );
    pty.answer("Administrator's login [operator]: ", 1, "");
    pty.answer(
        "Administrator's SSH public key (empty: none): ",
        1,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJoDoeJoDoeJoDoeJoDoeJoDoeJoDoeJoDoeJoDoe0 jo@laptop",
    );
    let status = child.wait().unwrap();
    // Let the reader thread take the last output.
    std::thread::sleep(Duration::from_millis(100));
    let shown = pty.text();
    assert!(status.success(), "{shown}");
    assert!(
        shown.contains("`95` is not a number of degrees from -90 to 90"),
        "{shown}"
    );
    assert!(
        shown.contains("`Europe/Nowhere` is not an IANA time zone"),
        "{shown}"
    );
    let file = shown
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("defs/hives/hive_") && l.ends_with(".yaml"))
        .unwrap_or_else(|| panic!("no file named in {shown}"))
        .to_owned();
    let yaml = String::from_utf8(env.read(&file)).unwrap();
    assert_eq!(yaml_value(&yaml, "name"), "Heath Apiary");
    assert_eq!(yaml_value(&yaml, "address"), "Heideweg 3, Celle");
    assert_eq!(yaml_value(&yaml, "latitude"), "52.62");
    assert_eq!(yaml_value(&yaml, "timezone"), "Europe/Berlin");
    assert!(
        yaml.contains("- name: \"Jo Doe\"") && yaml.contains("username: \"operator\""),
        "{yaml}"
    );
    assert!(yaml.contains("jo@laptop"), "{yaml}");
    assert!(
        !yaml.contains("\nimage:"),
        "the workspace's image is not repeated: {yaml}"
    );
    let out = env.run(&["hive", "validate", &file]);
    assert!(out.status.success(), "{}", text(&out).1);
}

/// A new hive builds, and its image holds its own keys: the SSH public key authorised for
/// the administrator, the WireGuard private key and address in `wg0.conf`.
#[test]
fn a_new_hive_builds_into_an_image_with_its_own_keys() {
    let server = crate::http::TestServer::start();
    let Some(env) = crate::testbase::workspace_with_served_base(&server) else {
        return;
    };
    env.write("w4b.yaml", W4B_YAML);
    crate::testbase::stand_in_module_packages(&env);
    env.write(
        "defs/images/edge.yaml",
        "kind: image\nboard: //boards:pi4\nbase: //bases:test\nlayers: [//layers:packaged-units]\noutput: {compression: zstd, level: 3}\nservices:\n  sensor_manager:\n    source: {path: sensor-manager}\n",
    );
    env.write(
        "defs/images/sensor-manager/sensor_manager/__main__.py",
        "print('w4b sensor manager')\n",
    );
    let file = new_hive(
        &env,
        &["--name", "Lindenhof Apiary", "--timezone", "Europe/Berlin"],
    );
    let id = id_of(&file);
    let b = env.build(&[&format!("//hives:{id}")]);
    assert!(b.ok(), "{}", b.stderr());
    let root = crate::hive_build::root_partition(&env, &id);
    let ssh_public = std::fs::read_to_string(env.path(&format!("secrets/{id}/ssh_ed25519.pub"))).unwrap();
    let keys = crate::hive_build::debugfs(&root, "cat /home/hiveadmin/.ssh/authorized_keys");
    assert!(keys.contains(ssh_public.trim()), "{keys}");
    let wg_private = std::fs::read_to_string(env.path(&format!("secrets/{id}/wireguard.key"))).unwrap();
    let conf = crate::hive_build::debugfs(&root, "cat /etc/wireguard/wg0.conf");
    assert!(
        conf.contains(&format!("PrivateKey = {}", wg_private.trim())),
        "wg0.conf lacks the hive's key"
    );
    assert!(
        conf.contains("Address = 10.10.0.2/32"),
        "wg0.conf lacks the hive's address"
    );
    assert!(conf.contains("Endpoint = hub.example.org:51820"));
    let hostname = crate::hive_build::debugfs(&root, "cat /etc/hostname");
    assert_eq!(
        hostname.trim(),
        format!("w4b-{}", id.trim_start_matches("hive_").to_lowercase())
    );
    // `hive list` names the build.
    let out = env.run(&["hive", "list", "--message-format", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows[0]["last_build"].is_string(), "{rows}");
}

/// `hives.vpn` in `w4b.yaml` moves the fleet: new hives get addresses of its subnet, and
/// they validate there.
#[test]
fn the_fleets_subnet_from_w4b_yaml_decides_the_addresses() {
    let env = fleet_workspace();
    env.write(
        "w4b.yaml",
        &W4B_YAML.replace(
            "hives:\n",
            "hives:\n  vpn: {subnet: 10.20.0.0/24, hub: 10.20.0.254}\n",
        ),
    );
    let first = new_hive(&env, &["--name", "One"]);
    let second = new_hive(&env, &["--name", "Two"]);
    for (file, ip) in [(&first, "10.20.0.1/32"), (&second, "10.20.0.2/32")] {
        let yaml = String::from_utf8(env.read(file)).unwrap();
        assert_eq!(yaml_value(&yaml, "client_ip"), ip);
    }
    let out = env.run(&["hive", "validate", "//hives/..."]);
    assert!(out.status.success(), "{}", text(&out).1);
}

/// Regression: an inline private key written as a `|` block (as the manager writes it)
/// stays a block when rotated, indented as before, and is a key `ssh-keygen` reads.
#[test]
fn rotating_an_inline_block_key_keeps_the_block_and_the_yaml_around_it() {
    let env = fleet_workspace();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = std::fs::read_to_string(repo.join("tests/hives/hive_AbCd1234.yaml")).unwrap();
    let written = env.write("defs/hives/hive_AbCd1234.yaml", &fixture);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&written, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run(&["hive", "keys", "//hives:hive_AbCd1234", "--rotate", "ssh"]);
    assert!(out.status.success(), "{}", text(&out).1);
    // A new private key inline: the file is no longer readable by others, and it says so.
    let mode = std::fs::metadata(&written).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", text(&out).1);
    assert!(
        text(&out).1.contains("its mode is now 0600 (was 0644)"),
        "{}",
        text(&out).1
    );
    let after = String::from_utf8(env.read("defs/hives/hive_AbCd1234.yaml")).unwrap();
    // Only the key lines changed; the line after the block is intact.
    assert!(
        after.contains("    private_key: |\n      -----BEGIN OPENSSH PRIVATE KEY-----\n"),
        "{after}"
    );
    assert!(
        after.contains("      -----END OPENSSH PRIVATE KEY-----\n    enable_password_auth: false\n"),
        "{after}"
    );
    let fixture_rest: Vec<&str> = fixture
        .lines()
        .filter(|l| !l.starts_with("      ") && !l.contains("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixture"))
        .collect();
    let after_rest: Vec<&str> = after
        .lines()
        .filter(|l| !l.starts_with("      ") && !l.contains("hive-hive_AbCd1234"))
        .collect();
    assert_eq!(fixture_rest, after_rest);
    let out = env.run(&["hive", "validate", "//hives:hive_AbCd1234"]);
    assert!(out.status.success(), "{}", text(&out).1);
    crate::oracle::require!("ssh-keygen");
    let key: String = after
        .lines()
        .skip_while(|l| !l.contains("BEGIN OPENSSH"))
        .take_while(|l| !l.contains("END OPENSSH"))
        .chain(std::iter::once("      -----END OPENSSH PRIVATE KEY-----"))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let path = env.root.path().join("rotated_key");
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(key.as_bytes()).unwrap();
    }
    let out = crate::oracle::run_ok(Command::new("ssh-keygen").arg("-y").arg("-f").arg(&path));
    let derived = String::from_utf8_lossy(&out.stdout);
    let derived_key = derived.split_whitespace().nth(1).unwrap();
    assert!(
        after.contains(&format!("ssh-ed25519 {derived_key} hive-hive_AbCd1234")),
        "{derived}"
    );
}
