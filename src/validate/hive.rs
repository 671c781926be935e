//! The hive checklist (issue 5 item 10): rules a configured W4B hive's root filesystem must
//! satisfy, run on every built hive image (the `hive-check` step, before the disk is
//! written) and by `w4b validate --hive`. Each failure names the file and the rule.
//!
//! | rule | checks |
//! |---|---|
//! | `hostname` | `/etc/hostname` is a valid DNS name and `/etc/hosts` maps it |
//! | `units` | every `*.wants/` link names an existing unit file whose `[Install]` wants it there; every `w4b-*` unit with `WantedBy=` is linked |
//! | `sshd` | drop-ins in `/etc/ssh/sshd_config.d/` use known keywords with one value each |
//! | `wireguard` | `/etc/wireguard/*.conf`: `[Interface]` with a 32-byte base64 `PrivateKey` and an `Address`; each `[Peer]` has `PublicKey`, `AllowedIPs` |
//! | `networkmanager` | keyfiles parse, have `[connection]` `id` and `type`; Wi-Fi ones an `ssid`, and a PSK the hive rule accepts (8–63 printable characters or 64 hex digits) |
//! | `nftables` | `/etc/nftables.conf` balances its braces and its `input` chain has `policy drop` |
//! | `secret_modes` | files holding secrets (WireGuard, NetworkManager, `/etc/w4b/secrets/*`) are readable by their owner only |
//! | `host_keys` | no `/etc/ssh/ssh_host_*` keys; `/etc/machine-id` empty or absent (skipped on a booted system, [`Stage::Booted`]) |
//! | `ports` | the SSH port, node exporter and the sensor manager's metrics port differ |
//! | `account` | the administrator of the account record ([`ADMIN_RECORD`]) is in `/etc/passwd` with uid 1000 and a login shell; its `/etc/shadow` field is a crypt hash when a password is configured, locked (`*`/`!`) when not; `/etc/shadow` is `0640 root:shadow` or `0600 root`; it is in each recorded group; its home, `~/.ssh` (`0700`) and `~/.ssh/authorized_keys` (`0600`, every recorded key) are its own |
//!
//! The checks read files through [`Files`], implemented for stored trees ([`TreeFiles`]),
//! ext4 filesystems ([`Ext4Files`]) and the archive a booted guest sends back
//! ([`super::archive::ArchiveFiles`], `w4b test`); no rule depends on the host. A path the rules
//! cannot read — a missing or corrupt blob, a damaged inode — is not an absent file: the
//! implementation keeps the first such failure and [`check`] returns it instead of a
//! report built on a partial view (the `hive-check` step turns a blob's into an
//! unavailable input, which the engine repairs).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use w4b_cache::Digest;

use super::Report;
use crate::tree::{load_dir, lookup, Blobs, Entry, Kind, TreeError, TreePath};

/// What a checklist needs to know about a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub is_dir: bool,
    pub is_file: bool,
    /// The link target of a symlink.
    pub symlink: Option<String>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Read access to a root filesystem. `None` and empty lists mean "not there"; a path
/// that is there but cannot be read is remembered for [`Files::take_error`] (and looks
/// absent to the rule that asked, whose verdict [`check`] then discards).
pub trait Files {
    fn meta(&self, path: &str) -> Option<Meta>;
    fn read(&self, path: &str) -> Option<Vec<u8>>;
    /// Names of a directory's children, sorted; empty when it is not a directory.
    fn list(&self, dir: &str) -> Vec<String>;
    /// The first read that failed rather than found nothing, once.
    fn take_error(&self) -> Option<FilesError>;
}

/// The names of the direct children of `dir` among the absolute paths keyed in `map`
/// (for [`Files::list`] over an in-memory index), sorted.
pub(super) fn children<V>(map: &BTreeMap<String, V>, dir: &str) -> Vec<String> {
    let prefix = if dir == "/" {
        "/".to_owned()
    } else {
        format!("{dir}/")
    };
    map.range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter_map(|(k, _)| {
            let rest = &k[prefix.len()..];
            (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_owned())
        })
        .collect()
}

/// Why the checklist could not read the filesystem it was given.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum FilesError {
    /// A blob of the stored tree is missing or corrupt (or the store failed).
    #[error("cannot read `{path}` of the tree")]
    #[diagnostic(code(w4b::hive_check::unreadable))]
    Tree {
        path: String,
        #[source]
        #[diagnostic_source]
        source: TreeError,
    },
    /// The ext4 filesystem is damaged at this path.
    #[error("cannot read `{path}` of the root filesystem")]
    #[diagnostic(
        code(w4b::validate::hive_unreadable),
        help("the root filesystem is damaged; check it with `e2fsck -fn`")
    )]
    Ext4 {
        path: String,
        #[source]
        #[diagnostic_source]
        source: crate::formats::ext4::Ext4Error,
    },
    /// Reading a file's bytes from the ext4 filesystem failed.
    #[error("cannot read `{path}` of the root filesystem")]
    #[diagnostic(
        code(w4b::validate::hive_unreadable),
        help("the root filesystem is damaged; check it with `e2fsck -fn`")
    )]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Keeps the first error of a [`Files`] implementation.
#[derive(Debug, Default)]
struct FirstError(std::cell::RefCell<Option<FilesError>>);

impl FirstError {
    fn keep(&self, e: FilesError) {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn take(&self) -> Option<FilesError> {
        self.0.borrow_mut().take()
    }
}

/// A stored tree as [`Files`].
pub struct TreeFiles<'a> {
    blobs: &'a dyn Blobs,
    root: Digest,
    error: FirstError,
}

impl<'a> TreeFiles<'a> {
    pub fn new(blobs: &'a dyn Blobs, root: Digest) -> Self {
        TreeFiles {
            blobs,
            root,
            error: FirstError::default(),
        }
    }

    fn keep<T>(&self, path: &str, r: Result<T, TreeError>) -> Option<T> {
        r.map_err(|source| {
            self.error.keep(FilesError::Tree {
                path: path.to_owned(),
                source,
            })
        })
        .ok()
    }

    fn entry(&self, path: &str) -> Option<Entry> {
        // The rules ask only for absolute, normalised paths: one that does not parse
        // names nothing in the tree.
        let p = TreePath::parse(path).ok()?;
        self.keep(path, lookup(self.blobs, self.root, &p)).flatten()
    }
}

impl Files for TreeFiles<'_> {
    fn meta(&self, path: &str) -> Option<Meta> {
        let e = self.entry(path)?;
        Some(Meta {
            is_dir: e.is_dir(),
            is_file: matches!(e.kind, Kind::File { .. }),
            symlink: match &e.kind {
                Kind::Symlink { target } => Some(target.clone()),
                _ => None,
            },
            mode: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
        })
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        match self.entry(path)?.kind {
            Kind::File { digest, .. } => self.keep(path, self.blobs.get(&digest)),
            _ => None,
        }
    }

    fn list(&self, dir: &str) -> Vec<String> {
        let Some(listing) = self.entry(dir).and_then(|e| e.dir_digest()) else {
            return Vec::new();
        };
        self.keep(dir, load_dir(self.blobs, &listing))
            .map(|v| v.into_iter().map(|(n, _)| n).collect())
            .unwrap_or_default()
    }

    fn take_error(&self) -> Option<FilesError> {
        self.error.take()
    }
}

/// An ext4 filesystem (the root partition of an image) as [`Files`], read with our reader.
pub struct Ext4Files<R: std::io::Read + std::io::Seek> {
    fs: crate::formats::ext4::Ext4<R>,
    nodes: BTreeMap<String, Meta>,
    error: FirstError,
}

