//! The workspace: the directory holding `w4b.yaml`, its settings, and the defs folder that
//! labels resolve into.
//!
//! w4b finds the workspace by walking up from the current directory (like Cargo and Bazel
//! find theirs); an explicit `--workspace` path skips the search. `w4b.yaml` may be empty:
//! every setting has a default. It is parsed with the same strict, spanned machinery as
//! target files, so a typo in it gets the same "did you mean" diagnostic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use w4b_cache::Digest;

use super::de::{from_value, Spanned, Verbatim};
use super::error::{DefsError, DefsErrorKind};
use super::interp;
use super::label::{Label, Pattern};
use super::span::{Origin, SourceFile};
use super::yaml::{self, Entry, Value};

/// The name of the workspace settings file.
pub const WORKSPACE_FILE: &str = "w4b.yaml";

/// Directories that are never searched for targets by `//pkg/...`: `files` holds data for
/// `source:` and `template:` (which may well be YAML), hidden and `_`-prefixed ones are
/// private.
fn is_searched_dir(name: &str) -> bool {
    !(name == "files" || name.starts_with('.') || name.starts_with('_'))
}

/// The settings in `w4b.yaml`, with defaults filled in and paths made absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceConfig {
    /// The folder holding packages, relative to the workspace root (default `defs`).
    pub defs: String,
    pub cache: CacheConfig,
    /// URL prefix → mirror prefixes to try, in order, before the original.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// `SOURCE_DATE_EPOCH` for images that set none.
    pub epoch: Option<u64>,
    /// `hives: {image: …}`: the image a hive file builds on when it names none.
    pub hive_image: Option<Spanned<Label>>,
    /// `hives.vpn`: the fleet's WireGuard subnet and its hub's address.
    pub vpn: VpnSubnet,
    /// `downloads:`: limits of every download; `None` leaves the engine's default.
    pub downloads: DownloadsConfig,
}

/// `downloads: {max_size: 8GiB, connect_timeout: 30s, read_timeout: 60s}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DownloadsConfig {
    /// The most bytes one download may have.
    pub max_size: Option<u64>,
    /// The limit on establishing a connection.
    pub connect_timeout: Option<std::time::Duration>,
    /// How long a transfer may go without a byte (and the window of the minimum speed).
    pub read_timeout: Option<std::time::Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheConfig {
    /// Local store; `None` means the default (`$W4B_CACHE_DIR` or the XDG cache dir, decided
    /// by the application).
    pub dir: Option<PathBuf>,
    /// The remote cache: a shared directory (made absolute) or an `s3://bucket/prefix` URL.
    pub remote: Option<String>,
    /// `cache.s3`: how to reach an `s3://` remote cache.
    pub s3: S3Config,
    /// Read from the remote cache but never publish to it.
    pub remote_read_only: bool,
    /// `cache.signing_key`: the secret key (`PREFIX.key` of `w4b keygen`) that signs the
    /// records this builder publishes to the remote cache.
    pub signing_key: Option<PathBuf>,
    /// `cache.trusted_keys`: the public keys whose signed remote records this builder uses.
    pub trusted_keys: Vec<KeyRef>,
    /// `cache.max_size`: the local cache's size limit; `None` leaves it to the flag, the
    /// environment or the default.
    pub max_size: Option<CacheLimit>,
}

/// A size limit of the local cache: `20GiB`, `500MiB`, or `none` (the inner `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLimit(pub Option<u64>);

/// Why a text is no cache size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheLimitError {
    NotASize,
    Zero,
}

impl CacheLimit {
    /// 20 GiB: a few dozen image builds, and far below the disks CI runners have.
    pub const DEFAULT: CacheLimit = CacheLimit(Some(20 << 30));

    /// `none`, or a size as in definitions (`20GiB`, `500M`, a number of bytes).
    pub fn parse(text: &str) -> Result<CacheLimit, CacheLimitError> {
        if text.trim() == "none" {
            return Ok(CacheLimit(None));
        }
        match super::target::Size::parse(text) {
            Some(super::target::Size(0)) => Err(CacheLimitError::Zero),
            Some(super::target::Size(n)) => Ok(CacheLimit(Some(n))),
            None => Err(CacheLimitError::NotASize),
        }
    }

