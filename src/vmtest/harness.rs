//! The harness's way into the guest without touching the image: a second virtual disk
//! and a few kernel command-line options.
//!
//! The disk (drive serial `w4b-test`, so udev names it `/dev/disk/by-id/virtio-w4b-test`)
//! is a bare tar archive holding `w4b-test/guest.sh` — the fixed library of
//! `src/vmtest/guest.sh` followed by one call per check of the spec — and each command
//! check's text as its own file, so no command is ever quoted into another.
//!
//! The command line starts it with systemd's own generators, which every systemd image
//! has: `systemd.run=` lines become the `ExecStart=`s of `kernel-command-line.service`
//! (wait for the disk, unpack it to `/run`, hand the script to `systemd-run --no-block`),
//! `systemd.wants=` pulls that service into the boot, and `systemd.unit=` keeps the
//! image's own default target as the goal (the run generator would otherwise make the
//! service itself the default target, and the system would never reach
//! `multi-user.target`). The hand-off matters: a oneshot in the boot transaction that
//! waited for `systemctl is-system-running --wait` would wait for itself. `_action=none`
//! keeps systemd from powering off when the service ends. Measured with systemd 252
//! (bookworm).
//!
//! Results come back on a virtio-serial port (`org.w4b.test.results`), which the host
//! connects to a file: the console stays the system's own, whole, as the boot log.

use std::fmt::Write as _;

use super::spec::TestSpec;

/// The guest's serial number of the harness disk.
pub const DISK_SERIAL: &str = "w4b-test";
/// The name of the results port in the guest.
pub const RESULTS_PORT: &str = "org.w4b.test.results";

/// The fixed part of the guest script.
const GUEST_LIBRARY: &str = include_str!("guest.sh");

/// The version of what the harness does in the guest (`guest.sh`, [`payload`],
/// [`kernel_cmdline`]) and how the host judges its records (`super::judge`). Part of the
/// `test` build step's key: bump it whenever a change could turn a verdict, so images
/// that passed under the old harness are booted again. 2: the hive checklist in the guest.
pub const HARNESS_VERSION: u32 = 2;

/// What one record of the guest answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `systemctl is-system-running --wait`.
    BootState,
    /// `systemctl is-active multi-user.target`.
    MultiUser,
    /// `systemd-analyze`.
    Analyze,
    /// `systemd-analyze blame`, the first ten lines.
    Blame,
    /// `systemctl list-units --state=failed`.
    FailedUnits,
    /// `systemctl is-active UNIT` for `units_active[i]`.
    UnitActive(usize),
    /// `commands[i]`.
    Command(usize),
    /// The files the hive checklist reads, as a tar archive (`hive_checklist` in the spec).
    HiveChecklist,
}

/// The harness disk's bytes and the records the guest will send, in order, by id.
#[derive(Debug)]
pub struct Payload {
    pub tar: Vec<u8>,
    pub probes: Vec<(String, Probe)>,
}

/// `s` quoted for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The harness disk for `spec`: the guest script, its calls, the command files.
pub fn payload(spec: &TestSpec) -> std::io::Result<Payload> {
    let mut probes = vec![
        ("boot".to_string(), Probe::BootState),
        ("multi-user".to_string(), Probe::MultiUser),
    ];
    let mut script = String::from(GUEST_LIBRARY);
    // The guest measures its deadline in seconds of uptime, which starts a moment after
    // QEMU does: the host's own deadline, a little later, catches a guest that never
    // gets this far.
    let _ = writeln!(script, "check_boot boot multi-user {}", spec.boot_timeout);
    probes.push(("analyze".into(), Probe::Analyze));
    probes.push(("blame".into(), Probe::Blame));
    script.push_str("analyze analyze blame\n");
    probes.push(("failed".into(), Probe::FailedUnits));
    script.push_str("failed_units failed\n");
    for (i, unit) in spec.units_active.iter().enumerate() {
        let id = format!("unit-{i}");
        let _ = writeln!(script, "unit_active {id} {}", sh_quote(unit));
        probes.push((id, Probe::UnitActive(i)));
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, c) in spec.commands.iter().enumerate() {
        let id = format!("cmd-{i}");
        let _ = writeln!(script, "run_command {id} {}", c.timeout.max(1));
        files.push((
            format!("w4b-test/commands/{id}"),
            format!("{}\n", c.run).into_bytes(),
        ));
        probes.push((id, Probe::Command(i)));
    }
    // Last: it reads the system as the other checks left it.
    if spec.hive_checklist {
        script.push_str("hive_checklist hive-checklist\n");
        probes.push(("hive-checklist".into(), Probe::HiveChecklist));
    }
    script.push_str("finish\n");
    files.insert(0, ("w4b-test/guest.sh".into(), script.into_bytes()));

    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for dir in ["w4b-test/", "w4b-test/commands/"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        builder.append_data(&mut h, dir, std::io::empty())?;
    }
    for (path, bytes) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        h.set_mtime(0);
        builder.append_data(&mut h, path, bytes.as_slice())?;
    }
    let tar = builder.into_inner()?;
    Ok(Payload { tar, probes })
}

