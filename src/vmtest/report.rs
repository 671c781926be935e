//! The outcome of a boot test, for people and for tools.
//!
//! [`Report`] serialises as one JSON object (`w4b.test/1`) whose fields come in the
//! order of the struct, checks in the order they ran: the same run always prints the
//! same shape. [`Report::render`] is the table `w4b test` prints on standard error: a line
//! per check, the log lines that explain each failure, the boot-time breakdown and where
//! the boot log is.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::boot_files::KernelSource;
use super::boot_time::BootTime;
use super::qemu::Accel;

/// The JSON schema name of `w4b test --message-format json`.
pub const SCHEMA: &str = "w4b.test/1";

/// One judged check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// Seconds the check took in the guest (for the boot: seconds from the kernel's start
    /// until the system settled).
    pub seconds: f64,
    /// Why it failed, in one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The log lines that explain a failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl CheckResult {
    pub fn pass(name: impl Into<String>, seconds: f64) -> CheckResult {
        CheckResult {
            name: name.into(),
            passed: true,
            seconds,
            reason: None,
            log: Vec::new(),
            help: None,
        }
    }

    pub fn fail(name: impl Into<String>, seconds: f64, reason: impl Into<String>) -> CheckResult {
        CheckResult {
            name: name.into(),
            passed: false,
            seconds,
            reason: Some(reason.into()),
            log: Vec::new(),
            help: None,
        }
    }

    pub fn with_log(mut self, log: Vec<String>) -> CheckResult {
        self.log = log;
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> CheckResult {
        self.help = Some(help.into());
        self
    }
}

/// The virtual machine that ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Machine {
    pub qemu: PathBuf,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u32,
    /// The kernel command line, harness options included.
    pub cmdline: String,
}

/// The whole outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub image: PathBuf,
    /// BLAKE3 of the raw disk booted, when a build's `#test` step ran it (the report of a
    /// cached verdict is kept only while it names the same disk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    pub passed: bool,
    pub kernel: KernelSource,
    pub machine: Machine,
    pub checks: Vec<CheckResult>,
    /// `systemd-analyze`'s breakdown, when the guest got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_time: Option<BootTime>,
    /// The ten slowest units (`systemd-analyze blame`).
    pub blame: Vec<String>,
    /// The serial console, from the first line of the kernel on.
    pub boot_log: PathBuf,
    /// Seconds for the whole test, from starting QEMU to stopping it.
    pub seconds: f64,
}

