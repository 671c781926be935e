//! The `monitoring` module: what tells an operator how a hive is doing without logging
//! in — the Prometheus node exporter, bounded journald storage, a periodic health check
//! writing `/var/lib/w4b/health.json`, and the daily update timer.
//!
//! The node exporter is Debian's `prometheus-node-exporter` (the package set
//! `//packages:w4b-monitoring`, installed at build time before the layers); its listen
//! address comes from the image's `/etc/default/prometheus-node-exporter`, which the
//! module's layer writes over the package's and unattended upgrades keep
//! (`--force-confold`). Its wants-symlink points at the packaged unit.
//!
//! The health check is a small Python program (python3 is part of Raspberry Pi OS Lite;
//! the `w4b-monitoring` package set installs it on other bases)
//! that reads its configuration from `/etc/w4b/health-check.json` — the units to watch,
//! the database to ask for the newest reading — so no hive value is ever spliced into
//! code. It writes the status file atomically (temporary file, then rename).
//!
//! Updates run `apt-get update` then `apt-get -y upgrade` from a timer at
//! `maintenance.updates.update_hour` on the allowed days, only when `auto_update` is set.
//! This module adds no first-boot section: everything it needs is in the tree.

use serde::Serialize;

use super::{database, GenFile, Generated, Module, ModuleError};
use crate::hive::config::{HiveImage, Updates};

pub const NODE_EXPORTER_DEFAULTS: &str = "/etc/default/prometheus-node-exporter";
pub const JOURNALD_DROPIN: &str = "/etc/systemd/journald.conf.d/w4b.conf";
pub const HEALTH_SCRIPT: &str = "/usr/local/lib/w4b/health-check";
pub const HEALTH_CONFIG: &str = "/etc/w4b/health-check.json";
pub const HEALTH_STATUS: &str = "/var/lib/w4b/health.json";
pub const HEALTH_SERVICE: &str = "w4b-health-check.service";
pub const HEALTH_TIMER: &str = "w4b-health-check.timer";
pub const UPDATE_SERVICE: &str = "w4b-update.service";
pub const UPDATE_TIMER: &str = "w4b-update.timer";

/// Node exporter, journald limits, health check and update timer.
pub struct Monitoring;

/// Everything [`Monitoring::generate`] reads: [`Module::inputs`] is this, serialised.
#[derive(Serialize)]
struct Plan<'a> {
    node_exporter_port: u16,
    journal_max_use: &'a str,
    health_interval: u64,
    /// Sensor manager's metrics port, when it runs (a clash is an error here too).
    sensor_metrics_port: Option<u16>,
    /// Units whose state the health check reports, sorted.
    units: Vec<&'static str>,
    /// The database whose newest reading the health check dates.
    database: Option<&'a str>,
    updates: &'a Updates,
}

fn plan(cfg: &HiveImage) -> Plan<'_> {
    let s = &cfg.settings;
    let mut units = vec!["prometheus-node-exporter.service"];
    if s.sensor_manager.enabled {
        units.push("w4b-sensor-manager.service");
    }
    if database::local_database(cfg).is_some() {
        units.push(database::CLUSTER_UNIT);
    }
    if s.vpn_enabled && cfg.hive.security.is_some() {
        units.push("wg-quick@wg0.service");
    }
    if s.firewall.enabled {
        units.push("nftables.service");
    }
    if s.system.ssh_enabled {
        units.push("ssh.service");
    }
    units.sort_unstable();
    Plan {
        node_exporter_port: s.monitoring.node_exporter_port,
        journal_max_use: &s.monitoring.journal_max_use,
        health_interval: s.monitoring.health_interval,
        sensor_metrics_port: s.sensor_manager.enabled.then_some(s.sensor_manager.metrics_port),
        units,
        database: database::local_database(cfg).map(|d| d.database.as_str()),
        updates: &cfg.hive.maintenance.updates,
    }
}

fn error(message: impl Into<String>, help: impl Into<String>) -> ModuleError {
    ModuleError {
        module: "monitoring",
        message: message.into(),
        help: Some(help.into()),
    }
}

