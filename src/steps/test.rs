//! `test`: the image the build just made, booted in QEMU and judged by its `test:`
//! ([`crate::vmtest`]), as the last step of the image's graph (`w4b build --test`,
//! `w4b test LABEL`). Booting is the most expensive thing w4b does (25–60 s for a minimal
//! Debian system under TCG, minutes for a hive image), so it is cached like every step:
//! an image that passed a test is not booted again for the same test.
//!
//! | key component | what | why |
//! |---|---|---|
//! | upstream `in0.disk` | the raw disk's digest (`disk` step) | the bytes booted: `compress` encodes exactly these, so the shipped image is what was tested, and a change of codec or level alone does not boot again |
//! | upstream `in1.report`, … | `validate`'s report (and a hive's `hive-check`) | gates: nothing unchecked is booted; both are functions of the disk's contents |
//! | param `spec` | the complete [`TestSpec`], serialised (fields in a fixed order) | what is checked; located at the `test:` keys it was merged from |
//! | param `harness` | [`HARNESS_VERSION`] | what the guest runs and how the host judges it |
//! | input `kernel`, `initrd` | BLAKE3 of a `--kernel`/`--initrd` override, when given | another kernel is another test |
//! | upstream `inN.vmlinuz`, `inN.initrd`, `inN.meta` | the pinned test kernel (`test-kernel`), when the workspace has it locked | booted when the image has no kernel that boots the virtual machine; which one boots is known only once the disk is read, so it is keyed whenever it is planned |
//! | *not keyed* | the host's QEMU version, accelerator, memory, CPUs, timings | the verdict is about the image; a test that fails for want of memory is not cached anyway |
//!
//! The cached output is deterministic: `verdicts` (`w4b.test-verdicts/1`), each check's name
//! and result with its reason and log lines, nothing timed. Everything of one particular
//! run — the `w4b.test/1` report with timings, machine and boot-time breakdown, and the whole
//! serial console — goes beside the build's outputs as `NAME.test.json` and
//! `NAME.boot.log` when the step runs. On a cache hit the report stays when it is that of
//! a run on the same disk with the same checks; otherwise (a fresh `--out`, another
//! disk's report) the build writes one from the cached verdicts ([`write_cached_report`]),
//! marked `"cached": true`, so `NAME.test.json` always describes the disk just built.
//!
//! A failed check fails the step: its diagnostic lists each failed check with the log lines
//! that explain it, and like every failed step it is not recorded, so the next build boots
//! again. The disk is copied out of the store (verified, sparse: zero chunks stay holes) into
//! the store's scratch directory for QEMU, which opens it read-only with `snapshot=on`; the
//! copy is removed when the step ends, however it ends.

use std::fmt;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use w4b_cache::{CacheError, Digest, OutputRef};
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use crate::store::AppStore;
use crate::tree::Blobs;
use crate::vmtest::harness::HARNESS_VERSION;
use crate::vmtest::{self, CheckResult, Report, TestSpec, VmTestError};

/// One virtual machine at a time in a build: two emulated arm64 machines on a 2-core host
/// only make both miss their deadlines (the boot test of `//hives/...` boots its images one
/// after the other, while the other steps go on beside them).
static ONE_MACHINE: Mutex<()> = Mutex::new(());

/// The schema of the `verdicts` output.
pub const VERDICTS_SCHEMA: &str = "w4b.test-verdicts/1";

/// The last report of a step's run, for the command that asked for the test (`w4b test
/// LABEL` prints it as a table).
pub type LastReport = Arc<Mutex<Option<Report>>>;

pub struct TestStep {
    pub store: Arc<AppStore>,
    pub spec: TestSpec,
    /// Where the spec was written (`test:` keys, the command line), for `why`.
    pub spec_location: Option<String>,
    /// How to run the machine. `log_dir` is ignored: the boot log goes to `artifacts`.
    pub vm: vmtest::Options,
    /// Where `NAME.test.json` and `NAME.boot.log` go: the build's output directory.
    pub artifacts: PathBuf,
    /// `artifacts` as messages show it.
    pub artifacts_shown: String,
    /// `NAME`: the target's name.
    pub name: String,
    /// The image file the build exports (`north.img.zst`), which the report names.
    pub image_file: String,
    pub last: LastReport,
    /// The index of the input that is the pinned test kernel (`test-kernel`), when the
    /// workspace has one.
    pub pinned_input: Option<usize>,
}

