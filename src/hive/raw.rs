//! A hive file as the hive configuration manager writes it (REFERENCE §1), before any of
//! its rules are checked: the shapes serde reads through [`crate::defs::de`].
//!
//! Every key is optional here and every value is a [`Field`] — a spanned value that may
//! fail on its own ([`Checked`]) — so one reading reports every unknown key (with a "did
//! you mean") and every wrongly typed value at its own file:line:col, and still hands the
//! rest to [`super::convert`], which checks the manager's rules and reports what is
//! missing. Enumerations (`primary`, `role`, an interface's `type`) are read as text and
//! judged there too, so their messages can name the valid values. Integers are read wide
//! (`i128`) so that a negative or huge number is an "out of range" problem with its bounds,
//! not a type error. Secret positions are [`Verbatim`]: text, `${env:NAME}` or
//! `{file: path}` are told apart by [`super::secrets::SecretSources`].

use serde::Deserialize;

use crate::defs::de::{Checked, Spanned, Verbatim};

/// A key's value: absent (or null), or present and valid, or present and wrong (already
/// reported).
pub type Field<T> = Option<Checked<Spanned<T>>>;

/// A list whose items may each be wrong on their own.
pub type List<T> = Field<Vec<Checked<Spanned<T>>>>;

/// An integer as written, range-checked by the conversion.
pub type Int = i128;

/// The whole file. `image` (the image a hive target builds on) and `test` (its boot test)
/// are w4b's; the rest is the manager's.
#[derive(Deserialize)]
pub struct RawHive {
    #[serde(default)]
    pub image: Field<String>,
    #[serde(default)]
    pub hive_id: Field<String>,
    #[serde(default)]
    pub version: Field<String>,
    #[serde(default)]
    pub metadata: Field<RawMetadata>,
    #[serde(default)]
    pub network: Field<RawNetwork>,
    #[serde(default)]
    pub administrators: List<RawAdministrator>,
    #[serde(default)]
    pub collector: Field<RawCollector>,
    #[serde(default)]
    pub sensors: List<RawSensor>,
    #[serde(default)]
    pub maintenance: Field<RawMaintenance>,
    #[serde(default)]
    pub security: Field<RawSecurity>,
    /// w4b's own, like `image`: the boot test, merged over the image's `test:`.
    #[serde(default)]
    pub test: Field<crate::defs::test_spec::TestDef>,
}

#[derive(Deserialize)]
pub struct RawMetadata {
    #[serde(default)]
    pub name: Field<String>,
    #[serde(default)]
    pub location: Field<RawLocation>,
    #[serde(default)]
    pub notes: Field<String>,
}

#[derive(Deserialize)]
pub struct RawLocation {
    #[serde(default)]
    pub address: Field<String>,
    #[serde(default)]
    pub latitude: Field<f64>,
    #[serde(default)]
    pub longitude: Field<f64>,
    #[serde(default)]
    pub timezone: Field<String>,
}

#[derive(Deserialize)]
pub struct RawNetwork {
    #[serde(default)]
    pub primary: Field<String>,
    #[serde(default)]
    pub wifi: List<RawWifi>,
    #[serde(default)]
    pub lan: Field<RawLan>,
}

#[derive(Deserialize)]
pub struct RawWifi {
    #[serde(default)]
    pub ssid: Field<String>,
    #[serde(default)]
    pub password: Option<Verbatim>,
    #[serde(default)]
    pub priority: Field<Int>,
}

#[derive(Deserialize)]
pub struct RawLan {
    #[serde(default)]
    pub dhcp: Field<bool>,
    #[serde(default, rename = "static")]
    pub static_ip: Field<RawStaticIp>,
}

#[derive(Deserialize)]
pub struct RawStaticIp {
    #[serde(default)]
    pub ip: Field<String>,
    #[serde(default)]
    pub gateway: Field<String>,
    #[serde(default)]
    pub dns: List<String>,
}

#[derive(Deserialize)]
pub struct RawAdministrator {
    #[serde(default)]
    pub name: Field<String>,
    #[serde(default)]
    pub email: Field<String>,
    #[serde(default)]
    pub username: Field<String>,
    #[serde(default)]
    pub phone: Field<String>,
    #[serde(default)]
    pub role: Field<String>,
    #[serde(default)]
    pub ssh_keys: List<String>,
}

#[derive(Deserialize)]
pub struct RawCollector {
    #[serde(default)]
    pub interval: Field<Int>,
    #[serde(default)]
    pub batch_size: Field<Int>,
    #[serde(default)]
    pub retry_attempts: Field<Int>,
    #[serde(default)]
    pub retry_delay: Field<Int>,
    #[serde(default)]
    pub buffer_size: Field<Int>,
    #[serde(default)]
    pub logging: Field<RawLogging>,
}