impl<R: std::io::Read + std::io::Seek> Ext4Files<R> {
    /// Reads the partition at `offset`, `len` bytes long, and indexes every path.
    pub fn open(disk: R, offset: u64, len: u64) -> Result<Self, crate::formats::ext4::Ext4Error> {
        use crate::formats::fs::NodeKind;
        let fs = crate::formats::ext4::Ext4::open(disk, offset, len)?;
        let nodes = fs
            .walk()?
            .into_iter()
            .map(|w| {
                let n = w.node;
                let meta = Meta {
                    is_dir: matches!(n.kind, NodeKind::Dir),
                    is_file: matches!(n.kind, NodeKind::File { .. } | NodeKind::HardLink { .. }),
                    symlink: match &n.kind {
                        NodeKind::Symlink { target } => Some(target.clone()),
                        _ => None,
                    },
                    mode: n.mode,
                    uid: n.uid,
                    gid: n.gid,
                };
                (n.path, meta)
            })
            .collect();
        Ok(Ext4Files {
            fs,
            nodes,
            error: FirstError::default(),
        })
    }
}

impl<R: std::io::Read + std::io::Seek> Files for Ext4Files<R> {
    fn meta(&self, path: &str) -> Option<Meta> {
        self.nodes.get(path).cloned()
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        use std::io::Read as _;
        if !self.nodes.get(path)?.is_file {
            return None;
        }
        let path = path.to_owned();
        let mut r = match self.fs.open_file(path.as_str()) {
            Ok(r) => r,
            Err(source) => {
                self.error.keep(FilesError::Ext4 { path, source });
                return None;
            }
        };
        let mut out = Vec::new();
        if let Err(source) = r.read_to_end(&mut out) {
            self.error.keep(FilesError::Read { path, source });
            return None;
        }
        Some(out)
    }

    fn take_error(&self) -> Option<FilesError> {
        self.error.take()
    }

    fn list(&self, dir: &str) -> Vec<String> {
        children(&self.nodes, dir)
    }
}

/// Whether a root filesystem is a W4B hive's (it has the first-boot program), so that
/// `w4b validate` runs the checklist on it.
pub fn is_hive(fs: &dyn Files) -> bool {
    fs.meta("/usr/local/lib/w4b/firstboot").is_some()
}

/// Which root filesystem the rules look at: the image as built, or a system booted from
/// it, which legitimately has what a first boot makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The image as built and shipped: every rule.
    Image,
    /// A running system booted from the image (`w4b test`): the `host_keys` rule is
    /// skipped, and says so — the first boot made the SSH host keys and filled in
    /// `/etc/machine-id`, as it must. Every other rule applies unchanged.
    Booted,
}

/// Runs every rule on `fs`; an error when some path could not be read (the rules would
/// have judged it absent).
pub fn check(fs: &dyn Files, stage: Stage) -> Result<Report, FilesError> {
    let mut r = Report::default();
    hostname(fs, &mut r);
    units(fs, &mut r);
    sshd(fs, &mut r);
    wireguard(fs, &mut r);
    networkmanager(fs, &mut r);
    nftables(fs, &mut r);
    secret_modes(fs, &mut r);
    match stage {
        Stage::Image => host_keys(fs, &mut r),
        Stage::Booted => r.skip(
            "host_keys",
            None,
            "a booted system: the first boot made its SSH host keys and machine-id",
        ),
    }
    ports(fs, &mut r);
    account(fs, &mut r);
    match fs.take_error() {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

fn text(fs: &dyn Files, path: &str) -> Option<String> {
    fs.read(path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A hostname as RFC 1123 allows: labels of 1–63 of `[a-z0-9-]`, not starting or ending
/// with `-`, 253 characters at most.
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn hostname(fs: &dyn Files, r: &mut Report) {
    let file = Some("/etc/hostname".to_owned());
    let Some(h) = text(fs, "/etc/hostname") else {
        r.fail(
            "hostname",
            file,
            "missing",
            "the system module writes /etc/hostname",
        );
        return;
    };
    let h = h.trim();
    if !valid_hostname(h) {
        r.fail(
            "hostname",
            file,
            format!("`{h}` is not a valid DNS name"),
            "hostnames use letters, digits and `-` only (no `_`), at most 63 per label",
        );
        return;
    }
    let hosts = text(fs, "/etc/hosts").unwrap_or_default();
    let mapped = hosts.lines().any(|l| {
        let l = l.split('#').next().unwrap_or("");
        let mut w = l.split_whitespace();
        w.next().is_some() && w.any(|n| n == h)
    });
    if mapped {
        r.pass("hostname", file, format!("`{h}`, mapped in /etc/hosts"));
    } else {
        r.fail(
            "hostname",
            Some("/etc/hosts".into()),
            format!("`{h}` has no line in /etc/hosts"),
            "add `127.0.1.1 <hostname>` so sudo and local tools resolve the name",
        );
    }
}

const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

fn find_unit(fs: &dyn Files, name: &str) -> Option<String> {
    // A template instance (`wg-quick@wg0.service`) is provided by `wg-quick@.service`.
    let template = name
        .split_once('@')
        .and_then(|(a, b)| b.rsplit_once('.').map(|(_, ext)| format!("{a}@.{ext}")));
    for d in UNIT_DIRS {
        for n in std::iter::once(name.to_owned()).chain(template.clone()) {
            let p = format!("{d}/{n}");
            if fs.meta(&p).is_some() {
                return Some(p);
            }
        }
    }
    None
}

/// `WantedBy=` and `RequiredBy=` targets of a unit file's `[Install]` section.
pub fn install_targets(unit: &str) -> BTreeSet<String> {
    let mut section = String::new();
    let mut out = BTreeSet::new();
    for line in unit.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            section = l.to_owned();
        } else if section == "[Install]" {
            if let Some((k, v)) = l.split_once('=') {
                if matches!(k.trim(), "WantedBy" | "RequiredBy" | "Also") {
                    out.extend(v.split_whitespace().map(str::to_owned));
                }
            }
        }
    }
    out
}

fn units(fs: &dyn Files, r: &mut Report) {
    let base = "/etc/systemd/system";
    let mut bad = 0;
    let mut linked: BTreeSet<String> = BTreeSet::new();
    for dir in fs.list(base) {
        let Some(target) = dir.strip_suffix(".wants") else {
            continue;
        };
        for unit in fs.list(&format!("{base}/{dir}")) {
            let link = format!("{base}/{dir}/{unit}");
            linked.insert(unit.clone());
            let Some(file) = find_unit(fs, &unit) else {
                bad += 1;
                r.fail(
                    "units",
                    Some(link),
                    format!("`{unit}` is enabled for {target} but no unit file exists"),
                    "install the package that ships it (a package set of the image: packages are installed at build time), or remove the link",
                );
                continue;
            };
            // A unit linked by hand must say where it belongs.
            if let Some(t) = text(fs, &file) {
                let wanted = install_targets(&t);
                if !wanted.is_empty() && !wanted.contains(target) {
                    bad += 1;
                    r.fail(
                        "units",
                        Some(link),
                        format!("`{unit}` is linked into {target}.wants but its [Install] says {wanted:?}"),
                        "link it where its WantedBy= says, as `systemctl enable` would",
                    );
                }
            }
        }
    }
    for unit in fs.list(base) {
        if !unit.starts_with("w4b-") || !(unit.ends_with(".service") || unit.ends_with(".timer")) {
            continue;
        }
        let Some(t) = text(fs, &format!("{base}/{unit}")) else {
            continue;
        };
        for target in install_targets(&t) {
            if fs.meta(&format!("{base}/{target}.wants/{unit}")).is_none() {
                bad += 1;
                r.fail(
                    "units",
                    Some(format!("{base}/{unit}")),
                    format!("`{unit}` wants {target} but is not enabled there"),
                    format!("add the link {base}/{target}.wants/{unit}"),
                );
            }
        }
    }
    if bad == 0 {
        r.pass(
            "units",
            Some(base.into()),
            format!("{} enabled unit(s), each with its unit file", linked.len()),
        );
    }
}

/// sshd keywords w4b or an administrator may reasonably set (sshd_config(5), OpenSSH 9).
const SSHD_KEYWORDS: &[&str] = &[
    "acceptenv",
    "addressfamily",
    "allowagentforwarding",
    "allowgroups",
    "allowstreamlocalforwarding",
    "allowtcpforwarding",
    "allowusers",
    "authenticationmethods",
    "authorizedkeyscommand",
    "authorizedkeyscommanduser",
    "authorizedkeysfile",
    "authorizedprincipalsfile",
    "banner",
    "chrootdirectory",
    "ciphers",
    "clientalivecountmax",
    "clientaliveinterval",
    "compression",
    "denygroups",
    "denyusers",
    "disableforwarding",
    "gatewayports",
    "hostbasedauthentication",
    "hostkey",
    "hostkeyalgorithms",
    "ignorerhosts",
    "include",
    "kbdinteractiveauthentication",
    "kexalgorithms",
    "listenaddress",
    "logingracetime",
    "loglevel",
    "macs",
    "match",
    "maxauthtries",
    "maxsessions",
    "maxstartups",
    "passwordauthentication",
    "permitemptypasswords",
    "permitopen",
    "permitrootlogin",
    "permittty",
    "permittunnel",
    "permituserenvironment",
    "port",
    "printlastlog",
    "printmotd",
    "pubkeyacceptedalgorithms",
    "pubkeyauthentication",
    "rekeylimit",
    "subsystem",
    "syslogfacility",
    "tcpkeepalive",
    "usedns",
    "usepam",
    "x11displayoffset",
    "x11forwarding",
    "x11uselocalhost",
];

fn sshd(fs: &dyn Files, r: &mut Report) {
    let dir = "/etc/ssh/sshd_config.d";
    let mut bad = 0;
    let files = fs.list(dir);
    for f in files.iter().filter(|f| f.ends_with(".conf")) {
        let path = format!("{dir}/{f}");
        let t = text(fs, &path).unwrap_or_default();
        for (i, line) in t.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let mut w = l.split_whitespace();
            let key = w.next().unwrap_or_default().to_ascii_lowercase();
            let key = key.split('=').next().unwrap_or_default().to_owned();
            if !SSHD_KEYWORDS.contains(&key.as_str()) {
                bad += 1;
                r.fail(
                    "sshd",
                    Some(format!("{path}:{}", i + 1)),
                    format!("unknown sshd keyword `{key}`"),
                    "see sshd_config(5); a typo here makes sshd refuse to start",
                );
            } else if w.next().is_none() && !l.contains('=') {
                bad += 1;
                r.fail(
                    "sshd",
                    Some(format!("{path}:{}", i + 1)),
                    format!("`{key}` has no value"),
                    "give it a value",
                );
            }
        }
    }
    if bad == 0 {
        r.pass("sshd", Some(dir.into()), format!("{} drop-in(s)", files.len()));
    }
}

/// An INI file: sections in order, each with its `key = value` pairs in order.
pub type Ini = Vec<(String, Vec<(String, String)>)>;

/// Parses an INI-like file; `Err(line)` for a line that is neither `[section]` nor `key=value`.
pub fn ini(t: &str) -> Result<Ini, usize> {
    let mut out: Ini = Vec::new();
    for (i, line) in t.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            out.push((name.to_owned(), Vec::new()));
        } else if let Some((k, v)) = l.split_once('=') {
            let Some(last) = out.last_mut() else {
                return Err(i + 1);
            };
            last.1.push((k.trim().to_owned(), v.trim().to_owned()));
        } else {
            return Err(i + 1);
        }
    }
    Ok(out)
}

