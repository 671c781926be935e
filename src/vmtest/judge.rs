//! Turning the guest's raw records into judged checks.
//!
//! The guest only reports (exit status, output, times); every verdict is made here, on
//! the host, against the spec: which states count as booted, which failed units are
//! allowed, what a command's output must contain. A record that never came — the VM
//! stopped, a deadline passed — fails its check with the reason, and the first such
//! check quotes the console's last lines, which is where a kernel panic, a root that
//! would not mount or a hung unit shows.

use regex::Regex;

use super::boot_time::{self, BootTime};
use super::console::last_lines;
use super::harness::Probe;
use super::report::CheckResult;
use super::results::{Archive, Record, Results};
use super::spec::TestSpec;
use crate::validate::archive::{self, ArchiveFiles};
use crate::validate::hive::{self, Stage};
use crate::validate::{Check, Status};

/// Lines of a check's own output quoted when it fails.
const OUTPUT_LINES: usize = 20;

/// The name of the hive checklist's check in the report.
pub const HIVE_CHECKLIST: &str = "hive checklist (in the guest)";

/// Why the host stopped waiting for the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The guest sent every record.
    Done,
    /// QEMU exited by itself (`status`), with its own last messages.
    QemuExited { status: String, messages: Vec<String> },
    /// The system did not finish booting within `seconds`.
    BootTimeout { seconds: u64, harness_started: bool },
    /// The guest went silent for `seconds` during the checks.
    CheckTimeout { seconds: u64 },
    /// The whole test ran out of its `seconds`.
    TotalTimeout { seconds: u64 },
}

/// Everything judged: the checks in order, the boot-time breakdown, the slowest units.
#[derive(Debug)]
pub struct Judged {
    pub checks: Vec<CheckResult>,
    pub boot_time: Option<BootTime>,
    pub blame: Vec<String>,
}

/// The regex of each command check (`None` where it has none), compiled once.
pub fn regexes(spec: &TestSpec) -> Result<Vec<Option<Regex>>, (String, regex::Error)> {
    spec.commands
        .iter()
        .map(|c| match &c.stdout_regex {
            None => Ok(None),
            Some(r) => super::spec::stdout_regex(r)
                .map(Some)
                .map_err(|e| (c.name.clone(), e)),
        })
        .collect()
}

pub fn judge(
    spec: &TestSpec,
    regexes: &[Option<Regex>],
    probes: &[(String, Probe)],
    results: &Results,
    ending: &Ending,
    console: &[String],
    target: &str,
) -> Judged {
    let mut checks = Vec::new();
    let mut boot_time = None;
    let mut blame = Vec::new();
    let mut missing_explained = false;
    for (id, probe) in probes {
        let name = match probe {
            Probe::BootState => "boot settles".to_owned(),
            Probe::MultiUser => "`multi-user.target` active".to_owned(),
            Probe::FailedUnits => "no failed units".to_owned(),
            Probe::UnitActive(i) => format!("unit `{}` active", spec.units_active.get(*i).map_or("?", |s| s)),
            Probe::Command(i) => format!("command `{}`", spec.commands.get(*i).map_or("?", |c| &c.name)),
            Probe::HiveChecklist => HIVE_CHECKLIST.to_owned(),
            Probe::Analyze | Probe::Blame => String::new(),
        };
        if let Probe::HiveChecklist = probe {
            match results.archive(id) {
                Some(a) => checks.push(hive_checklist(&name, a)),
                None => {
                    checks.push(missing(&name, ending, console, results, !missing_explained));
                    missing_explained = true;
                }
            }
            continue;
        }
        let Some(record) = results.get(id) else {
            if matches!(probe, Probe::Analyze | Probe::Blame) {
                continue;
            }
            checks.push(missing(&name, ending, console, results, !missing_explained));
            missing_explained = true;
            continue;
        };
        match probe {
            Probe::BootState => checks.push(boot_state(&name, record, spec, target)),
            Probe::MultiUser => checks.push(multi_user(&name, record)),
            Probe::Analyze => boot_time = boot_time::parse(&record.stdout),
            Probe::Blame => blame = record.stdout.lines().map(|l| l.trim().to_owned()).collect(),
            Probe::FailedUnits => checks.push(failed_units(&name, record, spec)),
            Probe::UnitActive(i) => checks.push(unit_active(&name, record, spec.units_active.get(*i))),
            Probe::Command(i) => {
                if let Some(c) = spec.commands.get(*i) {
                    let re = regexes.get(*i).and_then(Option::as_ref);
                    checks.push(command(&name, record, c, re));
                }
            }
            Probe::HiveChecklist => {}
        }
    }
    Judged {
        checks,
        boot_time,
        blame,
    }
}

