//! Fixtures for module tests: two hives as the manager writes them (one on Wi-Fi, one on a
//! static LAN), already typed, and a stable text rendering of a [`Generated`] for
//! snapshots.

use std::fmt::Write as _;

use super::{Body, GenFile, Generated};
use crate::hive::config::*;

fn base_settings() -> ImageSettings {
    ImageSettings {
        system: SystemSettings {
            hostname_prefix: "w4b".into(),
            timezone: "UTC".into(),
            locale: "en_GB.UTF-8".into(),
            keyboard: "gb".into(),
            ssh_enabled: true,
            ssh_password_auth: false,
            ssh_port: 22,
        },
        firewall: FirewallSettings {
            enabled: true,
            allow_ports: vec![22],
        },
        vpn_enabled: true,
        sensor_manager: SensorManagerSettings {
            enabled: true,
            auto_start: true,
            source: Some(SourceSpec::Path {
                path: "defs/services/sensor-manager".into(),
            }),
            metrics_port: 9101,
        },
        monitoring: MonitoringSettings {
            enabled: true,
            node_exporter_port: 9100,
            journal_max_use: "200M".into(),
            health_interval: 300,
        },
        database: DatabaseSettings {
            retention_days: 30,
            compress_after_days: 7,
        },
        software: SoftwareSettings {
            packages: vec![spanned("i2c-tools")],
            python_packages: vec!["w1thermsensor==2.3.0".into()],
        },
    }
}

fn security(id: &str, client_ip: &str) -> HiveSecurity {
    HiveSecurity {
        ssh: HiveSsh {
            public_key: format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixtureFixtureFixtureFixtureFixtureFixture0 hive-{id}"),
            private_key: Some(Secret::new(
                "security.ssh.private_key",
                "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRET-SSH-PRIVATE-KEY-FIXTURE\n-----END OPENSSH PRIVATE KEY-----\n",
            )),
            enable_password_auth: false,
            allow_root: false,
            port: 22,
        },
        wireguard: WireGuard {
            private_key: Secret::new("security.wireguard.private_key", "SECRETwgPrivateKeyFixture000000000000000000="),
            public_key: "hivePublicKeyFixture00000000000000000000000=".into(),
            peer_public_key: Some("hubPublicKeyFixture000000000000000000000000=".into()),
            client_ip: client_ip.into(),
            endpoint: "hub.example.org:51820".into(),
            config: None,
            subnet: crate::hive::config::DEFAULT_VPN_SUBNET.into(),
        },
        database: Database {
            username: "hiveuser".into(),
            password: Secret::new("security.database.password", "SECRET-db-pass-1234567"),
            host: "localhost".into(),
            port: 5432,
            database: "hivedb".into(),
        },
        local_access: LocalAccess {
            username: "hiveadmin".into(),
            password: Secret::new("security.local_access.password", "SECRET-admin-pw-16"),
            sudo_without_password: false,
        },
    }
}

fn common(id: &str, network: Network, client_ip: &str) -> Hive {
    Hive {
        hive_id: id.into(),
        version: "1.0.0".into(),
        metadata: Metadata {
            name: "Test Hive".into(),
            location: Location {
                address: Some("1 Bee Street".into()),
                latitude: 48.12,
                longitude: 11.12,
                timezone: "Europe/Berlin".into(),
            },
            notes: None,
        },
        network,
        administrators: vec![Administrator {
            name: "Jo Doe".into(),
            email: "jo@example.com".into(),
            username: "jo_doe".into(),
            phone: None,
            role: Role::HiveAdmin,
            ssh_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJoDoeJoDoeJoDoeJoDoeJoDoeJoDoeJoDoeJoDoe0 jo@example.com".into()],
        }],
        collector: Collector {
            interval: 60,
            batch_size: 100,
            retry_attempts: 3,
            retry_delay: 5,
            buffer_size: 1000,
            logging: CollectorLogging {
                level: "INFO".into(),
                max_size: "100M".into(),
                retention: 7,
            },
        },
        sensors: vec![
            Sensor {
                id: "temp_01".into(),
                kind: "ds18b20".into(),
                name: "Temperature Sensor 1".into(),
                enabled: true,
                location: Some("Top Box".into()),
                interface: Interface {
                    bus: Bus::Gpio,
                    pin: Some(4),
                    data_pin: None,
                    clock_pin: None,
                    address: None,
                    bus_number: None,
                    chip_select: None,
                },
                collection: Collection {
                    interval: 300,
                    retries: 3,
                },
                calibration: Calibration {
                    offset: -0.5,
                    scale: 1.0,
                },
                alerts: vec![Alert {
                    metric: "temperature".into(),
                    min: Some(10.0),
                    max: Some(40.0),
                    threshold_duration: 300,
                }],
            },
            Sensor {
                id: "weight_01".into(),
                kind: "hx711".into(),
                name: "Scale".into(),
                enabled: true,
                location: None,
                interface: Interface {
                    bus: Bus::Gpio,
                    pin: None,
                    data_pin: Some(5),
                    clock_pin: Some(6),
                    address: None,
                    bus_number: None,
                    chip_select: None,
                },
                collection: Collection {
                    interval: 600,
                    retries: 3,
                },
                calibration: Calibration { offset: 0.0, scale: 1.0 },
                alerts: vec![],
            },
        ],
        maintenance: Maintenance {
            backup: Backup {
                enabled: true,
                interval: 86400,
                retention: 7,
            },
            updates: Updates {
                auto_update: true,
                update_hour: 3,
                allowed_days: vec!["Sunday".into()],
            },
            monitoring: MaintenanceMonitoring {
                metrics_retention: 30,
                enable_detailed_logging: true,
            },
        },
        security: Some(security(id, client_ip)),
    }
}