fn get<'a>(s: &'a [(String, String)], key: &str) -> Option<&'a str> {
    s.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn wg_key(v: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(v)
        .is_ok_and(|b| b.len() == 32)
}

fn wireguard(fs: &dyn Files, r: &mut Report) {
    let dir = "/etc/wireguard";
    let confs: Vec<String> = fs
        .list(dir)
        .into_iter()
        .filter(|f| f.ends_with(".conf"))
        .collect();
    if confs.is_empty() {
        r.skip("wireguard", None, "no WireGuard configuration (a VPN-less image)");
        return;
    }
    let mut bad = 0;
    for f in &confs {
        let path = format!("{dir}/{f}");
        let t = text(fs, &path).unwrap_or_default();
        let mut fail = |detail: String| {
            bad += 1;
            r.fail(
                "wireguard",
                Some(path.clone()),
                detail,
                "see wg(8) and wg-quick(8); w4b writes [Interface] PrivateKey/Address and one [Peer]",
            );
        };
        match ini(&t) {
            Err(line) => fail(format!("line {line} is neither `[Section]` nor `Key = value`")),
            Ok(sections) => {
                let iface: Vec<_> = sections.iter().filter(|(n, _)| n == "Interface").collect();
                if iface.len() != 1 {
                    fail(format!("{} [Interface] sections (need exactly one)", iface.len()));
                } else {
                    let s = &iface[0].1;
                    if !get(s, "PrivateKey").is_some_and(wg_key) {
                        fail("[Interface] PrivateKey is missing or not 32 bytes of base64".into());
                    }
                    if get(s, "Address").is_none() {
                        fail("[Interface] has no Address".into());
                    }
                }
                for (_, s) in sections.iter().filter(|(n, _)| n == "Peer") {
                    if !get(s, "PublicKey").is_some_and(wg_key) {
                        fail("a [Peer] PublicKey is missing or not 32 bytes of base64".into());
                    }
                    if get(s, "AllowedIPs").is_none() {
                        fail("a [Peer] has no AllowedIPs".into());
                    }
                }
                if let Some((n, _)) = sections.iter().find(|(n, _)| n != "Interface" && n != "Peer") {
                    fail(format!("unknown section [{n}]"));
                }
            }
        }
    }
    if bad == 0 {
        r.pass(
            "wireguard",
            Some(dir.into()),
            format!("{} interface(s)", confs.len()),
        );
    }
}

fn networkmanager(fs: &dyn Files, r: &mut Report) {
    let dir = "/etc/NetworkManager/system-connections";
    let files = fs.list(dir);
    if files.is_empty() {
        r.skip("networkmanager", None, "no NetworkManager connections");
        return;
    }
    let mut bad = 0;
    for f in &files {
        let path = format!("{dir}/{f}");
        let t = text(fs, &path).unwrap_or_default();
        let mut fail = |detail: String| {
            bad += 1;
            r.fail(
                "networkmanager",
                Some(path.clone()),
                detail,
                "see nm-settings-keyfile(5)",
            );
        };
        if !f.ends_with(".nmconnection") {
            fail("NetworkManager ignores keyfiles not named `*.nmconnection`".into());
            continue;
        }
        let Ok(sections) = ini(&t) else {
            fail("not a keyfile (a line outside `[section]` / `key=value`)".into());
            continue;
        };
        let sec = |name: &str| {
            sections
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.as_slice())
        };
        let Some(conn) = sec("connection") else {
            fail("no [connection] section".into());
            continue;
        };
        if get(conn, "id").is_none() || get(conn, "type").is_none() {
            fail("[connection] needs `id` and `type`".into());
        }
        if get(conn, "type") == Some("wifi") {
            if sec("wifi").and_then(|s| get(s, "ssid")).is_none() {
                fail("a Wi-Fi connection without [wifi] ssid".into());
            }
            if let Some(psk) = sec("wifi-security").and_then(|s| get(s, "psk")) {
                if !crate::hive::config::wpa_psk_is_valid(&keyfile_unescape(psk)) {
                    fail(format!(
                        "the Wi-Fi password is not a WPA2 key ({})",
                        crate::hive::config::WPA_PSK_RULE
                    ));
                }
            }
        }
    }
    if bad == 0 {
        r.pass(
            "networkmanager",
            Some(dir.into()),
            format!("{} connection(s)", files.len()),
        );
    }
}