/// The kernel command line: the image's root by PARTUUID, the serial console, and the
/// options that start the harness (see the module doc). `target` is the image's own
/// default target.
pub fn kernel_cmdline(partuuid: &str, target: &str) -> String {
    let disk = format!("/dev/disk/by-id/virtio-{DISK_SERIAL}");
    [
        format!("root=PARTUUID={partuuid}"),
        "rw".into(),
        "rootwait".into(),
        "console=ttyAMA0".into(),
        // A kernel panic restarts at once, and `-no-reboot` turns that into QEMU exiting:
        // the host sees it instead of waiting for its deadline.
        "panic=1".into(),
        format!("systemd.unit={target}"),
        "systemd.wants=kernel-command-line.service".into(),
        "systemd.run_success_action=none".into(),
        "systemd.run_failure_action=none".into(),
        format!("systemd.run=\"udevadm wait --timeout=120 {disk}\""),
        format!("systemd.run=\"tar -xf {disk} -C /run\""),
        "systemd.run=\"systemd-run --no-block --unit=w4b-test --collect sh /run/w4b-test/guest.sh\"".into(),
    ]
    .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmtest::spec::CommandCheck;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(sh_quote("a'b c"), r"'a'\''b c'");
    }

    #[test]
    fn the_payload_carries_the_script_and_each_command() {
        let spec = TestSpec {
            units_active: vec!["ssh.service".into(), "it's.service".into()],
            commands: vec![CommandCheck {
                name: "hostname".into(),
                run: "hostname; echo 'x'".into(),
                exit: 0,
                stdout_contains: Some("w4b".into()),
                stdout_regex: None,
                timeout: 30,
            }],
            ..TestSpec::default()
        };
        let p = payload(&spec).unwrap();
        let ids: Vec<&str> = p.probes.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "boot",
                "multi-user",
                "analyze",
                "blame",
                "failed",
                "unit-0",
                "unit-1",
                "cmd-0"
            ]
        );
        let mut archive = tar::Archive::new(p.tar.as_slice());
        let mut entries = std::collections::BTreeMap::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            entries.insert(path, s);
        }
        assert_eq!(entries["w4b-test/commands/cmd-0"], "hostname; echo 'x'\n");
        let script = &entries["w4b-test/guest.sh"];
        assert!(script.ends_with(
            "check_boot boot multi-user 300\nanalyze analyze blame\nfailed_units failed\n\
             unit_active unit-0 'ssh.service'\nunit_active unit-1 'it'\\''s.service'\n\
             run_command cmd-0 30\nfinish\n"
        ));
        // Deterministic: the same spec, the same bytes.
        assert_eq!(payload(&spec).unwrap().tar, p.tar);
        // A hive's image: the checklist's archive comes last.
        let hive = payload(&TestSpec {
            hive_checklist: true,
            ..spec
        })
        .unwrap();
        assert_eq!(
            hive.probes.last(),
            Some(&("hive-checklist".to_owned(), Probe::HiveChecklist))
        );
        assert_eq!(hive.probes.len(), p.probes.len() + 1);
    }

    #[test]
    fn the_command_line_keeps_the_default_target() {
        let c = kernel_cmdline("5734b007-01", "multi-user.target");
        assert!(c.starts_with("root=PARTUUID=5734b007-01 rw rootwait console=ttyAMA0 "));
        assert!(c.contains(" systemd.unit=multi-user.target "));
        assert!(c.contains("systemd.run=\"tar -xf /dev/disk/by-id/virtio-w4b-test -C /run\""));
    }
}