fn secs(r: &Record) -> f64 {
    ((r.end - r.start).max(0.0) * 10.0).round() / 10.0
}

fn output_log(r: &Record) -> Vec<String> {
    let mut log = Vec::new();
    for (label, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        let lines = last_lines(text, OUTPUT_LINES);
        if !lines.is_empty() {
            log.push(format!("{label}:"));
            log.extend(lines.into_iter().map(|l| format!("  {l}")));
        }
    }
    log
}

fn boot_state(name: &str, r: &Record, spec: &TestSpec, target: &str) -> CheckResult {
    let state = r.stdout.trim();
    let seconds = (r.end * 10.0).round() / 10.0;
    if matches!(state, "running" | "degraded") {
        return CheckResult::pass(name, seconds);
    }
    let reason = if r.status == 124 {
        format!(
            "the boot towards `{target}` did not finish within {} s (state `{state}`)",
            spec.boot_timeout
        )
    } else {
        format!("the system is `{state}`, not `running` or `degraded`, after booting towards `{target}`")
    };
    CheckResult::fail(name, seconds, reason)
        .with_log(last_lines(&r.stderr, 40))
        .with_help("the jobs still waiting are listed above; `systemctl list-jobs` names the unit that holds the boot up. If the system is merely slow under emulation, raise `--boot-timeout`")
}

fn multi_user(name: &str, r: &Record) -> CheckResult {
    let state = r.stdout.trim();
    if r.status == 0 && state == "active" {
        return CheckResult::pass(name, secs(r));
    }
    CheckResult::fail(name, secs(r), format!("`multi-user.target` is `{state}`"))
        .with_log(last_lines(&r.stderr, OUTPUT_LINES))
}

fn failed_units(name: &str, r: &Record, spec: &TestSpec) -> CheckResult {
    let allowed = |u: &str| {
        spec.allow_failed_units
            .iter()
            .any(|a| a == u || (!a.contains('.') && u.strip_suffix(".service") == Some(a.as_str())))
    };
    let failed: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|u| !allowed(u))
        .collect();
    if failed.is_empty() {
        return CheckResult::pass(name, secs(r));
    }
    let list = failed
        .iter()
        .map(|u| format!("`{u}`"))
        .collect::<Vec<_>>()
        .join(", ");
    CheckResult::fail(name, secs(r), format!("failed: {list}"))
        .with_log(last_lines(&r.stderr, 60))
        .with_help("fix the unit, or if it cannot work without Raspberry Pi hardware, allow it with `--allow-failed UNIT` (`allow_failed_units` in the test definition)")
}

fn unit_active(name: &str, r: &Record, unit: Option<&String>) -> CheckResult {
    let state = r.stdout.trim();
    if r.status == 0 && state == "active" {
        return CheckResult::pass(name, secs(r));
    }
    let unit = unit.map_or("?", |u| u.as_str());
    let state = if state.is_empty() { "unknown" } else { state };
    CheckResult::fail(name, secs(r), format!("`{unit}` is `{state}`"))
        .with_log(last_lines(&r.stderr, 40))
        .with_help(format!(
            "`{unit}` must be installed and enabled in the image (`systemctl enable`); its status and last log lines are above"
        ))
}

fn command(name: &str, r: &Record, c: &super::spec::CommandCheck, re: Option<&Regex>) -> CheckResult {
    let seconds = secs(r);
    // `timeout` exits with 124, or 137 when its `--kill-after` had to SIGKILL.
    let reason = if matches!(r.status, 124 | 137) && c.exit != r.status {
        Some(format!("timed out after {} s", c.timeout))
    } else if r.status != c.exit {
        Some(format!("exited with status {}, expected {}", r.status, c.exit))
    } else if let Some(want) = c.stdout_contains.as_deref().filter(|w| !r.stdout.contains(*w)) {
        Some(format!("its output does not contain `{want}`"))
    } else {
        re.filter(|re| !re.is_match(&r.stdout))
            .map(|re| format!("its output does not match `{}`", re.as_str()))
    };
    match reason {
        None => CheckResult::pass(name, seconds),
        Some(reason) => CheckResult::fail(name, seconds, reason).with_log(output_log(r)),
    }
}