fn nftables(fs: &dyn Files, r: &mut Report) {
    let path = "/etc/nftables.conf";
    let Some(t) = text(fs, path) else {
        r.fail(
            "nftables",
            Some(path.into()),
            "no firewall ruleset",
            "the security module writes a default-deny ruleset",
        );
        return;
    };
    let mut depth: i64 = 0;
    for c in t.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            break;
        }
    }
    if depth != 0 {
        r.fail(
            "nftables",
            Some(path.into()),
            "unbalanced braces",
            "check the ruleset with `nft -c -f /etc/nftables.conf`",
        );
        return;
    }
    // The `input` chain (hook input) must drop by default.
    let mut in_input = false;
    let mut default_deny = false;
    for l in t.lines().map(str::trim) {
        if l.starts_with("chain ") {
            in_input = false;
        }
        if l.contains("hook input") {
            in_input = true;
        }
        if in_input && l.contains("policy drop") {
            default_deny = true;
        }
    }
    if default_deny {
        r.pass("nftables", Some(path.into()), "input policy drop");
    } else {
        r.fail(
            "nftables",
            Some(path.into()),
            "the input chain does not drop by default",
            "add `policy drop;` to the chain with `hook input`",
        );
    }
}

fn secret_modes(fs: &dyn Files, r: &mut Report) {
    let mut paths = Vec::new();
    for (dir, suffix) in [
        ("/etc/wireguard", ".conf"),
        ("/etc/NetworkManager/system-connections", ""),
        ("/etc/w4b/secrets", ""),
    ] {
        for f in fs.list(dir) {
            if f.ends_with(suffix) {
                paths.push(format!("{dir}/{f}"));
            }
        }
    }
    let mut bad = 0;
    for p in &paths {
        if let Some(m) = fs.meta(p) {
            if m.is_file && m.mode & 0o077 != 0 {
                bad += 1;
                r.fail(
                    "secret_modes",
                    Some(p.clone()),
                    format!("holds a secret but has mode {:04o}", m.mode),
                    "secrets are mode 0600 (0640 only for a service's own group)",
                );
            }
        }
    }
    if bad == 0 {
        r.pass(
            "secret_modes",
            None,
            format!("{} secret file(s), all private", paths.len()),
        );
    }
}

fn host_keys(fs: &dyn Files, r: &mut Report) {
    let keys: Vec<String> = fs
        .list("/etc/ssh")
        .into_iter()
        .filter(|f| f.starts_with("ssh_host_"))
        .collect();
    let machine_id = fs.read("/etc/machine-id").unwrap_or_default();
    if !keys.is_empty() {
        r.fail(
            "host_keys",
            Some(format!("/etc/ssh/{}", keys[0])),
            format!(
                "{} SSH host key file(s) in the image: every flashed hive would share them",
                keys.len()
            ),
            "remove them; the first boot generates them (`ssh-keygen -A`)",
        );
    } else if machine_id.iter().any(|b| !b.is_ascii_whitespace()) {
        r.fail(
            "host_keys",
            Some("/etc/machine-id".into()),
            "a machine-id is set: every flashed hive would share it",
            "leave /etc/machine-id empty; systemd generates it on first boot",
        );
    } else {
        r.pass("host_keys", None, "no SSH host keys, no machine-id");
    }
}

fn ports(fs: &dyn Files, r: &mut Report) {
    let mut used: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let mut ssh_port = None;
    for f in fs.list("/etc/ssh/sshd_config.d") {
        let t = text(fs, &format!("/etc/ssh/sshd_config.d/{f}")).unwrap_or_default();
        for l in t.lines() {
            let mut w = l.split_whitespace();
            if w.next().is_some_and(|k| k.eq_ignore_ascii_case("port")) {
                ssh_port = ssh_port.or(w.next().and_then(|p| p.parse::<u16>().ok()));
            }
        }
    }
    used.entry(ssh_port.unwrap_or(22))
        .or_default()
        .push("sshd".into());
    if let Some(t) = text(fs, "/etc/default/prometheus-node-exporter") {
        let port = t
            .split("--web.listen-address=")
            .nth(1)
            .and_then(|rest| rest.split(['"', ' ', '\n']).next())
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(9100);
        used.entry(port).or_default().push("node exporter".into());
    }
    if let Some(t) = text(fs, "/etc/w4b/env") {
        if let Some(p) = t.lines().find_map(|l| {
            l.strip_prefix("METRICS_PORT=")
                .map(|v| v.trim_matches(['\'', '"']).to_owned())
        }) {
            if let Ok(p) = p.parse::<u16>() {
                used.entry(p).or_default().push("sensor manager metrics".into());
            }
        }
    }
    let clashes: Vec<_> = used.iter().filter(|(_, v)| v.len() > 1).collect();
    if let Some((port, who)) = clashes.first() {
        r.fail(
            "ports",
            None,
            format!("port {port} is used by {}", who.join(" and ")),
            "give each service its own port (node exporter 9100, the sensor manager 9101 by default)",
        );
    } else {
        let list: Vec<String> = used.iter().map(|(p, w)| format!("{} {p}", w.join("/"))).collect();
        r.pass("ports", None, list.join(", "));
    }
}

/// Where a hive image records its administrator (written by the `system` module): what
/// the `account` rule checks the image's account files against, so that `w4b validate`
/// needs nothing but the image.
pub const ADMIN_RECORD: &str = "/etc/w4b/system/admin";

/// The administrator a hive image was built for. Holds no secret: whether a password is
/// configured, not the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminRecord {
    pub user: String,
    /// Whether `/etc/shadow` must hold a password hash (else a locked field).
    pub password: bool,
    pub groups: Vec<String>,
    /// The `authorized_keys` lines the account must accept.
    pub keys: Vec<String>,
}

impl AdminRecord {
    /// The record file: `key=value` lines, one `key=` line per SSH key.
    pub fn render(&self) -> String {
        let mut s = format!(
            "# Generated by w4b: the administrator this image was built for; `w4b validate` checks the account against it.\nuser={}\npassword={}\ngroups={}\n",
            self.user,
            if self.password { "hashed" } else { "none" },
            self.groups.join(" ")
        );
        for k in &self.keys {
            s.push_str("key=");
            s.push_str(k);
            s.push('\n');
        }
        s
    }