    /// The help line for a bad value.
    pub const HELP: &'static str =
        "write a size such as `20GiB` or `500MiB`, or `none` for no limit (GC then runs only when asked: `w4b cache gc`)";
}

impl std::fmt::Display for CacheLimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheLimitError::NotASize => "is not a size",
            CacheLimitError::Zero => "must be more than zero bytes",
        })
    }
}

/// `cache.s3`: the S3-compatible endpoint of an `s3://` remote cache. Credentials are
/// not here: they come from the standard `AWS_*` environment variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Config {
    /// `http(s)://host:port` of a non-AWS store (MinIO, Ceph, Garage, R2).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint.
    pub allow_http: bool,
    /// Address the bucket as `bucket.host` instead of `host/bucket`.
    pub virtual_hosted: bool,
}

/// A public key given in configuration: the text of a `.pub` file, or a path to one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    Inline(String),
    File(PathBuf),
}

impl KeyRef {
    /// The tag a public key's text starts with (`w4b keygen`'s `.pub` files).
    pub const PUBLIC_TAG: &'static str = "w4b-ed25519-public-v1";

    /// Inline key text when `text` starts with the public key tag, else a path below `base`.
    pub fn parse(text: &str, base: &Path) -> KeyRef {
        if text.trim_start().starts_with(KeyRef::PUBLIC_TAG) {
            KeyRef::Inline(text.trim().to_owned())
        } else {
            KeyRef::File(base.join(text))
        }
    }
}

#[derive(Deserialize)]
struct RawConfig {
    defs: Option<Spanned<String>>,
    cache: Option<RawCache>,
    #[serde(default)]
    mirrors: BTreeMap<String, Vec<Spanned<String>>>,
    epoch: Option<u64>,
    hives: Option<RawHives>,
    downloads: Option<RawDownloads>,
}

#[derive(Deserialize)]
struct RawDownloads {
    max_size: Option<Spanned<super::target::Size>>,
    connect_timeout: Option<Spanned<Timeout>>,
    read_timeout: Option<Spanned<Timeout>>,
}

/// A timeout: a number of seconds, or a number with `ms`, `s` or `m` (`500ms`, `30s`, `2m`).
struct Timeout(std::time::Duration);

impl Timeout {
    fn parse(text: &str) -> Option<Timeout> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().ok()?;
        let ms = match unit.trim() {
            "ms" => n,
            "" | "s" => n.checked_mul(1000)?,
            "m" | "min" => n.checked_mul(60_000)?,
            _ => return None,
        };
        Some(Timeout(std::time::Duration::from_millis(ms)))
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timeout, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timeout;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as `30s`, `500ms`, `2m` or a number of seconds")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timeout, E> {
                v.checked_mul(1000)
                    .map(|ms| Timeout(std::time::Duration::from_millis(ms)))
                    .ok_or_else(|| E::custom("the duration is too long"))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timeout, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("a duration cannot be negative"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timeout, E> {
                Timeout::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "`{v}` is not a duration; write seconds or a number with ms, s or m"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct RawHives {
    image: Option<Spanned<String>>,
    vpn: Option<RawVpn>,
    /// Merged under every hive file; its keys are the hive file's, checked where a hive
    /// is read.
    defaults: Option<Verbatim>,
}

#[derive(Deserialize)]
struct RawVpn {
    subnet: Option<Spanned<String>>,
    hub: Option<Spanned<String>>,
}

/// The fleet's VPN (`hives.vpn` in `w4b.yaml`): an IPv4 subnet whose hub has one address
/// and whose hives each have another, as `/32`s. The default is the hive configuration
/// manager's network: `10.10.0.0/24`, hub `10.10.0.1`, hives `10.10.0.2`–`10.10.0.253`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpnSubnet {
    /// The network address (host bits zero).
    pub network: std::net::Ipv4Addr,
    /// The prefix length, 8 to 30.
    pub prefix: u8,
    /// The hub's address, inside the subnet.
    pub hub: std::net::Ipv4Addr,
}

impl Default for VpnSubnet {
    fn default() -> VpnSubnet {
        VpnSubnet {
            network: std::net::Ipv4Addr::new(10, 10, 0, 0),
            prefix: 24,
            hub: std::net::Ipv4Addr::new(10, 10, 0, 1),
        }
    }
}

impl VpnSubnet {
    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// `10.10.0.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }

    /// Whether `addr` lies in the subnet.
    pub fn contains(&self, addr: std::net::Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network)
    }

    /// The addresses a hive may have, lowest first: every host address of the subnet but
    /// the hub's and the last one (the manager kept `.254` of its /24 free).
    pub fn clients(&self) -> impl Iterator<Item = std::net::Ipv4Addr> + '_ {
        let first = u32::from(self.network) + 1;
        let broadcast = u32::from(self.network) | !self.mask();
        (first..broadcast.saturating_sub(1))
            .map(std::net::Ipv4Addr::from)
            .filter(move |a| *a != self.hub)
    }