/// The cached result: every check's verdict, nothing that depends on the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdicts {
    pub schema: String,
    pub passed: bool,
    pub checks: Vec<Verdict>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub name: String,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
}

impl Verdict {
    pub fn of(c: &CheckResult) -> Verdict {
        Verdict {
            name: c.name.clone(),
            passed: c.passed,
            reason: c.reason.clone(),
            log: c.log.clone(),
        }
    }
}

impl Verdicts {
    pub fn of(report: &Report) -> Verdicts {
        Verdicts {
            schema: VERDICTS_SCHEMA.to_owned(),
            passed: report.passed,
            checks: report.checks.iter().map(Verdict::of).collect(),
        }
    }

    /// Reads a `verdicts` output back from the store.
    pub fn read(store: &AppStore, out: &OutputRef) -> Result<Verdicts, String> {
        let mut bytes = Vec::new();
        store
            .inner()
            .reader(&out.digest)
            .map_err(|e| e.to_string())?
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

/// The report a cache hit leaves when no run's report for the same disk is at hand: the
/// cached verdicts, the image and the disk, nothing timed (`w4b.test/1` with `"cached":
/// true`; no `kernel`, `machine` or `boot_log`, since nothing booted).
#[derive(Debug, Serialize)]
pub struct CachedReport<'a> {
    pub schema: &'static str,
    pub image: &'a Path,
    pub disk: &'a str,
    pub passed: bool,
    pub cached: bool,
    pub checks: &'a [Verdict],
}

/// After a cache hit: keeps `path` when it is the report of a run on `disk` with exactly
/// these verdicts, else writes a [`CachedReport`] there. Returns whether it wrote.
pub fn write_cached_report(
    path: &Path,
    image: &Path,
    disk: &Digest,
    verdicts: &Verdicts,
) -> std::io::Result<bool> {
    let disk = disk.to_hex();
    if let Ok(bytes) = std::fs::read(path) {
        if let Ok(old) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            let same_checks = old["checks"].as_array().is_some_and(|checks| {
                checks.len() == verdicts.checks.len()
                    && checks
                        .iter()
                        .zip(&verdicts.checks)
                        .all(|(c, v)| c["name"] == v.name.as_str() && c["passed"] == v.passed)
            });
            if old["disk"] == disk.as_str() && old["passed"] == verdicts.passed && same_checks {
                return Ok(false);
            }
        }
    }
    let report = CachedReport {
        schema: vmtest::report::SCHEMA,
        image,
        disk: &disk,
        passed: verdicts.passed,
        cached: true,
        checks: &verdicts.checks,
    };
    let json = serde_json::to_vec_pretty(&report).map_err(std::io::Error::other)?;
    write_atomically(path, &json)?;
    Ok(true)
}

/// The image failed its boot test: one related diagnostic per failed check.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("the image failed its boot test: {failed} of {total} checks failed")]
#[diagnostic(code(w4b::test::failed), help("{help}"))]
pub struct TestFailed {
    pub failed: usize,
    pub total: usize,
    #[related]
    pub checks: Vec<FailedCheck>,
    pub help: String,
}

/// One failed check, with the log lines that explain it.
#[derive(Debug, thiserror::Error)]
pub struct FailedCheck(pub CheckResult);

impl fmt::Display for FailedCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.0;
        write!(f, "{}: {}", c.name, c.reason.as_deref().unwrap_or("failed"))?;
        for line in &c.log {
            write!(f, "\n  | {line}")?;
        }
        Ok(())
    }
}

impl miette::Diagnostic for FailedCheck {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("w4b::test::check"))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}

impl TestStep {
    fn report_path(&self) -> PathBuf {
        self.artifacts.join(format!("{}.test.json", self.name))
    }

    /// `file` in the artifacts directory, as messages show it.
    fn shown(&self, file: &str) -> PathBuf {
        Path::new(&self.artifacts_shown).join(file)
    }

    fn failed(&self, report: &Report) -> TestFailed {
        let checks: Vec<FailedCheck> = report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .cloned()
            .map(FailedCheck)
            .collect();
        let shown = |file: String| self.shown(&file).display().to_string();
        TestFailed {
            failed: checks.len(),
            total: report.checks.len(),
            checks,
            help: format!(
                "the whole serial console is in `{}` and the report in `{}`; a failed test is not cached, so the next build boots the image again",
                shown(format!("{}.boot.log", self.name)),
                shown(format!("{}.test.json", self.name)),
            ),
        }
    }
}