/// systemd's day names for `OnCalendar=`, from the hive's `allowed_days`.
fn calendar_days(days: &[String]) -> Result<String, ModuleError> {
    const DAYS: [(&str, &str); 7] = [
        ("monday", "Mon"),
        ("tuesday", "Tue"),
        ("wednesday", "Wed"),
        ("thursday", "Thu"),
        ("friday", "Fri"),
        ("saturday", "Sat"),
        ("sunday", "Sun"),
    ];
    let mut picked = [false; 7];
    for d in days {
        let lower = d.to_ascii_lowercase();
        let i = DAYS
            .iter()
            .position(|(long, short)| lower == *long || lower == short.to_ascii_lowercase())
            .ok_or_else(|| {
                error(
                    format!("`{d}` in `maintenance.updates.allowed_days` is not a day of the week"),
                    "use `Monday` … `Sunday` (an empty list means every day)",
                )
            })?;
        picked[i] = true;
    }
    // Week order, each day once: the same days in any order give the same timer.
    Ok(DAYS
        .iter()
        .zip(picked)
        .filter(|(_, on)| *on)
        .map(|((_, short), _)| *short)
        .collect::<Vec<_>>()
        .join(","))
}

/// journald sizes: digits with an optional `K`, `M`, `G` or `T` (base 1024).
fn check_size(size: &str) -> Result<(), ModuleError> {
    let digits = size.trim_end_matches(['K', 'M', 'G', 'T']);
    let suffix_len = size.len() - digits.len();
    if digits.is_empty() || suffix_len > 1 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(error(
            format!("`{size}` is not a journald size"),
            "set `monitoring.journal_max_use` to a size like `200M` or `1G`",
        ));
    }
    Ok(())
}

