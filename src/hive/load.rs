//! Reading a hive into a [`HiveImage`]: the hive configuration manager's file, checked by
//! the manager's rules (REFERENCE §1), combined with the settings of the image it builds on.
//!
//! A hive comes from one of three places: a hive target (a YAML under `defs/` with
//! `hive_id` and `metadata` and no `kind`, built on the image its `image:` key or
//! `hives.image` in `w4b.yaml` names), an image's `hive_file: path`, or an image's `hive:`
//! section. Whichever it is, [`resolve`] returns the image to build on, the typed
//! configuration, the definition files read (with BLAKE3 digests, for manifests) and where
//! every value was written (for `w4b why`).
//!
//! The checker walks the spanned YAML tree by hand rather than through serde, for two
//! reasons: it reports *every* problem at once (`w4b hive validate` lists them all), and
//! it maps the manager's spellings to the configuration's (`type` → `kind`/`bus`,
//! `lan.static` → `static_ip`) while keeping each problem at its own file:line:col.
//! Secret positions go through [`SecretSources`]; no diagnostic shows a secret's value.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use w4b_cache::Digest;

use super::config::*;
use super::secrets::{SecretFile, SecretSources};
use super::settings::{self, is_dns_label};
use super::timezones;
use crate::defs::loader::record_locations;
use crate::defs::span::Origin;
use crate::defs::yaml::{self, Node, Resolved, Value};
use crate::defs::{
    suggest, DefsError, DefsErrorKind, Image, ImageHive, Kind, Label, Loader, Location, SourceFile, Span,
    Target, Workspace,
};

/// A hive ready for the modules.
#[derive(Clone, Debug)]
pub struct ResolvedHive {
    /// The target that was resolved (a hive, or an image carrying one).
    pub label: Label,
    /// The image target to build on (the label itself for an image carrying a hive).
    pub image: Label,
    /// The typed, validated configuration; secrets are [`Secret`]s.
    pub config: HiveImage,
    /// Definition files read, workspace-relative, with the BLAKE3 of their bytes: the hive
    /// file, the image's files, `w4b.yaml` where it contributed. Sorted. Files holding
    /// secrets are not among them (see [`Self::secret_files`]).
    pub files: Vec<(String, Digest)>,
    /// Workspace-relative files secrets were read from (`{file: …}`), sorted; no digests.
    pub secret_files: Vec<String>,
    /// Where each value was written: hive values under `hive.` with the hive file's key
    /// paths (`hive.network.wifi[0].ssid`, `hive.sensors[1].interface.type`), the image's
    /// settings under `image.` (`image.system.timezone`).
    pub locations: BTreeMap<String, Location>,
}

/// Loads `label` — a hive target, or an image with `hive_file:` or a `hive:` section — and
/// everything it builds on. Every problem of the hive itself is reported at once, as one
/// [`DefsErrorKind::HiveInvalid`] holding them (or the problem itself when there is one).
pub fn resolve(loader: &Loader, label: &Label) -> Result<ResolvedHive, DefsError> {
    let loaded = loader.load(label)?;
    let ws = loader.workspace();
    match &loaded.target {
        Target::Hive(h) => {
            let image_label = match (&h.image, &ws.config().hive_image) {
                (Some(own), _) => own.clone(),
                (None, Some(default)) => default.clone(),
                (None, None) => {
                    return Err(DefsErrorKind::NoHiveImage {
                        label: label.to_string(),
                    }
                    .into())
                }
            };
            let image_t = loader.load_expecting(&image_label, Kind::Image)?;
            let Target::Image(image) = &image_t.target else {
                unreachable!("load_expecting checked the kind")
            };
            if image.hive.is_some() {
                return Err(image_label.span.invalid_value(
                    format!("`{}` carries a hive of its own", image_label.value),
                    "already a hive image",
                    Some("build hives on an image without `hive_file` or `hive:`".into()),
                ));
            }
            let doc = loader.document(label)?;
            let own_file = ws.target_file(label);
            let sources = SecretSources {
                env: loader.env(),
                root: ws.root().to_path_buf(),
                dir: parent(&own_file).to_owned(),
            };
            let mut files = doc.files.clone();
            files.extend(image_t.files.iter().cloned());
            let mut locations = prefixed("hive.", &doc.locations);
            locations.extend(prefixed("image.", &image_t.locations));
            finish(
                label,
                &image_label.value,
                &doc.doc,
                image,
                &sources,
                files,
                locations,
            )
        }
        Target::Image(image) => {
            let Some(hive) = &image.hive else {
                return Err(DefsErrorKind::NotAHive {
                    label: label.to_string(),
                    kind: "image without a hive".into(),
                }
                .into());
            };
            let mut files = loaded.files.clone();
            let mut locations = prefixed("image.", &loaded.locations);
            let (hive_doc, dir) = match hive {
                ImageHive::File(path) => {
                    let rel = path.value.as_str();
                    let abs = ws.root().join(rel);
                    if !abs.is_file() {
                        return Err(path.span.bad_path(
                            rel,
                            "no such file",
                            Some("`hive_file` is relative to the image's YAML".into()),
                        ));
                    }
                    let (value, digest) = read_yaml(&abs, rel, loader.env())?;
                    files.push((rel.to_owned(), digest));
                    (value, parent(rel).to_owned())
                }
                ImageHive::Section => {
                    let doc = loader.document(label)?;
                    let Some(entry) = doc.doc.get("hive") else {
                        unreachable!("an image with a hive section has a `hive` key")
                    };
                    let from = entry
                        .value
                        .span
                        .file
                        .path()
                        .map(|p| parent(p).to_owned())
                        .unwrap_or_else(|| parent(&ws.target_file(label)).to_owned());
                    (entry.value.clone(), from)
                }
            };
            let mut hive_locations = BTreeMap::new();
            record_locations(&hive_doc, "", &mut hive_locations);
            locations.extend(prefixed("hive.", &hive_locations));
            let sources = SecretSources {
                env: loader.env(),
                root: ws.root().to_path_buf(),
                dir,
            };
            finish(label, label, &hive_doc, image, &sources, files, locations)
        }
        other => Err(DefsErrorKind::NotAHive {
            label: label.to_string(),
            kind: other.kind().to_string(),
        }
        .into()),
    }
}

/// Checks a hive file given by path (`w4b hive validate FILE`): the manager's rules only,
/// no image. `{file:}` secrets may not leave the workspace, or the file's own directory
/// when it lies outside any workspace.
pub fn check_file(
    ws: Option<&Workspace>,
    env: &BTreeMap<String, String>,
    path: &Path,
) -> Result<Hive, DefsError> {
    let abs = path.canonicalize().map_err(|source| DefsErrorKind::Io {
        path: path.display().to_string(),
        source,
    })?;
    let (root, shown) = match ws.and_then(|w| {
        let root = w.root().canonicalize().ok()?;
        let rel = abs.strip_prefix(&root).ok()?.to_string_lossy().into_owned();
        Some((root, rel))
    }) {
        Some(found) => found,
        None => {
            let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
            let name = abs
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (dir, name)
        }
    };
    let (doc, _) = read_yaml(&abs, &shown, env)?;
    let sources = SecretSources {
        env,
        root,
        dir: parent(&shown).to_owned(),
    };
    let mut secret_files = Vec::new();
    let doc = super::secrets::redacted(&doc);
    let mut c = Checker::new(&sources, &mut secret_files);
    let hive = c.hive(&doc, true);
    c.into_result(&shown, hive)
}

