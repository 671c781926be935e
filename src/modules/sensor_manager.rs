//! The `sensor_manager` module: everything around the hive's sensor manager except its
//! code — the system user, the configuration generated from the hive's sensors and
//! collector settings, the environment file, and the hardened systemd unit.
//!
//! The code itself is placed at `/opt/w4b/sensor-manager` by the compiler from the
//! pinned source (`services.sensor_manager.source`); the Python venv it runs in
//! (`/opt/w4b/venv`) is the `software` module's. The unit's contract with that code:
//! it is started as `/opt/w4b/venv/bin/python3 -m sensor_manager` with
//! `/opt/w4b/sensor-manager` on `PYTHONPATH`, reads `SENSOR_CONFIG` and the other
//! variables of `/etc/w4b/env`, and serves Prometheus metrics on `METRICS_PORT`.
//!
//! The user `w4b-sensors` cannot be in the image (its ids are chosen by `useradd` on the
//! hive, next to the accounts the base image and packages create), so a first-boot
//! section creates it and then gives it `/etc/w4b/env` (0640 `root:w4b-sensors`) and its
//! state and log directories. The database password never enters the environment: systemd
//! hands the unit a private copy of the 0600 password file (`LoadCredential=`), whose
//! path is `DB_PASSWORD_FILE`.
//!
//! The unit is ordered after `w4b-firstboot.service`, so on the first boot it starts only
//! once its user, venv and database exist.

use std::collections::BTreeMap;

use saphyr::{Mapping, Scalar, Yaml, YamlEmitter};
use serde::Serialize;

use super::{database, Body, GenFile, Generated, Module, ModuleError, Section};
use crate::hive::config::{Bus, Collector, HiveImage, Sensor};

/// The system user (and group) the sensor manager runs as.
pub const USER: &str = "w4b-sensors";
/// The configuration generated from the hive.
pub const CONFIG_FILE: &str = "/etc/w4b/sensor_config.yaml";
/// The environment file of the unit.
pub const ENV_FILE: &str = "/etc/w4b/env";
/// The unit.
pub const UNIT: &str = "w4b-sensor-manager.service";
/// Where the compiler puts the code.
pub const CODE_DIR: &str = "/opt/w4b/sensor-manager";
/// Writable state and logs (created on first boot, owned by [`USER`]).
pub const STATE_DIR: &str = "/var/lib/w4b/sensor-manager";
pub const LOG_DIR: &str = "/var/log/w4b/sensor-manager";
/// The node exporter's registered port: never the sensor manager's.
pub const NODE_EXPORTER_DEFAULT_PORT: u16 = 9100;
/// First-boot order of the user section: after `software/python-venv` (35), before
/// `database/schema` (50).
pub const SECTION_ORDER: u32 = 40;

/// The sensor manager's user, configuration and unit.
pub struct SensorManager;

/// The database connection the sensor manager is given (no password: a file path).
#[derive(Serialize)]
struct DbPlan<'a> {
    host: &'a str,
    port: u16,
    name: &'a str,
    user: &'a str,
    local: bool,
}

/// Everything [`SensorManager::generate`] reads: [`Module::inputs`] is this, serialised.
#[derive(Serialize)]
struct Plan<'a> {
    hive_id: &'a str,
    auto_start: bool,
    metrics_port: u16,
    collector: &'a Collector,
    sensors: &'a [Sensor],
    db: Option<DbPlan<'a>>,
    /// TCP ports already taken by other services on the hive, with their owners.
    taken: BTreeMap<u16, &'static str>,
}

fn plan(cfg: &HiveImage) -> Plan<'_> {
    let s = &cfg.settings;
    let local = database::local_database(cfg).is_some();
    let db = cfg.hive.security.as_ref().map(|sec| DbPlan {
        host: &sec.database.host,
        port: sec.database.port,
        name: &sec.database.database,
        user: &sec.database.username,
        local,
    });
    let mut taken = BTreeMap::new();
    taken.insert(NODE_EXPORTER_DEFAULT_PORT, "the Prometheus node exporter");
    if s.monitoring.enabled {
        taken.insert(s.monitoring.node_exporter_port, "the Prometheus node exporter");
    }
    let ssh_port = cfg
        .hive
        .security
        .as_ref()
        .map_or(s.system.ssh_port, |sec| sec.ssh.port);
    if s.system.ssh_enabled {
        taken.insert(ssh_port, "SSH");
    }
    if let Some(db) = db.as_ref().filter(|d| d.local) {
        taken.insert(db.port, "PostgreSQL");
    }
    Plan {
        hive_id: &cfg.hive.hive_id,
        auto_start: s.sensor_manager.auto_start,
        metrics_port: s.sensor_manager.metrics_port,
        collector: &cfg.hive.collector,
        sensors: &cfg.hive.sensors,
        db,
        taken,
    }
}

