//! Secret values of a hive file (DESIGN §8): Wi-Fi passwords, the SSH and WireGuard
//! private keys, a full `wg0.conf`, the database and local-admin passwords.
//!
//! A secret position accepts three spellings:
//!
//! | written                 | the secret is                                              |
//! |-------------------------|------------------------------------------------------------|
//! | `password: "text"`      | the text (after the loader's `${VAR}` substitution)        |
//! | `password: ${env:NAME}` | the value of `NAME` in the injected environment map        |
//! | `password: {file: p}`   | the file's text, `p` relative to the file it is written in (the hive file, or `w4b.yaml` for a `hives.defaults` value), inside the workspace; one trailing newline of a one-line file is dropped |
//!
//! Every failure names the secret by its key path and never shows its value: diagnostics
//! point at what was *written* (`${env:NAME}`, the file name), which is not secret. Files
//! holding secrets are not recorded among a target's definition files: a digest of a
//! low-entropy password would let anyone who sees a manifest test guesses against it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::config::Secret;
use crate::defs::yaml::{Node, Value};
use crate::defs::{DefsError, DefsErrorKind, Span, WsPath};

/// Where secrets come from for one hive file.
pub struct SecretSources<'a> {
    /// The environment map the loader was given (never the process environment).
    pub env: &'a BTreeMap<String, String>,
    /// The absolute root that `{file:}` paths may not leave (the workspace).
    pub root: PathBuf,
    /// The hive file's directory, relative to `root`: where `{file:}` paths start when
    /// the text they are written in is not a workspace file.
    pub dir: String,
}

/// A secret read from a file: its path relative to the root (the bytes are not digested).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretFile(pub String);

impl SecretSources<'_> {
    /// Resolves the value at a secret position `key` (`security.database.password`).
    pub fn resolve(
        &self,
        value: &Value,
        key: &str,
        files: &mut Vec<SecretFile>,
    ) -> Result<Secret, DefsError> {
        match &value.node {
            Node::Scalar(s) if !s.is_null() => {
                let text = s.text.as_str();
                if let Some(name) = text.strip_prefix("${env:").and_then(|r| r.strip_suffix('}')) {
                    return self.env_secret(name, &value.span, key);
                }
                if text.contains("${env:") {
                    return Err(problem(
                        &value.span,
                        key,
                        "`${env:…}` must be the whole value",
                        "mixed with other text",
                        "write `${env:NAME}` alone; put the whole secret in the variable",
                    ));
                }
                if text.is_empty() {
                    return Err(problem(
                        &value.span,
                        key,
                        "is empty",
                        "empty secret",
                        "write the secret, `${env:NAME}` or `{file: path}`",
                    ));
                }
                Ok(Secret::new(key, text))
            }
            Node::Map(entries) if entries.len() == 1 && entries[0].key.name == "file" => {
                let path = &entries[0].value;
                match path.as_scalar().filter(|s| !s.is_null()) {
                    Some(p) => self.file_secret(&p.text, &path.span, key, files),
                    None => Err(problem(
                        &path.span,
                        key,
                        "`file:` needs a path",
                        "not a path",
                        "write `{file: secrets/wifi.txt}`, relative to the hive file",
                    )),
                }
            }
            _ => Err(problem(
                &value.span,
                key,
                &format!(
                    "expected text, `${{env:NAME}}` or `{{file: path}}`, found {}",
                    value.describe()
                ),
                "not a secret",
                "write the secret as text, `${env:NAME}` or `{file: path}`",
            )),
        }
    }

    fn env_secret(&self, name: &str, span: &Span, key: &str) -> Result<Secret, DefsError> {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(problem(
                span,
                key,
                &format!("`{name}` is not a variable name"),
                "bad variable name",
                "write `${env:NAME}` with letters, digits and `_`",
            ));
        }
        match self.env.get(name).filter(|v| !v.is_empty()) {
            Some(v) => Ok(Secret::new(key, v.as_str())),
            None => Err(problem(
                span,
                key,
                &format!("the environment variable `{name}` is not set (or empty)"),
                "not set",
                &format!("export `{name}` before running w4b, or write the secret another way"),
            )),
        }
    }

    fn file_secret(
        &self,
        written: &str,
        span: &Span,
        key: &str,
        files: &mut Vec<SecretFile>,
    ) -> Result<Secret, DefsError> {
        let outside = || {
            problem(
                span,
                key,
                &format!("`{written}` is outside the workspace"),
                "outside the workspace",
                "keep secret files inside the workspace (and out of version control), relative to the hive file",
            )
        };
        if written.starts_with('/') {
            return Err(outside());
        }
        // Relative to the file the reference is written in: the hive file, or `w4b.yaml`
        // for a `hives.defaults` value.
        let dir = span
            .file
            .path()
            .map_or(self.dir.as_str(), |p| p.rsplit_once('/').map_or("", |(d, _)| d));
        let Some(rel) = WsPath::join(dir, written) else {
            return Err(outside());
        };
        let path = self.root.join(rel.as_str());
        // A symbolic link may point anywhere: compare real paths.
        let real = path
            .canonicalize()
            .map_err(|e| unreadable(span, key, rel.as_str(), &e))?;
        let root = self.root.canonicalize().unwrap_or_else(|_| self.root.clone());
        if !real.starts_with(&root) {
            return Err(outside());
        }
        let bytes = std::fs::read(&real).map_err(|e| unreadable(span, key, rel.as_str(), &e))?;
        let Ok(mut text) = String::from_utf8(bytes) else {
            return Err(problem(
                span,
                key,
                &format!("`{}` is not UTF-8 text", rel.as_str()),
                "not text",
                "secrets are text; store binary keys base64-encoded",
            ));
        };
        if text.trim_end_matches(['\n', '\r']).lines().count() <= 1 {
            // `echo pw > file` writes a newline that is not part of the password.
            let trimmed = text.trim_end_matches(['\n', '\r']).len();
            text.truncate(trimmed);
        }
        if text.is_empty() {
            return Err(problem(
                span,
                key,
                &format!("`{}` is empty", rel.as_str()),
                "empty secret",
                "write the secret into the file",
            ));
        }
        files.push(SecretFile(rel.as_str().to_owned()));
        Ok(Secret::new(key, text))
    }
}