fn check(p: &Plan<'_>) -> Result<(), ModuleError> {
    if p.node_exporter_port == 0 {
        return Err(error(
            "the node exporter port is 0",
            "set `monitoring.node_exporter_port` (default 9100)",
        ));
    }
    if p.sensor_metrics_port == Some(p.node_exporter_port) {
        return Err(error(
            format!(
                "the node exporter and the sensor manager would both listen on port {}",
                p.node_exporter_port
            ),
            "give `services.sensor_manager.metrics_port` another port (default 9101)",
        ));
    }
    check_size(p.journal_max_use)?;
    if p.health_interval < 10 {
        return Err(error(
            format!(
                "a health check every {} s would keep the Pi busy",
                p.health_interval
            ),
            "set `monitoring.health_interval` to at least 10 seconds (default 300)",
        ));
    }
    if p.updates.update_hour > 23 {
        return Err(error(
            format!("`maintenance.updates.update_hour` is {}", p.updates.update_hour),
            "use an hour from 0 to 23",
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct HealthConfig<'a> {
    status_file: &'static str,
    units: &'a [&'static str],
    disk_paths: [&'static str; 2],
    temperature_file: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'a str>,
}

/// The health check: static code, configured by [`HEALTH_CONFIG`].
const HEALTH_PY: &str = r#"#!/usr/bin/python3
"""w4b health check: writes the hive's state as JSON (configured by the JSON file given
as the only argument). Generated by w4b; every probe is allowed to fail on its own."""
import json
import os
import shutil
import subprocess
import sys
import tempfile


def unit_state(unit):
    r = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def disk(path):
    try:
        u = shutil.disk_usage(path)
    except OSError:
        return None
    return {"total_bytes": u.total, "free_bytes": u.free,
            "used_percent": round(100.0 * (u.total - u.free) / u.total, 1) if u.total else None}


def temperature(path):
    try:
        with open(path) as f:
            return round(int(f.read().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def last_reading_age(database):
    # As the postgres user over the local socket; the database name is an argument.
    cmd = ["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-q",
           "-d", database, "-c",
           "SELECT COALESCE(EXTRACT(EPOCH FROM now() - max(time))::bigint, -1) FROM sensor_readings"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        age = int(r.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return None if age < 0 else age


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    units = {u: unit_state(u) for u in cfg["units"]}
    report = {
        "healthy": all(s == "active" for s in units.values()),
        "services": units,
        "disk": {p: disk(p) for p in cfg["disk_paths"]},
        "temperature_celsius": temperature(cfg["temperature_file"]),
    }
    if cfg.get("database"):
        report["last_reading_age_seconds"] = last_reading_age(cfg["database"])
    with open("/proc/uptime") as f:
        report["uptime_seconds"] = int(float(f.read().split()[0]))
    out = cfg["status_file"]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), prefix=".health.")
    with os.fdopen(fd, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return 0 if report["healthy"] else 1


if __name__ == "__main__":
    sys.exit(main())
"#;

fn health_service() -> String {
    format!(
        "# w4b: the hive's health check (generated).\n\
         [Unit]\n\
         Description=W4B health check\n\
         Documentation=file:{HEALTH_CONFIG}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={HEALTH_SCRIPT} {HEALTH_CONFIG}\n\
         # An unhealthy hive exits 1 after writing its report; that is not a failed check.\n\
         SuccessExitStatus=1\n\
         Nice=10\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         ReadWritePaths=/var/lib/w4b\n"
    )
}

fn health_timer(p: &Plan<'_>) -> String {
    format!(
        "# w4b: run the health check every {i} s (generated).\n\
         [Unit]\n\
         Description=W4B health check every {i} s\n\
         \n\
         [Timer]\n\
         OnBootSec=120\n\
         OnUnitActiveSec={i}\n\
         AccuracySec=10\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        i = p.health_interval
    )
}

fn update_service() -> String {
    "# w4b: scheduled package upgrade (generated).\n\
     [Unit]\n\
     Description=W4B package update\n\
     Wants=network-online.target\n\
     After=network-online.target\n\
     \n\
     [Service]\n\
     Type=oneshot\n\
     Environment=DEBIAN_FRONTEND=noninteractive\n\
     # The two commands run in order and the second only if the first succeeded.\n\
     ExecStart=/usr/bin/apt-get -o DPkg::Lock::Timeout=600 update\n\
     ExecStart=/usr/bin/apt-get -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold upgrade\n\
     Nice=10\n\
     IOSchedulingClass=idle\n"
        .to_owned()
}

fn update_timer(p: &Plan<'_>, days: &str) -> String {
    let when = if days.is_empty() {
        format!("*-*-* {:02}:00:00", p.updates.update_hour)
    } else {
        format!("{days} *-*-* {:02}:00:00", p.updates.update_hour)
    };
    format!(
        "# w4b: package updates (maintenance.updates, generated).\n\
         [Unit]\n\
         Description=W4B package update at {when}\n\
         \n\
         [Timer]\n\
         OnCalendar={when}\n\
         # A hive that was off at that hour catches up at boot.\n\
         Persistent=true\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
    )
}

impl Module for Monitoring {
    fn name(&self) -> &'static str {
        "monitoring"
    }

    fn version(&self) -> u32 {
        1
    }

    fn inputs<'a>(&self, cfg: &'a HiveImage) -> Result<crate::modules::Inputs<'a>, ModuleError> {
        Ok((crate::modules::inputs_json(self.name(), plan(cfg))?, Vec::new()))
    }

    fn enabled(&self, cfg: &HiveImage) -> bool {
        cfg.settings.monitoring.enabled
    }

    fn generate(&self, cfg: &HiveImage) -> Result<Generated, ModuleError> {
        if !self.enabled(cfg) {
            return Ok(Generated::default());
        }
        let p = plan(cfg);
        check(&p)?;
        let days = calendar_days(&p.updates.allowed_days)?;
        let health_config = HealthConfig {
            status_file: HEALTH_STATUS,
            units: &p.units,
            disk_paths: ["/", "/boot/firmware"],
            temperature_file: "/sys/class/thermal/thermal_zone0/temp",
            database: p.database,
        };
        let mut health_json = serde_json::to_string_pretty(&health_config).map_err(|e| {
            error(
                format!("cannot serialise the health-check configuration: {e}"),
                "report this as a w4b bug",
            )
        })?;
        health_json.push('\n');
        let sd = |unit: &str| format!("/etc/systemd/system/{unit}");
        let mut files = vec![
            GenFile::file(
                NODE_EXPORTER_DEFAULTS,
                format!(
                    "# Arguments of prometheus-node-exporter (w4b; kept by dpkg on install).\n\
                     ARGS=\"--web.listen-address=:{}\"\n",
                    p.node_exporter_port
                ),
                0o644,
            ),
            GenFile::symlink(
                "/etc/systemd/system/multi-user.target.wants/prometheus-node-exporter.service",
                "/lib/systemd/system/prometheus-node-exporter.service",
            ),
            GenFile::dir("/etc/systemd/journald.conf.d", 0o755),
            GenFile::file(
                JOURNALD_DROPIN,
                format!(
                    "# w4b: bound the journal on the SD card.\n[Journal]\nStorage=persistent\nSystemMaxUse={}\n",
                    p.journal_max_use
                ),
                0o644,
            ),
            GenFile::dir("/usr/local/lib/w4b", 0o755),
            GenFile::file(HEALTH_SCRIPT, HEALTH_PY, 0o755),
            GenFile::dir("/etc/w4b", 0o755),
            GenFile::file(HEALTH_CONFIG, health_json, 0o644),
            GenFile::file(&sd(HEALTH_SERVICE), health_service(), 0o644),
            GenFile::file(&sd(HEALTH_TIMER), health_timer(&p), 0o644),
            GenFile::symlink(&sd(&format!("timers.target.wants/{HEALTH_TIMER}")), &sd(HEALTH_TIMER)),
        ];
        if p.updates.auto_update {
            files.extend([
                GenFile::file(&sd(UPDATE_SERVICE), update_service(), 0o644),
                GenFile::file(&sd(UPDATE_TIMER), update_timer(&p, &days), 0o644),
                GenFile::symlink(
                    &sd(&format!("timers.target.wants/{UPDATE_TIMER}")),
                    &sd(UPDATE_TIMER),
                ),
            ]);
        }
        Ok(Generated {
            files,
            sections: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hive::config::Secret;
    use crate::modules::oracles;
    use crate::modules::testing::{find, lan_hive, render, text, wifi_hive};
    use crate::modules::Body;

    fn generate(cfg: &HiveImage) -> Generated {
        match Monitoring.generate(cfg) {
            Ok(g) => g,
            Err(e) => panic!("generate: {e}"),
        }
    }

    #[test]
    fn snapshot_wifi() {
        insta::assert_snapshot!(render(&generate(&wifi_hive())));
    }

    #[test]
    fn snapshot_lan() {
        let mut cfg = lan_hive();
        cfg.hive.maintenance.updates.allowed_days = vec!["saturday".into(), "Wednesday".into()];
        cfg.hive.maintenance.updates.update_hour = 22;
        cfg.settings.vpn_enabled = false;
        insta::assert_snapshot!(render(&generate(&cfg)));
    }

    #[test]
    fn modes_and_links() {
        let g = generate(&wifi_hive());
        assert_eq!(find(&g, HEALTH_SCRIPT).mode, 0o755);
        assert_eq!(find(&g, NODE_EXPORTER_DEFAULTS).mode, 0o644);
        for f in &g.files {
            assert_eq!((f.uid, f.gid), (0, 0), "{}", f.path);
        }
        for timer in [HEALTH_TIMER, UPDATE_TIMER] {
            let link = find(&g, &format!("/etc/systemd/system/timers.target.wants/{timer}"));
            assert_eq!(link.body, Body::Symlink(format!("/etc/systemd/system/{timer}")));
        }
        assert!(text(&g, NODE_EXPORTER_DEFAULTS).contains("ARGS=\"--web.listen-address=:9100\""));
        assert!(text(&g, JOURNALD_DROPIN).contains("SystemMaxUse=200M\n"));
        assert!(g.sections.is_empty());
    }

    #[test]
    fn timers_follow_the_configuration() {
        let g = generate(&wifi_hive());
        assert!(text(&g, &format!("/etc/systemd/system/{HEALTH_TIMER}")).contains("OnUnitActiveSec=300\n"));
        assert!(text(&g, &format!("/etc/systemd/system/{UPDATE_TIMER}"))
            .contains("OnCalendar=Sun *-*-* 03:00:00\n"));
        let mut cfg = wifi_hive();
        cfg.hive.maintenance.updates.allowed_days = vec!["Friday".into(), "monday".into(), "Mon".into()];
        let timer = text(&generate(&cfg), &format!("/etc/systemd/system/{UPDATE_TIMER}"));
        assert!(timer.contains("OnCalendar=Mon,Fri *-*-* 03:00:00\n"), "{timer}");
        cfg.hive.maintenance.updates.allowed_days.clear();
        let timer = text(&generate(&cfg), &format!("/etc/systemd/system/{UPDATE_TIMER}"));
        assert!(timer.contains("OnCalendar=*-*-* 03:00:00\n"), "{timer}");
        cfg.hive.maintenance.updates.auto_update = false;
        let g = generate(&cfg);
        assert!(g.files.iter().all(|f| !f.path.to_string().contains("w4b-update")));
    }

    #[test]
    fn bad_settings_are_errors() {
        type Case = (&'static str, fn(&mut HiveImage));
        let cases: [Case; 5] = [
            ("both listen on port 9101", |c| {
                c.settings.monitoring.node_exporter_port = 9101
            }),
            ("not a journald size", |c| {
                c.settings.monitoring.journal_max_use = "200 MB".into()
            }),
            ("not a day of the week", |c| {
                c.hive.maintenance.updates.allowed_days = vec!["Sonntag".into()]
            }),
            ("update_hour", |c| c.hive.maintenance.updates.update_hour = 24),
            ("keep the Pi busy", |c| c.settings.monitoring.health_interval = 1),
        ];
        for (want, change) in cases {
            let mut cfg = wifi_hive();
            change(&mut cfg);
            match Monitoring.generate(&cfg) {
                Ok(_) => panic!("accepted a configuration that should fail with `{want}`"),
                Err(e) => {
                    assert!(e.to_string().contains(want), "`{e}` lacks `{want}`");
                    assert!(e.help.is_some());
                }
            }
        }
    }

    #[test]
    fn the_health_check_watches_the_enabled_services() {
        let g = generate(&wifi_hive());
        let cfg: serde_json::Value = match serde_json::from_str(&text(&g, HEALTH_CONFIG)) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            cfg["units"],
            serde_json::json!([
                "nftables.service",
                "postgresql@15-main.service",
                "prometheus-node-exporter.service",
                "ssh.service",
                "w4b-sensor-manager.service",
                "wg-quick@wg0.service"
            ])
        );
        assert_eq!(cfg["database"], "hivedb");
        assert_eq!(cfg["status_file"], HEALTH_STATUS);
    }

    #[test]
    fn units_verify_and_files_parse() {
        let g = generate(&wifi_hive());
        let unit = |u: &str| text(&g, &format!("/etc/systemd/system/{u}"));
        let (hs, ht, us, ut) = (
            unit(HEALTH_SERVICE),
            unit(HEALTH_TIMER),
            unit(UPDATE_SERVICE),
            unit(UPDATE_TIMER),
        );
        oracles::systemd_verify(&[
            (HEALTH_SERVICE, &hs),
            (HEALTH_TIMER, &ht),
            (UPDATE_SERVICE, &us),
            (UPDATE_TIMER, &ut),
        ]);
        if oracles::have("systemd-analyze") {
            let out =
                oracles::run_sh("systemd-analyze calendar 'Sun *-*-* 03:00:00' >/dev/null && echo ok\n");
            assert_eq!(out.trim(), "ok");
        }
        // journald's drop-in and the units are INI to configparser.
        let ini =
            "import configparser, sys\np = configparser.ConfigParser(strict=True, interpolation=None)\n\
                   p.optionxform = str\np.read_string(sys.stdin.read())\nprint('ok')";
        oracles::python(ini, &text(&g, JOURNALD_DROPIN), "configparser");
        oracles::python(ini, &ht, "configparser");
        // The health check compiles, and runs against a scratch status file.
        oracles::python(
            "import sys; compile(sys.stdin.read(), 'health-check', 'exec')",
            HEALTH_PY,
            "json",
        );
    }

    #[test]
    fn the_health_check_writes_a_report() {
        crate::oracle::require!("python3");
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let script = dir.path().join("health-check");
        let config = dir.path().join("config.json");
        let status = dir.path().join("state/health.json");
        let cfg = serde_json::json!({
            "status_file": status,
            "units": [],
            "disk_paths": ["/"],
            "temperature_file": dir.path().join("no-such-file"),
        });
        if let Err(e) =
            std::fs::write(&script, HEALTH_PY).and_then(|()| std::fs::write(&config, cfg.to_string()))
        {
            panic!("{e}");
        }
        oracles::run_sh(&format!(
            "python3 '{}' '{}'\n",
            script.display(),
            config.display()
        ));
        let report: serde_json::Value =
            match std::fs::read_to_string(&status).map(|t| serde_json::from_str(&t)) {
                Ok(Ok(v)) => v,
                other => panic!("{other:?}"),
            };
        assert_eq!(report["healthy"], true);
        assert!(
            report["disk"]["/"]["total_bytes"].as_u64().is_some_and(|b| b > 0),
            "{report}"
        );
        assert!(report["temperature_celsius"].is_null());
    }

    #[test]
    fn inputs_ignore_unrelated_fields_and_follow_related_ones() {
        let base = wifi_hive();
        let (json, secrets) = Monitoring.inputs(&base).expect("inputs");
        assert!(secrets.is_empty());
        let mut unrelated = base.clone();
        unrelated.hive.sensors.clear();
        unrelated.hive.collector.interval = 10;
        unrelated.settings.software.packages.clear();
        unrelated.settings.database.retention_days = 90;
        if let Some(s) = unrelated.hive.security.as_mut() {
            s.database.password = Secret::new("security.database.password", "changed");
        }
        assert_eq!(Monitoring.inputs(&unrelated).expect("inputs").0, json);
        let mut related = base.clone();
        related.hive.maintenance.updates.update_hour = 4;
        assert_ne!(Monitoring.inputs(&related).expect("inputs").0, json);
    }
}