fn error(message: impl Into<String>, help: impl Into<String>) -> ModuleError {
    ModuleError {
        module: "sensor_manager",
        message: message.into(),
        help: Some(help.into()),
    }
}

fn bus_name(bus: Bus) -> &'static str {
    match bus {
        Bus::Gpio => "gpio",
        Bus::I2c => "i2c",
        Bus::Spi => "spi",
    }
}

fn check(p: &Plan<'_>) -> Result<(), ModuleError> {
    if p.metrics_port == 0 {
        return Err(error(
            "the sensor manager's metrics port is 0",
            "set `services.sensor_manager.metrics_port` (default 9101)",
        ));
    }
    if let Some(owner) = p.taken.get(&p.metrics_port) {
        return Err(error(
            format!(
                "the sensor manager's metrics port {} is already used by {owner}",
                p.metrics_port
            ),
            "set `services.sensor_manager.metrics_port` to a free port (default 9101)",
        ));
    }
    for s in p.sensors {
        let i = &s.interface;
        let complete = match i.bus {
            Bus::Gpio => i.pin.is_some() || (i.data_pin.is_some() && i.clock_pin.is_some()),
            Bus::I2c => i.address.is_some(),
            Bus::Spi => true,
        };
        if !complete {
            return Err(error(
                format!(
                    "sensor `{}`: its {} interface names no pin or address",
                    s.id,
                    bus_name(i.bus)
                ),
                "give gpio sensors `pin` (or `data_pin` and `clock_pin`), i2c sensors `address`",
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// sensor_config.yaml

#[derive(Serialize)]
struct ConfigFile<'a> {
    hive_id: &'a str,
    collector: CollectorOut<'a>,
    metrics: Metrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<DbOut<'a>>,
    sensors: Vec<SensorOut<'a>>,
}

#[derive(Serialize)]
struct CollectorOut<'a> {
    interval: u64,
    batch_size: u64,
    retry_attempts: u64,
    retry_delay: u64,
    buffer_size: u64,
    buffer_dir: &'static str,
    logging: LoggingOut<'a>,
}

#[derive(Serialize)]
struct LoggingOut<'a> {
    level: &'a str,
    max_size: &'a str,
    retention: u64,
    file: String,
}

#[derive(Serialize)]
struct Metrics {
    port: u16,
}

#[derive(Serialize)]
struct DbOut<'a> {
    host: &'a str,
    port: u16,
    name: &'a str,
    user: &'a str,
    password_file: &'a str,
}

#[derive(Serialize)]
struct SensorOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    name: &'a str,
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<&'a str>,
    interface: InterfaceOut,
    collection: &'a crate::hive::config::Collection,
    calibration: &'a crate::hive::config::Calibration,
    alerts: &'a [crate::hive::config::Alert],
}

#[derive(Serialize)]
struct InterfaceOut {
    #[serde(rename = "type")]
    bus: Bus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_pin: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clock_pin: Option<u8>,
    /// `0x76`, as people write i2c addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bus_number: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chip_select: Option<u8>,
}

/// Where `DB_PASSWORD_FILE` points: systemd's private copy for this unit
/// (`$CREDENTIALS_DIRECTORY/db_password`).
fn credential_path() -> String {
    format!("/run/credentials/{UNIT}/db_password")
}

