//! The `system` module: who and where the hive is. It owns the hostname (and the
//! `/etc/hosts` line that must agree with it), time zone, locale, keyboard, the local
//! administrator account with its SSH keys and sudo rule, the network profiles
//! (NetworkManager keyfiles for Wi-Fi and LAN), and the parts of Raspberry Pi OS's
//! first-user machinery that would otherwise stop an unattended boot.
//!
//! **The first user.** Bookworm images ship a placeholder user at uid 1000 (`pi`, no
//! usable password), `userconfig.service` enabled (it runs the `userconf-pi` wizard on
//! tty8 and waits for a person, or consumes `userconf.txt` from the boot partition),
//! `getty@tty1` disabled until the wizard ends, and an sshd banner drop-in
//! (`rename_user.conf`). Once a user exists the vendor's `cancel-rename` undoes these.
//! We do the same at build time: mask `userconfig.service`, re-enable `getty@tty1`, and
//! remove the banner and the `pi` NOPASSWD sudoers file.
//!
//! **The administrator** is made at build time too, but not here: a module sees only the
//! configuration, while renaming the base's uid-1000 placeholder, editing the existing
//! `/etc/group` lines for `sudo`, `gpio`, … and moving `/home/pi` need the base's account
//! files. That is the `accounts` step ([`crate::steps::accounts`]), which runs on the
//! combined tree after every module. This module decides *what* the account is
//! ([`admin_account`]: the name, checked; the `authorized_keys` lines, checked; the
//! password), writes the sudo rule, root's keys when root may log in, and the account
//! record ([`crate::validate::hive::ADMIN_RECORD`]) that the hive checklist and
//! `w4b validate` compare the image's accounts against. Nothing about the account is left
//! to the first boot, and no password or hash is written by this module.
//!
//! **The password.** `local_access.password` is stored in `/etc/shadow` as SHA-512 crypt
//! (`$6$`, [`sha512_crypt`]). The salt is derived from the hive id, the user name and the
//! password with a BLAKE3 key-derivation context, so the same configuration gives
//! byte-identical images (a random salt would make every build differ) while two hives,
//! or two users, with the same password get different hashes.
//!
//! First-boot sections read every configured value from files this module writes, so
//! their text is the same for every hive and no user value is ever parsed by a shell.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;

use super::{Body, GenFile, Generated, Module, ModuleError, Section};
use crate::hive::config::{HiveImage, Lan, Primary, Role, Secret, Wifi};
use crate::validate::hive::{AdminRecord, ADMIN_RECORD};

/// The uid and gid of the administrator: Raspberry Pi OS's "first user".
pub const ADMIN_UID: u32 = 1000;

/// The account name used when the hive has no `security.local_access` (an image without
/// the manager's secrets): key-only login for the administrators, no password.
pub const DEFAULT_ADMIN: &str = "hiveadmin";

/// Supplementary groups of the administrator (the `accounts` step creates those the base
/// lacks).
pub const ADMIN_GROUPS: [&str; 5] = ["sudo", "adm", "gpio", "i2c", "spi"];

/// SHA-512 crypt rounds for the administrator's password: about 50 ms on a Pi 4 per
/// login, 20 times the glibc default of 5000.
const CRYPT_ROUNDS: usize = 100_000;

const SALT_CONTEXT: &str = "w4b 2026-11 system admin password salt v1";
const UUID_CONTEXT: &str = "w4b 2026-11 system NetworkManager connection uuid v1";

const NM_DIR: &str = "/etc/NetworkManager/system-connections";

/// Hostname, locale, time zone, keyboard, the administrator and the network.
pub struct System;

impl Module for System {
    fn name(&self) -> &'static str {
        "system"
    }

    /// 2: the account moved to the `accounts` step (no hash file, no home, no
    /// first-boot section; the account record instead).
    fn version(&self) -> u32 {
        2
    }

    fn inputs<'a>(&self, cfg: &'a HiveImage) -> Result<crate::modules::Inputs<'a>, ModuleError> {
        let hive = &cfg.hive;
        let local = hive.security.as_ref().map(|s| &s.local_access);
        let ssh = hive.security.as_ref().map(|s| &s.ssh);
        let value = json!({
            "hive_id": hive.hive_id,
            "hostname": cfg.hostname(),
            "timezone": cfg.timezone(),
            "locale": cfg.settings.system.locale,
            "keyboard": cfg.settings.system.keyboard,
            "admin": local,
            "admin_keys": admin_keys(cfg),
            "hive_public_key": ssh.map(|s| &s.public_key),
            "allow_root": ssh.map(|s| s.allow_root),
            "network": hive.network,
        });
        // The administrator's password is read by the `accounts` step, not here.
        let secrets: Vec<&Secret> = hive.network.wifi.iter().map(|w| &w.password).collect();
        Ok((value, secrets))
    }

    fn generate(&self, cfg: &HiveImage) -> Result<Generated, ModuleError> {
        let mut g = Generated::default();
        identity(cfg, &mut g)?;
        locale(cfg, &mut g)?;
        admin(cfg, &mut g)?;
        first_user_handling(&mut g);
        network(cfg, &mut g)?;
        Ok(g)
    }
}

fn error(message: impl Into<String>, help: impl Into<Option<String>>) -> ModuleError {
    ModuleError {
        module: "system",
        message: message.into(),
        help: help.into(),
    }
}