fn finish(
    label: &Label,
    image_label: &Label,
    hive_doc: &Value,
    image: &Image,
    sources: &SecretSources<'_>,
    mut files: Vec<(String, Digest)>,
    locations: BTreeMap<String, Location>,
) -> Result<ResolvedHive, DefsError> {
    let mut secret_files = Vec::new();
    let hive_doc = super::secrets::redacted(hive_doc);
    let mut c = Checker::new(sources, &mut secret_files);
    let hive = c.hive(&hive_doc, true);
    let mut hive = c.into_result(&label.to_string(), hive)?;
    let mut settings = image.settings.clone();
    if let Some(sec) = &mut hive.security {
        // The hive's own SSH settings win over the image's (REFERENCE §1 over §2).
        settings.system.ssh_port = sec.ssh.port;
        settings.system.ssh_password_auth = sec.ssh.enable_password_auth;
        if let Some(server) = &image.vpn_server.0 {
            let port = sec
                .wireguard
                .endpoint
                .rsplit_once(':')
                .map_or("51820", |(_, p)| p)
                .to_owned();
            sec.wireguard.endpoint = format!("{server}:{port}");
        }
    }
    files.sort();
    files.dedup();
    let mut secret_files: Vec<String> = secret_files.into_iter().map(|f| f.0).collect();
    secret_files.sort();
    secret_files.dedup();
    Ok(ResolvedHive {
        label: label.clone(),
        image: image_label.clone(),
        config: HiveImage { hive, settings },
        files,
        secret_files,
        locations,
    })
}

fn prefixed(prefix: &str, locations: &BTreeMap<String, Location>) -> BTreeMap<String, Location> {
    locations
        .iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
        .collect()
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Reads, parses and `${VAR}`-substitutes a YAML file that is not a target.
fn read_yaml(abs: &Path, shown: &str, env: &BTreeMap<String, String>) -> Result<(Value, Digest), DefsError> {
    let bytes = std::fs::read(abs).map_err(|source| DefsErrorKind::Io {
        path: shown.to_owned(),
        source,
    })?;
    let digest = Digest::of(&bytes);
    let text = String::from_utf8(bytes).map_err(|e| DefsErrorKind::Io {
        path: shown.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })?;
    let file = SourceFile::new(
        Origin::File {
            path: shown.to_owned(),
        },
        text,
    );
    let mut value = yaml::parse(&file)?;
    if value.is_null() {
        value = Value::empty_map(value.span);
    }
    crate::defs::interp::interpolate(&mut value, env)?;
    Ok((value, digest))
}

// ---------------------------------------------------------------------------------------
// The checker.

/// Walks a hive document, collecting every problem.
struct Checker<'a, 'b> {
    sources: &'a SecretSources<'a>,
    secret_files: &'b mut Vec<SecretFile>,
    problems: Vec<DefsError>,
}

/// One map of the document being read: its value, its key path and the keys it may have.
struct Map<'v> {
    value: &'v Value,
    path: String,
}

impl<'v> Map<'v> {
    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'v Value> {
        self.value.get(key).map(|e| &e.value).filter(|v| !v.is_null())
    }
}

impl<'a, 'b> Checker<'a, 'b> {
    fn new(sources: &'a SecretSources<'a>, secret_files: &'b mut Vec<SecretFile>) -> Self {
        Checker {
            sources,
            secret_files,
            problems: Vec::new(),
        }
    }

    fn into_result<T>(self, what: &str, value: Option<T>) -> Result<T, DefsError> {
        let mut problems = self.problems;
        match (problems.len(), value) {
            (0, Some(v)) => Ok(v),
            (1, _) => Err(problems.remove(0)),
            (0, None) => unreachable!("a hive that failed to read has a problem"),
            (count, _) => Err(DefsErrorKind::HiveInvalid {
                label: what.to_owned(),
                count,
                problems,
            }
            .into()),
        }
    }

    fn report(&mut self, e: DefsError) {
        self.problems.push(e);
    }

    fn bad(&mut self, span: &Span, message: impl Into<String>, label: &str, help: impl Into<String>) {
        self.report(span.invalid_value(message, label, Some(help.into())));
    }