fn config_yaml(p: &Plan<'_>) -> Result<String, ModuleError> {
    let password_file = credential_path();
    let file = ConfigFile {
        hive_id: p.hive_id,
        collector: CollectorOut {
            interval: p.collector.interval,
            batch_size: p.collector.batch_size,
            retry_attempts: p.collector.retry_attempts,
            retry_delay: p.collector.retry_delay,
            buffer_size: p.collector.buffer_size,
            buffer_dir: STATE_DIR,
            logging: LoggingOut {
                level: &p.collector.logging.level,
                max_size: &p.collector.logging.max_size,
                retention: p.collector.logging.retention,
                file: format!("{LOG_DIR}/sensor-manager.log"),
            },
        },
        metrics: Metrics { port: p.metrics_port },
        database: p.db.as_ref().map(|d| DbOut {
            host: d.host,
            port: d.port,
            name: d.name,
            user: d.user,
            password_file: &password_file,
        }),
        sensors: p
            .sensors
            .iter()
            .map(|s| SensorOut {
                id: &s.id,
                kind: &s.kind,
                name: &s.name,
                enabled: s.enabled,
                location: s.location.as_deref(),
                interface: InterfaceOut {
                    bus: s.interface.bus,
                    pin: s.interface.pin,
                    data_pin: s.interface.data_pin,
                    clock_pin: s.interface.clock_pin,
                    address: s.interface.address.map(|a| format!("0x{a:02x}")),
                    bus_number: s.interface.bus_number,
                    chip_select: s.interface.chip_select,
                },
                collection: &s.collection,
                calibration: &s.calibration,
                alerts: &s.alerts,
            })
            .collect(),
    };
    let json = serde_json::to_value(&file).map_err(|e| {
        error(
            format!("cannot serialise the sensor configuration: {e}"),
            "report this as a w4b bug",
        )
    })?;
    let mut out = String::from(
        "# w4b sensor manager configuration, generated from the hive file (do not edit:\n\
         # rebuild the image). Keys are sorted.\n",
    );
    let yaml = to_yaml(&json).ok_or_else(|| {
        error(
            "the sensor configuration holds a number YAML cannot carry exactly (an integer above 2^63)",
            "report this as a w4b bug, with the hive file",
        )
    })?;
    YamlEmitter::new(&mut out).dump(&yaml).map_err(|e| {
        error(
            format!("cannot write the sensor configuration as YAML: {e}"),
            "report this as a w4b bug",
        )
    })?;
    out.push('\n');
    Ok(out)
}

/// JSON (keys sorted: `serde_json`'s map is ordered) to a YAML tree for the emitter, so
/// the YAML has a deterministic key order and the emitter's quoting. `None` for a number
/// the emitter cannot write exactly (an integer above `i64::MAX`), rather than a rounded
/// float.
fn to_yaml(v: &serde_json::Value) -> Option<Yaml<'static>> {
    use serde_json::Value as J;
    Some(match v {
        J::Null => Yaml::Value(Scalar::Null),
        J::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        J::Number(n) if n.is_f64() => Yaml::Value(Scalar::FloatingPoint(n.as_f64()?.into())),
        J::Number(n) => Yaml::Value(Scalar::Integer(n.as_i64()?)),
        J::String(s) => Yaml::Value(Scalar::String(s.clone().into())),
        J::Array(a) => Yaml::Sequence(a.iter().map(to_yaml).collect::<Option<_>>()?),
        J::Object(o) => {
            let mut m = Mapping::new();
            for (k, v) in o {
                m.insert(Yaml::Value(Scalar::String(k.clone().into())), to_yaml(v)?);
            }
            Yaml::Mapping(m)
        }
    })
}

// ---------------------------------------------------------------------------------------
// /etc/w4b/env and the unit

/// `value` quoted for both POSIX sh and systemd's `EnvironmentFile=` parser: single
/// quotes, which neither interprets inside. A `'` or a control character has no form
/// both agree on, so it is an error (no hive value needs one).
fn env_quote(key: &str, value: &str) -> Result<String, ModuleError> {
    if value.contains(|c: char| c == '\'' || c == '\\' || c.is_control()) {
        return Err(error(
            format!("the value of `{key}` for `{ENV_FILE}` contains a quote, backslash or control character"),
            "remove it from the hive file",
        ));
    }
    Ok(format!("{key}='{value}'\n"))
}

fn env_file(p: &Plan<'_>) -> Result<String, ModuleError> {
    let mut vars: Vec<(&str, String)> = vec![
        ("HIVE_ID", p.hive_id.to_owned()),
        ("SENSOR_CONFIG", CONFIG_FILE.to_owned()),
        ("METRICS_PORT", p.metrics_port.to_string()),
        ("STATE_DIR", STATE_DIR.to_owned()),
        ("LOG_DIR", LOG_DIR.to_owned()),
    ];
    if let Some(db) = &p.db {
        vars.extend([
            ("DB_HOST", db.host.to_owned()),
            ("DB_PORT", db.port.to_string()),
            ("DB_NAME", db.name.to_owned()),
            ("DB_USER", db.user.to_owned()),
            ("DB_PASSWORD_FILE", credential_path()),
        ]);
    }
    let mut out = String::from(
        "# Environment of w4b-sensor-manager.service (generated by w4b). Values are single-quoted\n\
         # for sh and systemd alike; the database password is a file, never a variable.\n",
    );
    for (k, v) in vars {
        out.push_str(&env_quote(k, &v)?);
    }
    Ok(out)
}