/// Hostname, hosts, machine id, time zone.
fn identity(cfg: &HiveImage, g: &mut Generated) -> Result<(), ModuleError> {
    let host = cfg.hostname();
    if host.is_empty() {
        return Err(error(
            format!("hive `{}` gives an empty hostname", cfg.hive.hive_id),
            Some("set `system.hostname_prefix` to letters or digits".to_owned()),
        ));
    }
    g.files
        .push(GenFile::file("/etc/hostname", format!("{host}\n"), 0o644));
    // The whole file, so that the one `127.0.1.1` line is ours and no stale
    // `raspberrypi` line survives from the base image.
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n\n127.0.1.1\t{host}\n"
    );
    g.files.push(GenFile::file("/etc/hosts", hosts, 0o644));
    // Empty, not absent: systemd generates the id on first boot and treats the boot as
    // the first (pi-gen does the same); the D-Bus copy would otherwise be stale.
    g.files.push(GenFile::file("/etc/machine-id", "", 0o444));
    g.files.push(GenFile::owned(
        "/var/lib/dbus/machine-id",
        Body::Remove,
        0o644,
        0,
        0,
    ));

    let tz = cfg.timezone();
    if !valid_timezone(tz) {
        return Err(error(
            format!("time zone `{tz}` is not an IANA name"),
            Some("use a name such as `Europe/Berlin` or `UTC`".to_owned()),
        ));
    }
    g.files.push(GenFile::symlink(
        "/etc/localtime",
        &format!("/usr/share/zoneinfo/{tz}"),
    ));
    g.files
        .push(GenFile::file("/etc/timezone", format!("{tz}\n"), 0o644));
    Ok(())
}

fn valid_timezone(tz: &str) -> bool {
    !tz.is_empty()
        && tz.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
        })
}