/// A hive on two Wi-Fi networks.
pub fn wifi_hive() -> HiveImage {
    let network = Network {
        primary: Primary::Wifi,
        wifi: vec![
            Wifi {
                ssid: "Apiary".into(),
                password: Secret::new("network.wifi[0].password", "SECRET-wifi-apiary"),
                priority: 2,
            },
            Wifi {
                ssid: "Farmhouse 2.4".into(),
                password: Secret::new("network.wifi[1].password", "SECRET-wifi-farm"),
                priority: 1,
            },
        ],
        lan: None,
    };
    HiveImage {
        hive: common("hive_AbCd1234", network, "10.10.0.2/32"),
        settings: base_settings(),
    }
}

/// A hive on a static LAN address.
pub fn lan_hive() -> HiveImage {
    let network = Network {
        primary: Primary::Lan,
        wifi: vec![],
        lan: Some(Lan {
            dhcp: false,
            static_ip: Some(StaticIp {
                ip: "192.168.1.100/24".into(),
                gateway: "192.168.1.1".into(),
                dns: vec!["1.1.1.1".into(), "9.9.9.9".into()],
            }),
        }),
    };
    HiveImage {
        hive: common("hive_LanX0001", network, "10.10.0.3/32"),
        settings: base_settings(),
    }
}

/// One block per path (`path mode uid:gid kind`, then the content indented) and the
/// first-boot sections: what snapshots of a module's output hold.
pub fn render(g: &Generated) -> String {
    let mut s = String::new();
    for f in &g.files {
        let (kind, body) = match &f.body {
            Body::File(b) => ("file", Some(b)),
            Body::Append(b) => ("append", Some(b)),
            Body::Dir => ("dir", None),
            Body::Remove => ("remove", None),
            Body::Symlink(t) => {
                let _ = writeln!(s, "{} -> {t}", f.path);
                continue;
            }
        };
        let _ = writeln!(s, "{} {:04o} {}:{} {kind}", f.path, f.mode, f.uid, f.gid);
        if let Some(b) = body {
            for line in String::from_utf8_lossy(b).lines() {
                let _ = writeln!(s, "    {line}");
            }
        }
    }
    for sec in &g.sections {
        let _ = writeln!(s, "[firstboot {} {}]", sec.order, sec.name);
        for line in sec.script.lines() {
            let _ = writeln!(s, "    {line}");
        }
    }
    s
}

/// The generated entry at `path`, if any.
pub fn lookup<'a>(g: &'a Generated, path: &str) -> Option<&'a GenFile> {
    g.files.iter().find(|f| f.path.to_string() == path)
}

/// The generated entry at `path`; panics (showing everything generated) when absent.
pub fn find<'a>(g: &'a Generated, path: &str) -> &'a GenFile {
    lookup(g, path).unwrap_or_else(|| panic!("no {path} in\n{}", render(g)))
}

/// The text of a generated regular file; panics for anything else.
pub fn file_text(f: &GenFile) -> String {
    match &f.body {
        Body::File(b) => String::from_utf8(b.clone()).expect("utf-8"),
        other => panic!("{} is not a file: {other:?}", f.path),
    }
}

/// The text of the generated regular file at `path`.
pub fn text(g: &Generated, path: &str) -> String {
    file_text(find(g, path))
}

/// A value as if written in a definition (a synthetic one-line source).
pub fn spanned(text: &str) -> crate::defs::de::Spanned<String> {
    let file = crate::defs::span::SourceFile::new(
        crate::defs::span::Origin::Cli {
            arg: format!("software.packages={text}"),
        },
        text,
    );
    crate::defs::de::Spanned::new(text.to_owned(), crate::defs::span::Span::start_of(&file))
}
