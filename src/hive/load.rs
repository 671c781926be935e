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
//! Every hive file goes through the one way definitions are read: the spanned YAML tree,
//! `hives.defaults` of `w4b.yaml` merged under it (the hive file wins, maps merge key by
//! key, as `extends` does), then [`super::convert`], which deserialises it with the `defs`
//! deserializer and checks the manager's rules, reporting every problem at once.
//! Because the merged tree keeps each value's span, a defaulted value's location (in
//! diagnostics and in [`ResolvedHive::locations`], for `w4b why`) is its line of
//! `w4b.yaml`; an overridden one's is the hive file's.

use std::collections::BTreeMap;
use std::path::Path;

use w4b_cache::Digest;

use super::config::*;
use super::convert;
use super::secrets::SecretSources;
use crate::defs::loader::record_locations;
use crate::defs::span::Origin;
use crate::defs::test_spec::TestDef;
use crate::defs::yaml::{self, Value};
use crate::defs::{
    merge, DefsError, DefsErrorKind, Image, ImageHive, Kind, Label, Loader, Location, SourceFile, Spanned,
    Target, Workspace, WORKSPACE_FILE,
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
    /// The hive's `test:` (w4b's extension of the manager's format), to be merged over its
    /// image's.
    pub test: Option<Spanned<TestDef>>,
}

/// Loads `label` — a hive target, or an image with `hive_file:` or a `hive:` section — and
/// everything it builds on. Every problem of the hive itself is reported at once, as one
/// [`DefsErrorKind::HiveInvalid`] holding them (or the problem itself when there is one).
pub fn resolve(loader: &Loader, label: &Label) -> Result<ResolvedHive, DefsError> {
    let ws = loader.workspace();
    let doc = loader.document(label)?;
    if doc.kind != Kind::Hive {
        return resolve_image(loader, label);
    }
    // A hive target: its document already has `hives.defaults` merged under it, and the
    // environment and `--set` overrides over it.
    let own_file = ws.target_file(label);
    let sources = SecretSources {
        env: loader.env(),
        root: ws.root().to_path_buf(),
        dir: parent(&own_file).to_owned(),
    };
    let mut secret_files = Vec::new();
    let redacted = super::secrets::redacted(&doc.doc);
    let read = convert::read(&redacted, true, &sources, &mut secret_files, &ws.config().vpn);
    let mut problems = read.problems;
    let own_image = read
        .image
        .and_then(|text| match Label::parse(&text.value, Some(&label.package)) {
            Ok(l) => Some(Spanned::new(l, text.span)),
            Err(e) => {
                problems.push(e.into_defs(Some(&text.span)));
                None
            }
        });
    let test = read.test;
    let hive = into_result(&label.to_string(), problems, read.hive)?;
    let image_label = match (own_image, &ws.config().hive_image) {
        (Some(own), _) => own,
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
    let mut files = doc.files.clone();
    files.extend(image_t.files.iter().cloned());
    let mut locations = prefixed("hive.", &doc.locations);
    locations.extend(prefixed("image.", &image_t.locations));
    Ok(finish(
        label,
        &image_label.value,
        Read { hive, test },
        image,
        secret_files,
        files,
        locations,
    ))
}

/// An image carrying its hive (`hive_file:` or a `hive:` section).
fn resolve_image(loader: &Loader, label: &Label) -> Result<ResolvedHive, DefsError> {
    let ws = loader.workspace();
    let loaded = loader.load(label)?;
    let image = match &loaded.target {
        Target::Image(image) if image.hive.is_some() => image,
        Target::Image(_) => {
            return Err(DefsErrorKind::NotAHive {
                label: label.to_string(),
                kind: "image without a hive".into(),
            }
            .into())
        }
        other => {
            return Err(DefsErrorKind::NotAHive {
                label: label.to_string(),
                kind: other.kind().to_string(),
            }
            .into())
        }
    };
    let mut files = loaded.files.clone();
    let mut locations = prefixed("image.", &loaded.locations);
    let (hive_doc, dir) = match &image.hive {
        Some(ImageHive::File(path)) => {
            let rel = path.value.as_str();
            let abs = match crate::defs::beneath::resolve(ws.root(), rel) {
                Ok(abs) => abs,
                Err(e) => {
                    return Err(path.span.bad_path(
                        rel,
                        "leads outside the workspace",
                        Some(format!("{e}: w4b reads only files inside the workspace")),
                    ))
                }
            };
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
        _ => {
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
    let hive_doc = with_defaults(ws, hive_doc, &mut files)?;
    let mut hive_locations = BTreeMap::new();
    record_locations(&hive_doc, "", &mut hive_locations);
    locations.extend(prefixed("hive.", &hive_locations));
    let sources = SecretSources {
        env: loader.env(),
        root: ws.root().to_path_buf(),
        dir,
    };
    let mut secret_files = Vec::new();
    let redacted = super::secrets::redacted(&hive_doc);
    let read = convert::read(&redacted, false, &sources, &mut secret_files, &ws.config().vpn);
    let test = read.test;
    let hive = into_result(&label.to_string(), read.problems, read.hive)?;
    Ok(finish(
        label,
        label,
        Read { hive, test },
        image,
        secret_files,
        files,
        locations,
    ))
}

/// `hives.defaults` of `w4b.yaml` merged under a hive document that is not a target (a
/// target's document gets them from the loader); `w4b.yaml` joins the files read.
fn with_defaults(ws: &Workspace, doc: Value, files: &mut Vec<(String, Digest)>) -> Result<Value, DefsError> {
    match ws.hive_defaults() {
        None => Ok(doc),
        Some(defaults) => {
            files.push((WORKSPACE_FILE.to_owned(), ws.config_digest()));
            merge::merge_hive_defaults(defaults, doc)
        }
    }
}

/// Checks a hive file given by path (`w4b hive validate FILE`): the manager's rules only,
/// no image, with `hives.defaults` of the workspace (when there is one) merged under it.
/// `{file:}` secrets may not leave the workspace, or the file's own directory when it lies
/// outside any workspace.
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
    let (mut doc, _) = read_yaml(&abs, &shown, env)?;
    if let Some(ws) = ws {
        doc = with_defaults(ws, doc, &mut Vec::new())?;
    }
    let sources = SecretSources {
        env,
        root,
        dir: parent(&shown).to_owned(),
    };
    let mut secret_files = Vec::new();
    let doc = super::secrets::redacted(&doc);
    let vpn = ws.map(|w| w.config().vpn).unwrap_or_default();
    let read = convert::read(&doc, true, &sources, &mut secret_files, &vpn);
    into_result(&shown, read.problems, read.hive)
}

/// The value, or the one problem, or all of them under one diagnostic.
fn into_result<T>(what: &str, mut problems: Vec<DefsError>, value: Option<T>) -> Result<T, DefsError> {
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

/// A hive as read: the manager's configuration and w4b's `test:`.
struct Read {
    hive: Hive,
    test: Option<Spanned<TestDef>>,
}

fn finish(
    label: &Label,
    image_label: &Label,
    read: Read,
    image: &Image,
    secret_files: Vec<super::secrets::SecretFile>,
    mut files: Vec<(String, Digest)>,
    locations: BTreeMap<String, Location>,
) -> ResolvedHive {
    let Read { mut hive, test } = read;
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
    ResolvedHive {
        label: label.clone(),
        image: image_label.clone(),
        config: HiveImage { hive, settings },
        files,
        secret_files,
        locations,
        test,
    }
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
    let bytes = crate::defs::workspace::read(abs, shown)?;
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

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