/// Locale and keyboard.
fn locale(cfg: &HiveImage, g: &mut Generated) -> Result<(), ModuleError> {
    let loc = &cfg.settings.system.locale;
    let Some(charset) = locale_charset(loc) else {
        return Err(error(
            format!("locale `{loc}` is not of the form `ll_CC.CHARSET`"),
            Some("use a locale such as `en_GB.UTF-8` or `de_DE.UTF-8`".to_owned()),
        ));
    };
    g.files.push(GenFile::file(
        "/etc/default/locale",
        format!("LANG={loc}\n"),
        0o644,
    ));
    // `locale-gen` builds exactly the uncommented entries: the whole file is ours.
    g.files.push(GenFile::file(
        "/etc/locale.gen",
        format!("# Generated by w4b: the locales `locale-gen` builds.\n{loc} {charset}\n"),
        0o644,
    ));
    g.sections.push(Section {
        order: 10,
        name: "system/locale".into(),
        // `locale -a` lists `en_GB.UTF-8` as `en_GB.utf8`: compare in that spelling.
        script: "\
want=$(awk 'NF && $1 !~ /^#/ { print $1; exit }' /etc/locale.gen)
norm=$(printf '%s' \"$want\" | sed -e 's/\\.UTF-8$/.utf8/' -e 's/\\.utf-8$/.utf8/')
if locale -a 2>/dev/null | grep -qxF \"$norm\"; then
    echo \"locale $want already generated\"
else
    locale-gen
fi
"
        .into(),
    });

    let kb = &cfg.settings.system.keyboard;
    let layout_ok = !kb.is_empty()
        && kb.split(',').all(|l| {
            (2..=8).contains(&l.len()) && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if !layout_ok {
        return Err(error(
            format!("keyboard layout `{kb}` is not an XKB layout name"),
            Some("use a layout such as `gb`, `de` or `us`".to_owned()),
        ));
    }
    g.files.push(GenFile::file(
        "/etc/default/keyboard",
        format!(
            "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"{kb}\"\nXKBVARIANT=\"\"\nXKBOPTIONS=\"\"\n\nBACKSPACE=\"guess\"\n"
        ),
        0o644,
    ));
    Ok(())
}

/// `en_GB.UTF-8` → `UTF-8`; `None` for anything that is not a plain locale name.
fn locale_charset(loc: &str) -> Option<&str> {
    let (lang, charset) = loc.split_once('.')?;
    let (ll, cc) = lang.split_once('_')?;
    let ok = (2..=3).contains(&ll.len())
        && ll.chars().all(|c| c.is_ascii_lowercase())
        && cc.len() == 2
        && cc.chars().all(|c| c.is_ascii_uppercase())
        && !charset.is_empty()
        && charset.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    ok.then_some(charset)
}

/// The administrators' keys (hive admins only: a viewer gets no shell) and the hive's own
/// public key, deduplicated in order.
fn admin_keys(cfg: &HiveImage) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut keys = Vec::new();
    let people = cfg
        .hive
        .administrators
        .iter()
        .filter(|a| a.role == Role::HiveAdmin)
        .flat_map(|a| a.ssh_keys.iter());
    let own = cfg.hive.security.as_ref().map(|s| &s.ssh.public_key);
    for key in people.chain(own) {
        let key = key.trim().to_owned();
        if seen.insert(key.clone()) {
            keys.push(key);
        }
    }
    keys
}

const KEY_TYPES: [&str; 8] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
];

/// One `authorized_keys` line: a known key type, base64, an optional comment. Options
/// (`command=…`, `from=…`) and line breaks are refused: a key in a hive file must not be
/// able to smuggle a second line or restrictions nobody reviewed.
fn check_key(key: &str) -> Result<(), ModuleError> {
    let mut parts = key.split_whitespace();
    let kind = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("");
    let ok = KEY_TYPES.contains(&kind)
        && !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
        && !key.contains(['\n', '\r', '\0']);
    if ok {
        Ok(())
    } else {
        let shown: String = key.chars().take(40).collect();
        Err(error(
            format!("`{shown}…` is not an OpenSSH public key line"),
            Some("give keys as `ssh-ed25519 AAAA… comment`, one per list entry, without options".to_owned()),
        ))
    }
}

/// A user name `useradd` and sudoers accept without quoting (sudo ignores drop-ins whose
/// name contains a dot, so no dots either).
fn valid_username(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The administrator as the `accounts` step makes it: what the configuration says,
/// checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminAccount {
    pub user: String,
    /// `security.local_access.password`; `None` for a key-only administrator.
    pub password: Option<Secret>,
    /// The hive id: an input of the password's salt.
    pub hive_id: String,
    /// The `authorized_keys` lines, deduplicated in order.
    pub keys: Vec<String>,
}

impl AdminAccount {
    /// The text of `~/.ssh/authorized_keys`.
    pub fn authorized_keys(&self) -> String {
        let mut text =
            String::from("# Generated by w4b: the hive's administrators and the hive's own key.\n");
        for key in &self.keys {
            text.push_str(key);
            text.push('\n');
        }
        text
    }

    /// What the image's account record says about this account.
    pub fn record(&self) -> AdminRecord {
        AdminRecord {
            user: self.user.clone(),
            password: self.password.is_some(),
            groups: ADMIN_GROUPS.iter().map(|g| (*g).to_owned()).collect(),
            keys: self.keys.clone(),
        }
    }
}

/// The administrator of a hive: `security.local_access` (or [`DEFAULT_ADMIN`], key-only),
/// with the name and every key checked.
pub fn admin_account(cfg: &HiveImage) -> Result<AdminAccount, ModuleError> {
    let local = cfg.hive.security.as_ref().map(|s| &s.local_access);
    let user = local.map_or(DEFAULT_ADMIN, |l| l.username.as_str());
    if !valid_username(user) || user == "root" {
        return Err(error(
            format!("`{user}` is not a usable account name"),
            Some(
                "use lower-case letters, digits, `-` and `_`, starting with a letter (at most 32)".to_owned(),
            ),
        ));
    }
    let keys = admin_keys(cfg);
    for key in &keys {
        check_key(key)?;
    }
    Ok(AdminAccount {
        user: user.to_owned(),
        password: local.map(|l| l.password.clone()),
        hive_id: cfg.hive.hive_id.clone(),
        keys,
    })
}

/// The administrator's part of this module: the account record, the sudo rule, root's
/// keys. The account itself is the `accounts` step's.
fn admin(cfg: &HiveImage, g: &mut Generated) -> Result<(), ModuleError> {
    let account = admin_account(cfg)?;
    let user = account.user.as_str();
    let local = cfg.hive.security.as_ref().map(|s| &s.local_access);
    g.files
        .push(GenFile::file(ADMIN_RECORD, account.record().render(), 0o644));

    // sudo reads drop-ins in lexical order and the last match wins: `010-` sorts after
    // the vendor's `010_pi-nopasswd`, which is removed anyway.
    let rule = if local.is_some_and(|l| l.sudo_without_password) {
        "NOPASSWD: ALL"
    } else {
        "ALL"
    };
    g.files.push(GenFile::file(
        &format!("/etc/sudoers.d/010-w4b-{user}"),
        format!("# Generated by w4b: the hive's local administrator.\n{user} ALL=(ALL:ALL) {rule}\n"),
        0o440,
    ));
    g.files.push(GenFile::owned(
        "/etc/sudoers.d/010_pi-nopasswd",
        Body::Remove,
        0o440,
        0,
        0,
    ));

    // Root gets the same keys only when the hive allows root logins at all (sshd then
    // says `prohibit-password`: keys only).
    if cfg.hive.security.as_ref().is_some_and(|s| s.ssh.allow_root) {
        g.files.push(GenFile::dir("/root/.ssh", 0o700));
        g.files.push(GenFile::file(
            "/root/.ssh/authorized_keys",
            account.authorized_keys(),
            0o600,
        ));
    }
    Ok(())
}

/// `$6$rounds=N$salt$hash` with a salt derived from the hive, the user and the password.
pub fn sha512_crypt(hive_id: &str, user: &str, password: &Secret) -> Result<String, ModuleError> {
    const ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut material = Vec::new();
    for part in [hive_id, user, password.expose()] {
        material.extend_from_slice(&(part.len() as u64).to_le_bytes());
        material.extend_from_slice(part.as_bytes());
    }
    let derived = blake3::derive_key(SALT_CONTEXT, &material);
    let salt: String = derived[..16]
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 63)]))
        .collect();
    let params = sha_crypt::Sha512Params::new(CRYPT_ROUNDS)
        .map_err(|e| error(format!("SHA-512 crypt parameters: {e:?}"), None))?;
    let hash = sha_crypt::sha512_crypt_b64(password.expose().as_bytes(), salt.as_bytes(), &params)
        .map_err(|e| error(format!("hashing `{}`: {e:?}", password.name), None))?;
    // The hash lets anyone who sees it test guesses: it is as secret as the password.
    crate::redact::register(&hash);
    Ok(format!("$6$rounds={CRYPT_ROUNDS}${salt}${hash}"))
}

/// What `cancel-rename` does once a user exists, done at build time (see the module doc).
fn first_user_handling(g: &mut Generated) {
    g.files.push(GenFile::symlink(
        "/etc/systemd/system/userconfig.service",
        "/dev/null",
    ));
    for gone in [
        "/etc/systemd/system/multi-user.target.wants/userconfig.service",
        "/etc/ssh/sshd_config.d/rename_user.conf",
        "/var/lib/userconf-pi/autologin",
        "/boot/firmware/userconf.txt",
        "/boot/firmware/userconf",
    ] {
        g.files.push(GenFile::owned(gone, Body::Remove, 0o644, 0, 0));
    }
    g.files.push(GenFile::symlink(
        "/etc/systemd/system/getty.target.wants/getty@tty1.service",
        "/lib/systemd/system/getty@.service",
    ));
}