    /// Whether `addr` is one of [`Self::clients`].
    pub fn is_client(&self, addr: std::net::Ipv4Addr) -> bool {
        let broadcast = u32::from(self.network) | !self.mask();
        self.contains(addr)
            && addr != self.hub
            && u32::from(addr) > u32::from(self.network)
            && u32::from(addr) < broadcast.saturating_sub(1)
    }

    /// The range of client addresses, for messages: `10.10.0.2`–`10.10.0.253`.
    pub fn client_range(&self) -> String {
        let mut c = self.clients();
        let first = c.next();
        let last = c.last().or(first);
        match (first, last) {
            (Some(f), Some(l)) => format!("`{f}/32` to `{l}/32`"),
            _ => "none".to_owned(),
        }
    }

    /// Parses `hives.vpn`: `subnet` a CIDR with host bits zero (prefix 8–30), `hub` an
    /// address inside it (default: the first host address).
    fn parse(raw: RawVpn) -> Result<VpnSubnet, DefsError> {
        let mut vpn = VpnSubnet::default();
        if let Some(s) = raw.subnet {
            let parsed = s.value.split_once('/').and_then(|(a, p)| {
                let a: std::net::Ipv4Addr = a.trim().parse().ok()?;
                let p: u8 = p.trim().parse().ok()?;
                (8..=30).contains(&p).then_some((a, p))
            });
            let Some((network, prefix)) = parsed else {
                return Err(s.span.invalid_value(
                    format!("`hives.vpn.subnet` `{}` is not an IPv4 subnet", s.value),
                    "not a subnet",
                    Some("write a CIDR with a prefix from 8 to 30, such as `10.10.0.0/24`".into()),
                ));
            };
            vpn = VpnSubnet {
                network,
                prefix,
                hub: std::net::Ipv4Addr::from(u32::from(network) + 1),
            };
            if u32::from(network) & vpn.mask() != u32::from(network) {
                let net = std::net::Ipv4Addr::from(u32::from(network) & vpn.mask());
                return Err(s.span.invalid_value(
                    format!("`hives.vpn.subnet` `{}` has host bits set", s.value),
                    "not a network address",
                    Some(format!("write the network address: `{net}/{prefix}`")),
                ));
            }
        }
        if let Some(h) = raw.hub {
            match h.value.trim().parse::<std::net::Ipv4Addr>() {
                Ok(hub) if vpn.contains(hub) && hub != vpn.network => vpn.hub = hub,
                _ => {
                    return Err(h.span.invalid_value(
                        format!(
                            "`hives.vpn.hub` `{}` is not an address of `{}`",
                            h.value,
                            vpn.cidr()
                        ),
                        "not in the subnet",
                        Some(format!(
                            "write the hub's address inside the subnet, such as `{}`",
                            std::net::Ipv4Addr::from(u32::from(vpn.network) + 1)
                        )),
                    ))
                }
            }
        }
        Ok(vpn)
    }
}

