//! The old image generator's image-level keys (`system`, `security`, `services`,
//! `software` at an image target's top level, REFERENCE §2) as they are written, and their
//! conversion into [`ImageSettings`] with every default filled in.
//!
//! These shapes are part of `kind: image` (the image loader deserialises them, so unknown
//! keys and type errors are reported at their spans like any other image key); this module
//! owns what they mean. Keys of the old generator that w4b handles elsewhere are refused
//! with a pointer to their replacement: `services.database.username`/`password` live in the
//! hive file's `security.database`, the VPN's keys and address in `security.wireguard`.

use serde::{Deserialize, Serialize};

use super::de::Spanned;
use super::error::DefsError;
use super::timezones;

/// The image-level settings (the old image generator's keys, at an image target's top
/// level), with their defaults filled in. Hive values win where both say something.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImageSettings {
    pub system: SystemSettings,
    pub firewall: FirewallSettings,
    pub vpn_enabled: bool,
    pub sensor_manager: SensorManagerSettings,
    pub monitoring: MonitoringSettings,
    pub database: DatabaseSettings,
    pub software: SoftwareSettings,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SystemSettings {
    /// `w4b` → hostname `w4b-<hive id without the prefix, lower-cased>`.
    pub hostname_prefix: String,
    /// Default when the hive gives none: `UTC`.
    pub timezone: String,
    /// `en_GB.UTF-8`.
    pub locale: String,
    /// `gb`.
    pub keyboard: String,
    pub ssh_enabled: bool,
    /// Overridden by the hive's `security.ssh.enable_password_auth`.
    pub ssh_password_auth: bool,
    /// Overridden by the hive's `security.ssh.port`.
    pub ssh_port: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FirewallSettings {
    pub enabled: bool,
    /// TCP ports open to everyone (default 22; the SSH port is always included), besides
    /// the VPN's UDP port and anything from the VPN subnet.
    pub allow_ports: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SensorManagerSettings {
    pub enabled: bool,
    pub auto_start: bool,
    pub source: Option<SourceSpec>,
    /// Prometheus port of the sensor manager (default 9101; never 9100).
    pub metrics_port: u16,
}

/// Where the sensor manager's code comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum SourceSpec {
    /// A tarball pinned by sha256.
    Url { url: String, sha256: String },
    /// A directory in the workspace (already resolved against the YAML's directory).
    Path { path: String },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MonitoringSettings {
    pub enabled: bool,
    /// Node exporter (default 9100).
    pub node_exporter_port: u16,
    /// journald `SystemMaxUse`, e.g. `200M`.
    pub journal_max_use: String,
    /// Health-check period in seconds (default 300).
    pub health_interval: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DatabaseSettings {
    /// Days of raw readings kept (default 30).
    pub retention_days: u64,
    /// Days before chunks are compressed (default 7).
    pub compress_after_days: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SoftwareSettings {
    /// Debian packages the image installs besides its package sets' (resolved against
    /// their repositories; see `compile::packages`). Where each was written is kept for
    /// the lock's messages.
    pub packages: Vec<super::de::Spanned<String>>,
    /// Python packages for the sensor manager's venv (`name==version`).
    pub python_packages: Vec<String>,
}

/// `system:`.
#[derive(Deserialize)]
pub(crate) struct RawSystem {
    hostname_prefix: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    locale: Option<String>,
    keyboard: Option<String>,
    ssh: Option<RawSystemSsh>,
}

#[derive(Deserialize)]
struct RawSystemSsh {
    enabled: Option<bool>,
    password_auth: Option<bool>,
    port: Option<Spanned<u16>>,
}

/// `security:` (the image's; the hive file has a `security` of its own).
#[derive(Deserialize)]
pub(crate) struct RawSecurity {
    firewall: Option<RawFirewall>,
    vpn: Option<RawVpn>,
}

#[derive(Deserialize)]
struct RawFirewall {
    enabled: Option<bool>,
    allow_ports: Option<Vec<Spanned<u16>>>,
}

#[derive(Deserialize)]
struct RawVpn {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    enabled: Option<bool>,
    /// The hub's host name: replaces the host of the hive's `security.wireguard.endpoint`.
    server: Option<Spanned<String>>,
}

/// `services:`.
#[derive(Deserialize)]
pub(crate) struct RawServices {
    sensor_manager: Option<RawSensorManager>,
    monitoring: Option<RawMonitoring>,
    database: Option<RawDatabase>,
}

#[derive(Deserialize)]
struct RawSensorManager {
    enabled: Option<bool>,
    auto_start: Option<bool>,
    source: Option<Spanned<RawSource>>,
    metrics_port: Option<Spanned<u16>>,
}

#[derive(Deserialize)]
struct RawSource {
    url: Option<Spanned<String>>,
    sha256: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawMonitoring {
    enabled: Option<bool>,
    /// The old generator's name for the node exporter's port.
    metrics_port: Option<Spanned<u16>>,
    journal_max_use: Option<Spanned<String>>,
    health_interval: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
struct RawDatabase {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    retention_days: Option<Spanned<u64>>,
    compress_after_days: Option<Spanned<u64>>,
}

/// `software:`.
#[derive(Deserialize)]
pub(crate) struct RawSoftware {
    #[serde(default)]
    packages: Vec<Spanned<String>>,
    #[serde(default)]
    python_packages: Vec<Spanned<String>>,
}

/// The four sections as an image target wrote them.
pub(crate) struct RawSettings {
    pub system: Option<RawSystem>,
    pub security: Option<RawSecurity>,
    pub services: Option<RawServices>,
    pub software: Option<RawSoftware>,
}

/// What the image says beyond [`ImageSettings`]: the VPN hub's host, applied to the hive.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VpnServer(pub Option<String>);

/// Converts the raw sections. `source_path` turns a `source: {path}` (as written, with its
/// span) into a workspace path, relative to the file it was written in.
pub(crate) fn convert(
    raw: RawSettings,
    source_path: &dyn Fn(&Spanned<String>) -> Result<String, DefsError>,
) -> Result<(ImageSettings, VpnServer), DefsError> {
    let system = raw.system.unwrap_or(RawSystem {
        hostname_prefix: None,
        timezone: None,
        locale: None,
        keyboard: None,
        ssh: None,
    });
    let prefix = match system.hostname_prefix {
        None => "w4b".to_owned(),
        Some(p) => {
            if !is_dns_label(&p.value) || p.value.len() > 40 {
                return Err(p.span.invalid_value(
                    format!("`{}` cannot start a host name", p.value),
                    "not a DNS label",
                    Some("use lower-case letters, digits and `-` (at most 40), such as `w4b`".into()),
                ));
            }
            p.value
        }
    };
    let timezone = match system.timezone {
        None => "UTC".to_owned(),
        Some(tz) => {
            if !timezones::is_known(&tz.value) {
                return Err(tz.span.invalid_value(
                    format!("`{}` is not an IANA time zone", tz.value),
                    "unknown time zone",
                    Some(timezones::help(&tz.value)),
                ));
            }
            tz.value
        }
    };
    let ssh = system.ssh.unwrap_or(RawSystemSsh {
        enabled: None,
        password_auth: None,
        port: None,
    });
    let ssh_port = port(ssh.port, 22)?;

    let security = raw.security.unwrap_or(RawSecurity {
        firewall: None,
        vpn: None,
    });
    let firewall = match security.firewall {
        None => FirewallSettings {
            enabled: true,
            allow_ports: vec![22],
        },
        Some(f) => {
            let mut ports = Vec::new();
            match f.allow_ports {
                None => ports.push(22),
                Some(list) => {
                    for p in list {
                        if p.value == 0 {
                            return Err(p.span.invalid_value(
                                "port 0 cannot be opened",
                                "not in 1..=65535",
                                Some("write TCP ports from 1 to 65535".into()),
                            ));
                        }
                        if !ports.contains(&p.value) {
                            ports.push(p.value);
                        }
                    }
                }
            }
            ports.sort_unstable();
            FirewallSettings {
                enabled: f.enabled.unwrap_or(true),
                allow_ports: ports,
            }
        }
    };
    let (vpn_enabled, vpn_server) = match security.vpn {
        None => (true, None),
        Some(v) => {
            if let Some(kind) = v.kind.filter(|k| k.value != "wireguard") {
                return Err(kind.span.invalid_value(
                    format!("unsupported VPN type `{}`", kind.value),
                    "only `wireguard`",
                    Some("write `type: wireguard` or leave it out".into()),
                ));
            }
            let server = match v.server {
                None => None,
                Some(s) => {
                    if !is_host(&s.value) {
                        return Err(s.span.invalid_value(
                            format!("`{}` is not a host name or IPv4 address", s.value),
                            "not a host",
                            Some("write the hub's host without a port, such as `hub.example.org`".into()),
                        ));
                    }
                    Some(s.value)
                }
            };
            (v.enabled.unwrap_or(true), server)
        }
    };

    let services = raw.services.unwrap_or(RawServices {
        sensor_manager: None,
        monitoring: None,
        database: None,
    });
    let sm = services.sensor_manager.unwrap_or(RawSensorManager {
        enabled: None,
        auto_start: None,
        source: None,
        metrics_port: None,
    });
    let source = match sm.source {
        None => None,
        Some(src) => Some(match (src.value.url, src.value.sha256, src.value.path) {
            (Some(url), Some(sha), None) => {
                if !(url.value.starts_with("https://") || url.value.starts_with("http://")) {
                    return Err(url.span.invalid_value(
                        format!(
                            "the URL scheme `{}` is not http or https",
                            super::target::url_scheme(&url.value)
                        ),
                        "unsupported URL",
                        Some("write an `https://` URL of a tarball".into()),
                    ));
                }
                let hex = sha.value.to_ascii_lowercase();
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(sha.span.invalid_value(
                        "`sha256` must be 64 hex digits",
                        "not a sha256",
                        Some("write the output of `sha256sum` for the tarball".into()),
                    ));
                }
                SourceSpec::Url {
                    url: url.value,
                    sha256: hex,
                }
            }
            (None, None, Some(path)) => SourceSpec::Path {
                path: source_path(&path)?,
            },
            _ => {
                return Err(src.span.invalid_value(
                    "a source is either `{url, sha256}` or `{path}`",
                    "ambiguous or incomplete source",
                    Some("write `source: {url: https://…/sm.tar.gz, sha256: …}` or `source: {path: ../sensor-manager}`".into()),
                ))
            }
        }),
    };
    let monitoring = services.monitoring.unwrap_or(RawMonitoring {
        enabled: None,
        metrics_port: None,
        journal_max_use: None,
        health_interval: None,
    });
    let node_exporter_port = port(monitoring.metrics_port, 9100)?;
    let metrics_port = match sm.metrics_port {
        Some(p) if p.value == node_exporter_port => {
            return Err(p.span.invalid_value(
                format!("port {} is the node exporter's", p.value),
                "clashes with `services.monitoring.metrics_port`",
                Some("give the sensor manager its own port (the default is 9101)".into()),
            ))
        }
        other => port(other, 9101)?,
    };
    let journal_max_use = match monitoring.journal_max_use {
        None => "200M".to_owned(),
        Some(s) => {
            let t = s.value.as_str();
            let digits = t.trim_end_matches(['K', 'M', 'G', 'T']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || t.len() - digits.len() > 1
            {
                return Err(s.span.invalid_value(
                    format!("`{t}` is not a journald size"),
                    "not a size",
                    Some("write a number with an optional K, M, G or T suffix, such as `200M`".into()),
                ));
            }
            s.value
        }
    };
    let health_interval = match monitoring.health_interval {
        None => 300,
        Some(s) if s.value == 0 => {
            return Err(s.span.invalid_value(
                "the health check needs a period",
                "0 seconds",
                Some("write a number of seconds ≥ 1, such as 300".into()),
            ))
        }
        Some(s) => s.value,
    };
    let db = services.database.unwrap_or(RawDatabase {
        kind: None,
        retention_days: None,
        compress_after_days: None,
    });
    if let Some(kind) = db.kind.filter(|k| k.value != "timescaledb") {
        return Err(kind.span.invalid_value(
            format!("unsupported database `{}`", kind.value),
            "only `timescaledb`",
            Some("write `type: timescaledb` or leave it out".into()),
        ));
    }
    let retention_days = days(db.retention_days, 30)?;
    let compress_after_days = days(db.compress_after_days, 7)?;

    let software = raw.software.unwrap_or(RawSoftware {
        packages: Vec::new(),
        python_packages: Vec::new(),
    });
    let mut packages = Vec::new();
    for p in software.packages {
        if !is_debian_package(&p.value) {
            return Err(p.span.invalid_value(
                format!("`{}` is not a Debian package name", p.value),
                "not a package name",
                Some("package names are lower-case letters, digits and `+-.`, such as `i2c-tools`".into()),
            ));
        }
        packages.push(p);
    }
    let mut python_packages = Vec::new();
    for p in software.python_packages {
        if p.value.trim().is_empty()
            || p.value
                .chars()
                .any(|c| c.is_whitespace() || c == ';' || c == '\'' || c == '"')
        {
            return Err(p.span.invalid_value(
                format!("`{}` is not a Python requirement", p.value),
                "not a requirement",
                Some("write `name==version`, such as `w1thermsensor==2.3.0`".into()),
            ));
        }
        python_packages.push(p.value);
    }

    Ok((
        ImageSettings {
            system: SystemSettings {
                hostname_prefix: prefix,
                timezone,
                locale: system.locale.unwrap_or_else(|| "en_GB.UTF-8".into()),
                keyboard: system.keyboard.unwrap_or_else(|| "gb".into()),
                ssh_enabled: ssh.enabled.unwrap_or(true),
                ssh_password_auth: ssh.password_auth.unwrap_or(false),
                ssh_port,
            },
            firewall,
            vpn_enabled,
            sensor_manager: SensorManagerSettings {
                enabled: sm.enabled.unwrap_or(true),
                auto_start: sm.auto_start.unwrap_or(true),
                source,
                metrics_port,
            },
            monitoring: MonitoringSettings {
                enabled: monitoring.enabled.unwrap_or(true),
                node_exporter_port,
                journal_max_use,
                health_interval,
            },
            database: DatabaseSettings {
                retention_days,
                compress_after_days,
            },
            software: SoftwareSettings {
                packages,
                python_packages,
            },
        },
        VpnServer(vpn_server),
    ))
}

/// The settings of an image that says nothing.
pub fn defaults() -> ImageSettings {
    let none = RawSettings {
        system: None,
        security: None,
        services: None,
        software: None,
    };
    // Nothing to resolve or check without input: the defaults are valid by construction.
    match convert(none, &|p| Ok(p.value.clone())) {
        Ok((settings, _)) => settings,
        Err(e) => unreachable!("the defaults are valid: {e}"),
    }
}

fn port(p: Option<Spanned<u16>>, default: u16) -> Result<u16, DefsError> {
    match p {
        None => Ok(default),
        Some(p) if p.value == 0 => Err(p.span.invalid_value(
            "port 0 is not a port",
            "not in 1..=65535",
            Some("write a port from 1 to 65535".into()),
        )),
        Some(p) => Ok(p.value),
    }
}

fn days(d: Option<Spanned<u64>>, default: u64) -> Result<u64, DefsError> {
    match d {
        None => Ok(default),
        Some(d) if d.value == 0 => Err(d.span.invalid_value(
            "0 days",
            "must be at least 1",
            Some("write a number of days ≥ 1".into()),
        )),
        Some(d) => Ok(d.value),
    }
}

/// A DNS label: 1–63 of `[a-z0-9-]`, not starting or ending with `-`.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS name (dot-separated labels, letters of either case) or an IPv4 address.
pub fn is_host(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok()
        || (s.len() <= 253 && s.split('.').all(|l| is_dns_label(&l.to_ascii_lowercase())))
}

fn is_debian_package(s: &str) -> bool {
    s.len() >= 2
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}