/// Wi-Fi and LAN profiles.
fn network(cfg: &HiveImage, g: &mut Generated) -> Result<(), ModuleError> {
    let net = &cfg.hive.network;
    if net.primary == Primary::Wifi && net.wifi.is_empty() {
        return Err(error(
            "`network.primary` is `wifi` but `network.wifi` lists no network",
            Some("add a Wi-Fi network or set `network.primary: lan`".to_owned()),
        ));
    }
    let mut ssids = BTreeSet::new();
    for (i, wifi) in net.wifi.iter().enumerate() {
        if !ssids.insert(wifi.ssid.as_str()) {
            return Err(error(
                format!("Wi-Fi network `{}` is listed twice", wifi.ssid),
                Some("keep one entry per SSID".to_owned()),
            ));
        }
        let name = format!("w4b-wifi-{}", i + 1);
        let text = wifi_keyfile(&cfg.hive.hive_id, &name, wifi)?;
        g.files.push(GenFile::file(
            &format!("{NM_DIR}/{name}.nmconnection"),
            text,
            0o600,
        ));
    }
    match &net.lan {
        Some(lan) => {
            let text = lan_keyfile(&cfg.hive.hive_id, lan, net.primary == Primary::Lan)?;
            g.files.push(GenFile::file(
                &format!("{NM_DIR}/w4b-lan.nmconnection"),
                text,
                0o600,
            ));
        }
        None if net.primary == Primary::Lan => {
            return Err(error(
                "`network.primary` is `lan` but there is no `network.lan`",
                Some("add `lan: {dhcp: true}` or a static address".to_owned()),
            ));
        }
        None => {}
    }
    if !net.wifi.is_empty() {
        wifi_country(cfg.timezone(), g);
    }
    Ok(())
}