impl Report {
    /// The report as people read it (no colour: the words carry the meaning).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "w4b test `{}`", self.image.display());
        let kernel = match &self.kernel {
            KernelSource::Image {
                kernel,
                version: Some(v),
                ..
            } => format!("`{kernel}` ({v}), the image's own"),
            KernelSource::Image { kernel, .. } => format!("`{kernel}`, the image's own"),
            KernelSource::Override { kernel, .. } => {
                format!("`{}`, given with `--kernel` (not the image's)", kernel.display())
            }
            KernelSource::Pinned {
                package,
                version,
                instead_of,
                ..
            } => {
                let own = if instead_of.is_empty() {
                    "the image has no kernel that".to_owned()
                } else {
                    format!("the image's own {}", instead_of.join(", "))
                };
                format!("`{package}` {version} (pinned generic kernel; {own} cannot boot the virt machine)")
            }
        };
        let _ = writeln!(s, "  kernel   {kernel}");
        let accel = match self.machine.accel {
            Accel::Tcg => "TCG (emulated)",
            Accel::Kvm => "KVM",
        };
        let _ = writeln!(
            s,
            "  machine  qemu-system-aarch64 -M virt, {accel}, {} CPUs, {} MiB",
            self.machine.cpus, self.machine.memory_mib
        );
        let width = self
            .checks
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(s, "\n  {:<width$}  result  seconds", "check");
        for c in &self.checks {
            let result = if c.passed { "pass" } else { "FAIL" };
            let _ = writeln!(s, "  {:<width$}  {result:<6}  {:>7.1}", c.name, c.seconds);
        }
        for c in self.checks.iter().filter(|c| !c.passed) {
            let _ = writeln!(
                s,
                "\n  FAIL {}: {}",
                c.name,
                c.reason.as_deref().unwrap_or("failed")
            );
            for line in &c.log {
                let _ = writeln!(s, "    | {line}");
            }
            if let Some(h) = &c.help {
                let _ = writeln!(s, "    help: {h}");
            }
        }
        // A passing check with something to say (the hive checklist's skipped rule).
        for c in self.checks.iter().filter(|c| c.passed && !c.log.is_empty()) {
            let _ = writeln!(s, "\n  note {}:", c.name);
            for line in &c.log {
                let _ = writeln!(s, "    | {line}");
            }
        }
        if let Some(t) = &self.boot_time {
            let mut phases = Vec::new();
            for (name, v) in [
                ("kernel", t.kernel),
                ("initrd", t.initrd),
                ("userspace", t.userspace),
            ] {
                if let Some(v) = v {
                    phases.push(format!("{v:.1} s ({name})"));
                }
            }
            let total = t.total.map(|v| format!(" = {v:.1} s")).unwrap_or_default();
            let _ = writeln!(s, "\n  boot     {}{total}", phases.join(" + "));
            if let (Some(target), Some(after)) = (&t.target, t.target_reached) {
                let _ = writeln!(
                    s,
                    "           `{target}` reached {after:.1} s after the kernel started"
                );
            }
        }
        if !self.blame.is_empty() {
            let _ = writeln!(s, "  slowest units (`systemd-analyze blame`):");
            for line in &self.blame {
                let _ = writeln!(s, "    {}", line.trim());
            }
        }
        let _ = writeln!(s, "  boot log `{}`", self.boot_log.display());
        let failed = self.checks.iter().filter(|c| !c.passed).count();
        let verdict = if self.passed { "passed" } else { "FAILED" };
        let _ = writeln!(
            s,
            "\n{verdict}: {} of {} checks passed in {:.1} s",
            self.checks.len() - failed,
            self.checks.len(),
            self.seconds
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pinned kernel is named plainly, with the kernel it stands in for.
    #[test]
    fn the_pinned_kernel_says_why_it_booted() {
        let report = Report {
            schema: SCHEMA,
            disk: None,
            image: "out/pi.img.zst".into(),
            passed: true,
            kernel: KernelSource::Pinned {
                package: "linux-image-6.1.0-28-arm64".into(),
                version: "6.1.119-1".into(),
                release: "6.1.0-28-arm64".into(),
                instead_of: vec!["`kernel8.img` on the boot partition (partition 1)".into()],
            },
            machine: Machine {
                qemu: "/usr/bin/qemu-system-aarch64".into(),
                accel: Accel::Tcg,
                cpus: 2,
                memory_mib: 1024,
                cmdline: String::new(),
            },
            checks: Vec::new(),
            boot_time: None,
            blame: Vec::new(),
            boot_log: "out/pi.boot.log".into(),
            seconds: 1.0,
        };
        let text = report.render();
        assert!(
            text.contains("  kernel   `linux-image-6.1.0-28-arm64` 6.1.119-1 (pinned generic kernel; the image's own `kernel8.img` on the boot partition (partition 1) cannot boot the virt machine)\n"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["kernel"]["source"], "pinned");
        assert_eq!(json["kernel"]["release"], "6.1.0-28-arm64");
    }

    #[test]
    fn a_passing_check_with_a_note_shows_it_and_failures_come_first() {
        let report = Report {
            schema: SCHEMA,
            disk: None,
            image: "out/north.img.zst".into(),
            passed: false,
            kernel: KernelSource::Image {
                kernel: "/boot/vmlinuz".into(),
                initrd: "/boot/initrd.img".into(),
                version: None,
            },
            machine: Machine {
                qemu: "/usr/bin/qemu-system-aarch64".into(),
                accel: Accel::Tcg,
                cpus: 2,
                memory_mib: 1024,
                cmdline: String::new(),
            },
            checks: vec![
                CheckResult::fail("no failed units", 0.3, "failed: `x.service`"),
                CheckResult::pass("hive checklist (in the guest)", 0.8)
                    .with_log(vec!["skipped host_keys: a booted system".into()]),
            ],
            boot_time: None,
            blame: Vec::new(),
            boot_log: "out/north.boot.log".into(),
            seconds: 120.0,
        };
        let text = report.render();
        let fail = text.find("  FAIL no failed units: failed: `x.service`").unwrap();
        let note = text
            .find("  note hive checklist (in the guest):\n    | skipped host_keys: a booted system\n")
            .unwrap();
        assert!(fail < note, "{text}");
        assert!(
            text.ends_with("FAILED: 1 of 2 checks passed in 120.0 s\n"),
            "{text}"
        );
    }
}
