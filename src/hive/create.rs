//! The text of a new hive file (`w4b hive new`): the hive configuration manager's format
//! (REFERENCE §1), with every required key written out so the file reads on its own and the
//! manager's tools accept it.
//!
//! What the operator answered is in [`NewHive`], the generated credentials in
//! [`Credentials`]; how each secret is written — a `{file: …}` reference to a secret file
//! (the default) or inline (`--inline-secrets`) — is the caller's choice, made per secret
//! through [`SecretText`]. Values the fleet shares (`hives.defaults` of `w4b.yaml`: the
//! hub's key and endpoint, a shared administrator) are left out so they come from there,
//! as for every hive file. Strings are written double-quoted with JSON escapes, which is
//! valid YAML for any text.

use std::fmt::Write as _;

/// What the operator chose for a new hive.
#[derive(Clone, Debug, PartialEq)]
pub struct NewHive {
    pub hive_id: String,
    pub name: String,
    /// `metadata.location.address`.
    pub address: Option<String>,
    pub latitude: f64,
    pub longitude: f64,
    /// An IANA zone; `None` leaves it to the image's `system.timezone`.
    pub timezone: Option<String>,
    /// The first administrator; `None` when `hives.defaults` gives `administrators`.
    pub admin: Option<Admin>,
    /// `image:`, when the hive builds on another image than `hives.image`.
    pub image: Option<String>,
    /// `security.wireguard.client_ip` without the `/32`.
    pub client_ip: std::net::Ipv4Addr,
    /// Whether to write the hub's `endpoint` and `peer_public_key` (when `hives.defaults`
    /// lacks them and they were given on the command line).
    pub hub: Option<Hub>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    pub name: String,
    pub email: String,
    pub username: String,
    /// OpenSSH public keys of the person.
    pub ssh_keys: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hub {
    pub endpoint: Option<String>,
    pub public_key: Option<String>,
}

/// A secret as it appears in the hive file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretText {
    /// `{file: path}`, the path relative to the hive file.
    File(String),
    /// The value itself (`--inline-secrets`).
    Inline(String),
}

impl SecretText {
    fn yaml(&self) -> String {
        match self {
            SecretText::File(p) => format!("{{file: {}}}", quote(p)),
            SecretText::Inline(v) => quote(v),
        }
    }
}

/// The credentials as the hive file refers to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub ssh_public: String,
    pub ssh_private: SecretText,
    pub wg_public: String,
    pub wg_private: SecretText,
    pub db_password: SecretText,
    pub admin_password: SecretText,
}

/// The local administrator and the database role of a new hive (the manager's names).
pub const LOCAL_ADMIN: &str = "hiveadmin";
pub const DB_USER: &str = "hiveuser";