/// A stable UUID (version-4 layout) for a connection of this hive.
fn connection_uuid(hive_id: &str, name: &str) -> String {
    let mut material = Vec::new();
    material.extend_from_slice(hive_id.as_bytes());
    material.push(0);
    material.extend_from_slice(name.as_bytes());
    let mut b = blake3::derive_key(UUID_CONTEXT, &material);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(&b[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A keyfile string value (GKeyFile escapes); `None` if it holds control characters.
fn keyfile_value(s: &str) -> Option<String> {
    if s.chars().any(|c| c.is_control()) {
        return None;
    }
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            ' ' if i == 0 => out.push_str("\\s"),
            c => out.push(c),
        }
    }
    Some(out)
}

/// An SSID as NetworkManager reads it back byte for byte: plain text when that is
/// unambiguous, else the byte-list form (`65;112;`).
fn keyfile_ssid(ssid: &str) -> Result<String, ModuleError> {
    if ssid.is_empty() || ssid.len() > 32 {
        return Err(error(
            format!("SSID `{ssid}` must be 1 to 32 bytes long"),
            Some("check `network.wifi[].ssid`".to_owned()),
        ));
    }
    let plain = !ssid.contains([';', '\\'])
        && !ssid.starts_with(' ')
        && !ssid.ends_with(' ')
        && !ssid.chars().all(|c| c.is_ascii_digit())
        && !ssid.chars().any(|c| c.is_control());
    if plain {
        Ok(ssid.to_owned())
    } else {
        Ok(ssid.bytes().map(|b| format!("{b};")).collect())
    }
}

fn wifi_keyfile(hive_id: &str, name: &str, wifi: &Wifi) -> Result<String, ModuleError> {
    let psk = wifi.password.expose();
    if !crate::hive::config::wpa_psk_is_valid(psk) {
        // Never the value itself: only where it came from. `hive validate` applies the same
        // rule, so only a hive that skipped it gets here.
        return Err(error(
            format!(
                "`{}` is not a WPA password ({})",
                wifi.password.name,
                crate::hive::config::WPA_PSK_RULE
            ),
            Some(format!("correct the password of Wi-Fi network `{}`", wifi.ssid)),
        ));
    }
    let psk = keyfile_value(psk).ok_or_else(|| error("unreachable: checked above", None))?;
    let id = keyfile_value(&wifi.ssid).ok_or_else(|| {
        error(
            format!("SSID {:?} contains control characters", wifi.ssid),
            Some("check `network.wifi[].ssid`".to_owned()),
        )
    })?;
    Ok(format!(
        "# Generated by w4b.\n[connection]\nid={id}\nuuid={uuid}\ntype=wifi\nautoconnect=true\nautoconnect-priority={prio}\n\n\
         [wifi]\nmode=infrastructure\nssid={ssid}\n\n\
         [wifi-security]\nkey-mgmt=wpa-psk\npsk={psk}\n\n\
         [ipv4]\nmethod=auto\n\n[ipv6]\naddr-gen-mode=default\nmethod=auto\n",
        uuid = connection_uuid(hive_id, name),
        prio = wifi.priority,
        ssid = keyfile_ssid(&wifi.ssid)?,
    ))
}

fn lan_keyfile(hive_id: &str, lan: &Lan, primary: bool) -> Result<String, ModuleError> {
    // The primary link is preferred when both are up (NetworkManager's default metrics
    // already favour Ethernet; the priority orders autoconnection).
    let prio = if primary { 100 } else { 0 };
    let ipv4 = if lan.dhcp {
        "method=auto\n".to_owned()
    } else {
        let Some(st) = &lan.static_ip else {
            return Err(error(
                "`network.lan.dhcp` is false but there is no `static` address",
                Some("add `static: {ip: 192.168.1.100/24, gateway: 192.168.1.1}`".to_owned()),
            ));
        };
        let (ip, prefix) = match st.ip.split_once('/') {
            Some((ip, p)) => (ip, p.parse::<u8>().ok().filter(|p| (1..=32).contains(p))),
            None => (st.ip.as_str(), Some(24)),
        };
        let (Ok(ip), Some(prefix)) = (ip.parse::<Ipv4Addr>(), prefix) else {
            return Err(error(
                format!("`{}` is not an IPv4 address with an optional /prefix", st.ip),
                Some("write it as `192.168.1.100/24`".to_owned()),
            ));
        };
        let Ok(gw) = st.gateway.parse::<Ipv4Addr>() else {
            return Err(error(
                format!("gateway `{}` is not an IPv4 address", st.gateway),
                None,
            ));
        };
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if u32::from(ip) & mask != u32::from(gw) & mask {
            return Err(error(
                format!("gateway {gw} is outside {ip}/{prefix}"),
                Some("the gateway must be on the hive's own subnet".to_owned()),
            ));
        }
        let mut dns = String::new();
        for d in &st.dns {
            let Ok(addr) = d.parse::<IpAddr>() else {
                return Err(error(format!("DNS server `{d}` is not an IP address"), None));
            };
            if !addr.is_ipv4() {
                return Err(error(
                    format!("DNS server `{d}` is IPv6; the static profile is IPv4"),
                    Some("list IPv4 servers in `network.lan.static.dns`".to_owned()),
                ));
            }
            dns.push_str(&format!("{addr};"));
        }
        let mut s = format!("method=manual\naddress1={ip}/{prefix},{gw}\n");
        if !dns.is_empty() {
            s.push_str(&format!("dns={dns}\nignore-auto-dns=true\n"));
        }
        s
    };
    Ok(format!(
        "# Generated by w4b.\n[connection]\nid=w4b-lan\nuuid={uuid}\ntype=ethernet\nautoconnect=true\nautoconnect-priority={prio}\n\n\
         [ethernet]\n\n[ipv4]\n{ipv4}\n[ipv6]\naddr-gen-mode=default\nmethod=auto\n",
        uuid = connection_uuid(hive_id, "w4b-lan"),
    ))
}

/// The regulatory country for common hive time zones; `None` leaves the kernel's world
/// domain (conservative channels and power), which is legal everywhere.
pub fn country_of_timezone(tz: &str) -> Option<&'static str> {
    const TABLE: &[(&str, &str)] = &[
        ("America/Chicago", "US"),
        ("America/Denver", "US"),
        ("America/Los_Angeles", "US"),
        ("America/New_York", "US"),
        ("America/Toronto", "CA"),
        ("America/Vancouver", "CA"),
        ("Australia/Melbourne", "AU"),
        ("Australia/Sydney", "AU"),
        ("Europe/Amsterdam", "NL"),
        ("Europe/Athens", "GR"),
        ("Europe/Berlin", "DE"),
        ("Europe/Bratislava", "SK"),
        ("Europe/Brussels", "BE"),
        ("Europe/Bucharest", "RO"),
        ("Europe/Budapest", "HU"),
        ("Europe/Copenhagen", "DK"),
        ("Europe/Dublin", "IE"),
        ("Europe/Helsinki", "FI"),
        ("Europe/Lisbon", "PT"),
        ("Europe/Ljubljana", "SI"),
        ("Europe/London", "GB"),
        ("Europe/Luxembourg", "LU"),
        ("Europe/Madrid", "ES"),
        ("Europe/Oslo", "NO"),
        ("Europe/Paris", "FR"),
        ("Europe/Prague", "CZ"),
        ("Europe/Rome", "IT"),
        ("Europe/Stockholm", "SE"),
        ("Europe/Vienna", "AT"),
        ("Europe/Warsaw", "PL"),
        ("Europe/Zagreb", "HR"),
        ("Europe/Zurich", "CH"),
        ("Pacific/Auckland", "NZ"),
    ];
    TABLE
        .binary_search_by(|(z, _)| (*z).cmp(tz))
        .ok()
        .map(|i| TABLE[i].1)
}

/// Sets the Wi-Fi regulatory domain and lifts Raspberry Pi OS's "country not set"
/// soft block before NetworkManager starts. A unit, not a first-boot section: the
/// first-boot script runs after the network is up, which on Wi-Fi needs this first.
fn wifi_country(tz: &str, g: &mut Generated) {
    let Some(cc) = country_of_timezone(tz) else { return };
    let unit = format!(
        "# Generated by w4b.\n[Unit]\nDescription=Wi-Fi regulatory domain {cc} and rfkill unblock\nAfter=systemd-rfkill.service\nBefore=NetworkManager.service\n\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=-/usr/sbin/rfkill unblock wifi\nExecStart=-/usr/sbin/iw reg set {cc}\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    g.files.push(GenFile::file(
        "/etc/systemd/system/w4b-wifi-country.service",
        unit,
        0o644,
    ));
    g.files.push(GenFile::symlink(
        "/etc/systemd/system/multi-user.target.wants/w4b-wifi-country.service",
        "/etc/systemd/system/w4b-wifi-country.service",
    ));
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // python3 (crypt, configparser) and sh are the oracles.
mod tests {
    use std::process::Command;

