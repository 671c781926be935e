//! What a hive image must show once it has booted: the checks `w4b test` runs for an image
//! built from a hive, derived from the same configuration the modules generate the image
//! from — so a hive with a database is asked for its database, one without a tunnel is
//! not asked for `wg0`.
//!
//! | module | checks |
//! |---|---|
//! | first boot | `w4b-firstboot.service` active; every section left its marker, the log ends complete |
//! | system | the hostname is the hive's |
//! | security | sshd active and listening on the hive's port; the `inet w4b` nftables table loaded; `wg0` configured (`wg show`) |
//! | database | the cluster active; the W4B database answers with TimescaleDB and the `sensor_readings` table |
//! | monitoring | the node exporter active and serving metrics on its port; the health check runs and writes its report |
//! | sensor manager | its unit started (`active`) or, ordered after the first boot, `activating` |
//!
//! The checks are commands run in the guest as root with `sh -c`, judged by exit status
//! and output (a [`TestDef`], the shape of a `test:` key, which an image's and a hive's
//! own `test:` are merged over); they use what every W4B image has (`systemctl`, `ss` from
//! iproute2, bash's `/dev/tcp`), and their names say what failed in the report.

use super::{database, monitoring, security, sensor_manager};
use crate::defs::test_spec::{CommandCheck, TestDef, DEFAULT_CHECK_TIMEOUT};
use crate::hive::config::HiveImage;
use crate::steps::firstboot;

/// The checks for a booted image of `cfg`, on top of the ones every test runs (the system
/// settles, `multi-user.target`, no failed unit).
pub fn boot_checks(cfg: &HiveImage) -> TestDef {
    let s = &cfg.settings;
    let mut units = vec![firstboot::UNIT.to_owned()];
    let mut commands = vec![
        cmd(
            "first boot: every section done",
            &format!(
                "test -e {done} || {{ echo 'not done: {done} is missing'; tail -n 20 {log}; exit 1; }}\n\
                 for f in {dir}/*.sh; do\n    \
                     [ -e \"$f\" ] || continue\n    \
                     n=$(basename \"$f\")\n    \
                     [ -e /var/lib/w4b/firstboot/$n.done ] || {{ echo \"section $n not done\"; tail -n 20 {log}; exit 1; }}\n\
                 done\n\
                 tail -n 1 {log}",
                done = firstboot::DONE,
                log = firstboot::LOG,
                dir = firstboot::SECTIONS_DIR,
            ),
            Some("first boot complete"),
        ),
        cmd("system: the hive's hostname", "hostname", Some(&cfg.hostname())),
    ];
    if s.system.ssh_enabled {
        units.push("ssh.service".into());
        let port = s.system.ssh_port;
        commands.push(cmd(
            &format!("security: sshd listening on port {port}"),
            &format!("ss -Htln 'sport = :{port}'"),
            Some(&format!(":{port}")),
        ));
    }
    if s.firewall.enabled {
        units.push("nftables.service".into());
        commands.push(cmd(
            "security: the firewall's ruleset loaded",
            "nft list table inet w4b",
            Some("table inet w4b"),
        ));
    }
    if s.vpn_enabled && cfg.hive.security.is_some() {
        units.push(security::WG_UNIT.into());
        commands.push(cmd(
            "security: the WireGuard interface configured",
            "wg show wg0",
            Some("interface: wg0"),
        ));
    }
    if let Some(db) = database::local_database(cfg) {
        units.push(database::CLUSTER_UNIT.into());
        commands.push(cmd(
            "database: PostgreSQL answers with the W4B schema",
            &format!(
                "runuser -u postgres -- psql -tA -d '{}' -c \"SELECT extname FROM pg_extension WHERE extname = 'timescaledb' UNION ALL SELECT tablename FROM pg_tables WHERE tablename = 'sensor_readings'\"",
                db.database.replace('\'', "")
            ),
            Some("timescaledb\nsensor_readings"),
        ));
    }
    if s.monitoring.enabled {
        units.push("prometheus-node-exporter.service".into());
        let port = s.monitoring.node_exporter_port;
        commands.push(cmd(
            &format!("monitoring: the node exporter serves metrics on port {port}"),
            &format!(
                "bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && printf \"GET /metrics HTTP/1.0\\r\\n\\r\\n\" >&3 && head -n 1 <&3'"
            ),
            Some(" 200 "),
        ));
        commands.push(cmd(
            "monitoring: the health check runs",
            &format!(
                "systemctl start {} && cat {}",
                monitoring::HEALTH_SERVICE,
                monitoring::HEALTH_STATUS
            ),
            None,
        ));
    }
    if s.sensor_manager.enabled && s.sensor_manager.auto_start {
        commands.push(CommandCheck {
            stdout_regex: Some("^(active|activating)".into()),
            ..cmd(
                "sensor manager: started",
                &format!("systemctl is-active {} || true", sensor_manager::UNIT),
                None,
            )
        });
    }
    TestDef {
        units_active: units,
        commands,
        ..TestDef::default()
    }
}

fn cmd(name: &str, run: &str, contains: Option<&str>) -> CommandCheck {
    CommandCheck {
        name: name.to_owned(),
        run: run.to_owned(),
        exit: 0,
        stdout_contains: contains.map(str::to_owned),
        stdout_regex: None,
        timeout: DEFAULT_CHECK_TIMEOUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{lan_hive, wifi_hive};

    fn names(spec: &TestDef) -> Vec<&str> {
        spec.commands.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn a_full_hive_is_asked_for_every_service_it_runs() {
        let spec = boot_checks(&wifi_hive());
        for unit in [
            "w4b-firstboot.service",
            "ssh.service",
            "nftables.service",
            "wg-quick@wg0.service",
            "postgresql@15-main.service",
            "prometheus-node-exporter.service",
        ] {
            assert!(spec.units_active.iter().any(|u| u == unit), "{unit}: {spec:?}");
        }
        let names = names(&spec);
        for want in [
            "first boot: every section done",
            "security: sshd listening on port 22",
            "security: the WireGuard interface configured",
            "database: PostgreSQL answers with the W4B schema",
            "monitoring: the node exporter serves metrics on port 9100",
            "sensor manager: started",
        ] {
            assert!(names.contains(&want), "{want}: {names:?}");
        }
    }

    #[test]
    fn what_a_hive_does_not_run_is_not_asked_for() {
        let mut cfg = lan_hive();
        cfg.hive.security = None;
        cfg.settings.firewall.enabled = false;
        cfg.settings.monitoring.enabled = false;
        cfg.settings.sensor_manager.enabled = false;
        cfg.settings.system.ssh_port = 2222;
        let spec = boot_checks(&cfg);
        assert_eq!(spec.units_active, ["w4b-firstboot.service", "ssh.service"]);
        assert_eq!(
            names(&spec),
            [
                "first boot: every section done",
                "system: the hive's hostname",
                "security: sshd listening on port 2222"
            ]
        );
    }

    #[test]
    fn the_checks_are_valid_shell() {
        for c in boot_checks(&wifi_hive()).commands {
            crate::modules::oracles::sh_syntax_ok(&c.name, &c.run);
        }
    }
}
