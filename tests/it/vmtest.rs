//! `w4b test` against a real system: a minimal Debian bookworm arm64 disk
//! (`tests/support/make-vm-image.sh`: mmdebstrap, Debian's generic kernel and initramfs,
//! an ext4 root named by PARTUUID) booted in `qemu-system-aarch64 -M virt` under TCG.
//!
//! The fixture is built once and cached, compressed (about 200 MB), in [`CACHE`]; the
//! version in its name changes whenever the script does, and other versions are removed.
//! VM tests hold an exclusive file lock ([`LOCK`]) while they boot: two emulated arm64
//! machines at once on a 2-core runner would only make both miss their deadlines. Under
//! `CI` a missing `qemu-system-aarch64` (or anything the fixture needs) fails the test;
//! elsewhere it skips with a message.

#![allow(clippy::disallowed_methods)] // runs the w4b binary, mmdebstrap and pgrep

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::env::TestEnv;

/// Where the fixture is cached; the suffix is the fixture's version.
const CACHE: &str = "/tmp/w4b-test-vm-bookworm-arm64-v1";
const CACHE_PREFIX: &str = "w4b-test-vm-bookworm-arm64-";
/// The lock every VM test holds while it boots (and while the fixture is built).
const LOCK: &str = "/tmp/w4b-vmtest.lock";

/// Holds [`LOCK`] until dropped.
struct VmLock(#[allow(dead_code)] File);

fn vm_lock() -> VmLock {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .expect("open the VM test lock");
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).expect("lock");
    VmLock(f)
}

fn have_qemu() -> bool {
    crate::oracle::have("qemu-system-aarch64")
}

/// The compressed fixture image, built if it is not cached; `None` (a skip outside CI)
/// when this machine cannot build it. Call with the VM lock held.
fn fixture() -> Option<PathBuf> {
    let image = Path::new(CACHE).join("disk.img.zst");
    if image.exists() {
        return Some(image);
    }
    if !crate::kernel::is_root() {
        crate::oracle::unavailable("building the VM fixture needs root (mmdebstrap into a directory)");
        return None;
    }
    if !crate::oracle::have_all(&["mmdebstrap", "mkfs.ext4", "sfdisk", "zstd"]) {
        return None;
    }
    if let Err(e) = w4b::install::preflight::check_host(w4b::install::Arch::Arm64) {
        crate::oracle::unavailable(&format!("the host cannot run arm64 programs: {e}"));
        return None;
    }
    let Some(mirror) = crate::testbase::host_mirror("bookworm") else {
        crate::oracle::unavailable("no `deb` source for bookworm in the host's apt configuration");
        return None;
    };
    // Older versions of the fixture are dead weight.
    for old in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = old.file_name().to_string_lossy().into_owned();
        if name.starts_with(CACHE_PREFIX) && old.path() != Path::new(CACHE) {
            let _ = std::fs::remove_dir_all(old.path());
        }
    }
    std::fs::create_dir_all(CACHE).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/make-vm-image.sh");
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .arg(&image)
        .arg(&mirror)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make-vm-image.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("VM fixture built in {:?}", started.elapsed());
    Some(image)
}