/// BLAKE3 of an override file, read at plan time.
fn file_digest(path: &Path, what: &str) -> Result<Digest, StepError> {
    let bytes = std::fs::read(path).map_err(|e| StepError::Failed {
        message: format!("cannot read the {what} `{}`: {e}", path.display()),
        help: Some("`--kernel` and `--initrd` take files on this machine".into()),
    })?;
    Ok(Digest::of(&bytes))
}

/// Writes output `digest` (a chunk index or a plain blob) to a new file at `dest`, every
/// chunk verified; zero chunks are left as holes. A missing or corrupt chunk is the
/// input's problem ([`StepError::InputUnavailable`]), so the engine re-runs `disk`.
pub(crate) fn materialize(store: &AppStore, digest: &Digest, dest: &Path) -> Result<(), StepError> {
    let unavailable = |e: CacheError| match e {
        CacheError::Missing { .. } | CacheError::Corrupt { .. } => StepError::InputUnavailable(*digest),
        other => StepError::diag(other),
    };
    let io = |e: std::io::Error| match w4b_cache::OutputReader::cache_error(e) {
        Ok(c) => unavailable(c),
        Err(e) => StepError::context(format!("cannot write `{}`", dest.display()), &e),
    };
    let mut reader = store.inner().open_output(digest).map_err(unavailable)?;
    let len = reader.len();
    let pieces: Vec<(u64, u64)> = match reader.index() {
        Some(idx) => idx
            .chunks
            .iter()
            .zip(idx.starts())
            .filter(|(c, _)| !c.is_zero())
            .map(|(c, s)| (s, u64::from(c.len)))
            .collect(),
        None => vec![(0, len)],
    };
    let file = std::fs::File::create(dest).map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    for (start, n) in pieces {
        reader.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut done = 0u64;
        while done < n {
            let want = usize::try_from((n - done).min(buf.len() as u64)).unwrap_or(buf.len());
            reader.read_exact(&mut buf[..want]).map_err(io)?;
            file.write_all_at(&buf[..want], start + done).map_err(io)?;
            done += want as u64;
        }
    }
    file.set_len(len).map_err(io)
}

/// Writes `bytes` to `dest` through a temporary file beside it, readable by all.
fn write_atomically(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".w4b-").tempfile_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.persist(dest).map(drop).map_err(|e| e.error)
}

impl TestStep {
    /// The pinned test kernel's `vmlinuz` and `initrd` (input `i`) copied into `dir`.
    fn pinned_kernel(
        &self,
        cx: &RunContext<'_>,
        i: usize,
        dir: &Path,
    ) -> Result<vmtest::PinnedKernel, StepError> {
        let kernel = dir.join("pinned-vmlinuz");
        let initrd = dir.join("pinned-initrd");
        materialize(&self.store, &cx.input(i, "vmlinuz")?.digest, &kernel)?;
        materialize(&self.store, &cx.input(i, "initrd")?.digest, &initrd)?;
        let meta = cx.input(i, "meta")?.digest;
        let mut bytes = Vec::new();
        self.store
            .inner()
            .reader(&meta)
            .map_err(|_| StepError::InputUnavailable(meta))?
            .read_to_end(&mut bytes)
            .map_err(|_| StepError::InputUnavailable(meta))?;
        let meta = serde_json::from_slice(&bytes)
            .map_err(|e| StepError::msg(format!("the pinned test kernel's `meta` is unreadable: {e}")))?;
        Ok(vmtest::PinnedKernel { kernel, initrd, meta })
    }
}