    /// Reads a record; `Err` names the first bad line.
    pub fn parse(text: &str) -> Result<AdminRecord, String> {
        let (mut user, mut password, mut groups, mut keys) = (None, None, None, Vec::new());
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || format!("line {}: `{line}` is not a known `key=value`", i + 1);
            let (k, v) = line.split_once('=').ok_or_else(bad)?;
            match k {
                "user" => user = Some(v.to_owned()),
                "password" => {
                    password = Some(match v {
                        "hashed" => true,
                        "none" => false,
                        _ => return Err(bad()),
                    })
                }
                "groups" => groups = Some(v.split_whitespace().map(str::to_owned).collect()),
                "key" => keys.push(v.to_owned()),
                _ => return Err(bad()),
            }
        }
        match (user, password, groups) {
            (Some(user), Some(password), Some(groups)) if !user.is_empty() => Ok(AdminRecord {
                user,
                password,
                groups,
                keys,
            }),
            _ => Err("`user`, `password` and `groups` are all required".into()),
        }
    }
}

/// Whether a shadow password field is a crypt(3) hash (`$id$[params$]salt$hash`), not a
/// plaintext or empty password.
pub fn is_crypt_hash(field: &str) -> bool {
    const IDS: [&str; 8] = ["1", "2a", "2b", "2y", "5", "6", "y", "gy"];
    let parts: Vec<&str> = field.split('$').collect();
    parts.len() >= 4
        && parts[0].is_empty()
        && IDS.contains(&parts[1])
        && parts[2..].iter().all(|p| !p.is_empty())
        && parts.last().is_some_and(|h| {
            h.len() >= 22
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
        })
}

/// The records of a colon-separated account file named `name`.
fn account_lines<'a>(t: &'a str, name: &str) -> Vec<Vec<&'a str>> {
    t.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f[0] == name)
        .collect()
}

fn account(fs: &dyn Files, r: &mut Report) {
    const RULE: &str = "account";
    let Some(rec) = text(fs, ADMIN_RECORD) else {
        r.fail(
            RULE,
            Some(ADMIN_RECORD.into()),
            "no account record: which administrator this image should have is unknown",
            "the system module writes it; rebuild the image",
        );
        return;
    };
    let rec = match AdminRecord::parse(&rec) {
        Ok(rec) => rec,
        Err(e) => {
            r.fail(
                RULE,
                Some(ADMIN_RECORD.into()),
                e,
                "the system module writes it; rebuild the image",
            );
            return;
        }
    };
    let user = rec.user.as_str();
    let mut failures: Vec<(String, String, &str)> = Vec::new();
    let mut fail =
        |file: &str, detail: String, help: &'static str| failures.push((file.to_owned(), detail, help));

    let passwd = text(fs, "/etc/passwd").unwrap_or_default();
    let lines = account_lines(&passwd, user);
    let (mut gid, mut home) = (None, None);
    match lines.as_slice() {
        [f] if f.len() == 7 => {
            if f[2] != "1000" {
                fail(
                    "/etc/passwd",
                    format!("`{user}` has uid {}, not 1000", f[2]),
                    "the administrator is the first user (uid 1000)",
                );
            }
            let shell = f[6];
            if !shell.starts_with('/') || shell.ends_with("/nologin") || shell.ends_with("/false") {
                fail(
                    "/etc/passwd",
                    format!("`{user}` has no login shell (`{shell}`)"),
                    "the administrator logs in with /bin/bash",
                );
            }
            gid = f[3].parse::<u32>().ok();
            home = Some(f[5].to_owned());
        }
        [_] => fail(
            "/etc/passwd",
            format!("the line of `{user}` does not have 7 fields"),
            "see passwd(5)",
        ),
        [] => fail(
            "/etc/passwd",
            format!("no account `{user}`"),
            "the accounts step makes the administrator; rebuild the image",
        ),
        more => fail(
            "/etc/passwd",
            format!("{} lines for `{user}`", more.len()),
            "one line per account",
        ),
    }
    let others: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() == 7 && f[2] == "1000" && f[0] != user)
        .map(|f| f[0])
        .collect();
    if let Some(o) = others.first() {
        fail(
            "/etc/passwd",
            format!("`{o}` also has uid 1000"),
            "the base's first user is renamed to the administrator, not kept beside it",
        );
    }

    let groups = text(fs, "/etc/group").unwrap_or_default();
    let shadow_gid = account_lines(&groups, "shadow")
        .first()
        .and_then(|f| f.get(2).and_then(|g| g.parse::<u32>().ok()));
    match fs.meta("/etc/shadow") {
        Some(m) if m.is_file => {
            let ok = m.uid == 0
                && (m.mode == 0o600 || (m.mode == 0o640 && shadow_gid.is_some_and(|g| g == m.gid)));
            if !ok {
                fail(
                    "/etc/shadow",
                    format!("mode {:04o}, owner {}:{}", m.mode, m.uid, m.gid),
                    "/etc/shadow is 0640 root:shadow (or 0600 root:root)",
                );
            }
        }
        _ => fail(
            "/etc/shadow",
            "missing".into(),
            "the accounts step writes /etc/shadow; rebuild the image",
        ),
    }
    let shadow = text(fs, "/etc/shadow").unwrap_or_default();
    match account_lines(&shadow, user).as_slice() {
        [f] if f.len() >= 2 => {
            let pw = f[1];
            if rec.password && !is_crypt_hash(pw) {
                let what = if pw.is_empty() {
                    "empty"
                } else {
                    "not a crypt hash"
                };
                fail(
                    "/etc/shadow",
                    format!("the password of `{user}` is {what}"),
                    "passwords are stored hashed (`$6$…`); never in clear",
                );
            } else if !rec.password && !pw.starts_with(['*', '!']) {
                fail(
                    "/etc/shadow",
                    format!("`{user}` has no configured password but its field is not locked"),
                    "without `security.local_access.password` the field is `*`: key logins only",
                );
            }
        }
        [] => fail(
            "/etc/shadow",
            format!("no line for `{user}`"),
            "the accounts step writes it; rebuild the image",
        ),
        _ => fail(
            "/etc/shadow",
            format!("more than one line (or a short line) for `{user}`"),
            "one line per account, see shadow(5)",
        ),
    }

    for g in &rec.groups {
        let member = account_lines(&groups, g).first().is_some_and(|f| {
            f.len() == 4 && (f[3].split(',').any(|m| m == user) || f[2].parse::<u32>().ok() == gid)
        });
        if !member {
            fail(
                "/etc/group",
                format!("`{user}` is not in the group `{g}`"),
                "the accounts step adds the administrator to its groups",
            );
        }
    }

    if let Some(home) = home {
        let own = |m: &Meta| m.uid == 1000 && Some(m.gid) == gid;
        match fs.meta(&home) {
            Some(m) if m.is_dir && own(&m) && m.mode & 0o022 == 0 => {}
            Some(m) => fail(
                &home,
                format!(
                    "a {} with mode {:04o}, owner {}:{}",
                    if m.is_dir { "directory" } else { "non-directory" },
                    m.mode,
                    m.uid,
                    m.gid
                ),
                "the home is the administrator's own directory, writable by it only",
            ),
            None => fail(
                &home,
                "missing".into(),
                "the accounts step makes the home; rebuild the image",
            ),
        }
        let ssh = format!("{home}/.ssh");
        match fs.meta(&ssh) {
            Some(m) if m.is_dir && own(&m) && m.mode == 0o700 => {}
            Some(m) => fail(
                &ssh,
                format!("mode {:04o}, owner {}:{}", m.mode, m.uid, m.gid),
                "~/.ssh is 0700 and the administrator's (sshd's StrictModes)",
            ),
            None => fail(
                &ssh,
                "missing".into(),
                "the accounts step makes it; rebuild the image",
            ),
        }
        let keys_path = format!("{ssh}/authorized_keys");
        match fs.meta(&keys_path) {
            Some(m) if m.is_file && own(&m) && m.mode == 0o600 => {
                let keys = text(fs, &keys_path).unwrap_or_default();
                let missing = rec
                    .keys
                    .iter()
                    .filter(|k| !keys.lines().any(|l| l.trim() == k.trim()))
                    .count();
                if missing > 0 {
                    fail(
                        &keys_path,
                        format!("{missing} of the {} recorded key(s) missing", rec.keys.len()),
                        "the file holds the administrators' keys and the hive's own",
                    );
                }
            }
            Some(m) => fail(
                &keys_path,
                format!("mode {:04o}, owner {}:{}", m.mode, m.uid, m.gid),
                "authorized_keys is 0600 and the administrator's (sshd's StrictModes)",
            ),
            None => fail(
                &keys_path,
                "missing".into(),
                "the accounts step writes it; rebuild the image",
            ),
        }
    }

    if failures.is_empty() {
        r.pass(
            RULE,
            Some("/etc/passwd".into()),
            format!(
                "`{user}` uid 1000, password {}, {} group(s), {} key(s)",
                if rec.password { "hashed" } else { "locked" },
                rec.groups.len(),
                rec.keys.len()
            ),
        );
    }
    for (file, detail, help) in failures {
        r.fail(RULE, Some(file), detail, help);
    }
}