fn sha256(path: &Path) -> String {
    let mut f = File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Processes whose command line mentions `needle` (other than this test's own).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let out = Command::new("pgrep").args(["-a", "-f", needle]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(str::to_owned)
        .collect()
}

/// `w4b test --message-format json ARGS…` with a private `TMPDIR`: the report and the
/// process's output.
fn w4b_test(env: &TestEnv, tmpdir: &Path, args: &[&str]) -> (Value, std::process::Output) {
    let mut cmd = env.command();
    cmd.env("TMPDIR", tmpdir)
        .args(["test", "--message-format", "json"])
        .args(args);
    let out = cmd.output().expect("spawn w4b");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, out)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check `{name}` in {report:#}"))
}

#[test]
fn the_debian_fixture_boots_and_every_check_passes() {
    if !have_qemu() {
        return;
    }
    let _lock = vm_lock();
    let Some(image) = fixture() else { return };
    let env = TestEnv::new();
    let tmpdir = env.root.path().join("tmp");
    std::fs::create_dir_all(&tmpdir).unwrap();
    let spec = env.write(
        "spec.json",
        r#"{"commands": [
              {"name": "hostname", "run": "cat /etc/hostname", "stdout_contains": "w4b-vmtest"},
              {"name": "root is the image", "run": "findmnt -n -o SOURCE /", "stdout_regex": "^/dev/vda1\\s*$"}
           ]}"#,
    );
    let logs = env.root.path().join("logs");
    let before = sha256(&image);
    let started = std::time::Instant::now();
    let (report, out) = w4b_test(
        &env,
        &tmpdir,
        &[
            image.to_str().unwrap(),
            "--spec",
            spec.to_str().unwrap(),
            "--unit-active",
            "systemd-journald.service",
            "--log",
            logs.to_str().unwrap(),
        ],
    );
    let whole = started.elapsed();
    assert!(
        out.status.success(),
        "{report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["schema"], "w4b.test/1");
    assert_eq!(report["passed"], true);
    assert_eq!(report["kernel"]["source"], "image");
    assert!(report["kernel"]["kernel"]
        .as_str()
        .unwrap()
        .starts_with("/boot/vmlinuz-"));
    for name in [
        "boot settles",
        "`multi-user.target` active",
        "no failed units",
        "unit `systemd-journald.service` active",
        "command `hostname`",
        "command `root is the image`",
    ] {
        assert_eq!(check(&report, name)["passed"], true, "{name}: {report:#}");
    }
    // The boot-time breakdown and the whole console were kept.
    let reached = report["boot_time"]["target_reached"].as_f64().unwrap();
    assert!(!report["blame"].as_array().unwrap().is_empty());
    let log = std::fs::read_to_string(logs.join("disk.boot.log")).unwrap();
    assert!(
        log.contains("Linux version"),
        "the boot log starts with the kernel"
    );
    assert_eq!(sha256(&image), before, "the image was modified");
    assert_eq!(
        std::fs::read_dir(&tmpdir).unwrap().count(),
        0,
        "temporary files were left"
    );
    eprintln!(
        "boot to multi-user.target: {reached:.1} s (systemd-analyze); whole test: {:.1} s; {}",
        whole.as_secs_f64(),
        report["boot_time"]
    );
}