#[derive(Deserialize)]
pub struct RawLogging {
    #[serde(default)]
    pub level: Field<String>,
    #[serde(default)]
    pub max_size: Field<String>,
    #[serde(default)]
    pub retention: Field<Int>,
}

#[derive(Deserialize)]
pub struct RawSensor {
    #[serde(default)]
    pub id: Field<String>,
    #[serde(default, rename = "type")]
    pub kind: Field<String>,
    #[serde(default)]
    pub name: Field<String>,
    #[serde(default)]
    pub enabled: Field<bool>,
    #[serde(default)]
    pub location: Field<String>,
    #[serde(default)]
    pub interface: Field<RawInterface>,
    #[serde(default)]
    pub collection: Field<RawCollection>,
    #[serde(default)]
    pub calibration: Field<RawCalibration>,
    #[serde(default)]
    pub alerts: List<RawAlert>,
}

#[derive(Deserialize)]
pub struct RawInterface {
    #[serde(default, rename = "type")]
    pub bus: Field<String>,
    #[serde(default)]
    pub pin: Field<Int>,
    #[serde(default)]
    pub data_pin: Field<Int>,
    #[serde(default)]
    pub clock_pin: Field<Int>,
    #[serde(default)]
    pub address: Field<Int>,
    #[serde(default)]
    pub bus_number: Field<Int>,
    #[serde(default)]
    pub chip_select: Field<Int>,
}

#[derive(Deserialize)]
pub struct RawCollection {
    #[serde(default)]
    pub interval: Field<Int>,
    #[serde(default)]
    pub retries: Field<Int>,
}

#[derive(Deserialize)]
pub struct RawCalibration {
    #[serde(default)]
    pub offset: Field<f64>,
    #[serde(default)]
    pub scale: Field<f64>,
}

#[derive(Deserialize)]
pub struct RawAlert {
    #[serde(default)]
    pub metric: Field<String>,
    #[serde(default)]
    pub min: Field<f64>,
    #[serde(default)]
    pub max: Field<f64>,
    #[serde(default)]
    pub threshold_duration: Field<Int>,
}

#[derive(Deserialize)]
pub struct RawMaintenance {
    #[serde(default)]
    pub backup: Field<RawBackup>,
    #[serde(default)]
    pub updates: Field<RawUpdates>,
    #[serde(default)]
    pub monitoring: Field<RawMaintenanceMonitoring>,
}

#[derive(Deserialize)]
pub struct RawBackup {
    #[serde(default)]
    pub enabled: Field<bool>,
    #[serde(default)]
    pub interval: Field<Int>,
    #[serde(default)]
    pub retention: Field<Int>,
}

#[derive(Deserialize)]
pub struct RawUpdates {
    #[serde(default)]
    pub auto_update: Field<bool>,
    #[serde(default)]
    pub update_hour: Field<Int>,
    #[serde(default)]
    pub allowed_days: List<String>,
}

#[derive(Deserialize)]
pub struct RawMaintenanceMonitoring {
    #[serde(default)]
    pub metrics_retention: Field<Int>,
    #[serde(default)]
    pub enable_detailed_logging: Field<bool>,
}

#[derive(Deserialize)]
pub struct RawSecurity {
    #[serde(default)]
    pub ssh: Field<RawSsh>,
    #[serde(default)]
    pub wireguard: Field<RawWireGuard>,
    #[serde(default)]
    pub database: Field<RawDatabase>,
    #[serde(default)]
    pub local_access: Field<RawLocalAccess>,
}

#[derive(Deserialize)]
pub struct RawSsh {
    #[serde(default)]
    pub public_key: Field<String>,
    #[serde(default)]
    pub private_key: Option<Verbatim>,
    #[serde(default)]
    pub enable_password_auth: Field<bool>,
    #[serde(default)]
    pub allow_root: Field<bool>,
    #[serde(default)]
    pub port: Field<Int>,
}

#[derive(Deserialize)]
pub struct RawWireGuard {
    #[serde(default)]
    pub private_key: Option<Verbatim>,
    #[serde(default)]
    pub public_key: Field<String>,
    #[serde(default)]
    pub peer_public_key: Field<String>,
    #[serde(default)]
    pub client_ip: Field<String>,
    #[serde(default)]
    pub endpoint: Field<String>,
    #[serde(default)]
    pub config: Option<Verbatim>,
}

#[derive(Deserialize)]
pub struct RawDatabase {
    #[serde(default)]
    pub username: Field<String>,
    #[serde(default)]
    pub password: Option<Verbatim>,
    #[serde(default)]
    pub host: Field<String>,
    #[serde(default)]
    pub port: Field<Int>,
    #[serde(default)]
    pub database: Field<String>,
}

#[derive(Deserialize)]
pub struct RawLocalAccess {
    #[serde(default)]
    pub username: Field<String>,
    #[serde(default)]
    pub password: Option<Verbatim>,
    #[serde(default)]
    pub sudo_without_password: Field<bool>,
}