fn unit(p: &Plan<'_>) -> String {
    let local_db = p.db.as_ref().is_some_and(|d| d.local);
    let mut after = String::from("network-online.target w4b-firstboot.service");
    let mut wants = String::from("network-online.target");
    if local_db {
        after.push_str(" postgresql.service");
        wants.push_str(" postgresql.service");
    }
    let credential = if p.db.is_some() {
        format!(
            "# The password reaches the service as a private copy only it can read.\n\
             LoadCredential=db_password:{}\n",
            database::PASSWORD_FILE
        )
    } else {
        String::new()
    };
    format!(
        "# w4b: the hive's sensor manager (generated).\n\
         [Unit]\n\
         Description=W4B sensor manager\n\
         Documentation=file:{CONFIG_FILE}\n\
         After={after}\n\
         Wants={wants}\n\
         ConditionPathIsDirectory={CODE_DIR}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         User={USER}\n\
         Group={USER}\n\
         SupplementaryGroups=gpio i2c spi\n\
         EnvironmentFile={ENV_FILE}\n\
         Environment=PYTHONPATH={CODE_DIR} PYTHONUNBUFFERED=1\n\
         {credential}\
         WorkingDirectory={CODE_DIR}\n\
         ExecStart=/opt/w4b/venv/bin/python3 -m sensor_manager --config {CONFIG_FILE}\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         # Hardening. Not PrivateDevices/ProtectKernelTunables: the sensors are\n\
         # /dev/gpiomem, /dev/i2c-*, /dev/spidev* and 1-Wire under /sys.\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         ReadWritePaths=/var/lib/w4b /var/log/w4b\n\
         ProtectControlGroups=yes\n\
         ProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\n\
         ProtectClock=yes\n\
         ProtectHostname=yes\n\
         RestrictSUIDSGID=yes\n\
         RestrictRealtime=yes\n\
         RestrictNamespaces=yes\n\
         LockPersonality=yes\n\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
         CapabilityBoundingSet=\n\
         UMask=0027\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

fn section() -> Section {
    let script = format!(
        r#"# Create the sensor manager's user and hand it its environment and directories.
if ! getent passwd {USER} >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir {STATE_DIR} \
        --shell /usr/sbin/nologin --comment 'W4B sensor manager' {USER}
    echo "sensor_manager: created the user {USER}"
fi
for w4b_group in gpio i2c spi; do
    if getent group "$w4b_group" >/dev/null; then
        usermod -a -G "$w4b_group" {USER}
    else
        echo "sensor_manager: no group $w4b_group on this system" >&2
    fi
done
install -d -m 0755 /var/lib/w4b /var/log/w4b
install -d -o {USER} -g {USER} -m 0750 {STATE_DIR} {LOG_DIR}
chown root:{USER} {ENV_FILE}
chmod 0640 {ENV_FILE}
"#
    );
    Section {
        order: SECTION_ORDER,
        name: "sensor_manager/user".into(),
        script,
    }
}

impl Module for SensorManager {
    fn name(&self) -> &'static str {
        "sensor_manager"
    }

    fn version(&self) -> u32 {
        1
    }

    fn inputs<'a>(&self, cfg: &'a HiveImage) -> Result<crate::modules::Inputs<'a>, ModuleError> {
        Ok((crate::modules::inputs_json(self.name(), plan(cfg))?, Vec::new()))
    }

    fn enabled(&self, cfg: &HiveImage) -> bool {
        cfg.settings.sensor_manager.enabled
    }

    fn generate(&self, cfg: &HiveImage) -> Result<Generated, ModuleError> {
        if !self.enabled(cfg) {
            return Ok(Generated::default());
        }
        let p = plan(cfg);
        check(&p)?;
        let unit_path = format!("/etc/systemd/system/{UNIT}");
        let mut files = vec![
            GenFile::dir("/etc/w4b", 0o755),
            GenFile::file(CONFIG_FILE, config_yaml(&p)?, 0o644),
            // Group-readable by the service once its group exists (first boot); root-only
            // until then.
            GenFile::owned(ENV_FILE, Body::File(env_file(&p)?.into_bytes()), 0o640, 0, 0),
            GenFile::dir("/opt/w4b", 0o755),
            GenFile::file(&unit_path, unit(&p), 0o644),
        ];
        if p.auto_start {
            files.push(GenFile::symlink(
                &format!("/etc/systemd/system/multi-user.target.wants/{UNIT}"),
                &unit_path,
            ));
        }
        Ok(Generated {
            files,
            sections: vec![section()],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hive::config::Secret;
    use crate::modules::oracles;
    use crate::modules::testing::{find, lan_hive, render, text, wifi_hive};

    fn generate(cfg: &HiveImage) -> Generated {
        match SensorManager.generate(cfg) {
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
        cfg.settings.sensor_manager.auto_start = false;
        cfg.hive.sensors[1].interface = crate::hive::config::Interface {
            bus: Bus::I2c,
            pin: None,
            data_pin: None,
            clock_pin: None,
            address: Some(0x76),
            bus_number: Some(1),
            chip_select: None,
        };
        cfg.hive.sensors[1].kind = "bme280".into();
        insta::assert_snapshot!(render(&generate(&cfg)));
    }

    #[test]
    fn modes_and_owners() {
        let g = generate(&wifi_hive());
        let env = find(&g, ENV_FILE);
        assert_eq!((env.mode, env.uid, env.gid), (0o640, 0, 0));
        assert_eq!(find(&g, CONFIG_FILE).mode, 0o644);
        let link = find(&g, &format!("/etc/systemd/system/multi-user.target.wants/{UNIT}"));
        assert_eq!(link.body, Body::Symlink(format!("/etc/systemd/system/{UNIT}")));
        let s = &g.sections[0];
        assert_eq!((s.order, s.name.as_str()), (SECTION_ORDER, "sensor_manager/user"));
        assert!(s.script.contains(&format!("chown root:{USER} {ENV_FILE}")));
    }

    #[test]
    fn not_enabled_without_auto_start() {
        let mut cfg = wifi_hive();
        cfg.settings.sensor_manager.auto_start = false;
        let g = generate(&cfg);
        assert!(g.files.iter().all(|f| !matches!(f.body, Body::Symlink(_))));
        cfg.settings.sensor_manager.enabled = false;
        assert!(!SensorManager.enabled(&cfg));
        assert_eq!(generate(&cfg), Generated::default());
    }

    #[test]
    fn env_has_quoted_values_and_no_password() {
        let g = generate(&wifi_hive());
        let env = text(&g, ENV_FILE);
        assert!(env.contains("HIVE_ID='hive_AbCd1234'\n"), "{env}");
        assert!(env.contains("METRICS_PORT='9101'\n"));
        assert!(env.contains("DB_NAME='hivedb'\n"));
        assert!(env.contains(&format!(
            "DB_PASSWORD_FILE='/run/credentials/{UNIT}/db_password'\n"
        )));
        for f in &g.files {
            if let Body::File(b) = &f.body {
                assert!(
                    !String::from_utf8_lossy(b).contains("SECRET"),
                    "{} has a secret",
                    f.path
                );
            }
        }
        let unit = text(&g, &format!("/etc/systemd/system/{UNIT}"));
        assert!(unit.contains(&format!("LoadCredential=db_password:{}", database::PASSWORD_FILE)));
        assert!(env_quote("X", "it's").is_err());
        assert!(env_quote("X", "a\nb").is_err());
        if crate::oracle::have("sh") {
            // sh reads back exactly the values written.
            let script = format!("set -eu\n. /dev/stdin <<'EOF'\n{env}EOF\nprintf '%s|%s' \"$HIVE_ID\" \"$DB_PASSWORD_FILE\"\n");
            let out = oracles::run_sh(&script);
            assert_eq!(out, format!("hive_AbCd1234|/run/credentials/{UNIT}/db_password"));
        }
    }

    #[test]
    fn the_unit_is_hardened() {
        let g = generate(&wifi_hive());
        let unit = text(&g, &format!("/etc/systemd/system/{UNIT}"));
        for line in [
            "User=w4b-sensors",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "ReadWritePaths=/var/lib/w4b /var/log/w4b",
            "SupplementaryGroups=gpio i2c spi",
            "Restart=on-failure",
            "After=network-online.target w4b-firstboot.service postgresql.service",
            "WantedBy=multi-user.target",
        ] {
            assert!(unit.lines().any(|l| l == line), "missing `{line}` in\n{unit}");
        }
        oracles::systemd_verify(&[(UNIT, &unit)]);
    }

    #[test]
    fn the_config_is_yaml_with_the_hive_sensors() {
        let g = generate(&wifi_hive());
        let yaml = text(&g, CONFIG_FILE);
        // Our own YAML reader agrees.
        let docs = match <Yaml as saphyr::LoadableYamlNode>::load_from_str(&yaml) {
            Ok(d) => d,
            Err(e) => panic!("{e}\n{yaml}"),
        };
        let doc = &docs[0];
        assert_eq!(doc["hive_id"].as_str(), Some("hive_AbCd1234"));
        assert_eq!(doc["collector"]["interval"].as_integer(), Some(60));
        assert_eq!(doc["metrics"]["port"].as_integer(), Some(9101));
        assert_eq!(doc["sensors"][0]["type"].as_str(), Some("ds18b20"));
        assert_eq!(doc["sensors"][0]["interface"]["pin"].as_integer(), Some(4));
        assert_eq!(
            doc["sensors"][0]["calibration"]["offset"].as_floating_point(),
            Some(-0.5)
        );
        assert_eq!(
            doc["sensors"][0]["alerts"][0]["max"].as_floating_point(),
            Some(40.0)
        );
        assert_eq!(doc["sensors"][1]["interface"]["data_pin"].as_integer(), Some(5));
        // And so does PyYAML, where installed.
        let check = "import sys, yaml\nd = yaml.safe_load(sys.stdin)\n\
                     assert d['sensors'][1]['interface'] == {'type': 'gpio', 'data_pin': 5, 'clock_pin': 6}, d\n\
                     assert d['database']['password_file'].startswith('/run/credentials/'), d\n\
                     print('ok')";
        oracles::python(check, &yaml, "yaml");
    }

    #[test]
    fn i2c_addresses_are_hex() {
        let mut cfg = wifi_hive();
        cfg.hive.sensors[0].interface.bus = Bus::I2c;
        cfg.hive.sensors[0].interface.address = Some(0x76);
        let yaml = text(&generate(&cfg), CONFIG_FILE);
        assert!(yaml.contains("address: \"0x76\""), "{yaml}");
    }

    #[test]
    fn port_clashes_are_errors() {
        type Case = (u16, &'static str, fn(&mut HiveImage));
        let cases: [Case; 4] = [
            (9100, "node exporter", |_| {}),
            (9200, "node exporter", |c| {
                c.settings.monitoring.node_exporter_port = 9200
            }),
            (5432, "PostgreSQL", |_| {}),
            (22, "SSH", |_| {}),
        ];
        for (port, owner, change) in cases {
            let mut cfg = wifi_hive();
            change(&mut cfg);
            cfg.settings.sensor_manager.metrics_port = port;
            match SensorManager.generate(&cfg) {
                Ok(_) => panic!("port {port} accepted"),
                Err(e) => {
                    assert!(e.to_string().contains(owner), "`{e}` lacks `{owner}`");
                    assert!(e.help.is_some());
                }
            }
        }
    }

    #[test]
    fn inputs_ignore_unrelated_fields_and_follow_related_ones() {
        let base = wifi_hive();
        let (json, secrets) = SensorManager.inputs(&base).expect("inputs");
        assert!(secrets.is_empty());
        let mut unrelated = base.clone();
        unrelated.hive.network.wifi.clear();
        unrelated.hive.metadata.name = "Renamed".into();
        unrelated
            .settings
            .software
            .packages
            .push(crate::modules::testing::spanned("vim"));
        unrelated.settings.database.retention_days = 90;
        if let Some(s) = unrelated.hive.security.as_mut() {
            s.database.password = Secret::new("security.database.password", "changed");
        }
        assert_eq!(SensorManager.inputs(&unrelated).expect("inputs").0, json);
        let mut related = base.clone();
        related.hive.sensors[0].calibration.offset = 0.25;
        assert_ne!(SensorManager.inputs(&related).expect("inputs").0, json);
    }

    /// Regression: an integer above `i64::MAX` became a rounded float in the YAML.
    #[test]
    fn numbers_yaml_cannot_carry_exactly_are_refused() {
        assert!(to_yaml(&serde_json::json!({"a": [u64::MAX]})).is_none());
        assert!(to_yaml(&serde_json::json!({"a": [i64::MAX, 1.5, -3]})).is_some());
    }

    #[test]
    fn the_section_parses_as_posix_sh() {
        let s = section();
        oracles::sh_syntax_ok(&s.name, &s.script);
    }
}