/// The hive checklist on the files the booted guest archived ([`Stage::Booted`]): one
/// log line per failed rule (`rule file: what — fix`), and one per rule the booted stage
/// skips, saying why, whether it passes or fails.
fn hive_checklist(name: &str, a: &Archive) -> CheckResult {
    let seconds = ((a.end - a.start).max(0.0) * 10.0).round() / 10.0;
    let stderr = || last_lines(&a.stderr, OUTPUT_LINES);
    // GNU tar exits with 1 when a file changed while it read it: the archive is whole.
    if !matches!(a.status, 0 | 1) {
        let reason = if a.status == 3 {
            format!(
                "the guest's archive of the hive's files is above the bound of {} bytes",
                archive::MAX_ARCHIVE
            )
        } else {
            format!(
                "the guest could not archive the hive's files (`tar` exited with {})",
                a.status
            )
        };
        return CheckResult::fail(name, seconds, reason)
            .with_log(stderr())
            .with_help("the guest's `tar` error output is above");
    }
    let files = match a.bytes.as_ref() {
        Ok(bytes) => ArchiveFiles::parse(bytes).map_err(|e| match std::error::Error::source(&e) {
            Some(source) => format!("{e} ({source})"),
            None => e.to_string(),
        }),
        Err(e) => Err(e.clone()),
    };
    let report = files.and_then(|f| hive::check(&f, Stage::Booted).map_err(|e| e.to_string()));
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            return CheckResult::fail(name, seconds, e)
                .with_log(stderr())
                .with_help("the archive the guest sent could not be read; its `tar` error output is above")
        }
    };
    let line = |c: &Check| match &c.file {
        Some(f) => format!("{} `{f}`: {}", c.name, c.detail),
        None => format!("{}: {}", c.name, c.detail),
    };
    let mut log: Vec<String> = report
        .failures()
        .map(|c| match &c.help {
            Some(h) => format!("{} — {h}", line(c)),
            None => line(c),
        })
        .collect();
    log.extend(
        report
            .checks
            .iter()
            .filter(|c| c.status == Status::Skip && c.name == "host_keys")
            .map(|c| format!("skipped {}", line(c))),
    );
    let failed = report.failures().count();
    if failed == 0 {
        return CheckResult::pass(name, seconds).with_log(log);
    }
    let rules: std::collections::BTreeSet<&str> = report.failures().map(|c| c.name.as_str()).collect();
    CheckResult::fail(
        name,
        seconds,
        format!(
            "{failed} problem(s) in {} rule(s) on the running system: {}",
            rules.len(),
            rules.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
        ),
    )
    .with_log(log)
    .with_help("the same rules passed on the built image (`hive-check`): something in the first boot or a service changed these files")
}