    /// `value` as a map with the given keys; unknown keys are reported.
    fn map<'v>(&mut self, value: &'v Value, path: &str, known: &[&str]) -> Option<Map<'v>> {
        let Some(entries) = value.as_map() else {
            self.report(
                DefsErrorKind::InvalidType {
                    src: value.span.src(),
                    span: value.span.ss(),
                    expected: "a map".into(),
                    found: value.describe(),
                    help: Some(format!(
                        "`{}` is a map: `{{key: value}}`, or one `key: value` per line",
                        if path.is_empty() { "the hive file" } else { path }
                    )),
                }
                .into(),
            );
            return None;
        };
        for e in entries {
            if !known.contains(&e.key.name.as_str()) {
                self.report(
                    DefsErrorKind::UnknownKey {
                        src: e.key.span.src(),
                        span: e.key.span.ss(),
                        key: e.key.name.clone(),
                        context: if path.is_empty() {
                            " in a hive file".into()
                        } else {
                            format!(" in `{path}`")
                        },
                        help: suggest::help_for(&e.key.name, known, "keys"),
                    }
                    .into(),
                );
            }
        }
        Some(Map {
            value,
            path: path.to_owned(),
        })
    }

    fn required<'v>(&mut self, m: &Map<'v>, key: &str, help: &str) -> Option<&'v Value> {
        let v = m.get(key);
        if v.is_none() {
            self.report(
                DefsErrorKind::MissingKey {
                    src: m.value.span.src(),
                    span: m.value.span.ss(),
                    field: key.to_owned(),
                    help: Some(help.to_owned()),
                }
                .into(),
            );
        }
        v
    }

    fn wrong_type(&mut self, v: &Value, expected: &str, help: &str) {
        self.report(
            DefsErrorKind::InvalidType {
                src: v.span.src(),
                span: v.span.ss(),
                expected: expected.to_owned(),
                found: v.describe(),
                help: Some(help.to_owned()),
            }
            .into(),
        );
    }

    fn text(&mut self, v: &Value) -> Option<String> {
        match v.as_scalar() {
            Some(s) if !s.is_null() => Some(s.text.clone()),
            _ => {
                self.wrong_type(
                    v,
                    "text",
                    "write text; quote it (`\"…\"`) if it could be read as something else",
                );
                None
            }
        }
    }

    fn req_text(&mut self, m: &Map<'_>, key: &str, help: &str) -> Option<String> {
        let v = self.required(m, key, help)?;
        self.text(v)
    }

    fn opt_text(&mut self, m: &Map<'_>, key: &str) -> Option<Option<String>> {
        match m.get(key) {
            None => Some(None),
            Some(v) => self.text(v).map(Some),
        }
    }

    fn uint(&mut self, v: &Value, min: u64, max: u64) -> Option<u64> {
        let n = match v.as_scalar().map(yaml::Scalar::resolve) {
            Some(Resolved::Int(i)) => u64::try_from(i).ok(),
            Some(Resolved::UInt(u)) => Some(u),
            _ => {
                self.wrong_type(v, "a whole number", "write the number without quotes");
                return None;
            }
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let range = if max == u64::MAX {
                    format!("at least {min}")
                } else {
                    format!("{min}..={max}")
                };
                self.bad(
                    &v.span,
                    format!("`{}` is out of range", v.span.snippet()),
                    &format!("must be {range}"),
                    format!("write a whole number {range}"),
                );
                None
            }
        }
    }

    fn opt_uint(&mut self, m: &Map<'_>, key: &str, min: u64, max: u64, default: u64) -> Option<u64> {
        match m.get(key) {
            None => Some(default),
            Some(v) => self.uint(v, min, max),
        }
    }

    fn req_uint(&mut self, m: &Map<'_>, key: &str, min: u64, max: u64, help: &str) -> Option<u64> {
        let v = self.required(m, key, help)?;
        self.uint(v, min, max)
    }

    fn float(&mut self, v: &Value) -> Option<f64> {
        match v.as_scalar().map(yaml::Scalar::resolve) {
            Some(Resolved::Int(i)) => Some(i as f64),
            Some(Resolved::UInt(u)) => Some(u as f64),
            Some(Resolved::Float(f)) if f.is_finite() => Some(f),
            _ => {
                self.wrong_type(v, "a number", "write the number without quotes");
                None
            }
        }
    }

    fn opt_float(&mut self, m: &Map<'_>, key: &str, default: f64) -> Option<f64> {
        match m.get(key) {
            None => Some(default),
            Some(v) => self.float(v),
        }
    }

    fn boolean(&mut self, m: &Map<'_>, key: &str, default: bool) -> Option<bool> {
        let Some(v) = m.get(key) else {
            return Some(default);
        };
        match v.as_scalar().map(yaml::Scalar::resolve) {
            Some(Resolved::Bool(b)) => Some(b),
            _ => {
                self.wrong_type(v, "`true` or `false`", "write `true` or `false` without quotes");
                None
            }
        }
    }

    fn list<'v>(&mut self, v: &'v Value) -> Option<&'v [Value]> {
        match &v.node {
            Node::Seq(items) => Some(items),
            _ => {
                self.wrong_type(v, "a list", "write a list: `[a, b]`, or one `- item` per line");
                None
            }
        }
    }

    fn secret(&mut self, m: &Map<'_>, key: &str, help: &str) -> Option<Secret> {
        let v = self.required(m, key, help)?;
        self.secret_value(v, &m.key(key))
    }

    fn secret_value(&mut self, v: &Value, path: &str) -> Option<Secret> {
        match self.sources.resolve(v, path, self.secret_files) {
            Ok(s) => Some(s),
            Err(e) => {
                self.report(e);
                None
            }
        }
    }

    // -----------------------------------------------------------------------------------

    /// The whole hive file. `allow_image`: the `image:` key (a hive target's) is allowed.
    fn hive(&mut self, doc: &Value, allow_image: bool) -> Option<Hive> {
        const KEYS: &[&str] = &[
            "hive_id",
            "version",
            "metadata",
            "network",
            "administrators",
            "collector",
            "sensors",
            "maintenance",
            "security",
            "image",
        ];
        let keys = if allow_image {
            KEYS
        } else {
            &KEYS[..KEYS.len() - 1]
        };
        let m = self.map(doc, "", keys)?;
        let hive_id = self.hive_id(&m);
        let version = self.version(&m);
        let metadata = self
            .required(
                &m,
                "metadata",
                "add `metadata: {name: …, location: {latitude: …, longitude: …, timezone: …}}`",
            )
            .and_then(|v| self.metadata(v));
        let network = self
            .required(
                &m,
                "network",
                "add `network: {primary: wifi, wifi: [{ssid: …, password: …, priority: 1}]}`",
            )
            .and_then(|v| self.network(v));
        let administrators = self
            .required(
                &m,
                "administrators",
                "add `administrators: [{name: …, email: …, username: …, role: hive_admin}]`",
            )
            .and_then(|v| self.administrators(v));
        let collector = self
            .required(&m, "collector", "add `collector: {interval: 60, batch_size: 100, retry_attempts: 3, retry_delay: 5, buffer_size: 1000}`")
            .and_then(|v| self.collector(v));
        let sensors = match self.required(&m, "sensors", "add `sensors: []` or a list of sensors") {
            Some(v) => collector.as_ref().and_then(|c| self.sensors(v, c.interval)),
            None => None,
        };
        let maintenance = self
            .required(
                &m,
                "maintenance",
                "add `maintenance: {backup: {…}, updates: {…}, monitoring: {…}}`",
            )
            .and_then(|v| self.maintenance(v));
        let security = match m.get("security") {
            None => Some(None),
            Some(v) => self.security(v).map(Some),
        };
        let hive = Hive {
            hive_id: hive_id?,
            version: version?,
            metadata: metadata?,
            network: network?,
            administrators: administrators?,
            collector: collector?,
            sensors: sensors?,
            maintenance: maintenance?,
            security: security?,
        };
        Some(hive)
    }

    fn hive_id(&mut self, m: &Map<'_>) -> Option<String> {
        let v = self.required(
            m,
            "hive_id",
            "add `hive_id: hive_` followed by 8 letters, digits, `_` or `-`",
        )?;
        let id = self.text(v)?;
        let ok = id.strip_prefix("hive_").is_some_and(|rest| {
            rest.len() == 8
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !ok {
            self.bad(
                &v.span,
                format!("`{id}` is not a hive id"),
                "not `hive_` + 8 characters",
                "hive ids are `hive_` followed by 8 of `A-Z a-z 0-9 _ -`, such as `hive_AbCd1234`",
            );
            return None;
        }
        // The host name is derived from the id: it must come out a valid DNS label.
        let host = host_label(&id);
        if !is_dns_label(&host) {
            self.bad(
                &v.span,
                format!("`{id}` gives no valid host name"),
                "host name would be invalid",
                "use letters or digits in the id; `_` and `-` alone do not make a host name",
            );
            return None;
        }
        Some(id)
    }

    fn version(&mut self, m: &Map<'_>) -> Option<String> {
        let v = self.required(m, "version", "add `version: \"1.0.0\"`")?;
        let text = self.text(v)?;
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            self.bad(
                &v.span,
                format!("`{text}` is not a version"),
                "not major.minor.patch",
                "write three numbers separated by dots, quoted: `version: \"1.0.0\"`",
            );
            return None;
        }
        Some(text)
    }

    fn metadata(&mut self, v: &Value) -> Option<Metadata> {
        let m = self.map(v, "metadata", &["name", "location", "notes"])?;
        let name = self.req_text(&m, "name", "add `name: \"…\"`, the hive's display name");
        let location = self
            .required(
                &m,
                "location",
                "add `location: {latitude: …, longitude: …, timezone: Europe/Berlin}`",
            )
            .and_then(|l| self.location(l));
        let notes = self.opt_text(&m, "notes");
        Some(Metadata {
            name: name?,
            location: location?,
            notes: notes?,
        })
    }

    fn location(&mut self, v: &Value) -> Option<Location_> {
        let m = self.map(
            v,
            "metadata.location",
            &["address", "latitude", "longitude", "timezone"],
        )?;
        let address = self.opt_text(&m, "address");
        let mut coordinate = |key: &str, limit: f64| -> Option<f64> {
            let v = self.required(&m, key, &format!("add `{key}:` in degrees"))?;
            let f = self.float(v)?;
            if !(-limit..=limit).contains(&f) {
                self.bad(
                    &v.span,
                    format!("{key} {f} is out of range"),
                    &format!("must be within ±{limit}"),
                    format!("write the {key} in decimal degrees, from -{limit} to {limit}"),
                );
                return None;
            }
            Some(f)
        };
        let latitude = coordinate("latitude", 90.0);
        let longitude = coordinate("longitude", 180.0);
        let timezone = match m.get("timezone") {
            None => Some(String::new()),
            Some(v) => self.text(v).and_then(|tz| {
                if timezones::is_known(&tz) {
                    Some(tz)
                } else {
                    self.bad(
                        &v.span,
                        format!("`{tz}` is not an IANA time zone"),
                        "unknown time zone",
                        timezones::help(&tz),
                    );
                    None
                }
            }),
        };
        Some(Location_ {
            address: address?,
            latitude: latitude?,
            longitude: longitude?,
            timezone: timezone?,
        })
    }

    fn network(&mut self, v: &Value) -> Option<Network> {
        let m = self.map(v, "network", &["primary", "wifi", "lan"])?;
        let wifi = match m.get("wifi") {
            None => Some(Vec::new()),
            Some(list) => self.wifi(list),
        };
        let lan = match m.get("lan") {
            None => Some(None),
            Some(l) => self.lan(l).map(Some),
        };
        let primary = match m.get("primary") {
            None => Some(if m.get("wifi").is_some() {
                Primary::Wifi
            } else {
                Primary::Lan
            }),
            Some(p) => match self.text(p).as_deref() {
                Some("wifi") => Some(Primary::Wifi),
                Some("lan") => Some(Primary::Lan),
                Some(other) => {
                    self.bad(
                        &p.span,
                        format!("unknown primary network `{other}`"),
                        "expected `wifi` or `lan`",
                        suggest::help_for(other, &["wifi", "lan"], "values"),
                    );
                    None
                }
                None => None,
            },
        };
        let (primary, wifi, lan) = (primary?, wifi?, lan?);
        if primary == Primary::Wifi && wifi.is_empty() {
            self.bad(
                m.get("primary").map_or(&v.span, |p| &p.span),
                "the primary network is Wi-Fi, but no Wi-Fi network is given",
                "no `wifi` entries",
                "add `wifi: [{ssid: …, password: …, priority: 1}]`, or make `primary: lan`",
            );
            return None;
        }
        Some(Network { primary, wifi, lan })
    }

    fn wifi(&mut self, v: &Value) -> Option<Vec<Wifi>> {
        let items = self.list(v)?;
        let mut out = Some(Vec::new());
        for (i, item) in items.iter().enumerate() {
            let path = format!("network.wifi[{i}]");
            let Some(m) = self.map(item, &path, &["ssid", "password", "priority"]) else {
                out = None;
                continue;
            };
            let ssid = self
                .req_text(&m, "ssid", "add `ssid:`, the network's name")
                .and_then(|s| {
                    if s.is_empty() || s.len() > 32 {
                        self.bad(
                            &m.value
                                .get("ssid")
                                .map_or(m.value.span.clone(), |e| e.value.span.clone()),
                            "an SSID has 1 to 32 bytes",
                            "bad SSID",
                            "write the network's name as shown by your phone",
                        );
                        None
                    } else {
                        Some(s)
                    }
                });
            let password = self.secret(
                &m,
                "password",
                "add `password:` (text, `${env:NAME}` or `{file: path}`)",
            );
            let priority = self.opt_uint(&m, "priority", 1, u64::from(u32::MAX), 1);
            match (ssid, password, priority, out.as_mut()) {
                (Some(ssid), Some(password), Some(priority), Some(list)) => list.push(Wifi {
                    ssid,
                    password,
                    priority: u32::try_from(priority).unwrap_or(u32::MAX),
                }),
                _ => out = None,
            }
        }
        out
    }

    fn lan(&mut self, v: &Value) -> Option<Lan> {
        let m = self.map(v, "network.lan", &["dhcp", "static"])?;
        let dhcp = self.boolean(&m, "dhcp", true)?;
        let static_ip = match m.get("static") {
            None if !dhcp => {
                self.report(
                    DefsErrorKind::MissingKey {
                        src: m.value.span.src(),
                        span: m.value.span.ss(),
                        field: "static".into(),
                        help: Some(
                            "with `dhcp: false`, give `static: {ip: 192.168.1.100/24, gateway: 192.168.1.1}`"
                                .into(),
                        ),
                    }
                    .into(),
                );
                return None;
            }
            None => None,
            Some(s) => Some(self.static_ip(s)?),
        };
        Some(Lan { dhcp, static_ip })
    }

    fn static_ip(&mut self, v: &Value) -> Option<StaticIp> {
        let m = self.map(v, "network.lan.static", &["ip", "gateway", "dns"])?;
        let ip = self
            .required(&m, "ip", "add `ip: 192.168.1.100/24`")
            .and_then(|v| {
                let t = self.text(v)?;
                let (addr, prefix) = t
                    .split_once('/')
                    .map_or((t.as_str(), Some("24")), |(a, p)| (a, Some(p)));
                let ok = addr.parse::<Ipv4Addr>().is_ok()
                    && prefix
                        .and_then(|p| p.parse::<u8>().ok())
                        .is_some_and(|p| (1..=32).contains(&p));
                if !ok {
                    self.bad(
                        &v.span,
                        format!("`{t}` is not an IPv4 address"),
                        "not an address",
                        "write `192.168.1.100` or `192.168.1.100/24`",
                    );
                    return None;
                }
                Some(t)
            });
        let ipv4 = |this: &mut Self, v: &Value, what: &str| -> Option<String> {
            let t = this.text(v)?;
            if t.parse::<Ipv4Addr>().is_err() {
                this.bad(
                    &v.span,
                    format!("`{t}` is not an IPv4 address"),
                    "not an address",
                    format!("write the {what} as `192.168.1.1`"),
                );
                return None;
            }
            Some(t)
        };
        let gateway = self
            .required(&m, "gateway", "add `gateway: 192.168.1.1`")
            .and_then(|v| ipv4(self, v, "gateway"));
        let dns = match m.get("dns") {
            None => Some(Vec::new()),
            Some(list) => {
                let items = self.list(list)?;
                let mut out = Some(Vec::new());
                for item in items {
                    match (ipv4(self, item, "DNS server"), out.as_mut()) {
                        (Some(a), Some(o)) => o.push(a),
                        _ => out = None,
                    }
                }
                out
            }
        };
        Some(StaticIp {
            ip: ip?,
            gateway: gateway?,
            dns: dns?,
        })
    }

    fn administrators(&mut self, v: &Value) -> Option<Vec<Administrator>> {
        let items = self.list(v)?;
        if items.is_empty() {
            self.bad(
                &v.span,
                "a hive needs at least one administrator",
                "empty",
                "add `- {name: …, email: …, username: …, role: hive_admin}`",
            );
            return None;
        }
        let mut out = Some(Vec::new());
        for (i, item) in items.iter().enumerate() {
            let path = format!("administrators[{i}]");
            let Some(m) = self.map(
                item,
                &path,
                &["name", "email", "username", "phone", "role", "ssh_keys"],
            ) else {
                out = None;
                continue;
            };
            let name = self.req_text(&m, "name", "add `name:`, the person's name");
            let email = self.required(&m, "email", "add `email:`").and_then(|v| {
                let e = self.text(v)?;
                if !is_email(&e) {
                    self.bad(
                        &v.span,
                        format!("`{e}` is not an e-mail address"),
                        "not an address",
                        "write an address such as `jo@example.com`",
                    );
                    return None;
                }
                Some(e)
            });
            let username = self.required(&m, "username", "add `username:`").and_then(|v| {
                let u = self.text(v)?;
                if !is_username(&u) {
                    self.bad(
                        &v.span,
                        format!("`{u}` is not a valid user name"),
                        "bad user name",
                        "start with a lower-case letter or `_`, then up to 31 of `a-z 0-9 _ -`",
                    );
                    return None;
                }
                Some(u)
            });
            let phone = self.opt_text(&m, "phone");
            let role = self
                .required(&m, "role", "add `role: hive_admin` or `role: hive_viewer`")
                .and_then(|v| match self.text(v).as_deref() {
                    Some("hive_admin") => Some(Role::HiveAdmin),
                    Some("hive_viewer") => Some(Role::HiveViewer),
                    Some(other) => {
                        self.bad(
                            &v.span,
                            format!("unknown role `{other}`"),
                            "expected `hive_admin` or `hive_viewer`",
                            suggest::help_for(other, &["hive_admin", "hive_viewer"], "values"),
                        );
                        None
                    }
                    None => None,
                });
            let ssh_keys = match m.get("ssh_keys") {
                None => Some(Vec::new()),
                Some(list) => self.list(list).and_then(|items| {
                    let mut keys = Some(Vec::new());
                    for k in items {
                        let key = self.text(k).and_then(|t| {
                            if is_public_key(&t) {
                                Some(t)
                            } else {
                                self.bad(
                                    &k.span,
                                    "not an OpenSSH public key",
                                    "bad key",
                                    "paste one line of `~/.ssh/id_ed25519.pub`: `ssh-ed25519 AAAA… comment`",
                                );
                                None
                            }
                        });
                        match (key, keys.as_mut()) {
                            (Some(k), Some(ks)) => ks.push(k),
                            _ => keys = None,
                        }
                    }
                    keys
                }),
            };
            match (name, email, username, phone, role, ssh_keys, out.as_mut()) {
                (
                    Some(name),
                    Some(email),
                    Some(username),
                    Some(phone),
                    Some(role),
                    Some(ssh_keys),
                    Some(list),
                ) => list.push(Administrator {
                    name,
                    email,
                    username,
                    phone,
                    role,
                    ssh_keys,
                }),
                _ => out = None,
            }
        }
        out
    }

    fn collector(&mut self, v: &Value) -> Option<Collector> {
        let m = self.map(
            v,
            "collector",
            &[
                "interval",
                "batch_size",
                "retry_attempts",
                "retry_delay",
                "buffer_size",
                "logging",
            ],
        )?;
        let interval = self.req_uint(&m, "interval", 1, u64::MAX, "add `interval:` in seconds (≥ 1)");
        let batch_size = self.req_uint(&m, "batch_size", 1, u64::MAX, "add `batch_size:` (≥ 1)");
        let retry_attempts = self.req_uint(&m, "retry_attempts", 0, u64::MAX, "add `retry_attempts:` (≥ 0)");
        let retry_delay = self.req_uint(
            &m,
            "retry_delay",
            0,
            u64::MAX,
            "add `retry_delay:` in seconds (≥ 0)",
        );
        let buffer_size = self.req_uint(&m, "buffer_size", 1, u64::MAX, "add `buffer_size:` (≥ 1)");
        let logging = match m.get("logging") {
            None => Some(CollectorLogging {
                level: "INFO".into(),
                max_size: "100M".into(),
                retention: 7,
            }),
            Some(l) => self.logging(l),
        };
        Some(Collector {
            interval: interval?,
            batch_size: batch_size?,
            retry_attempts: retry_attempts?,
            retry_delay: retry_delay?,
            buffer_size: buffer_size?,
            logging: logging?,
        })
    }

    fn logging(&mut self, v: &Value) -> Option<CollectorLogging> {
        const LEVELS: &[&str] = &["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];
        let m = self.map(v, "collector.logging", &["level", "max_size", "retention"])?;
        let level = match m.get("level") {
            None => Some("INFO".to_owned()),
            Some(l) => self.text(l).and_then(|t| {
                if LEVELS.contains(&t.as_str()) {
                    Some(t)
                } else {
                    self.bad(
                        &l.span,
                        format!("unknown log level `{t}`"),
                        "not a level",
                        suggest::help_for(&t, LEVELS, "levels"),
                    );
                    None
                }
            }),
        };
        let max_size = match m.get("max_size") {
            None => Some("100M".to_owned()),
            Some(s) => self.text(s).and_then(|t| {
                let digits = t.trim_end_matches(['K', 'M', 'G']);
                if !digits.is_empty()
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && t.len() - digits.len() <= 1
                {
                    Some(t)
                } else {
                    self.bad(
                        &s.span,
                        format!("`{t}` is not a size"),
                        "not a size",
                        "write a number with K, M or G, such as `100M`",
                    );
                    None
                }
            }),
        };
        let retention = self.opt_uint(&m, "retention", 1, u64::MAX, 7);
        Some(CollectorLogging {
            level: level?,
            max_size: max_size?,
            retention: retention?,
        })
    }

    fn sensors(&mut self, v: &Value, default_interval: u64) -> Option<Vec<Sensor>> {
        let items = self.list(v)?;
        let mut out = Some(Vec::new());
        let mut seen: BTreeMap<String, Span> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("sensors[{i}]");
            let Some(m) = self.map(
                item,
                &path,
                &[
                    "id",
                    "type",
                    "name",
                    "enabled",
                    "location",
                    "interface",
                    "collection",
                    "calibration",
                    "alerts",
                ],
            ) else {
                out = None;
                continue;
            };
            let id = self
                .required(&m, "id", "add `id:`, unique among the hive's sensors")
                .and_then(|v| {
                    let id = self.text(v)?;
                    if id.is_empty() || !id.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') {
                        self.bad(
                            &v.span,
                            format!("`{id}` is not a sensor id"),
                            "bad id",
                            "use letters, digits, `_` and `-`, such as `temp_01`",
                        );
                        return None;
                    }
                    if let Some(first) = seen.get(&id) {
                        let first = first.location();
                        self.bad(
                            &v.span,
                            format!("sensor id `{id}` is used twice"),
                            "duplicate id",
                            format!("it is first used at {first}; give each sensor its own id"),
                        );
                        return None;
                    }
                    seen.insert(id.clone(), v.span.clone());
                    Some(id)
                });
            let kind = self
                .required(
                    &m,
                    "type",
                    "add `type:`, such as `ds18b20`, `dht22`, `hx711` or `bme280`",
                )
                .and_then(|v| {
                    let t = self.text(v)?;
                    if t.is_empty()
                        || !t
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
                    {
                        self.bad(
                            &v.span,
                            format!("`{t}` is not a sensor type"),
                            "bad type",
                            "write the sensor's type in lower case, such as `ds18b20`",
                        );
                        return None;
                    }
                    Some(t)
                });
            let name = self.req_text(&m, "name", "add `name:`, the sensor's display name");
            let enabled = self.boolean(&m, "enabled", true);
            let location = self.opt_text(&m, "location");
            let interface = self
                .required(
                    &m,
                    "interface",
                    "add `interface: {type: gpio, pin: 4}` (or i2c/spi)",
                )
                .and_then(|v| self.interface(v, &path, kind.as_deref()));
            let collection = match m.get("collection") {
                None => Some(Collection {
                    interval: default_interval,
                    retries: 3,
                }),
                Some(c) => self
                    .map(c, &format!("{path}.collection"), &["interval", "retries"])
                    .and_then(|c| {
                        let interval = self.opt_uint(&c, "interval", 1, u64::MAX, default_interval);
                        let retries = self.opt_uint(&c, "retries", 0, u64::MAX, 3);
                        Some(Collection {
                            interval: interval?,
                            retries: retries?,
                        })
                    }),
            };
            let calibration = match m.get("calibration") {
                None => Some(Calibration {
                    offset: 0.0,
                    scale: 1.0,
                }),
                Some(c) => self
                    .map(c, &format!("{path}.calibration"), &["offset", "scale"])
                    .and_then(|c| {
                        let offset = self.opt_float(&c, "offset", 0.0);
                        let scale = self.opt_float(&c, "scale", 1.0);
                        Some(Calibration {
                            offset: offset?,
                            scale: scale?,
                        })
                    }),
            };
            let alerts = match m.get("alerts") {
                None => Some(Vec::new()),
                Some(a) => self.alerts(a, &path),
            };
            match (
                id,
                kind,
                name,
                enabled,
                location,
                interface,
                collection,
                calibration,
                alerts,
                out.as_mut(),
            ) {
                (
                    Some(id),
                    Some(kind),
                    Some(name),
                    Some(enabled),
                    Some(location),
                    Some(interface),
                    Some(collection),
                    Some(calibration),
                    Some(alerts),
                    Some(list),
                ) => list.push(Sensor {
                    id,
                    kind,
                    name,
                    enabled,
                    location,
                    interface,
                    collection,
                    calibration,
                    alerts,
                }),
                _ => out = None,
            }
        }
        out
    }

    fn interface(&mut self, v: &Value, sensor: &str, kind: Option<&str>) -> Option<Interface> {
        let path = format!("{sensor}.interface");
        let m = self.map(
            v,
            &path,
            &[
                "type",
                "pin",
                "data_pin",
                "clock_pin",
                "address",
                "bus_number",
                "chip_select",
            ],
        )?;
        let bus_v = self.required(&m, "type", "add `type: gpio`, `type: i2c` or `type: spi`")?;
        let bus = match self.text(bus_v)?.as_str() {
            "gpio" => Bus::Gpio,
            "i2c" => Bus::I2c,
            "spi" => Bus::Spi,
            other => {
                self.bad(
                    &bus_v.span,
                    format!("unknown interface `{other}`"),
                    "expected `gpio`, `i2c` or `spi`",
                    suggest::help_for(other, &["gpio", "i2c", "spi"], "values"),
                );
                return None;
            }
        };
        // BCM GPIO numbers of the 40-pin header.
        let pin = |this: &mut Self, key: &str| -> Option<Option<u8>> {
            match m.get(key) {
                None => Some(None),
                Some(p) => this.uint(p, 0, 27).map(|n| Some(n as u8)),
            }
        };
        let (p, data_pin, clock_pin) = (pin(self, "pin"), pin(self, "data_pin"), pin(self, "clock_pin"));
        let (p, data_pin, clock_pin) = (p?, data_pin?, clock_pin?);
        let address = match m.get("address") {
            None => None,
            Some(a) => Some(self.uint(a, 0x03, 0x77)? as u8),
        };
        let bus_number = match m.get("bus_number") {
            None => None,
            Some(b) => Some(self.uint(b, 0, 22)? as u8),
        };
        let chip_select = match m.get("chip_select") {
            None => None,
            Some(c) => Some(self.uint(c, 0, 1)? as u8),
        };
        let need = |this: &mut Self, what: &str, help: &str| {
            this.report(
                DefsErrorKind::MissingKey {
                    src: v.span.src(),
                    span: v.span.ss(),
                    field: what.to_owned(),
                    help: Some(help.to_owned()),
                }
                .into(),
            );
        };
        match bus {
            Bus::Gpio => {
                let two_wire = kind == Some("hx711") || data_pin.is_some() || clock_pin.is_some();
                if two_wire {
                    if data_pin.is_none() {
                        need(
                            self,
                            "data_pin",
                            "an hx711 needs `data_pin` and `clock_pin` (BCM numbers)",
                        );
                        return None;
                    }
                    if clock_pin.is_none() {
                        need(
                            self,
                            "clock_pin",
                            "an hx711 needs `data_pin` and `clock_pin` (BCM numbers)",
                        );
                        return None;
                    }
                    if data_pin == clock_pin {
                        self.bad(
                            &v.span,
                            "`data_pin` and `clock_pin` are the same pin",
                            "one pin twice",
                            "wire data and clock to two different GPIOs",
                        );
                        return None;
                    }
                } else if p.is_none() {
                    need(
                        self,
                        "pin",
                        "a GPIO sensor needs `pin:` (its BCM GPIO number, such as 4)",
                    );
                    return None;
                }
            }
            Bus::I2c => {
                if address.is_none() {
                    need(self, "address", "an I²C sensor needs `address:` (such as `0x76`)");
                    return None;
                }
            }
            Bus::Spi => {}
        }
        Some(Interface {
            bus,
            pin: p,
            data_pin,
            clock_pin,
            address,
            bus_number: match bus {
                Bus::I2c => Some(bus_number.unwrap_or(1)),
                _ => bus_number,
            },
            chip_select: match bus {
                Bus::Spi => Some(chip_select.unwrap_or(0)),
                _ => chip_select,
            },
        })
    }

    fn alerts(&mut self, v: &Value, sensor: &str) -> Option<Vec<Alert>> {
        let items = self.list(v)?;
        let mut out = Some(Vec::new());
        for (i, item) in items.iter().enumerate() {
            let path = format!("{sensor}.alerts[{i}]");
            let Some(m) = self.map(item, &path, &["metric", "min", "max", "threshold_duration"]) else {
                out = None;
                continue;
            };
            let metric = self.req_text(&m, "metric", "add `metric:`, such as `temperature`");
            let min = match m.get("min") {
                None => Some(None),
                Some(x) => self.float(x).map(Some),
            };
            let max = match m.get("max") {
                None => Some(None),
                Some(x) => self.float(x).map(Some),
            };
            let threshold = self.opt_uint(&m, "threshold_duration", 0, u64::MAX, 0);
            if let (Some(Some(lo)), Some(Some(hi))) = (min, max) {
                if lo >= hi {
                    let span = m
                        .value
                        .get("min")
                        .map_or(m.value.span.clone(), |e| e.value.span.clone());
                    self.bad(
                        &span,
                        format!("`min` ({lo}) is not below `max` ({hi})"),
                        "min ≥ max",
                        "an alert fires outside min..max: make `min` smaller than `max`",
                    );
                    out = None;
                    continue;
                }
            }
            match (metric, min, max, threshold, out.as_mut()) {
                (Some(metric), Some(min), Some(max), Some(threshold_duration), Some(list)) => {
                    list.push(Alert {
                        metric,
                        min,
                        max,
                        threshold_duration,
                    })
                }
                _ => out = None,
            }
        }
        out
    }

    fn maintenance(&mut self, v: &Value) -> Option<Maintenance> {
        let m = self.map(v, "maintenance", &["backup", "updates", "monitoring"])?;
        let backup = match m.get("backup") {
            None => Some(Backup {
                enabled: true,
                interval: 86400,
                retention: 7,
            }),
            Some(b) => self
                .map(b, "maintenance.backup", &["enabled", "interval", "retention"])
                .and_then(|b| {
                    let enabled = self.boolean(&b, "enabled", true);
                    let interval = self.opt_uint(&b, "interval", 1, u64::MAX, 86400);
                    let retention = self.opt_uint(&b, "retention", 1, u64::MAX, 7);
                    Some(Backup {
                        enabled: enabled?,
                        interval: interval?,
                        retention: retention?,
                    })
                }),
        };
        let updates = match m.get("updates") {
            None => Some(Updates {
                auto_update: true,
                update_hour: 3,
                allowed_days: Vec::new(),
            }),
            Some(u) => self.updates(u),
        };
        let monitoring = match m.get("monitoring") {
            None => Some(MaintenanceMonitoring {
                metrics_retention: 30,
                enable_detailed_logging: false,
            }),
            Some(x) => self
                .map(
                    x,
                    "maintenance.monitoring",
                    &["metrics_retention", "enable_detailed_logging"],
                )
                .and_then(|x| {
                    let metrics_retention = self.opt_uint(&x, "metrics_retention", 1, u64::MAX, 30);
                    let detailed = self.boolean(&x, "enable_detailed_logging", false);
                    Some(MaintenanceMonitoring {
                        metrics_retention: metrics_retention?,
                        enable_detailed_logging: detailed?,
                    })
                }),
        };
        Some(Maintenance {
            backup: backup?,
            updates: updates?,
            monitoring: monitoring?,
        })
    }

    fn updates(&mut self, v: &Value) -> Option<Updates> {
        const DAYS: &[&str] = &[
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ];
        let m = self.map(
            v,
            "maintenance.updates",
            &["auto_update", "update_hour", "allowed_days"],
        )?;
        let auto_update = self.boolean(&m, "auto_update", true);
        let update_hour = self.opt_uint(&m, "update_hour", 0, 23, 3);
        let allowed_days = match m.get("allowed_days") {
            None => Some(Vec::new()),
            Some(list) => self.list(list).and_then(|items| {
                let mut days = Some(Vec::new());
                for d in items {
                    let day = self.text(d).and_then(|t| {
                        if DAYS.contains(&t.as_str()) {
                            Some(t)
                        } else {
                            self.bad(
                                &d.span,
                                format!("`{t}` is not a day"),
                                "not a day",
                                suggest::help_for(&t, DAYS, "days"),
                            );
                            None
                        }
                    });
                    match (day, days.as_mut()) {
                        (Some(d), Some(ds)) => ds.push(d),
                        _ => days = None,
                    }
                }
                days
            }),
        };
        Some(Updates {
            auto_update: auto_update?,
            update_hour: update_hour? as u8,
            allowed_days: allowed_days?,
        })
    }

    fn security(&mut self, v: &Value) -> Option<HiveSecurity> {
        const PARTS: &[&str] = &["ssh", "wireguard", "database", "local_access"];
        let m = self.map(v, "security", PARTS)?;
        let missing: Vec<&str> = PARTS.iter().copied().filter(|p| m.get(p).is_none()).collect();
        if !missing.is_empty() {
            self.bad(
                &v.span,
                format!("`security` is missing {}", suggest::backticked(&missing)),
                "incomplete",
                "`security` has all four parts (`ssh`, `wireguard`, `database`, `local_access`) or is left out",
            );
        }
        let ssh = m.get("ssh").and_then(|s| self.ssh(s));
        let wireguard = m.get("wireguard").and_then(|w| self.wireguard(w));
        let database = m.get("database").and_then(|d| self.database(d));
        let local_access = m.get("local_access").and_then(|l| self.local_access(l));
        Some(HiveSecurity {
            ssh: ssh?,
            wireguard: wireguard?,
            database: database?,
            local_access: local_access?,
        })
    }

    fn ssh(&mut self, v: &Value) -> Option<HiveSsh> {
        let m = self.map(
            v,
            "security.ssh",
            &[
                "public_key",
                "private_key",
                "enable_password_auth",
                "allow_root",
                "port",
            ],
        )?;
        let public_key = self
            .required(
                &m,
                "public_key",
                "add the hive's `public_key: ssh-ed25519 AAAA… hive-<id>`",
            )
            .and_then(|k| {
                let t = self.text(k)?;
                if is_public_key(&t) {
                    Some(t)
                } else {
                    self.bad(
                        &k.span,
                        "not an OpenSSH public key",
                        "bad key",
                        "write one line such as `ssh-ed25519 AAAA… hive-hive_AbCd1234`",
                    );
                    None
                }
            });
        let private_key = self.secret(
            &m,
            "private_key",
            "add `private_key:` (the PEM text, `${env:NAME}` or `{file: path}`)",
        );
        let enable_password_auth = self.boolean(&m, "enable_password_auth", false);
        let allow_root = self.boolean(&m, "allow_root", false);
        let port = self.opt_uint(&m, "port", 1, 65535, 22);
        Some(HiveSsh {
            public_key: public_key?,
            private_key: private_key?,
            enable_password_auth: enable_password_auth?,
            allow_root: allow_root?,
            port: port? as u16,
        })
    }

    fn wireguard(&mut self, v: &Value) -> Option<WireGuard> {
        let m = self.map(
            v,
            "security.wireguard",
            &[
                "private_key",
                "public_key",
                "peer_public_key",
                "client_ip",
                "endpoint",
                "config",
            ],
        )?;
        let private_key = self.secret(
            &m,
            "private_key",
            "add `private_key:` (`wg genkey`; text, `${env:NAME}` or `{file: path}`)",
        );
        let wg_key = |this: &mut Self, v: &Value| -> Option<String> {
            let t = this.text(v)?;
            if is_wg_key(&t) {
                Some(t)
            } else {
                this.bad(
                    &v.span,
                    "not a WireGuard key",
                    "bad key",
                    "a WireGuard key is 44 characters of base64 ending in `=`, as `wg pubkey` prints it",
                );
                None
            }
        };
        let public_key = self
            .required(&m, "public_key", "add the hive's `public_key:` (`wg pubkey`)")
            .and_then(|k| wg_key(self, k));
        let peer_public_key = match m.get("peer_public_key") {
            None => Some(None),
            Some(k) => wg_key(self, k).map(Some),
        };
        let client_ip = self.required(&m, "client_ip", "add `client_ip: 10.10.0.N/32` (N from 2 to 253)").and_then(|c| {
            let t = self.text(c)?;
            let addr = t.strip_suffix("/32").and_then(|a| a.parse::<Ipv4Addr>().ok());
            match addr {
                Some(a) if a.octets()[..3] == [10, 10, 0] && (2..=253).contains(&a.octets()[3]) => Some(t),
                _ => {
                    self.bad(
                        &c.span,
                        format!("`{t}` is not a client address of the VPN"),
                        "not in 10.10.0.2–253/32",
                        "VPN clients are single addresses of 10.10.0.0/24: `10.10.0.2/32` to `10.10.0.253/32` (`.1` is the hub)",
                    );
                    None
                }
            }
        });
        let endpoint = self
            .required(&m, "endpoint", "add `endpoint: hub.example.org:51820`")
            .and_then(|e| {
                let t = self.text(e)?;
                let ok = t.rsplit_once(':').is_some_and(|(host, port)| {
                    settings::is_host(host) && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
                if ok {
                    Some(t)
                } else {
                    self.bad(
                        &e.span,
                        format!("`{t}` is not `host:port`"),
                        "not an endpoint",
                        "write the hub's address and UDP port, such as `hub.example.org:51820`",
                    );
                    None
                }
            });
        let config = match m.get("config") {
            None => Some(None),
            Some(c) => self.secret_value(c, "security.wireguard.config").map(Some),
        };
        if let (Some(None), Some(None)) = (&peer_public_key, &config) {
            self.report(
                DefsErrorKind::MissingKey {
                    src: v.span.src(),
                    span: v.span.ss(),
                    field: "peer_public_key".into(),
                    help: Some("give the hub's public key (`peer_public_key:`), or a complete `wg0.conf` as `config:`".into()),
                }
                .into(),
            );
            return None;
        }
        Some(WireGuard {
            private_key: private_key?,
            public_key: public_key?,
            peer_public_key: peer_public_key?,
            client_ip: client_ip?,
            endpoint: endpoint?,
            config: config?,
        })
    }

    fn database(&mut self, v: &Value) -> Option<Database> {
        let m = self.map(
            v,
            "security.database",
            &["username", "password", "host", "port", "database"],
        )?;
        let ident = |this: &mut Self, key: &str, default: Option<&str>| -> Option<String> {
            let t = match (m.get(key), default) {
                (None, Some(d)) => return Some(d.to_owned()),
                (None, None) => this.req_text(&m, key, &format!("add `{key}:`"))?,
                (Some(v), _) => this.text(v)?,
            };
            if is_sql_identifier(&t) {
                Some(t)
            } else {
                let span = m
                    .value
                    .get(key)
                    .map_or(m.value.span.clone(), |e| e.value.span.clone());
                this.bad(
                    &span,
                    format!("`{t}` is not a PostgreSQL name w4b accepts"),
                    "bad name",
                    "use lower-case letters, digits and `_`, starting with a letter (at most 63)",
                );
                None
            }
        };
        let username = ident(self, "username", None);
        let database = ident(self, "database", Some("hivedb"));
        let password = self.secret(
            &m,
            "password",
            "add `password:` (text, `${env:NAME}` or `{file: path}`)",
        );
        let host = match m.get("host") {
            None => Some("localhost".to_owned()),
            Some(h) => self.text(h).and_then(|t| {
                if settings::is_host(&t) {
                    Some(t)
                } else {
                    self.bad(
                        &h.span,
                        format!("`{t}` is not a host"),
                        "not a host",
                        "write `localhost`, a host name or an IPv4 address",
                    );
                    None
                }
            }),
        };
        let port = self.opt_uint(&m, "port", 1, 65535, 5432);
        Some(Database {
            username: username?,
            password: password?,
            host: host?,
            port: port? as u16,
            database: database?,
        })
    }

    fn local_access(&mut self, v: &Value) -> Option<LocalAccess> {
        let m = self.map(
            v,
            "security.local_access",
            &["username", "password", "sudo_without_password"],
        )?;
        let username = self
            .required(&m, "username", "add `username:`, the local admin account")
            .and_then(|u| {
                let t = self.text(u)?;
                if is_username(&t) && t != "root" {
                    Some(t)
                } else {
                    self.bad(
                        &u.span,
                        format!("`{t}` cannot be the local admin"),
                        "bad user name",
                        "start with a lower-case letter or `_`, then up to 31 of `a-z 0-9 _ -`; not `root`",
                    );
                    None
                }
            });
        let password = self.secret(
            &m,
            "password",
            "add `password:` (text, `${env:NAME}` or `{file: path}`)",
        );
        let sudo = self.boolean(&m, "sudo_without_password", false);
        Some(LocalAccess {
            username: username?,
            password: password?,
            sudo_without_password: sudo?,
        })
    }
}

/// `config::Location` under another name: `crate::defs::Location` (a source location) is
/// in scope here too.
type Location_ = super::config::Location;

/// The id part of the host name, as [`HiveImage::hostname`] derives it.
fn host_label(id: &str) -> String {
    let rest = id.strip_prefix("hive_").unwrap_or(id);
    let mut h: String = rest
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

fn is_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !local
            .chars()
            .any(|c| c.is_whitespace() || c == '@' || c.is_control())
        && domain.contains('.')
        && domain.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn is_username(u: &str) -> bool {
    let mut chars = u.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && u.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn is_sql_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_public_key(k: &str) -> bool {
    let mut parts = k.split_whitespace();
    let algo = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("");
    !k.contains('\n')
        && (algo.starts_with("ssh-") || algo.starts_with("ecdsa-sha2-") || algo.starts_with("sk-"))
        && body.len() >= 16
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
}

fn is_wg_key(k: &str) -> bool {
    k.len() == 44
        && k.ends_with('=')
        && k[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