/// A YAML double-quoted string (JSON's escapes are YAML's).
pub fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The hive file's text.
pub fn render(h: &NewHive, c: &Credentials) -> String {
    let mut y = String::new();
    let inline = [&c.ssh_private, &c.wg_private, &c.db_password, &c.admin_password]
        .iter()
        .any(|s| matches!(s, SecretText::Inline(_)));
    let secrets = if inline {
        "# This file holds the hive's secrets (`--inline-secrets`): keep it private (mode 0600);"
    } else {
        "# Secrets are in files beside the workspace's other secrets, never in this file;"
    };
    let _ = writeln!(
        y,
        "# Written by `w4b hive new`: the hive configuration manager's format (docs/hives.md).\n\
         {secrets}\n\
         # `w4b hive keys //hives:{id} --rotate ssh|wireguard|passwords` replaces them.",
        id = h.hive_id
    );
    if let Some(image) = &h.image {
        let _ = writeln!(y, "image: {}", quote(image));
    }
    let _ = writeln!(y, "hive_id: {}", quote(&h.hive_id));
    let _ = writeln!(y, "version: \"1.0.0\"");
    let _ = writeln!(y, "metadata:\n  name: {}\n  location:", quote(&h.name));
    if let Some(a) = &h.address {
        let _ = writeln!(y, "    address: {}", quote(a));
    }
    let _ = writeln!(
        y,
        "    latitude: {}\n    longitude: {}",
        num(h.latitude),
        num(h.longitude)
    );
    if let Some(tz) = &h.timezone {
        let _ = writeln!(y, "    timezone: {}", quote(tz));
    }
    // The LAN with DHCP: Wi-Fi networks (and their passwords) are added to the file by
    // hand, as `network.wifi` (docs/hives.md).
    let _ = writeln!(y, "network:\n  primary: lan\n  wifi: []\n  lan: {{dhcp: true}}");
    if let Some(a) = &h.admin {
        let keys: Vec<String> = a.ssh_keys.iter().map(|k| quote(k)).collect();
        let _ = writeln!(
            y,
            "administrators:\n  - name: {}\n    email: {}\n    username: {}\n    role: hive_admin\n    ssh_keys: [{}]",
            quote(&a.name),
            quote(&a.email),
            quote(&a.username),
            keys.join(", ")
        );
    }
    y.push_str(
        "collector:\n  interval: 60\n  batch_size: 100\n  retry_attempts: 3\n  retry_delay: 5\n  buffer_size: 1000\n  \
         logging: {level: INFO, max_size: \"100M\", retention: 7}\n\
         sensors: []\n\
         maintenance:\n  backup: {enabled: true, interval: 86400, retention: 7}\n  \
         updates: {auto_update: true, update_hour: 3, allowed_days: []}\n  \
         monitoring: {metrics_retention: 30, enable_detailed_logging: false}\n",
    );
    let _ = writeln!(
        y,
        "security:\n  ssh:\n    public_key: {}\n    private_key: {}\n    enable_password_auth: false\n    allow_root: false\n    port: 22",
        quote(&c.ssh_public),
        c.ssh_private.yaml()
    );
    let _ = writeln!(
        y,
        "  wireguard:\n    private_key: {}\n    public_key: {}\n    client_ip: \"{}/32\"",
        c.wg_private.yaml(),
        quote(&c.wg_public),
        h.client_ip
    );
    if let Some(hub) = &h.hub {
        if let Some(k) = &hub.public_key {
            let _ = writeln!(y, "    peer_public_key: {}", quote(k));
        }
        if let Some(e) = &hub.endpoint {
            let _ = writeln!(y, "    endpoint: {}", quote(e));
        }
    }
    let _ = writeln!(
        y,
        "  database: {{username: {DB_USER}, password: {}, host: localhost, port: 5432, database: hivedb}}",
        c.db_password.yaml()
    );
    let _ = writeln!(
        y,
        "  local_access: {{username: {LOCAL_ADMIN}, password: {}, sudo_without_password: false}}",
        c.admin_password.yaml()
    );
    y
}

/// A coordinate as YAML reads it back: always with a decimal point (a float, not an int).
fn num(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hive() -> NewHive {
        NewHive {
            hive_id: "hive_Test0001".into(),
            name: "Test".into(),
            address: None,
            latitude: 0.0,
            longitude: 0.0,
            timezone: None,
            admin: None,
            image: None,
            client_ip: std::net::Ipv4Addr::new(10, 10, 0, 2),
            hub: None,
        }
    }

    fn credentials(secret: impl Fn(&str) -> SecretText) -> Credentials {
        Credentials {
            ssh_public: "ssh-ed25519 AAAA hive-hive_Test0001".into(),
            ssh_private: secret("ssh"),
            wg_public: "pub=".into(),
            wg_private: secret("wg"),
            db_password: secret("db"),
            admin_password: secret("admin"),
        }
    }

    #[test]
    fn the_header_says_where_the_secrets_are() {
        let in_files = render(
            &hive(),
            &credentials(|f| SecretText::File(format!("../../secrets/x/{f}"))),
        );
        assert!(in_files.contains("never in this file"), "{in_files}");
        assert!(
            in_files.contains("`w4b hive keys //hives:hive_Test0001 --rotate"),
            "{in_files}"
        );
        let inline = render(
            &hive(),
            &credentials(|f| SecretText::Inline(format!("{f}-value"))),
        );
        assert!(!inline.contains("never in this file"), "{inline}");
        assert!(inline.contains("holds the hive's secrets"), "{inline}");
    }
}