/// A check whose record never came.
fn missing(name: &str, ending: &Ending, console: &[String], results: &Results, explain: bool) -> CheckResult {
    let (reason, help) = match ending {
        Ending::Done => ("the guest sent no result for it".to_owned(), None),
        Ending::QemuExited { status, .. } => (
            format!("the virtual machine stopped ({status}) before it ran"),
            Some("a kernel panic, a root filesystem that did not mount or a poweroff shows in the console's last lines above and in the boot log"),
        ),
        Ending::BootTimeout { seconds, harness_started: false } => (
            format!("the system did not start its services within {seconds} s (the test harness never ran)"),
            Some("read the console's last lines: a kernel that does not boot on `-M virt`, an initramfs that cannot find the root (`root=PARTUUID=...`) or a unit that hangs early; if the system is only slow under emulation, raise `--boot-timeout`"),
        ),
        Ending::BootTimeout { seconds, harness_started: true } => (
            format!("the boot did not settle within {seconds} s"),
            Some("a unit holds the boot up (see the console); raise `--boot-timeout` if the system is only slow under emulation"),
        ),
        Ending::CheckTimeout { seconds } => (
            format!("the guest did not answer within {seconds} s"),
            Some("the guest hung or is overloaded; the console's last lines are above"),
        ),
        Ending::TotalTimeout { seconds } => (
            format!("not run: the whole test ran out of time ({seconds} s)"),
            Some("raise the limit with `--timeout`, or find what is slow in the boot log"),
        ),
    };
    let mut check = CheckResult::fail(name, 0.0, reason);
    if explain {
        let mut log = Vec::new();
        if let Ending::QemuExited { messages, .. } = ending {
            if !messages.is_empty() {
                log.push("QEMU:".to_owned());
                log.extend(messages.iter().map(|m| format!("  {m}")));
            }
        }
        if !results.garbage.is_empty() {
            log.push("unexpected lines on the results port:".to_owned());
            log.extend(results.garbage.iter().take(5).map(|g| format!("  {g}")));
        }
        if console.is_empty() {
            log.push("console: empty; the kernel printed nothing (it did not start, or it does not write to `ttyAMA0`)".to_owned());
        } else {
            log.push(format!("console (last {} lines):", console.len()));
            log.extend(console.iter().map(|l| format!("  {l}")));
        }
        check.log = log;
        if let Some(h) = help {
            check.help = Some(h.to_owned());
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmtest::harness::payload;
    use crate::vmtest::spec::CommandCheck;

    fn rec(id: &str, status: i32, out: &str, err: &str) -> String {
        use base64::Engine as _;
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!("result\t{id}\t{status}\t10\t12.5\t{}\t{}\n", b(out), b(err))
    }

    fn spec() -> TestSpec {
        TestSpec {
            allow_failed_units: vec!["rpi-eeprom-update".into()],
            units_active: vec!["ssh.service".into()],
            commands: vec![
                CommandCheck {
                    name: "greets".into(),
                    run: "echo hello".into(),
                    exit: 0,
                    stdout_contains: Some("hello".into()),
                    stdout_regex: Some("^hel+o$".into()),
                    timeout: 5,
                },
                CommandCheck {
                    name: "fails".into(),
                    run: "echo oops; exit 1".into(),
                    exit: 0,
                    stdout_contains: None,
                    stdout_regex: None,
                    timeout: 5,
                },
            ],
            ..TestSpec::default()
        }
    }

    #[test]
    fn records_are_judged_against_the_spec() {
        let spec = spec();
        let p = payload(&spec).unwrap();
        let mut port = String::from("hello\t9\n");
        port += &rec("boot", 1, "degraded\n", "");
        port += &rec("multi-user", 0, "active\n", "");
        port += &rec("analyze", 0, "Startup finished in 1.000s (kernel) + 20.000s (userspace) = 21.000s\nmulti-user.target reached after 19.500s in userspace.\n", "");
        port += &rec("blame", 0, "5.1s a.service\n 1.0s b.service\n", "");
        port += &rec(
            "failed",
            0,
            "rpi-eeprom-update.service loaded failed failed x\nbad.service loaded failed failed y\n",
            "× bad.service - y\n   Active: failed\n",
        );
        port += &rec("unit-0", 3, "inactive\n", "○ ssh.service\n");
        port += &rec("cmd-0", 0, "hello\n", "");
        port += &rec("cmd-1", 1, "oops\n", "");
        port += "done\n";
        let mut results = Results::default();
        results.update(port.as_bytes());
        let re = regexes(&spec).unwrap();
        let j = judge(
            &spec,
            &re,
            &p.probes,
            &results,
            &Ending::Done,
            &[],
            "multi-user.target",
        );
        let verdicts: Vec<(&str, bool)> = j.checks.iter().map(|c| (c.name.as_str(), c.passed)).collect();
        assert_eq!(
            verdicts,
            [
                ("boot settles", true),
                ("`multi-user.target` active", true),
                ("no failed units", false),
                ("unit `ssh.service` active", false),
                ("command `greets`", true),
                ("command `fails`", false),
            ]
        );
        assert_eq!(j.checks[0].seconds, 12.5);
        assert_eq!(j.checks[2].reason.as_deref(), Some("failed: `bad.service`"));
        assert!(j.checks[2].log.iter().any(|l| l.contains("Active: failed")));
        assert_eq!(j.checks[3].reason.as_deref(), Some("`ssh.service` is `inactive`"));
        assert_eq!(
            j.checks[5].reason.as_deref(),
            Some("exited with status 1, expected 0")
        );
        assert_eq!(j.checks[5].log, ["stdout:", "  oops"]);
        assert_eq!(j.boot_time.unwrap().target_reached, Some(20.5));
        assert_eq!(j.blame, ["5.1s a.service", "1.0s b.service"]);
    }

    #[test]
    fn missing_records_name_the_ending_and_quote_the_console_once() {
        let spec = spec();
        let p = payload(&spec).unwrap();
        let results = Results::default();
        let console = vec!["Kernel panic - not syncing: VFS: Unable to mount root fs".to_owned()];
        let ending = Ending::BootTimeout {
            seconds: 300,
            harness_started: false,
        };
        let j = judge(
            &spec,
            &regexes(&spec).unwrap(),
            &p.probes,
            &results,
            &ending,
            &console,
            "multi-user.target",
        );
        assert!(j.checks.iter().all(|c| !c.passed));
        assert!(j.checks[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("harness never ran"));
        assert!(j.checks[0].log.iter().any(|l| l.contains("Kernel panic")));
        assert!(j.checks[0].help.is_some());
        assert!(j.checks[1].log.is_empty());
    }

    /// The archive line of the hive checklist, as the guest writes it.
    fn archive_line(status: i32, tar: &[u8], err: &str) -> String {
        use base64::Engine as _;
        let b = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "archive\thive-checklist\t{status}\t50\t51\t{}\t{}\n",
            b(tar),
            b(err.as_bytes())
        )
    }

    fn judge_checklist(port: &str) -> CheckResult {
        let spec = TestSpec {
            hive_checklist: true,
            ..TestSpec::default()
        };
        let p = payload(&spec).unwrap();
        let mut results = Results::default();
        results.update(port.as_bytes());
        let j = judge(
            &spec,
            &[],
            &p.probes,
            &results,
            &Ending::Done,
            &[],
            "multi-user.target",
        );
        let c = j.checks.last().unwrap().clone();
        assert_eq!(c.name, HIVE_CHECKLIST);
        c
    }

    #[test]
    fn the_hive_checklist_lists_each_failed_rule_and_the_skipped_one() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, text, mode) in [
            ("etc/hostname", "hive_x\n", 0o644),
            ("etc/ssh/ssh_host_ed25519_key", "k", 0o600),
            ("etc/machine-id", "0123456789abcdef\n", 0o444),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(text.len() as u64);
            b.append_data(&mut h, name, text.as_bytes()).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let c = judge_checklist(&archive_line(0, &tar, ""));
        assert!(!c.passed);
        assert!(
            c.reason.as_deref().unwrap().contains("`hostname`"),
            "{:?}",
            c.reason
        );
        assert!(
            c.log
                .iter()
                .any(|l| l.starts_with("hostname `/etc/hostname`: `hive_x` is not a valid DNS name — ")),
            "{:#?}",
            c.log
        );
        assert!(c.log.iter().any(|l| l.starts_with("nftables ")), "{:#?}", c.log);
        // The host keys and machine-id the first boot made are no failure, and it says so.
        assert!(!c.log.iter().any(|l| l.starts_with("host_keys")), "{:#?}", c.log);
        assert_eq!(
            c.log.last().map(String::as_str),
            Some("skipped host_keys: a booted system: the first boot made its SSH host keys and machine-id")
        );
        assert!(c.help.is_some());
    }

    #[test]
    fn the_hive_checklist_fails_clearly_without_its_archive() {
        let c = judge_checklist(&archive_line(
            3,
            b"",
            "the archive is 70000000 bytes, above the bound of 67108864\n",
        ));
        assert!(
            c.reason.as_deref().unwrap().contains("above the bound"),
            "{:?}",
            c.reason
        );
        assert_eq!(
            c.log,
            ["the archive is 70000000 bytes, above the bound of 67108864"]
        );
        let c = judge_checklist(&archive_line(
            2,
            b"",
            "tar: /etc: Cannot open: Permission denied\n",
        ));
        assert_eq!(
            c.reason.as_deref(),
            Some("the guest could not archive the hive's files (`tar` exited with 2)")
        );
        let c = judge_checklist(&archive_line(
            0,
            b"not a tar archive, but long enough to be read as a header?",
            "",
        ));
        assert!(!c.passed);
        let c = judge_checklist("");
        assert_eq!(c.reason.as_deref(), Some("the guest sent no result for it"));
    }

    #[test]
    fn a_command_that_times_out_says_so() {
        let spec = spec();
        let p = payload(&spec).unwrap();
        let mut results = Results::default();
        results.update(rec("cmd-0", 124, "", "").as_bytes());
        let j = judge(
            &spec,
            &regexes(&spec).unwrap(),
            &p.probes,
            &results,
            &Ending::Done,
            &[],
            "multi-user.target",
        );
        let c = j.checks.iter().find(|c| c.name == "command `greets`").unwrap();
        assert_eq!(c.reason.as_deref(), Some("timed out after 5 s"));
    }
}