fn unreadable(span: &Span, key: &str, path: &str, e: &std::io::Error) -> DefsError {
    problem(
        span,
        key,
        &format!("cannot read `{path}`: {}", e.kind()),
        "cannot read",
        "check the path (relative to the hive file) and its permissions",
    )
}

fn problem(span: &Span, key: &str, message: &str, label: &str, help: &str) -> DefsError {
    DefsErrorKind::SecretSource {
        src: span.src(),
        span: span.ss(),
        key: key.to_owned(),
        message: message.to_owned(),
        label: label.to_owned(),
        help: help.to_owned(),
    }
    .into()
}

/// The key paths of secret positions in a hive document (`[]` = any list index).
const SECRET_PATHS: &[&[&str]] = &[
    &["network", "wifi", "[]", "password"],
    &["security", "ssh", "private_key"],
    &["security", "wireguard", "private_key"],
    &["security", "wireguard", "config"],
    &["security", "database", "password"],
    &["security", "local_access", "password"],
];

/// A copy of a hive document whose spans point into copies of their source texts with the
/// text of every literal at a secret position replaced by `*`: a diagnostic about a
/// neighbouring value shows the lines around it, and those must not show a password.
/// Offsets, lines and columns are unchanged (each character becomes as many `*` as its
/// UTF-8 length; line breaks are kept).
pub fn redacted(doc: &Value) -> Value {
    use std::sync::Arc;

    let mut ranges: Vec<Span> = Vec::new();
    for path in SECRET_PATHS {
        collect(doc, path, &mut ranges);
    }
    let mut texts: Vec<(Arc<crate::defs::SourceFile>, Vec<u8>)> = Vec::new();
    for span in &ranges {
        let i = match texts.iter().position(|(f, _)| Arc::ptr_eq(f, &span.file)) {
            Some(i) => i,
            None => {
                texts.push((Arc::clone(&span.file), span.file.text().as_bytes().to_vec()));
                texts.len() - 1
            }
        };
        let bytes = &mut texts[i].1;
        let end = span.end.min(bytes.len());
        for b in &mut bytes[span.start.min(end)..end] {
            if *b != b'\n' && *b != b'\r' {
                *b = b'*';
            }
        }
    }
    let replaced: Vec<(Arc<crate::defs::SourceFile>, Arc<crate::defs::SourceFile>)> = texts
        .into_iter()
        .map(|(file, bytes)| {
            // Only ASCII `*` replaced whole characters' bytes, so this stays UTF-8.
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let copy = crate::defs::SourceFile::new(file.origin().clone(), text);
            (file, copy)
        })
        .collect();
    let mut out = doc.clone();
    repoint(&mut out, &replaced);
    out
}

fn collect(v: &Value, path: &[&str], out: &mut Vec<Span>) {
    let Some((first, rest)) = path.split_first() else {
        // Scalars only: a `{file: …}` path is not secret. A `${env:…}` reference is blanked
        // too (the diagnostic names the variable in its message).
        if matches!(&v.node, Node::Scalar(_)) {
            out.push(v.span.clone());
        }
        return;
    };
    match (&v.node, *first) {
        (Node::Seq(items), "[]") => items.iter().for_each(|i| collect(i, rest, out)),
        (Node::Map(_), key) => {
            if let Some(e) = v.get(key) {
                collect(&e.value, rest, out);
            }
        }
        _ => {}
    }
}

type Replacements = [(
    std::sync::Arc<crate::defs::SourceFile>,
    std::sync::Arc<crate::defs::SourceFile>,
)];

fn repoint(v: &mut Value, files: &Replacements) {
    let swap = |span: &mut Span| {
        if let Some((_, copy)) = files.iter().find(|(f, _)| std::sync::Arc::ptr_eq(f, &span.file)) {
            span.file = std::sync::Arc::clone(copy);
        }
    };
    swap(&mut v.span);
    match &mut v.node {
        Node::Scalar(_) => {}
        Node::Seq(items) => items.iter_mut().for_each(|i| repoint(i, files)),
        Node::Map(entries) => {
            for e in entries {
                swap(&mut e.key.span);
                repoint(&mut e.value, files);
            }
        }
    }
}