    use super::*;
    use crate::modules::testing::{file_text as text, find, lan_hive, render, wifi_hive};

    #[test]
    fn snapshot_wifi_hive() {
        let g = System.generate(&wifi_hive()).expect("generates");
        insta::assert_snapshot!("system_wifi", render(&g));
    }

    #[test]
    fn snapshot_lan_hive() {
        let g = System.generate(&lan_hive()).expect("generates");
        insta::assert_snapshot!("system_lan", render(&g));
    }

    #[test]
    fn hostname_and_hosts_agree() {
        let cfg = wifi_hive();
        let g = System.generate(&cfg).expect("generates");
        assert_eq!(text(find(&g, "/etc/hostname")), "w4b-abcd1234\n");
        let hosts = text(find(&g, "/etc/hosts"));
        let line = hosts
            .lines()
            .find(|l| l.starts_with("127.0.1.1"))
            .expect("127.0.1.1 line");
        assert_eq!(line.split_whitespace().nth(1), Some("w4b-abcd1234"));
        assert_eq!(hosts.matches("127.0.1.1").count(), 1);
        assert_eq!(
            find(&g, "/etc/localtime").body,
            Body::Symlink("/usr/share/zoneinfo/Europe/Berlin".into())
        );
        assert_eq!(text(find(&g, "/etc/machine-id")), "");
    }

    #[test]
    fn secrets_and_owners_have_the_right_modes() {
        let g = System.generate(&wifi_hive()).expect("generates");
        for f in &g.files {
            let p = f.path.to_string();
            if p.ends_with(".nmconnection") || p.starts_with("/etc/w4b/secrets/") {
                assert_eq!((f.mode, f.uid, f.gid), (0o600, 0, 0), "{p}");
            }
        }
        // The home and the account files are the `accounts` step's, not this module's.
        assert!(
            !g.files.iter().any(|f| f.path.to_string().starts_with("/home")),
            "no home from the module"
        );
        let sudo = find(&g, "/etc/sudoers.d/010-w4b-hiveadmin");
        assert_eq!((sudo.mode, sudo.uid), (0o440, 0));
        assert_eq!(find(&g, "/etc/sudoers.d/010_pi-nopasswd").body, Body::Remove);
    }

    #[test]
    fn authorized_keys_hold_admins_and_the_hive_key_but_not_viewers() {
        let mut cfg = wifi_hive();
        let mut viewer = cfg.hive.administrators[0].clone();
        viewer.role = Role::HiveViewer;
        viewer.ssh_keys = vec!["ssh-ed25519 AAAAViewerViewer viewer@example.com".into()];
        cfg.hive.administrators.push(viewer);
        let g = System.generate(&cfg).expect("generates");
        let keys = admin_account(&cfg).expect("account").authorized_keys();
        let record = text(find(&g, ADMIN_RECORD));
        assert!(
            record.contains("key=ssh-ed25519") && record.contains("jo@example.com"),
            "{record}"
        );
        assert!(keys.contains("jo@example.com"));
        assert!(keys.contains("hive-hive_AbCd1234"));
        assert!(!keys.contains("viewer@example.com"));
        // Root gets no keys unless the hive allows root logins.
        assert!(!g.files.iter().any(|f| f.path.to_string().starts_with("/root")));
    }

    #[test]
    fn a_key_with_options_or_a_second_line_is_refused() {
        for bad in [
            "command=\"/bin/sh\" ssh-ed25519 AAAA x",
            "ssh-ed25519 AAAA x\nssh-rsa AAAA y",
            "not a key",
        ] {
            let mut cfg = wifi_hive();
            cfg.hive.administrators[0].ssh_keys = vec![bad.into()];
            let err = System.generate(&cfg).expect_err(bad);
            assert!(err.message.contains("not an OpenSSH public key"), "{err}");
        }
    }

    #[test]
    fn sudo_rule_follows_sudo_without_password() {
        let mut cfg = wifi_hive();
        let g = System.generate(&cfg).expect("generates");
        let rule = text(find(&g, "/etc/sudoers.d/010-w4b-hiveadmin"));
        assert!(
            rule.contains("hiveadmin ALL=(ALL:ALL) ALL\n") && !rule.contains("NOPASSWD"),
            "{rule}"
        );
        if let Some(s) = cfg.hive.security.as_mut() {
            s.local_access.sudo_without_password = true;
        }
        let g = System.generate(&cfg).expect("generates");
        let rule = text(find(&g, "/etc/sudoers.d/010-w4b-hiveadmin"));
        assert!(rule.contains("hiveadmin ALL=(ALL:ALL) NOPASSWD: ALL\n"), "{rule}");
    }