/// A keyfile value as NetworkManager reads it (GLib's escapes: `\s`, `\n`, `\t`, `\r`,
/// `\\`), so the password rule sees the password, not its spelling.
fn keyfile_unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::MemBlobs;

    /// A minimal in-memory [`Files`].
    #[derive(Default)]
    struct Mem(BTreeMap<String, (Meta, Vec<u8>)>);

    impl Mem {
        fn file(mut self, p: &str, text: &str, mode: u32) -> Mem {
            self.0.insert(
                p.into(),
                (
                    Meta {
                        is_dir: false,
                        is_file: true,
                        symlink: None,
                        mode,
                        uid: 0,
                        gid: 0,
                    },
                    text.as_bytes().to_vec(),
                ),
            );
            self
        }
        fn owned(mut self, p: &str, text: &str, mode: u32, uid: u32, gid: u32) -> Mem {
            self = self.file(p, text, mode);
            if let Some((m, _)) = self.0.get_mut(p) {
                (m.uid, m.gid) = (uid, gid);
            }
            self
        }
        fn dir(mut self, p: &str, mode: u32, uid: u32, gid: u32) -> Mem {
            self.0.insert(
                p.into(),
                (
                    Meta {
                        is_dir: true,
                        is_file: false,
                        symlink: None,
                        mode,
                        uid,
                        gid,
                    },
                    Vec::new(),
                ),
            );
            self
        }
        fn link(mut self, p: &str, target: &str) -> Mem {
            self.0.insert(
                p.into(),
                (
                    Meta {
                        is_dir: false,
                        is_file: false,
                        symlink: Some(target.into()),
                        mode: 0o777,
                        uid: 0,
                        gid: 0,
                    },
                    Vec::new(),
                ),
            );
            self
        }
    }

    impl Files for Mem {
        fn meta(&self, path: &str) -> Option<Meta> {
            if let Some((m, _)) = self.0.get(path) {
                return Some(m.clone());
            }
            let prefix = format!("{path}/");
            self.0.keys().any(|k| k.starts_with(&prefix)).then_some(Meta {
                is_dir: true,
                is_file: false,
                symlink: None,
                mode: 0o755,
                uid: 0,
                gid: 0,
            })
        }
        fn read(&self, path: &str) -> Option<Vec<u8>> {
            self.0
                .get(path)
                .filter(|(m, _)| m.is_file)
                .map(|(_, b)| b.clone())
        }
        fn take_error(&self) -> Option<FilesError> {
            None
        }
        fn list(&self, dir: &str) -> Vec<String> {
            let prefix = format!("{dir}/");
            let mut v: Vec<String> = self
                .0
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
                .collect();
            v.dedup();
            v
        }
    }

    const KEY: &str = "YW55IGNhcm5hbCBwbGVhc3VyZS4uLi4uLi4uLi4uLi4=";

    fn good() -> Mem {
        Mem::default()
            .file("/etc/hostname", "w4b-abcd1234\n", 0o644)
            .file("/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 w4b-abcd1234\n", 0o644)
            .file(
                "/etc/systemd/system/w4b-firstboot.service",
                "[Unit]\nDescription=x\n[Service]\nExecStart=/x\n[Install]\nWantedBy=multi-user.target\n",
                0o644,
            )
            .link(
                "/etc/systemd/system/multi-user.target.wants/w4b-firstboot.service",
                "/etc/systemd/system/w4b-firstboot.service",
            )
            .file("/lib/systemd/system/wg-quick@.service", "[Install]\nWantedBy=multi-user.target\n", 0o644)
            .link(
                "/etc/systemd/system/multi-user.target.wants/wg-quick@wg0.service",
                "/lib/systemd/system/wg-quick@.service",
            )
            .file("/etc/ssh/sshd_config.d/10-w4b.conf", "Port 22\nPasswordAuthentication no\n", 0o644)
            .file(
                "/etc/wireguard/wg0.conf",
                &format!("[Interface]\nPrivateKey = {KEY}\nAddress = 10.10.0.2/32\n\n[Peer]\nPublicKey = {KEY}\nAllowedIPs = 10.10.0.0/24\n"),
                0o600,
            )
            .file(
                "/etc/NetworkManager/system-connections/w4b-wifi-0.nmconnection",
                "[connection]\nid=Apiary\ntype=wifi\n[wifi]\nssid=Apiary\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=secret-passphrase\n",
                0o600,
            )
            .file(
                "/etc/nftables.conf",
                "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy drop;\n  }\n}\n",
                0o644,
            )
            .file("/etc/default/prometheus-node-exporter", "ARGS=\"--web.listen-address=:9100\"\n", 0o644)
            .file("/etc/w4b/env", "METRICS_PORT='9101'\n", 0o640)
            .file("/etc/machine-id", "", 0o444)
            .file(ADMIN_RECORD, &record().render(), 0o644)
            .file("/etc/passwd", PASSWD, 0o644)
            .file("/etc/group", GROUP, 0o644)
            .owned("/etc/shadow", &shadow(HASH), 0o640, 0, 42)
            .dir("/home/hiveadmin", 0o700, 1000, 1000)
            .dir("/home/hiveadmin/.ssh", 0o700, 1000, 1000)
            .owned("/home/hiveadmin/.ssh/authorized_keys", &format!("# keys\n{SSH_KEY}\n"), 0o600, 1000, 1000)
    }

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nhiveadmin:x:1000:1000:,,,:/home/hiveadmin:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nshadow:x:42:\nsudo:x:27:hiveadmin\nhiveadmin:x:1000:\n";
    const HASH: &str = "$6$rounds=100000$abcdefghijklmnop$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ./01234567890";
    const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJo jo@example.com";

    fn record() -> AdminRecord {
        AdminRecord {
            user: "hiveadmin".into(),
            password: true,
            groups: vec!["sudo".into()],
            keys: vec![SSH_KEY.into()],
        }
    }

    fn shadow(field: &str) -> String {
        format!("root:*:19000:0:99999:7:::\nhiveadmin:{field}:19675:0:99999:7:::\n")
    }

    fn failed(r: &Report) -> Vec<String> {
        r.failures()
            .map(|c| format!("{} {}", c.name, c.file.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn a_good_tree_passes_every_rule() {
        let r = check(&good(), Stage::Image).unwrap();
        assert!(r.passed(), "{:?}", failed(&r));
        assert_eq!(r.checks.len(), 10);
    }

    /// A booted system has what its first boot made: host keys and a machine-id. The
    /// `host_keys` rule is skipped, saying why; every other rule still judges.
    #[test]
    fn a_booted_system_may_have_host_keys_and_a_machine_id() {
        let booted = good().file("/etc/ssh/ssh_host_ed25519_key", "k", 0o600).file(
            "/etc/machine-id",
            "0123456789abcdef0123456789abcdef\n",
            0o444,
        );
        assert_eq!(
            failed(&check(&booted, Stage::Image).unwrap()),
            ["host_keys /etc/ssh/ssh_host_ed25519_key"]
        );
        let r = check(&booted, Stage::Booted).unwrap();
        assert!(r.passed(), "{:?}", failed(&r));
        let skipped: Vec<_> = r
            .checks
            .iter()
            .filter(|c| c.status == crate::validate::Status::Skip)
            .collect();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].name, "host_keys");
        assert!(skipped[0].detail.contains("booted"), "{}", skipped[0].detail);
        assert_eq!(r.checks.len(), 10, "every other rule ran");
        // Nothing else is relaxed.
        let bad = booted.file("/etc/w4b/secrets/db_password", "x", 0o644);
        assert_eq!(
            failed(&check(&bad, Stage::Booted).unwrap()),
            ["secret_modes /etc/w4b/secrets/db_password"]
        );
    }

    #[test]
    fn a_wifi_key_passes_when_the_hive_rule_accepts_it() {
        // The keyfile holds what the build wrote for a password `hive validate` accepted: a
        // 64-digit hex key (this check once refused it), or a passphrase with keyfile
        // escapes, which count as the characters they stand for.
        let nm = "/etc/NetworkManager/system-connections/w4b-wifi-0.nmconnection";
        let keyfile = |psk: &str| {
            format!("[connection]\nid=a\ntype=wifi\n[wifi]\nssid=a\n[wifi-security]\npsk={psk}\n")
        };
        let hex64 = "0123456789abcdef".repeat(4);
        for (psk, ok) in [
            (hex64.as_str(), true),
            ("\\sseven77", true),
            // Seven characters, ten as written: the build never writes it.
            ("a\\\\b\\\\c\\\\d", false),
            ("a\\\\b\\\\c\\\\d\\\\e", true),
            ("short", false),
        ] {
            let r = check(&good().file(nm, &keyfile(psk), 0o600), Stage::Image).expect("the files read");
            assert_eq!(r.passed(), ok, "{psk:?}: {:?}", failed(&r));
        }
        assert_eq!(keyfile_unescape("\\sa\\\\b\\t"), " a\\b\t");
    }

    #[test]
    fn each_rule_names_the_file_it_failed_on() {
        let cases: Vec<(Mem, &str)> = vec![
            (good().file("/etc/hostname", "hive_ab\n", 0o644), "hostname /etc/hostname"),
            (good().file("/etc/hosts", "127.0.0.1 localhost\n", 0o644), "hostname /etc/hosts"),
            (
                good().link("/etc/systemd/system/multi-user.target.wants/ghost.service", "/x"),
                "units /etc/systemd/system/multi-user.target.wants/ghost.service",
            ),
            (
                good().file("/etc/systemd/system/w4b-health.timer", "[Install]\nWantedBy=timers.target\n", 0o644),
                "units /etc/systemd/system/w4b-health.timer",
            ),
            (good().file("/etc/ssh/sshd_config.d/10-w4b.conf", "Prot 22\n", 0o644), "sshd /etc/ssh/sshd_config.d/10-w4b.conf:1"),
            (good().file("/etc/wireguard/wg0.conf", "[Interface]\nAddress = x\n", 0o600), "wireguard /etc/wireguard/wg0.conf"),
            (
                good().file(
                    "/etc/NetworkManager/system-connections/w4b-wifi-0.nmconnection",
                    "[connection]\nid=a\ntype=wifi\n[wifi]\nssid=a\n[wifi-security]\npsk=short\n",
                    0o600,
                ),
                "networkmanager /etc/NetworkManager/system-connections/w4b-wifi-0.nmconnection",
            ),
            (
                good().file("/etc/nftables.conf", "table inet filter {\n chain input {\n type filter hook input priority 0; policy accept;\n }\n}\n", 0o644),
                "nftables /etc/nftables.conf",
            ),
            (good().file("/etc/w4b/secrets/db_password", "x", 0o644), "secret_modes /etc/w4b/secrets/db_password"),
            (good().file("/etc/ssh/ssh_host_ed25519_key", "k", 0o600), "host_keys /etc/ssh/ssh_host_ed25519_key"),
            (good().file("/etc/machine-id", "0123456789abcdef\n", 0o444), "host_keys /etc/machine-id"),
            (good().file("/etc/w4b/env", "METRICS_PORT=9100\n", 0o640), "ports "),
        ];
        for (fs, expected) in cases {
            let r = check(&fs, Stage::Image).unwrap();
            assert_eq!(failed(&r), [expected.to_owned()], "expected only `{expected}`");
        }
    }

    /// Each way the administrator's account can be wrong, and the one file it is reported on.
    #[test]
    fn each_account_rule_fails_on_its_own() {
        let home = "/home/hiveadmin";
        let keys = "/home/hiveadmin/.ssh/authorized_keys";
        let no_password = AdminRecord {
            password: false,
            ..record()
        };
        let cases: Vec<(Mem, &str)> = vec![
            (
                good().file("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n", 0o644),
                "/etc/passwd no account `hiveadmin`",
            ),
            (
                good().file(
                    "/etc/passwd",
                    &PASSWD.replace(":1000:1000:", ":1001:1000:"),
                    0o644,
                ),
                "/etc/passwd `hiveadmin` has uid 1001, not 1000",
            ),
            (
                good().file(
                    "/etc/passwd",
                    &PASSWD.replace("/bin/bash\n", "/usr/sbin/nologin\n").replacen(
                        "/usr/sbin/nologin",
                        "/bin/bash",
                        1,
                    ),
                    0o644,
                ),
                "/etc/passwd `hiveadmin` has no login shell (`/usr/sbin/nologin`)",
            ),
            (
                good().file(
                    "/etc/passwd",
                    &format!("{PASSWD}pi:x:1000:1000:,,,:/home/pi:/bin/bash\n"),
                    0o644,
                ),
                "/etc/passwd `pi` also has uid 1000",
            ),
            (
                good().owned("/etc/shadow", &shadow("SECRET-admin-pw-16"), 0o640, 0, 42),
                "/etc/shadow the password of `hiveadmin` is not a crypt hash",
            ),
            (
                good().owned("/etc/shadow", &shadow(""), 0o640, 0, 42),
                "/etc/shadow the password of `hiveadmin` is empty",
            ),
            (
                good().owned("/etc/shadow", &shadow("$6$salt$short"), 0o640, 0, 42),
                "/etc/shadow the password of `hiveadmin` is not a crypt hash",
            ),
            (
                good().file(ADMIN_RECORD, &no_password.render(), 0o644),
                "/etc/shadow `hiveadmin` has no configured password but its field is not locked",
            ),
            (
                good().owned("/etc/shadow", &shadow(HASH), 0o644, 0, 42),
                "/etc/shadow mode 0644, owner 0:42",
            ),
            (
                good().owned("/etc/shadow", &shadow(HASH), 0o640, 0, 0),
                "/etc/shadow mode 0640, owner 0:0",
            ),
            (
                good().owned("/etc/shadow", "root:*:1::::::\n", 0o640, 0, 42),
                "/etc/shadow no line for `hiveadmin`",
            ),
            (
                good().file(
                    "/etc/group",
                    &GROUP.replace("sudo:x:27:hiveadmin", "sudo:x:27:"),
                    0o644,
                ),
                "/etc/group `hiveadmin` is not in the group `sudo`",
            ),
            (
                good().dir(home, 0o755, 0, 0),
                "/home/hiveadmin a directory with mode 0755, owner 0:0",
            ),
            (
                good().dir(home, 0o777, 1000, 1000),
                "/home/hiveadmin a directory with mode 0777, owner 1000:1000",
            ),
            (
                good().dir("/home/hiveadmin/.ssh", 0o755, 1000, 1000),
                "/home/hiveadmin/.ssh mode 0755, owner 1000:1000",
            ),
            (
                good().owned(keys, SSH_KEY, 0o644, 1000, 1000),
                "/home/hiveadmin/.ssh/authorized_keys mode 0644, owner 1000:1000",
            ),
            (
                good().owned(keys, SSH_KEY, 0o600, 0, 0),
                "/home/hiveadmin/.ssh/authorized_keys mode 0600, owner 0:0",
            ),
            (
                good().owned(keys, "ssh-ed25519 AAAAother other\n", 0o600, 1000, 1000),
                "/home/hiveadmin/.ssh/authorized_keys 1 of the 1 recorded key(s) missing",
            ),
            (
                good().file(ADMIN_RECORD, "user=hiveadmin\n", 0o644),
                "/etc/w4b/system/admin `user`, `password` and `groups` are all required",
            ),
        ];
        for (fs, expected) in cases {
            let r = check(&fs, Stage::Image).unwrap();
            let got: Vec<String> = r
                .failures()
                .map(|c| format!("{} {}", c.file.clone().unwrap_or_default(), c.detail))
                .collect();
            assert_eq!(got, [expected.to_owned()], "expected only `{expected}`");
            assert!(r.failures().all(|c| c.name == "account"));
        }
        // A locked field passes when no password is configured; a hash is fine too.
        let fs = good().file(ADMIN_RECORD, &no_password.render(), 0o644).owned(
            "/etc/shadow",
            &shadow("*"),
            0o600,
            0,
            0,
        );
        assert!(
            check(&fs, Stage::Image).unwrap().passed(),
            "{:?}",
            failed(&check(&fs, Stage::Image).unwrap())
        );
        let gone = Mem(good()
            .0
            .into_iter()
            .filter(|(k, _)| !k.starts_with(home))
            .collect());
        assert_eq!(
            failed(&check(&gone, Stage::Image).unwrap()),
            [
                "account /home/hiveadmin",
                "account /home/hiveadmin/.ssh",
                "account /home/hiveadmin/.ssh/authorized_keys"
            ]
        );
        let gone = Mem(good().0.into_iter().filter(|(k, _)| k != ADMIN_RECORD).collect());
        assert_eq!(
            failed(&check(&gone, Stage::Image).unwrap()),
            ["account /etc/w4b/system/admin"]
        );
    }

    #[test]
    fn crypt_hashes_are_told_from_plaintext() {
        assert!(is_crypt_hash(HASH));
        assert!(is_crypt_hash(
            "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"
        ));
        for bad in [
            "",
            "*",
            "!",
            "password",
            "$6$",
            "$6$salt$",
            "$9$salt$0123456789abcdefghijklmn",
            "$6$salt$has spaces in it 0123456789",
        ] {
            assert!(!is_crypt_hash(bad), "{bad}");
        }
        let r = record();
        assert_eq!(AdminRecord::parse(&r.render()), Ok(r));
        assert!(AdminRecord::parse("user=x\npassword=maybe\ngroups=\n").is_err());
    }

    #[test]
    fn a_linked_unit_needs_its_file_in_the_image() {
        let fs = good().link(
            "/etc/systemd/system/multi-user.target.wants/nftables.service",
            "/lib/systemd/system/nftables.service",
        );
        assert_eq!(
            failed(&check(&fs, Stage::Image).unwrap()),
            ["units /etc/systemd/system/multi-user.target.wants/nftables.service"]
        );
        // A package list for a later boot does not count: packages come in at build time.
        let listed = good()
            .link(
                "/etc/systemd/system/multi-user.target.wants/nftables.service",
                "/lib/systemd/system/nftables.service",
            )
            .file("/usr/local/lib/w4b/software/packages.txt", "nftables\n", 0o644);
        assert!(!check(&listed, Stage::Image).unwrap().passed());
        let fs = fs.file(
            "/lib/systemd/system/nftables.service",
            "[Service]\nExecStart=/usr/sbin/nft -f /etc/nftables.conf\n\n[Install]\nWantedBy=sysinit.target\n",
            0o644,
        );
        assert_eq!(
            failed(&check(&fs, Stage::Image).unwrap()),
            ["units /etc/systemd/system/multi-user.target.wants/nftables.service"],
            "linked where its [Install] does not say"
        );
    }

    #[test]
    fn a_missing_or_corrupt_blob_is_an_unavailable_input_not_an_absent_file() {
        use crate::tree::TreeBuilder;
        use w4b_graph::StepError;
        let blobs = MemBlobs::default();
        let mut b = TreeBuilder::new();
        let host = blobs.put(b"w4b-x\n").unwrap();
        b.insert(
            TreePath::parse("/etc/hostname").unwrap(),
            Entry::file(host, 6, 0o644),
        )
        .unwrap();
        let root = b.finish(&blobs).unwrap();
        let etc = TreeFiles::new(&blobs, root)
            .entry("/etc")
            .and_then(|e| e.dir_digest())
            .unwrap();
        let good = blobs.get(&etc).unwrap();
        for (broken, path) in [(host, "/etc/hostname"), (etc, "/etc")] {
            blobs.corrupt(&broken, b"not it".to_vec());
            let err = check(&TreeFiles::new(&blobs, root), Stage::Image).expect_err("not a report");
            let FilesError::Tree { path: p, source } = err else {
                panic!("{err:?}");
            };
            assert!(p.starts_with(path), "{p} for {path}");
            match crate::steps::tree_error(source) {
                StepError::InputUnavailable(d) => assert_eq!(d, broken),
                other => panic!("{other:?}"),
            }
            blobs.corrupt(
                &broken,
                if broken == host {
                    b"w4b-x\n".to_vec()
                } else {
                    good.clone()
                },
            );
        }
        // Repaired, the rules run (and judge the tree, which is no hive).
        assert!(check(&TreeFiles::new(&blobs, root), Stage::Image).is_ok());
    }

    #[test]
    fn stored_trees_are_readable_as_files() {
        use crate::tree::TreeBuilder;
        let blobs = MemBlobs::default();
        let mut b = TreeBuilder::new();
        let d = blobs.put(b"w4b-x\n").unwrap();
        b.insert(
            TreePath::parse("/etc/hostname").unwrap(),
            Entry::file(d, 6, 0o644),
        )
        .unwrap();
        let root = b.finish(&blobs).unwrap();
        let fs = TreeFiles::new(&blobs, root);
        assert_eq!(fs.read("/etc/hostname").unwrap(), b"w4b-x\n");
        assert_eq!(fs.list("/etc"), ["hostname"]);
        assert!(fs.meta("/etc").unwrap().is_dir);
        assert!(fs.meta("/nope").is_none());
        assert!(valid_hostname("w4b-abcd1234"));
        assert!(!valid_hostname("hive_abcd"));
        assert!(!valid_hostname("-x"));
    }
}