#[derive(Deserialize)]
struct RawCache {
    dir: Option<String>,
    remote: Option<String>,
    #[serde(default)]
    remote_read_only: bool,
    signing_key: Option<String>,
    #[serde(default)]
    trusted_keys: Vec<String>,
    s3: Option<RawS3>,
    max_size: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawS3 {
    endpoint: Option<String>,
    region: Option<String>,
    #[serde(default)]
    allow_http: bool,
    #[serde(default)]
    virtual_hosted: bool,
}

/// An opened workspace.
#[derive(Clone, Debug)]
pub struct Workspace {
    root: PathBuf,
    config: WorkspaceConfig,
    /// `w4b.yaml`'s digest, for the definition files of targets it contributed to.
    config_digest: Digest,
    /// The `epoch:` entry of `w4b.yaml`, merged into images as a default with its span.
    epoch_entry: Option<Entry>,
    /// `hives.defaults`: a map merged under every hive file, with its spans in `w4b.yaml`.
    hive_defaults: Option<Value>,
}

impl Workspace {
    /// The nearest directory at or above `start` that holds a `w4b.yaml`.
    pub fn find(start: &Path) -> Result<PathBuf, DefsError> {
        start
            .ancestors()
            .find(|dir| dir.join(WORKSPACE_FILE).is_file())
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                DefsErrorKind::NoWorkspace {
                    start: start.display().to_string(),
                }
                .into()
            })
    }

    /// Finds the workspace above `start` and opens it.
    pub fn discover(start: &Path, env: &BTreeMap<String, String>) -> Result<Workspace, DefsError> {
        Workspace::open(&Workspace::find(start)?, env)
    }

    /// Opens the workspace rooted at `root`; `${VAR}` in `w4b.yaml` is substituted from `env`.
    pub fn open(root: &Path, env: &BTreeMap<String, String>) -> Result<Workspace, DefsError> {
        let path = root.join(WORKSPACE_FILE);
        let bytes = read(&path, WORKSPACE_FILE)?;
        let config_digest = Digest::of(&bytes);
        let text = into_text(bytes, WORKSPACE_FILE)?;
        let file = SourceFile::new(
            Origin::File {
                path: WORKSPACE_FILE.to_owned(),
            },
            text,
        );
        let mut doc = yaml::parse(&file)?;
        if doc.is_null() {
            doc = yaml::Value::empty_map(doc.span);
        }
        interp::interpolate(&mut doc, env)?;
        let raw: RawConfig = from_value(&doc)?;
        let defs = match raw.defs {
            None => "defs".to_owned(),
            Some(defs) => {
                let normalised = super::target::WsPath::join("", &defs.value)
                    .filter(|_| !defs.value.starts_with('/'))
                    .ok_or_else(|| {
                        defs.span.bad_path(
                            &defs.value,
                            "must be a folder inside the workspace",
                            Some("write a relative path such as `defs`".into()),
                        )
                    })?;
                normalised.as_str().to_owned()
            }
        };
        let mut mirrors = BTreeMap::new();
        for (prefix, targets) in raw.mirrors {
            let key_span = doc
                .get("mirrors")
                .and_then(|m| m.value.get(&prefix))
                .map(|e| e.key.span.clone())
                .unwrap_or_else(|| doc.span.clone());
            if !prefix.contains("://") {
                return Err(key_span.invalid_value(
                    format!("mirror prefix `{prefix}` is not a URL"),
                    "not a URL",
                    Some("map a URL prefix such as `https://downloads.example.org/` to a list of mirror prefixes".into()),
                ));
            }
            let mut list = Vec::new();
            for target in targets {
                if !target.value.contains("://") {
                    return Err(target.span.invalid_value(
                        format!("mirror `{}` is not a URL", target.value),
                        "not a URL",
                        Some("write `file:///srv/mirror/` or `http://host/path/`".into()),
                    ));
                }
                list.push(target.value);
            }
            mirrors.insert(prefix, list);
        }
        let absolute = |p: Option<String>| p.map(|p| root.join(p));
        let cache = match raw.cache {
            None => CacheConfig::default(),
            Some(c) => {
                let max_size = match c.max_size {
                    None => None,
                    Some(m) => Some(CacheLimit::parse(&m.value).map_err(|e| {
                        m.span.invalid_value(
                            format!("`cache.max_size` `{}` {e}", m.value),
                            "not a size limit",
                            Some(CacheLimit::HELP.into()),
                        )
                    })?),
                };
                CacheConfig {
                    dir: absolute(c.dir),
                    remote: c.remote.map(|r| match r.starts_with("s3://") {
                        true => r,
                        false => root.join(r).display().to_string(),
                    }),
                    s3: c.s3.map_or_else(S3Config::default, |s| S3Config {
                        endpoint: s.endpoint,
                        region: s.region,
                        allow_http: s.allow_http,
                        virtual_hosted: s.virtual_hosted,
                    }),
                    remote_read_only: c.remote_read_only,
                    signing_key: absolute(c.signing_key),
                    trusted_keys: c.trusted_keys.iter().map(|k| KeyRef::parse(k, root)).collect(),
                    max_size,
                }
            }
        };
        let downloads = match raw.downloads {
            None => DownloadsConfig::default(),
            Some(d) => {
                let positive = |t: Option<Spanned<Timeout>>| {
                    match t {
                    Some(t) if t.value.0.is_zero() => Err(t.span.invalid_value(
                        "a download timeout must be longer than zero",
                        "zero",
                        Some("write a duration such as `30s`; a stalled download then fails after it and is retried".into()),
                    )),
                    t => Ok(t.map(|t| t.value.0)),
                }
                };
                if let Some(size) = d.max_size.as_ref().filter(|s| s.value.0 == 0) {
                    return Err(size.span.invalid_value(
                        "`max_size` must be more than zero bytes",
                        "zero",
                        Some("write the largest download to allow, such as `16GiB`".into()),
                    ));
                }
                DownloadsConfig {
                    max_size: d.max_size.map(|s| s.value.0),
                    connect_timeout: positive(d.connect_timeout)?,
                    read_timeout: positive(d.read_timeout)?,
                }
            }
        };
        let epoch_entry = doc.get("epoch").filter(|e| !e.value.is_null()).cloned();
        let (hive_image, hive_defaults, vpn) = match raw.hives {
            None => (None, None, VpnSubnet::default()),
            Some(h) => (
                h.image,
                h.defaults.map(|d| d.0).filter(|d| !d.is_null()),
                h.vpn.map(VpnSubnet::parse).transpose()?.unwrap_or_default(),
            ),
        };
        if let Some(d) = hive_defaults.as_ref().filter(|d| d.as_map().is_none()) {
            return Err(DefsErrorKind::InvalidType {
                src: d.span.src(),
                span: d.span.ss(),
                expected: "a map".into(),
                found: d.describe(),
                help: Some(
                    "`hives.defaults` holds keys of a hive file, such as `security: {wireguard: {peer_public_key: …}}`"
                        .into(),
                ),
            }
            .into());
        }
        let hive_image = match hive_image {
            None => None,
            Some(text) => match Label::parse(&text.value, None) {
                Ok(label) => Some(Spanned::new(label, text.span)),
                Err(e) => return Err(e.into_defs(Some(&text.span))),
            },
        };
        Ok(Workspace {
            root: root.to_path_buf(),
            config: WorkspaceConfig {
                defs,
                cache,
                mirrors,
                epoch: raw.epoch,
                hive_image,
                vpn,
                downloads,
            },
            config_digest,
            epoch_entry,
            hive_defaults,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &WorkspaceConfig {
        &self.config
    }

    /// The absolute defs folder.
    pub fn defs_dir(&self) -> PathBuf {
        self.root.join(&self.config.defs)
    }

    /// The workspace-relative path of a target's file: `defs/pkg/name.yaml`.
    pub fn target_file(&self, label: &Label) -> String {
        format!("{}/{}", self.config.defs, label.file_name())
    }

    pub(crate) fn config_digest(&self) -> Digest {
        self.config_digest
    }

    pub(crate) fn epoch_entry(&self) -> Option<&Entry> {
        self.epoch_entry.as_ref()
    }

    /// `hives.defaults` of `w4b.yaml`: a map of hive-file keys merged under every hive
    /// file (the hive file wins; maps merge key by key).
    pub fn hive_defaults(&self) -> Option<&Value> {
        self.hive_defaults.as_ref()
    }

    /// The labels a pattern names, sorted. `//pkg/...` lists every `*.yaml` below
    /// `<defs>/pkg`, skipping `files/`, hidden and `_`-prefixed directories.
    pub fn expand(&self, pattern: &Pattern) -> Result<Vec<Label>, DefsError> {
        let package = match pattern {
            Pattern::Target(label) => return Ok(vec![label.clone()]),
            Pattern::Recursive { package } => package,
        };
        let dir = if package.is_empty() {
            self.defs_dir()
        } else {
            self.defs_dir().join(package)
        };
        let mut labels = Vec::new();
        if dir.is_dir() {
            walk(&dir, package, &mut labels)?;
        }
        if labels.is_empty() {
            return Err(DefsErrorKind::NoMatch {
                pattern: pattern.to_string(),
                dir: format!(
                    "{}{}{}",
                    self.config.defs,
                    if package.is_empty() { "" } else { "/" },
                    package
                ),
            }
            .into());
        }
        labels.sort();
        Ok(labels)
    }
}

fn walk(dir: &Path, package: &str, labels: &mut Vec<Label>) -> Result<(), DefsError> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|source| DefsErrorKind::Io {
        path: shown.clone(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DefsErrorKind::Io {
            path: shown.clone(),
            source,
        })?;
        let file_type = entry.file_type().map_err(|source| DefsErrorKind::Io {
            path: shown.clone(),
            source,
        })?;
        names.push((
            entry.file_name().to_string_lossy().into_owned(),
            file_type.is_dir(),
        ));
    }
    names.sort();
    for (name, is_dir) in names {
        if is_dir {
            if is_searched_dir(&name) {
                let sub = if package.is_empty() {
                    name.clone()
                } else {
                    format!("{package}/{name}")
                };
                walk(&dir.join(&name), &sub, labels)?;
            }
        } else if let Some(stem) = name.strip_suffix(".yaml") {
            if stem.starts_with('.') {
                continue;
            }
            labels.push(Label::new(package, stem).map_err(|e| e.into_defs(None))?);
        }
    }
    Ok(())
}

/// The most bytes one definition file (`w4b.yaml`, a target, a hive file) may hold. The
/// largest in real use hold a few kilobytes; a bigger file is a mistake or an attack, and
/// parsing it would cost memory in proportion (see [`yaml::MAX_NODES`]).
pub const MAX_DEFINITION_BYTES: u64 = 16 << 20;

/// Reads the definition file at `path` (shown as `shown`), refusing one larger than
/// [`MAX_DEFINITION_BYTES`] before reading it.
pub(crate) fn read(path: &Path, shown: &str) -> Result<Vec<u8>, DefsError> {
    let io = |source| -> DefsError {
        DefsErrorKind::Io {
            path: shown.to_owned(),
            source,
        }
        .into()
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    read_open(&mut file, len, shown)
}

/// Reads an open definition file whose metadata says it is `len` bytes long. The size is
/// checked before reading, and the read stops one byte past the limit, so neither a file
/// that grows meanwhile nor a device that never ends is read further.
pub(crate) fn read_open(file: &mut std::fs::File, len: u64, shown: &str) -> Result<Vec<u8>, DefsError> {
    use std::io::Read;
    let too_large = |size: u64| -> DefsError {
        DefsErrorKind::TooLarge {
            path: shown.to_owned(),
            size,
            limit: MAX_DEFINITION_BYTES,
        }
        .into()
    };
    if len > MAX_DEFINITION_BYTES {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0) + 1);
    Read::take(file, MAX_DEFINITION_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| DefsErrorKind::Io {
            path: shown.to_owned(),
            source,
        })?;
    let read = bytes.len() as u64;
    if read > MAX_DEFINITION_BYTES {
        return Err(too_large(read));
    }
    Ok(bytes)
}

pub(crate) fn into_text(bytes: Vec<u8>, shown: &str) -> Result<Arc<str>, DefsError> {
    String::from_utf8(bytes).map(Arc::from).map_err(|e| {
        DefsErrorKind::Io {
            path: shown.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn found_by_walking_up_and_empty_config_is_all_defaults() {
        let dir = ws(&[("w4b.yaml", ""), ("defs/a/b/.keep", "")]);
        let deep = dir.path().join("defs/a/b");
        assert_eq!(Workspace::find(&deep).unwrap(), dir.path());
        let w = Workspace::discover(&deep, &BTreeMap::new()).unwrap();
        assert_eq!(w.config().defs, "defs");
        assert_eq!(w.config().epoch, None);
        assert!(w.config().mirrors.is_empty());
        let none = tempfile::tempdir().unwrap();
        let err = Workspace::find(none.path()).unwrap_err();
        assert!(matches!(err.kind(), DefsErrorKind::NoWorkspace { .. }));
    }

    #[test]
    fn full_config() {
        let dir = ws(&[(
            "w4b.yaml",
            "defs: my-defs\ncache: {dir: .cache, remote: /mnt/w4b-cache, remote_read_only: true}\nmirrors: {\"https://downloads.example.org/\": [\"file:///srv/mirror/\", \"http://127.0.0.1:8000/\"]}\nepoch: ${EPOCH:-1700000000}\n",
        )]);
        let w = Workspace::open(dir.path(), &BTreeMap::new()).unwrap();
        let c = w.config();
        assert_eq!(c.defs, "my-defs");
        assert_eq!(c.cache.dir.as_deref(), Some(dir.path().join(".cache").as_path()));
        assert_eq!(c.cache.remote.as_deref(), Some("/mnt/w4b-cache"));
        assert!(c.cache.remote_read_only);
        assert_eq!(c.mirrors["https://downloads.example.org/"].len(), 2);
        assert_eq!(c.epoch, Some(1_700_000_000));
        assert_eq!(c.cache.signing_key, None);
        assert!(c.cache.trusted_keys.is_empty());
    }

    #[test]
    fn an_s3_remote_cache_and_its_endpoint() {
        let dir = ws(&[(
            "w4b.yaml",
            "cache:\n  remote: s3://ci-cache/main\n  s3: {endpoint: \"http://127.0.0.1:9000\", region: eu-west-1, allow_http: true}\n",
        )]);
        let c = Workspace::open(dir.path(), &BTreeMap::new())
            .unwrap()
            .config()
            .cache
            .clone();
        assert_eq!(c.remote.as_deref(), Some("s3://ci-cache/main"));
        assert_eq!(
            c.s3,
            S3Config {
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("eu-west-1".into()),
                allow_http: true,
                virtual_hosted: false,
            }
        );
        let dir = ws(&[("w4b.yaml", "cache: {s3: {endpiont: x}}\n")]);
        let err = Workspace::open(dir.path(), &BTreeMap::new()).unwrap_err();
        let DefsErrorKind::UnknownKey { help, .. } = err.kind() else {
            panic!("{err:?}")
        };
        assert_eq!(help, "did you mean `endpoint`?");
    }

    #[test]
    fn remote_cache_keys() {
        let dir = ws(&[(
            "w4b.yaml",
            "cache:\n  signing_key: keys/ci.key\n  trusted_keys:\n    - keys/ci.pub\n    - /etc/w4b/fleet.pub\n    - \"w4b-ed25519-public-v1 AAAA\"\n",
        )]);
        let w = Workspace::open(dir.path(), &BTreeMap::new()).unwrap();
        let c = &w.config().cache;
        assert_eq!(c.signing_key, Some(dir.path().join("keys/ci.key")));
        assert_eq!(
            c.trusted_keys,
            vec![
                KeyRef::File(dir.path().join("keys/ci.pub")),
                KeyRef::File("/etc/w4b/fleet.pub".into()),
                KeyRef::Inline("w4b-ed25519-public-v1 AAAA".into()),
            ]
        );
    }

    #[test]
    fn download_limits_are_read_and_zero_is_refused() {
        let dir = ws(&[(
            "w4b.yaml",
            "downloads: {max_size: 8GiB, connect_timeout: 10, read_timeout: 500ms}\n",
        )]);
        let d = Workspace::open(dir.path(), &BTreeMap::new())
            .unwrap()
            .config()
            .downloads
            .clone();
        assert_eq!(d.max_size, Some(8 << 30));
        assert_eq!(d.connect_timeout, Some(std::time::Duration::from_secs(10)));
        assert_eq!(d.read_timeout, Some(std::time::Duration::from_millis(500)));
        let dir = ws(&[("w4b.yaml", "")]);
        let w = Workspace::open(dir.path(), &BTreeMap::new()).unwrap();
        assert_eq!(w.config().downloads, DownloadsConfig::default());
        for (text, needle) in [
            ("downloads: {read_timeout: 0s}\n", "longer than zero"),
            ("downloads: {max_size: 0}\n", "more than zero"),
            ("downloads: {connect_timeout: soon}\n", "not a duration"),
            ("downloads: {max_bytes: 1}\n", "max_size"),
        ] {
            let dir = ws(&[("w4b.yaml", text)]);
            let err = Workspace::open(dir.path(), &BTreeMap::new()).unwrap_err();
            let shown = format!("{:?}", miette::Report::new(err));
            assert!(shown.contains(needle), "{text}: {shown}");
            assert!(shown.contains("w4b.yaml:1"), "{text}: {shown}");
        }
    }

    #[test]
    fn cache_max_size_takes_sizes_and_none_and_diagnoses_the_rest() {
        for (text, want) in [
            ("cache: {max_size: 20GiB}\n", Some(CacheLimit(Some(20 << 30)))),
            ("cache: {max_size: 500MiB}\n", Some(CacheLimit(Some(500 << 20)))),
            ("cache: {max_size: 4096}\n", Some(CacheLimit(Some(4096)))),
            ("cache: {max_size: none}\n", Some(CacheLimit(None))),
            ("cache: {dir: .c}\n", None),
        ] {
            let dir = ws(&[("w4b.yaml", text)]);
            let w = Workspace::open(dir.path(), &BTreeMap::new()).unwrap();
            assert_eq!(w.config().cache.max_size, want, "{text}");
        }
        for (text, needle) in [
            ("cache: {max_size: 20 gigs}\n", "is not a size"),
            ("cache: {max_size: 0}\n", "more than zero"),
            ("cache: {max_size: off}\n", "is not a size"),
        ] {
            let dir = ws(&[("w4b.yaml", text)]);
            let err = Workspace::open(dir.path(), &BTreeMap::new()).unwrap_err();
            let shown = format!("{:?}", miette::Report::new(err));
            assert!(shown.contains(needle), "{text}: {shown}");
            assert!(shown.contains("w4b.yaml:1"), "{text}: {shown}");
            assert!(shown.contains("`none` for no limit"), "{text}: {shown}");
        }
    }

    #[test]
    fn config_typos_are_diagnosed() {
        let dir = ws(&[("w4b.yaml", "cache: {remote_readonly: true}\n")]);
        let err = Workspace::open(dir.path(), &BTreeMap::new()).unwrap_err();
        let DefsErrorKind::UnknownKey { help, .. } = err.kind() else {
            panic!("{err:?}")
        };
        assert_eq!(help, "did you mean `remote_read_only`?");
        let dir = ws(&[("w4b.yaml", "defs: ../elsewhere\n")]);
        assert!(Workspace::open(dir.path(), &BTreeMap::new()).is_err());
        let dir = ws(&[("w4b.yaml", "mirrors: {\"https://a/\": [\"/srv\"]}\n")]);
        assert!(Workspace::open(dir.path(), &BTreeMap::new()).is_err());
    }

    #[test]
    fn patterns_expand_sorted_and_skip_data_folders() {
        let dir = ws(&[
            ("w4b.yaml", ""),
            ("defs/top.yaml", ""),
            ("defs/layers/motd.yaml", ""),
            ("defs/layers/base.yaml", ""),
            ("defs/layers/files/data.yaml", ""),
            ("defs/layers/files/app.conf.j2", ""),
            ("defs/layers/net/wifi.yaml", ""),
            ("defs/layers/README.md", ""),
            ("defs/.git/x.yaml", ""),
        ]);
        let w = Workspace::open(dir.path(), &BTreeMap::new()).unwrap();
        let names = |p: &str| -> Vec<String> {
            w.expand(&Pattern::parse(p, None).unwrap())
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            names("//layers/..."),
            ["//layers:base", "//layers:motd", "//layers/net:wifi"]
        );
        assert_eq!(
            names("//..."),
            ["//:top", "//layers:base", "//layers:motd", "//layers/net:wifi"]
        );
        let err = w
            .expand(&Pattern::parse("//nothing/...", None).unwrap())
            .unwrap_err();
        assert!(matches!(err.kind(), DefsErrorKind::NoMatch { .. }));
    }
}