#[test]
fn failing_checks_are_reported_with_their_output_and_the_vm_is_gone() {
    if !have_qemu() {
        return;
    }
    let _lock = vm_lock();
    let Some(compressed) = fixture() else { return };
    let env = TestEnv::new();
    let tmpdir = env.root.path().join("tmp");
    std::fs::create_dir_all(&tmpdir).unwrap();
    // A raw image: QEMU opens this very file, so this is where "never modified" matters.
    let image = env.root.path().join("raw.img");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -q -d -c '{}' | cp --sparse=always /dev/stdin '{}'",
            compressed.display(),
            image.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let before = sha256(&image);
    let spec = env.write(
        "spec.json",
        r#"{"commands": [
              {"name": "says oops", "run": "echo oops; echo to-stderr >&2; exit 1"},
              {"name": "wrong words", "run": "echo hello", "stdout_contains": "goodbye"},
              {"name": "writes", "run": "echo scribble > /etc/w4b-scribble && sync"}
           ]}"#,
    );
    let (report, out) = w4b_test(
        &env,
        &tmpdir,
        &[
            image.to_str().unwrap(),
            "--spec",
            spec.to_str().unwrap(),
            "--unit-active",
            "w4b-no-such.service",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["passed"], false);
    assert_eq!(check(&report, "boot settles")["passed"], true);
    let oops = check(&report, "command `says oops`");
    assert_eq!(oops["passed"], false);
    assert_eq!(oops["reason"], "exited with status 1, expected 0");
    let log: Vec<&str> = oops["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(log, ["stdout:", "  oops", "stderr:", "  to-stderr"]);
    let words = check(&report, "command `wrong words`");
    assert_eq!(words["reason"], "its output does not contain `goodbye`");
    let unit = check(&report, "unit `w4b-no-such.service` active");
    assert_eq!(unit["passed"], false);
    assert_eq!(unit["reason"], "`w4b-no-such.service` is `inactive`");
    assert_eq!(check(&report, "command `writes`")["passed"], true);
    // The guest wrote to its disk; the file did not change.
    assert_eq!(sha256(&image), before, "the image was modified");
    let boot_log = image.with_file_name("raw.boot.log");
    assert!(boot_log.exists(), "the boot log goes beside the image");
    assert!(
        processes_mentioning(image.to_str().unwrap()).is_empty(),
        "QEMU is still running"
    );
    assert_eq!(
        std::fs::read_dir(&tmpdir).unwrap().count(),
        0,
        "temporary files were left"
    );
    // A kernel that does not boot: the table for people names the boot that never came,
    // quotes the console and says what to do; nothing is left behind either.
    let bogus = env.root.path().join("bogus-vmlinuz");
    std::fs::write(&bogus, vec![0u8; 1 << 20]).unwrap();
    let human = env
        .command()
        .env("TMPDIR", &tmpdir)
        .args(["test", image.to_str().unwrap(), "--boot-timeout", "1"])
        .arg("--kernel")
        .arg(&bogus)
        .arg("--initrd")
        .arg(&bogus)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert_eq!(human.status.code(), Some(1), "{stderr}");
    for expected in [
        "given with `--kernel` (not the image's)",
        "FAIL boot settles: the system did not start its services within 1 s (the test harness never ran)",
        "console: empty; the kernel printed nothing",
        "help: read the console's last lines",
        "FAILED: 0 of 3 checks passed",
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
    assert!(processes_mentioning(image.to_str().unwrap()).is_empty());
    assert_eq!(std::fs::read_dir(&tmpdir).unwrap().count(), 0);

    // Ctrl-C while the machine boots: QEMU is stopped and nothing is left behind.
    let child = env
        .command()
        .env("TMPDIR", &tmpdir)
        .args(["test", image.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let waited = std::time::Instant::now();
    while processes_mentioning(image.to_str().unwrap()).is_empty() {
        assert!(waited.elapsed().as_secs() < 60, "QEMU never started");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("w4b::test::cancelled"), "{stderr}");
    assert!(
        processes_mentioning(image.to_str().unwrap()).is_empty(),
        "QEMU outlived Ctrl-C"
    );
    assert_eq!(
        std::fs::read_dir(&tmpdir).unwrap().count(),
        0,
        "temporary files were left"
    );
    assert_eq!(sha256(&image), before, "the image was modified");
}

#[test]
fn an_image_without_a_vm_kernel_is_refused_with_what_it_has() {
    if !have_qemu() {
        return;
    }
    let Some(images) = crate::testbase::images() else {
        return;
    };
    let env = TestEnv::new();
    let out = env.run(&["test", images.xz.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("w4b::test::no_kernel"), "{stderr}");
    assert!(stderr.contains("kernel8.img"), "{stderr}");
    assert!(stderr.contains("--kernel PATH --initrd PATH"), "{stderr}");
}

#[test]
fn without_qemu_the_error_names_the_package() {
    let env = TestEnv::new();
    let mut cmd = env.command();
    cmd.env("PATH", "/nonexistent-w4b").args(["test", "whatever.img"]);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("w4b::test::no_qemu"), "{stderr}");
    assert!(stderr.contains("qemu-system-arm"), "{stderr}");
}

/// The fixture's disk in a store as a chunk index, as `disk` leaves a built image: the
/// `test` step's input in [`the_test_step_boots_once_caches_the_verdict_and_never_caches_a_failure`].
struct FixtureDisk {
    store: std::sync::Arc<w4b::store::AppStore>,
    image: PathBuf,
}

impl w4b_graph::Step for FixtureDisk {
    fn kind(&self) -> &'static str {
        "fixture-disk"
    }

    fn version(&self) -> u32 {
        1
    }

    fn components(
        &self,
        _: &w4b_graph::PlanContext,
    ) -> Result<Vec<w4b_graph::Component>, w4b_graph::StepError> {
        Ok(vec![w4b_graph::Component::param("image", CACHE)])
    }

    fn run(&self, _: &w4b_graph::RunContext<'_>) -> Result<w4b_graph::Outputs, w4b_graph::StepError> {
        use std::io::Read as _;
        use std::os::unix::fs::FileExt as _;
        // Decompressed straight into a scratch file of the store, zero runs left as holes.
        let tmp = self.store.local().scratch_file().unwrap();
        let mut z = zstd::stream::read::Decoder::new(File::open(&self.image).unwrap()).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        loop {
            let mut n = 0;
            while n < buf.len() {
                match z.read(&mut buf[n..]).unwrap() {
                    0 => break,
                    k => n += k,
                }
            }
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|&b| b != 0) {
                tmp.as_file().write_all_at(&buf[..n], at).unwrap();
            }
            at += n as u64;
        }
        tmp.as_file().set_len(at).unwrap();
        let (digest, size) = self.store.local().adopt_chunked(tmp).unwrap();
        let mut out = w4b_graph::Outputs::new();
        out.insert("disk".into(), w4b_cache::OutputRef { digest, size });
        Ok(out)
    }
}

/// One `#test` over the fixture's disk with `spec`, through the engine and a real store;
/// `path` is the `PATH` QEMU is looked up on.
fn test_step_build(
    store: &std::sync::Arc<w4b::store::AppStore>,
    image: &Path,
    out: &Path,
    spec: w4b::vmtest::TestSpec,
    path: &str,
) -> (
    w4b_graph::exec::BuildReport,
    w4b_graph::NodeId,
    w4b::steps::test::LastReport,
) {
    use std::sync::Arc;
    use w4b_graph::graph::identity;
    let mut graph = w4b_graph::Graph::new();
    let disk_step = Arc::new(FixtureDisk {
        store: store.clone(),
        image: image.to_path_buf(),
    });
    let disk = graph.add(
        "//images:fixture#disk",
        identity("fixture-disk", b"", &[]),
        disk_step,
        vec![],
    );
    let last = w4b::steps::test::LastReport::default();
    let step = Arc::new(w4b::steps::test::TestStep {
        store: store.clone(),
        spec: spec.clone(),
        spec_location: Some("defs/images/fixture.yaml:3:3".into()),
        vm: w4b::vmtest::Options {
            path: Some(path.to_owned()),
            ..w4b::vmtest::Options::default()
        },
        artifacts: out.to_path_buf(),
        artifacts_shown: "out".into(),
        name: "fixture".into(),
        image_file: "fixture.img.zst".into(),
        last: last.clone(),
    });
    let def = serde_json::to_vec(&spec).unwrap();
    let id = identity("test", &def, &[graph.node(disk)]);
    let node = graph.add("//images:fixture#test", id, step, vec![disk]);
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let engine = w4b_graph::exec::Engine {
        graph: &graph,
        cache: store.as_ref(),
        observer: &w4b_graph::exec::Silent,
        cancel: &cancel,
        options: w4b_graph::exec::BuildOptions {
            jobs: 1,
            force: false,
            keep_going: false,
            force_nodes: Default::default(),
            producer: w4b_cache::Producer {
                tool: "w4b tests".into(),
                host: None,
            },
        },
    };
    let report = engine.build(&[node]).map_err(|e| e.to_string()).unwrap();
    (report, node, last)
}

/// The `test` build step on a real boot: the first build boots and caches the verdicts
/// (not the timings); an unchanged disk and spec is a cache hit that never looks for QEMU;
/// a changed spec boots again; a failing spec fails the step with each failed check and
/// its output, and is not cached. Two boots in all.
#[test]
fn the_test_step_boots_once_caches_the_verdict_and_never_caches_a_failure() {
    use w4b::vmtest::{CommandCheck, TestSpec};
    use w4b_graph::exec::StepStatus;
    if !have_qemu() {
        return;
    }
    let _lock = vm_lock();
    let Some(image) = fixture() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store =
        std::sync::Arc::new(w4b::store::AppStore::open(&dir.path().join("cache"), None, false).unwrap());
    let out = dir.path().join("out");
    let path = std::env::var("PATH").unwrap_or_default();
    let cmd = |name: &str, run: &str, contains: Option<&str>| CommandCheck {
        name: name.into(),
        run: run.into(),
        exit: 0,
        stdout_contains: contains.map(Into::into),
        stdout_regex: None,
        timeout: 60,
    };
    let passing = TestSpec {
        units_active: vec!["systemd-journald.service".into()],
        commands: vec![cmd("hostname", "cat /etc/hostname", Some("w4b-vmtest"))],
        ..TestSpec::default()
    };

    // 1. Boots, passes, caches the verdicts; the report and the boot log go to `out`.
    let started = std::time::Instant::now();
    let (report, node, last) = test_step_build(&store, &image, &out, passing.clone(), &path);
    let first = started.elapsed();
    assert!(
        report.failures.is_empty(),
        "{:?}",
        report
            .failures
            .iter()
            .map(|f| f.error.to_string())
            .collect::<Vec<_>>()
    );
    let r = &report.results[&node];
    assert_eq!(r.status, StepStatus::Ran);
    let key = r.key.unwrap();
    let verdicts = w4b::steps::test::Verdicts::read(&store, &r.outputs["verdicts"]).unwrap();
    assert!(verdicts.passed);
    let names: Vec<&str> = verdicts.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "boot settles",
            "`multi-user.target` active",
            "no failed units",
            "unit `systemd-journald.service` active",
            "command `hostname`"
        ]
    );
    let bytes = {
        let mut b = Vec::new();
        std::io::Read::read_to_end(
            &mut store.inner().reader(&r.outputs["verdicts"].digest).unwrap(),
            &mut b,
        )
        .unwrap();
        String::from_utf8(b).unwrap()
    };
    assert!(
        !bytes.contains("seconds"),
        "no timings in the cached output: {bytes}"
    );
    let json: Value = serde_json::from_slice(&std::fs::read(out.join("fixture.test.json")).unwrap()).unwrap();
    assert_eq!(json["schema"], "w4b.test/1");
    assert_eq!(json["passed"], true);
    assert!(json["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(json["image"], out.join("fixture.img.zst").to_str().unwrap());
    assert!(std::fs::read_to_string(out.join("fixture.boot.log"))
        .unwrap()
        .contains("Linux version"));
    assert!(last.lock().unwrap().as_ref().unwrap().passed);
    let scratch = store.scratch_path("");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("test-"))
        .collect();
    assert!(left.is_empty(), "the disk copy was left in {}", scratch.display());

    // 2. The same disk and spec: a hit, without QEMU (there is none on this `PATH`).
    let started = std::time::Instant::now();
    let (report, node, last) = test_step_build(&store, &image, &out, passing.clone(), "/nonexistent-w4b");
    let r = &report.results[&node];
    assert_eq!(
        r.status,
        StepStatus::Cached,
        "{:?}",
        report
            .failures
            .iter()
            .map(|f| f.error.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(r.key, Some(key));
    assert!(last.lock().unwrap().is_none(), "nothing ran");
    let hit = started.elapsed();

    // 3. A changed spec, and a failing one: boots again, fails with the failed check and
    //    its output in the diagnostic, and writes the run's report.
    let mut failing = passing.clone();
    failing.commands.push(cmd("says oops", "echo oops; exit 3", None));
    let (report, node, _) = test_step_build(&store, &image, &out, failing.clone(), &path);
    let r = &report.results[&node];
    assert_eq!(r.status, StepStatus::Failed);
    assert_ne!(r.key, Some(key), "a changed spec is another key");
    let failure = report.failures.into_iter().next().expect("the step failed");
    let shown = format!(
        "{:?}",
        match failure.error {
            w4b_graph::StepError::Diagnostic(d) => miette::Report::new_boxed(d),
            other => panic!("not a diagnostic: {other}"),
        }
    );
    for expected in [
        "w4b::test::failed",
        "the image failed its boot test: 1 of 6 checks failed",
        "command `says oops`: exited with status 3, expected 0",
        "| stdout:",
        "|   oops",
        "out/fixture.boot.log",
        "is not cached",
    ] {
        assert!(shown.contains(expected), "no {expected:?} in:\n{shown}");
    }
    let json: Value = serde_json::from_slice(&std::fs::read(out.join("fixture.test.json")).unwrap()).unwrap();
    assert_eq!(json["passed"], false);

    // 4. Not cached: the same failing spec runs the step again (and, with no QEMU on the
    //    `PATH`, fails at once instead of booting a third time).
    let (report, node, _) = test_step_build(&store, &image, &out, failing, "/nonexistent-w4b");
    assert_eq!(report.results[&node].status, StepStatus::Failed);
    let e = report.failures[0].error.to_string();
    assert!(
        e.contains("qemu-system-aarch64") || format!("{:?}", report.failures[0].error).contains("no_qemu"),
        "{e}"
    );
    eprintln!(
        "test step: first build (decompress + boot + judge) {:.1} s; cache hit {:.2} s",
        first.as_secs_f64(),
        hit.as_secs_f64()
    );
}

/// `w4b build --test` and `w4b test LABEL` add `#test` after the disk. It cannot boot here —
/// the Pi-OS-like test base has only `kernel8.img` — so the step fails at once with the
/// image's problem before QEMU starts: the build fails naming the step, while the image
/// itself is built and exported. A build without `--test` has no such step. A tar target
/// is refused by `w4b test` and left out, with a note, by `build --test`.
#[test]
fn build_test_and_test_label_run_the_test_step_after_the_disk() {
    if !have_qemu() {
        return;
    }
    let server = crate::http::TestServer::start();
    let Some(env) = crate::testbase::workspace_with_served_base(&server) else {
        return;
    };
    env.write(
        "defs/images/edge.yaml",
        "kind: image\nboard: //boards:pi4\nbase: //bases:test\noutput: {compression: zstd, level: 3}\ntest:\n  units_active: [ssh.service]\n",
    );
    env.write(
        "defs/images/rootfs.yaml",
        "kind: image\nbase: scratch\nepoch: 1700000000\n",
    );

    let b = env.build(&["//images:edge", "--test"]);
    let stderr = b.stderr();
    assert_eq!(b.output.status.code(), Some(1), "{stderr}");
    for expected in [
        "step `//images:edge#test` failed",
        "w4b::test::no_kernel",
        "kernel8.img",
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
    assert!(b
        .events
        .iter()
        .any(|e| e["event"] == "step-failed" && e["step"] == "//images:edge#test"));
    assert!(
        env.path("out/edge.img.zst").exists(),
        "the image is exported anyway"
    );

    let b = env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());
    assert!(b.ran().is_empty(), "{:?}", b.ran());
    assert!(
        !b.cached().iter().any(|s| s.ends_with("#test")),
        "{:?}",
        b.cached()
    );

    let out = env.run(&["test", "//images:edge"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("step `//images:edge#test` failed"), "{stderr}");
    assert!(stderr.contains("w4b::test::no_kernel"), "{stderr}");

    let out = env.run(&["test", "//images:rootfs"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("w4b::test::not_a_disk"), "{stderr}");
    let out = env.run(&["build", "--test", "//images:rootfs"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("builds a tar archive; it is not booted"),
        "{stderr}"
    );
}