    #[test]
    fn password_hash_is_sha512_crypt_deterministic_and_checked_by_crypt() {
        let pw = Secret::new("p", "SECRET-admin-pw-16");
        let a = sha512_crypt("hive_AbCd1234", "hiveadmin", &pw).expect("hash");
        let b = sha512_crypt("hive_AbCd1234", "hiveadmin", &pw).expect("hash");
        let other_hive = sha512_crypt("hive_LanX0001", "hiveadmin", &pw).expect("hash");
        assert_eq!(a, b);
        assert_ne!(a, other_hive, "the salt depends on the hive");
        assert!(a.starts_with("$6$rounds=100000$"), "{a}");
        assert!(!a.contains("SECRET"));
        // The oracle: the C library's crypt(3), through `mkpasswd` (Debian's `whois`; Python's
        // `crypt` module is gone from Python 3.13), given the same salt and rounds.
        crate::oracle::require!("mkpasswd");
        let salt = a
            .strip_prefix("$6$rounds=100000$")
            .and_then(|rest| rest.split_once('$'))
            .map(|(salt, _)| salt)
            .expect("a salt");
        let crypt = |password: &str| {
            use std::io::Write as _;
            let mut child = Command::new("mkpasswd")
                .args(["--method=sha-512", "--rounds=100000", "--salt", salt, "--stdin"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("mkpasswd runs");
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(password.as_bytes()).expect("write the password");
            drop(stdin);
            let out = child.wait_with_output().expect("mkpasswd finishes");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        assert_eq!(crypt(pw.expose()), a);
        assert_ne!(crypt("wrong"), a);
    }

    #[test]
    fn no_file_and_no_section_holds_the_password_or_its_hash() {
        let cfg = wifi_hive();
        let g = System.generate(&cfg).expect("generates");
        let password = cfg
            .hive
            .security
            .as_ref()
            .expect("security")
            .local_access
            .password
            .clone();
        let hash = sha512_crypt(&cfg.hive.hive_id, "hiveadmin", &password).expect("hash");
        for f in &g.files {
            if let Body::File(bytes) | Body::Append(bytes) = &f.body {
                let t = String::from_utf8_lossy(bytes);
                assert!(!t.contains(password.expose()) && !t.contains(&hash), "{}", f.path);
            }
        }
        assert!(!g
            .files
            .iter()
            .any(|f| f.path.to_string().starts_with("/etc/w4b/secrets/admin")));
        assert!(
            !g.sections.iter().any(|s| s.name.contains("admin")),
            "no account on first boot"
        );
        for secret in cfg.secrets() {
            for s in &g.sections {
                assert!(
                    !s.script.contains(secret.expose()),
                    "{} in {}",
                    secret.name,
                    s.name
                );
            }
            let shown = serde_json::to_string(&System.inputs(&cfg).expect("inputs").0).expect("json");
            assert!(!shown.contains(secret.expose()), "{} in inputs", secret.name);
        }
        // Section text does not depend on the hive: values come from files.
        let other = System.generate(&lan_hive()).expect("generates");
        assert_eq!(g.sections, other.sections);
    }

    #[test]
    fn inputs_ignore_unrelated_fields_and_follow_related_ones() {
        let cfg = wifi_hive();
        let (before, secrets) = System.inputs(&cfg).expect("inputs");
        let names = crate::modules::secret_names(&secrets);
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["network.wifi[0].password", "network.wifi[1].password"],
            "the administrator's password is the `accounts` step's secret"
        );
        let mut changed = cfg.clone();
        changed.hive.sensors[0].interface.pin = Some(17);
        changed.hive.collector.interval = 120;
        changed.hive.maintenance.backup.retention = 3;
        changed
            .settings
            .software
            .packages
            .push(crate::modules::testing::spanned("vim"));
        if let Some(s) = changed.hive.security.as_mut() {
            s.database.port = 5433;
        }
        assert_eq!(System.inputs(&changed).expect("inputs").0, before);
        let mut related = cfg.clone();
        related.hive.network.wifi[0].priority = 9;
        assert_ne!(System.inputs(&related).expect("inputs").0, before);
        let mut related = cfg;
        related.settings.system.keyboard = "de".into();
        assert_ne!(System.inputs(&related).expect("inputs").0, before);
    }

    /// Python's configparser reads the keyfiles as GKeyFile would (no interpolation).
    fn parse_keyfile(text: &str) -> Option<serde_json::Value> {
        let script = "import configparser,json,sys\nc=configparser.ConfigParser(interpolation=None)\nc.optionxform=str\nc.read_string(sys.stdin.read())\nprint(json.dumps({s: dict(c[s]) for s in c.sections()}))";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        use std::io::Write as _;
        child.stdin.take()?.write_all(text.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        assert!(out.status.success(), "configparser rejected:\n{text}");
        serde_json::from_slice(&out.stdout).ok()
    }

    #[test]
    fn wifi_keyfiles_parse_and_carry_priorities() {
        let g = System.generate(&wifi_hive()).expect("generates");
        let f1 = text(find(
            &g,
            "/etc/NetworkManager/system-connections/w4b-wifi-1.nmconnection",
        ));
        let f2 = text(find(
            &g,
            "/etc/NetworkManager/system-connections/w4b-wifi-2.nmconnection",
        ));
        crate::oracle::require!("python3");
        let k1 = parse_keyfile(&f1).expect("python3 runs");
        let k2 = parse_keyfile(&f2).expect("python3 ran before");
        assert_eq!(k1["connection"]["autoconnect-priority"], "2");
        assert_eq!(k1["wifi"]["ssid"], "Apiary");
        assert_eq!(k1["wifi-security"]["psk"], "SECRET-wifi-apiary");
        assert_eq!(k2["wifi"]["ssid"], "Farmhouse 2.4");
        assert_eq!(k2["connection"]["autoconnect-priority"], "1");
        assert_ne!(k1["connection"]["uuid"], k2["connection"]["uuid"]);
        assert!(find(&g, "/etc/systemd/system/w4b-wifi-country.service")
            .path
            .to_string()
            .contains("country"));
        assert!(text(find(&g, "/etc/systemd/system/w4b-wifi-country.service")).contains("iw reg set DE"));
    }

    #[test]
    fn static_lan_keyfile_parses() {
        let g = System.generate(&lan_hive()).expect("generates");
        let f = text(find(
            &g,
            "/etc/NetworkManager/system-connections/w4b-lan.nmconnection",
        ));
        assert!(
            !g.files.iter().any(|f| f.path.to_string().contains("wifi")),
            "no Wi-Fi on a LAN hive"
        );
        crate::oracle::require!("python3");
        let k = parse_keyfile(&f).expect("python3 runs");
        assert_eq!(k["ipv4"]["method"], "manual");
        assert_eq!(k["ipv4"]["address1"], "192.168.1.100/24,192.168.1.1");
        assert_eq!(k["ipv4"]["dns"], "1.1.1.1;9.9.9.9;");
        assert_eq!(k["connection"]["type"], "ethernet");
    }

    #[test]
    fn dhcp_lan_is_method_auto() {
        let mut cfg = lan_hive();
        if let Some(lan) = cfg.hive.network.lan.as_mut() {
            lan.dhcp = true;
        }
        let g = System.generate(&cfg).expect("generates");
        let f = text(find(
            &g,
            "/etc/NetworkManager/system-connections/w4b-lan.nmconnection",
        ));
        assert!(
            f.contains("[ipv4]\nmethod=auto\n") && !f.contains("address1"),
            "{f}"
        );
    }

    #[test]
    fn awkward_ssids_are_written_as_bytes() {
        assert_eq!(keyfile_ssid("Apiary").ok(), Some("Apiary".into()));
        assert_eq!(keyfile_ssid("a;b").ok(), Some("97;59;98;".into()));
        assert_eq!(keyfile_ssid("123").ok(), Some("49;50;51;".into()));
        assert_eq!(keyfile_ssid(" lead").ok(), Some("32;108;101;97;100;".into()));
        assert!(keyfile_ssid("").is_err());
        assert_eq!(keyfile_value(" a\\b").as_deref(), Some("\\sa\\\\b"));
        assert_eq!(keyfile_value("a\nb"), None);
    }

    #[test]
    fn configuration_errors_name_the_problem_but_never_a_secret() {
        let mut cfg = wifi_hive();
        cfg.hive.network.wifi[0].password = Secret::new("network.wifi[0].password", "short");
        let err = System.generate(&cfg).expect_err("short psk");
        let shown = format!("{err} {:?}", err.help);
        assert!(
            shown.contains("network.wifi[0].password") && !shown.contains("short\""),
            "{shown}"
        );
        assert!(!shown.contains(": short"), "{shown}");

        let mut cfg = wifi_hive();
        cfg.hive.network.wifi[1].ssid = "Apiary".into();
        assert!(System
            .generate(&cfg)
            .expect_err("dup")
            .message
            .contains("listed twice"));

        let mut cfg = lan_hive();
        if let Some(st) = cfg.hive.network.lan.as_mut().and_then(|l| l.static_ip.as_mut()) {
            st.gateway = "10.0.0.1".into();
        }
        assert!(System.generate(&cfg).expect_err("gw").message.contains("outside"));

        let mut cfg = wifi_hive();
        if let Some(s) = cfg.hive.security.as_mut() {
            s.local_access.username = "Bad.Name".into();
        }
        assert!(System
            .generate(&cfg)
            .expect_err("user")
            .message
            .contains("account name"));

        let mut cfg = wifi_hive();
        cfg.hive.metadata.location.timezone = "../../etc/passwd".into();
        assert!(System.generate(&cfg).expect_err("tz").message.contains("IANA"));

        let mut cfg = wifi_hive();
        cfg.settings.system.locale = "C; rm -rf /".into();
        assert!(System
            .generate(&cfg)
            .expect_err("locale")
            .message
            .contains("locale"));
    }

    #[test]
    fn without_security_the_admin_is_key_only() {
        let mut cfg = wifi_hive();
        cfg.hive.security = None;
        let g = System.generate(&cfg).expect("generates");
        let record = AdminRecord::parse(&text(find(&g, ADMIN_RECORD))).expect("record");
        assert_eq!(record.user, DEFAULT_ADMIN);
        assert!(!record.password, "key-only");
        assert_eq!(record.groups, ADMIN_GROUPS);
        let account = admin_account(&cfg).expect("account");
        assert_eq!(account.password, None);
        assert!(account.authorized_keys().contains("jo@example.com"));
    }

    #[test]
    fn first_user_wizard_is_disabled() {
        let g = System.generate(&wifi_hive()).expect("generates");
        assert_eq!(
            find(&g, "/etc/systemd/system/userconfig.service").body,
            Body::Symlink("/dev/null".into())
        );
        assert_eq!(
            find(
                &g,
                "/etc/systemd/system/multi-user.target.wants/userconfig.service"
            )
            .body,
            Body::Remove
        );
        assert_eq!(
            find(&g, "/etc/ssh/sshd_config.d/rename_user.conf").body,
            Body::Remove
        );
    }

    #[test]
    fn country_table_is_sorted_for_binary_search() {
        assert_eq!(country_of_timezone("Europe/Berlin"), Some("DE"));
        assert_eq!(country_of_timezone("Pacific/Auckland"), Some("NZ"));
        assert_eq!(country_of_timezone("America/Chicago"), Some("US"));
        assert_eq!(country_of_timezone("UTC"), None);
        let mut cfg = wifi_hive();
        cfg.hive.metadata.location.timezone = "UTC".into();
        let g = System.generate(&cfg).expect("generates");
        assert!(!g
            .files
            .iter()
            .any(|f| f.path.to_string().contains("wifi-country")));
    }

    #[test]
    fn sections_are_valid_posix_sh() {
        let g = System.generate(&wifi_hive()).expect("generates");
        for s in &g.sections {
            crate::modules::oracles::sh_syntax_ok(&s.name, &s.script);
        }
    }
}
