//! A hive, as the W4B hive configuration manager writes it (`hives/<hive_id>.yaml`), plus
//! the image-level settings of the old image generator (`system`, `security`, `services`,
//! `software` at an image target's top level, typed in [`crate::defs::image_settings`] and
//! re-exported here). These are the typed values every W4B module reads; [`crate::hive`]
//! loads and validates them from YAML with file:line diagnostics.
//!
//! Secret values (passwords, private keys, a full `wg0.conf`) are [`Secret`]s: they
//! print, serialise and compare for keys only as their name plus a keyed digest, never as
//! their text. A module that needs the text calls [`Secret::expose`] — and is then a
//! secret-consuming step (DESIGN §8).

use std::fmt;

use serde::Serialize;

pub use crate::defs::image_settings::{
    DatabaseSettings, FirewallSettings, ImageSettings, MonitoringSettings, SensorManagerSettings,
    SoftwareSettings, SourceSpec, SystemSettings,
};

/// A secret value with the dotted path it was found at (`security.database.password`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// Where it came from in the hive file (its key path), used as its name in step keys.
    pub name: String,
    value: String,
}

impl Secret {
    /// A secret; its value joins the process's [`crate::redact`] registry, so no log line
    /// shows it from now on.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Secret {
        let value = value.into();
        crate::redact::register(&value);
        Secret {
            name: name.into(),
            value,
        }
    }

    /// The secret text. Only module code that writes it into the image calls this.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}: ***)", self.name)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Serialises as `"***"`: `w4b hive show` and any JSON of a configuration are safe to print.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// One hive: the manager's file, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hive {
    /// `hive_` + 8 of `[A-Za-z0-9_-]`.
    pub hive_id: String,
    /// `major.minor.patch`.
    pub version: String,
    pub metadata: Metadata,
    pub network: Network,
    /// At least one.
    pub administrators: Vec<Administrator>,
    pub collector: Collector,
    pub sensors: Vec<Sensor>,
    pub maintenance: Maintenance,
    pub security: Option<HiveSecurity>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metadata {
    pub name: String,
    pub location: Location,
    pub notes: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Location {
    pub address: Option<String>,
    /// −90..=90.
    pub latitude: f64,
    /// −180..=180.
    pub longitude: f64,
    /// An IANA time zone (`Europe/Berlin`).
    pub timezone: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Primary {
    Wifi,
    Lan,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Network {
    pub primary: Primary,
    pub wifi: Vec<Wifi>,
    pub lan: Option<Lan>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Wifi {
    pub ssid: String,
    /// A WPA2-PSK: see [`wpa_psk_is_valid`].
    pub password: Secret,
    /// ≥ 1; higher is preferred (NetworkManager `autoconnect-priority`).
    pub priority: u32,
}

/// What a Wi-Fi password may be, as the rule's messages say it.
pub const WPA_PSK_RULE: &str = "8 to 63 printable ASCII characters, or 64 hexadecimal digits";

/// Whether `psk` is a WPA2 pre-shared key NetworkManager and wpa_supplicant accept: a
/// passphrase of 8 to 63 printable ASCII characters (IEEE 802.11i, annex H.4), or the
/// 256-bit key itself as 64 hexadecimal digits. The one rule for `w4b hive validate`, the
/// module that writes the connection and the image check that reads it back.
pub fn wpa_psk_is_valid(psk: &str) -> bool {
    let hex64 = psk.len() == 64 && psk.chars().all(|c| c.is_ascii_hexdigit());
    let passphrase = (8..=63).contains(&psk.len()) && psk.chars().all(|c| (' '..='~').contains(&c));
    hex64 || passphrase
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lan {
    pub dhcp: bool,
    /// Required (with `ip` and `gateway`) when `dhcp` is false.
    pub static_ip: Option<StaticIp>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StaticIp {
    /// An IPv4 address, optionally with a prefix (`192.168.1.100/24`; default /24).
    pub ip: String,
    pub gateway: String,
    pub dns: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    HiveAdmin,
    HiveViewer,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Administrator {
    pub name: String,
    pub email: String,
    pub username: String,
    pub phone: Option<String>,
    pub role: Role,
    /// OpenSSH public keys of this person (optional extension of the manager's format).
    pub ssh_keys: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Collector {
    /// Seconds, ≥ 1.
    pub interval: u64,
    /// ≥ 1.
    pub batch_size: u64,
    pub retry_attempts: u64,
    /// Seconds.
    pub retry_delay: u64,
    /// ≥ 1.
    pub buffer_size: u64,
    pub logging: CollectorLogging,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CollectorLogging {
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`.
    pub level: String,
    /// `100M`.
    pub max_size: String,
    /// Days.
    pub retention: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sensor {
    /// Unique, `^[\w_-]+$`.
    pub id: String,
    /// `ds18b20`, `dht22`, `hx711`, `bme280`, …
    pub kind: String,
    pub name: String,
    pub enabled: bool,
    pub location: Option<String>,
    pub interface: Interface,
    pub collection: Collection,
    pub calibration: Calibration,
    pub alerts: Vec<Alert>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    Gpio,
    I2c,
    Spi,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Interface {
    pub bus: Bus,
    /// GPIO pin (gpio sensors such as ds18b20 and dht22).
    pub pin: Option<u8>,
    /// hx711: data and clock pins.
    pub data_pin: Option<u8>,
    pub clock_pin: Option<u8>,
    /// i2c: 7-bit address (`0x76`) and bus number (default 1).
    pub address: Option<u8>,
    pub bus_number: Option<u8>,
    /// spi: chip select.
    pub chip_select: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Collection {
    /// Seconds; defaults to the collector's interval.
    pub interval: u64,
    pub retries: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Calibration {
    pub offset: f64,
    pub scale: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    pub metric: String,
    /// `min < max` when both are given.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Seconds.
    pub threshold_duration: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Maintenance {
    pub backup: Backup,
    pub updates: Updates,
    pub monitoring: MaintenanceMonitoring,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backup {
    pub enabled: bool,
    /// Seconds.
    pub interval: u64,
    /// Days.
    pub retention: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Updates {
    pub auto_update: bool,
    /// 0..=23, local time.
    pub update_hour: u8,
    /// `Monday`…`Sunday`; empty means every day.
    pub allowed_days: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MaintenanceMonitoring {
    /// Days.
    pub metrics_retention: u64,
    pub enable_detailed_logging: bool,
}

/// The hive file's `security`: all four parts, or none.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HiveSecurity {
    pub ssh: HiveSsh,
    pub wireguard: WireGuard,
    pub database: Database,
    pub local_access: LocalAccess,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HiveSsh {
    /// The hive's own key pair (`hive-<id>` comment); the public half is authorised for
    /// the admin user.
    pub public_key: String,
    /// Optional: many hive files hold only the public half. No module writes it into the
    /// image (the device makes its own host keys).
    pub private_key: Option<Secret>,
    pub enable_password_auth: bool,
    pub allow_root: bool,
    /// 1..=65535.
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WireGuard {
    pub private_key: Secret,
    /// The hive's public key (for the hub's records; not needed in `wg0.conf`).
    pub public_key: String,
    /// The hub's public key (the `[Peer]`); required unless `config` is given.
    pub peer_public_key: Option<String>,
    /// `10.10.0.N/32`.
    pub client_ip: String,
    /// `host:port` of the hub.
    pub endpoint: String,
    /// A complete `wg0.conf`, used verbatim when present.
    pub config: Option<Secret>,
    /// The fleet's VPN subnet (`hives.vpn.subnet` of `w4b.yaml`): what the tunnel routes
    /// (`AllowedIPs`) and the firewall trusts on `wg0`. Left out of serialisations (and so
    /// of step keys) when it is the default `10.10.0.0/24`, so hives on the default subnet
    /// keep the keys they had before the subnet could be chosen.
    #[serde(skip_serializing_if = "is_default_subnet")]
    pub subnet: String,
}

fn is_default_subnet(s: &str) -> bool {
    s == DEFAULT_VPN_SUBNET
}

/// The hive configuration manager's VPN subnet, the default of `hives.vpn.subnet`.
pub const DEFAULT_VPN_SUBNET: &str = "10.10.0.0/24";

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Database {
    pub username: String,
    pub password: Secret,
    pub host: String,
    pub port: u16,
    pub database: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LocalAccess {
    pub username: String,
    pub password: Secret,
    pub sudo_without_password: bool,
}

/// Everything the modules read: the hive and the image's settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HiveImage {
    pub hive: Hive,
    pub settings: ImageSettings,
}

/// `text` as a DNS label's characters: ASCII letters and digits lower-cased, anything else
/// `-`, runs of `-` collapsed, none at either end (the length is the caller's).
pub(crate) fn dns_label(text: &str) -> String {
    let mut h: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while h.contains("--") {
        h = h.replace("--", "-");
    }
    h.trim_matches('-').to_owned()
}

impl HiveImage {
    /// The hostname: `<prefix>-<id>` made a valid DNS label (lower case, `_` → `-`,
    /// at most 63 characters), e.g. `hive_AbCd1234` → `w4b-abcd1234`.
    pub fn hostname(&self) -> String {
        let id = self
            .hive
            .hive_id
            .strip_prefix("hive_")
            .unwrap_or(&self.hive.hive_id);
        let h = dns_label(&format!("{}-{}", self.settings.system.hostname_prefix, id));
        h.chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches('-')
            .to_owned()
    }

    /// The time zone: the hive's location's, else the image's default.
    pub fn timezone(&self) -> &str {
        let tz = self.hive.metadata.location.timezone.as_str();
        if tz.is_empty() {
            &self.settings.system.timezone
        } else {
            tz
        }
    }

    /// Every secret in the configuration, in a fixed order (for step keys and the
    /// secrets test).
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut v: Vec<&Secret> = self.hive.network.wifi.iter().map(|w| &w.password).collect();
        if let Some(s) = &self.hive.security {
            if let Some(k) = &s.ssh.private_key {
                v.push(k);
            }
            v.push(&s.wireguard.private_key);
            if let Some(c) = &s.wireguard.config {
                v.push(c);
            }
            v.push(&s.database.password);
            v.push(&s.local_access.password);
        }
        v
    }
}