impl Step for TestStep {
    fn kind(&self) -> &'static str {
        "test"
    }

    fn version(&self) -> u32 {
        1
    }

    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        let spec = serde_json::to_string(&self.spec).map_err(|e| StepError::msg(e.to_string()))?;
        let mut c = vec![
            Component::param("spec", spec).at(self.spec_location.clone()),
            Component::param("harness", HARNESS_VERSION.to_string()),
        ];
        for (name, path) in [("kernel", &self.vm.kernel), ("initrd", &self.vm.initrd)] {
            if let Some(p) = path {
                c.push(Component::input(name, &file_digest(p, name)?).at(Some(p.display().to_string())));
            }
        }
        Ok(c)
    }

    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let disk = cx.input(0, "disk")?;
        let scratch_dir = self.store.scratch_path("");
        let scratch = std::fs::create_dir_all(&scratch_dir)
            .and_then(|()| tempfile::Builder::new().prefix("test-").tempdir_in(&scratch_dir))
            .map_err(|e| StepError::context("cannot create a scratch directory for the disk", &e))?;
        let image = scratch.path().join(format!("{}.img", self.name));
        materialize(&self.store, &disk.digest, &image)?;
        cx.check_cancel()?;
        let pinned = match self.pinned_input {
            Some(i) => Some(vmtest::PinnedSource::ready(self.pinned_kernel(
                cx,
                i,
                scratch.path(),
            )?)),
            None => None,
        };
        let opts = vmtest::Options {
            log_dir: Some(self.artifacts.clone()),
            pinned,
            ..self.vm.clone()
        };
        let result = {
            let _machine = ONE_MACHINE.lock().unwrap_or_else(|e| e.into_inner());
            cx.check_cancel()?;
            vmtest::run(&image, &self.spec, &opts, cx.cancel)
        };
        drop(scratch);
        let mut report = match result {
            Ok(r) => r,
            Err(VmTestError::Cancelled) => return Err(StepError::Cancelled),
            Err(e) => return Err(StepError::diag(e.naming(&self.shown(&self.image_file)))),
        };
        report.image = self.artifacts.join(&self.image_file);
        report.disk = Some(disk.digest.to_hex());
        let json = serde_json::to_vec_pretty(&report).map_err(|e| StepError::msg(e.to_string()))?;
        let path = self.report_path();
        write_atomically(&path, &json)
            .map_err(|e| StepError::context(format!("cannot write `{}`", path.display()), &e))?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
        let failed = report.checks.iter().filter(|c| !c.passed).count();
        cx.note(&format!(
            "{} of {} checks passed in {:.1} s",
            report.checks.len() - failed,
            report.checks.len(),
            report.seconds
        ));
        if !report.passed {
            return Err(StepError::diag(self.failed(&report)));
        }
        let bytes = serde_json::to_vec(&Verdicts::of(&report)).map_err(|e| StepError::msg(e.to_string()))?;
        let digest = self.store.put(&bytes).map_err(crate::steps::tree_error)?;
        let mut out = Outputs::new();
        out.insert(
            "verdicts".into(),
            OutputRef {
                digest,
                size: bytes.len() as u64,
            },
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, passed: bool) -> CheckResult {
        if passed {
            CheckResult::pass(name, 1.5)
        } else {
            CheckResult::fail(name, 2.5, "exited with status 1, expected 0")
                .with_log(vec!["stdout:".into(), "  oops".into()])
                .with_help("read the log")
        }
    }

    #[test]
    fn verdicts_keep_names_results_and_explanations_but_no_times() {
        let checks = [check("boot settles", true), check("command `x`", false)];
        let v = Verdicts {
            schema: VERDICTS_SCHEMA.into(),
            passed: false,
            checks: checks.iter().map(Verdict::of).collect(),
        };
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"schema":"w4b.test-verdicts/1","passed":false,"checks":[{"name":"boot settles","passed":true},{"name":"command `x`","passed":false,"reason":"exited with status 1, expected 0","log":["stdout:","  oops"]}]}"#
        );
    }

    /// A hit keeps the report of a run on the same disk with the same checks, and replaces
    /// anything else — another disk's report, other checks, a missing or unreadable file.
    #[test]
    fn a_cached_report_is_written_only_when_no_run_of_the_same_disk_left_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.test.json");
        let image = dir.path().join("edge.img.zst");
        let disk = Digest::of(b"disk");
        let checks = [check("boot settles", true), check("command `x`", true)];
        let v = Verdicts {
            schema: VERDICTS_SCHEMA.into(),
            passed: true,
            checks: checks.iter().map(Verdict::of).collect(),
        };
        // Nothing there: written, marked cached, nothing timed.
        assert!(write_cached_report(&path, &image, &disk, &v).unwrap());
        let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["schema"], "w4b.test/1");
        assert_eq!(written["cached"], true);
        assert_eq!(written["disk"], disk.to_hex());
        assert_eq!(written["checks"][1]["name"], "command `x`");
        assert!(!written.to_string().contains("seconds"));
        // Its own output, or a run's report of the same disk and checks: kept.
        assert!(!write_cached_report(&path, &image, &disk, &v).unwrap());
        let run = serde_json::json!({"schema": "w4b.test/1", "disk": disk.to_hex(), "passed": true,
            "checks": [{"name": "boot settles", "passed": true, "seconds": 1.5},
                       {"name": "command `x`", "passed": true, "seconds": 1.5}], "seconds": 30.0});
        std::fs::write(&path, run.to_string()).unwrap();
        assert!(!write_cached_report(&path, &image, &disk, &v).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), run.to_string());
        // Another disk, other checks, garbage: replaced.
        for other in [
            run.to_string()
                .replace(&disk.to_hex(), &Digest::of(b"other").to_hex()),
            run.to_string().replace("command `x`", "command `y`"),
            "{not json".to_owned(),
        ] {
            std::fs::write(&path, &other).unwrap();
            assert!(write_cached_report(&path, &image, &disk, &v).unwrap(), "{other}");
            let now: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(now["cached"], true);
        }
    }

    fn step(store: &Arc<AppStore>, spec: TestSpec, vm: vmtest::Options) -> TestStep {
        TestStep {
            store: store.clone(),
            spec,
            spec_location: Some("defs/images/edge.yaml:7:3".into()),
            vm,
            artifacts: "/out".into(),
            artifacts_shown: "out".into(),
            name: "edge".into(),
            image_file: "edge.img.zst".into(),
            last: LastReport::default(),
            pinned_input: None,
        }
    }

    fn preimage(s: &TestStep) -> Vec<w4b_cache::PreimageEntry> {
        s.components(&PlanContext {
            name: "//images:edge#test",
        })
        .unwrap()
        .into_iter()
        .map(|c| w4b_cache::PreimageEntry {
            component: c.kind.as_str().to_owned(),
            name: c.name,
            value: c.value,
            location: c.location,
            tree: None,
        })
        .collect()
    }

    /// The key: the spec (located where it was written), the harness version and a kernel
    /// override's digest; not the machine's size, nor where reports go. A changed spec is
    /// what `why` names.
    #[test]
    fn the_key_is_the_spec_the_harness_and_a_kernel_override_and_why_names_a_spec_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
        let base = step(&store, TestSpec::default(), vmtest::Options::default());
        let names: Vec<(String, String)> = preimage(&base)
            .into_iter()
            .map(|e| (e.component, e.name))
            .collect();
        assert_eq!(
            names,
            [
                ("param".into(), "spec".into()),
                ("param".into(), "harness".into())
            ]
        );
        // The machine and the artifacts do not change the key.
        let bigger = step(
            &store,
            TestSpec::default(),
            vmtest::Options {
                memory_mib: 4096,
                cpus: 4,
                path: Some("/elsewhere".into()),
                ..vmtest::Options::default()
            },
        );
        assert_eq!(preimage(&bigger), preimage(&base));
        // A spec change is named by the field that changed (`why` reads JSON values field
        // by field), at the `test:` that was written.
        let spec = TestSpec {
            units_active: vec!["ssh.service".into()],
            ..TestSpec::default()
        };
        let changed = step(&store, spec, vmtest::Options::default());
        let changes = w4b_graph::explain::diff(&preimage(&base), &preimage(&changed));
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].name, "spec.units_active");
        assert_eq!(changes[0].location.as_deref(), Some("defs/images/edge.yaml:7:3"));
        assert!(changes[0].new.as_deref().unwrap().contains("ssh.service"));
        // A kernel override is an input, by content.
        let kernel = dir.path().join("vmlinuz");
        let initrd = dir.path().join("initrd.img");
        std::fs::write(&kernel, b"kernel").unwrap();
        std::fs::write(&initrd, b"initrd").unwrap();
        let vm = vmtest::Options {
            kernel: Some(kernel.clone()),
            initrd: Some(initrd),
            ..vmtest::Options::default()
        };
        let with_kernel = preimage(&step(&store, TestSpec::default(), vm.clone()));
        let input = with_kernel.iter().find(|e| e.name == "kernel").unwrap();
        assert_eq!(input.component, "input");
        assert_eq!(input.value, Digest::of(b"kernel").to_hex());
        std::fs::write(&kernel, b"another kernel").unwrap();
        let changes =
            w4b_graph::explain::diff(&with_kernel, &preimage(&step(&store, TestSpec::default(), vm)));
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].name, "kernel");
    }

    #[test]
    fn a_failed_check_reads_with_its_log_lines() {
        let f = FailedCheck(check("command `x`", false));
        assert_eq!(
            f.to_string(),
            "command `x`: exited with status 1, expected 0\n  | stdout:\n  |   oops"
        );
        assert_eq!(
            miette::Diagnostic::help(&f).map(|h| h.to_string()).as_deref(),
            Some("read the log")
        );
    }
}
