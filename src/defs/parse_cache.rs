//! A cache of parsed definition files, so a no-op rebuild neither reads nor parses the
//! ~1,000 YAML files it has already seen.
//!
//! What is cached is the schema-free [`yaml::Value`] tree of a file *before* `${VAR}`
//! substitution, together with the file's text (diagnostics and locations need it) and the
//! BLAKE3 of its bytes. Everything downstream — substitution, `extends`, workspace defaults,
//! `W4B_*` and `--set` overrides, typing into targets — runs on every load, so a changed
//! environment or a new `--set` is always seen, and new target kinds or keys in
//! `target.rs` never meet a stale cached shape.
//!
//! An entry is trusted only while the file's stamp (size, mtime, ctime, inode) is the one
//! recorded, and never when the file changed less than
//! [`RACY_WINDOW_NS`](crate::stamp::RACY_WINDOW_NS) before the cache was saved (the
//! racily-clean rule of [`crate::stamp`], which the stat cache of input files follows too). The whole cache is ignored when
//! it was written by another w4b binary (identified by the executable's own stamp): a new
//! binary may parse YAML differently. Damage is caught by a trailing BLAKE3 and makes the
//! cache empty, never wrong.
//!
//! File layout (`w4b-defs` v1, little-endian): magic, `identity_len: u32, identity`,
//! `saved_at_ns: i64`, `count: u32`, then per entry `path_len: u32, path, size: u64,
//! mtime_ns: i64, ctime_ns: i64, ino: u64, digest: [u8; 32], text_len: u32, text,
//! tree_len: u32, tree`, then the BLAKE3 of everything before it. A tree is one node:
//! `tag: u8` (0 plain scalar, 1 quoted scalar, 2 sequence, 3 map), its span
//! (`start, end, line, col`: u32 each), then for a scalar `len: u32, text`, for a sequence
//! `count: u32` and the items, for a map `count: u32` and per entry `len: u32, name`, the
//! key's span, and the value.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use w4b_cache::Digest;

use super::span::{Origin, SourceFile, Span};
use super::yaml::{self, Entry, Key, Node, Scalar, Style, Value};
use crate::stamp::Stamp;

const MAGIC: &[u8; 10] = b"w4b-defs\x00\x01";

/// The name of the cache in the store's `meta/` directory.
pub const META_NAME: &str = "defs-parse";

/// A definition file as the loader needs it: its text, digest and tree before substitution.
pub struct Parsed {
    pub file: Arc<SourceFile>,
    pub digest: Digest,
    pub value: Value,
}

struct Saved {
    stamp: Stamp,
    digest: Digest,
    text: Arc<str>,
    tree: Vec<u8>,
}

/// Loaded once per build, consulted from several threads, saved when it changed.
#[derive(Default)]
pub struct ParseCache {
    identity: String,
    saved_at_ns: i64,
    /// Absolute path → entry. A map of ~1,000 entries: building it costs far less than the
    /// parses it saves.
    old: BTreeMap<String, Saved>,
    new: Mutex<BTreeMap<String, Saved>>,
    dirty: AtomicBool,
}

impl ParseCache {
    /// The identity of the running binary: the executable's path and stamp. Empty (no
    /// caching at all) when the executable cannot be found.
    pub fn binary_identity() -> String {
        let Ok(exe) = std::env::current_exe() else {
            return String::new();
        };
        match fs::metadata(&exe) {
            Ok(m) => {
                let s = Stamp::of(&m);
                format!(
                    "{} {} {} {} {} {}",
                    env!("CARGO_PKG_VERSION"),
                    exe.display(),
                    s.size,
                    s.mtime_ns,
                    s.ctime_ns,
                    s.ino
                )
            }
            Err(_) => String::new(),
        }
    }

    /// A cache for the binary `identity`, starting from `bytes` (a saved cache) when they
    /// are intact and were written by the same binary; an empty `identity` disables it.
    pub fn from_bytes(identity: String, bytes: Option<Vec<u8>>) -> ParseCache {
        let loaded = bytes.and_then(|b| decode(&b, &identity));
        let (saved_at_ns, old) = loaded.unwrap_or_default();
        ParseCache {
            identity,
            saved_at_ns,
            old,
            ..ParseCache::default()
        }
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    /// The cached parse of the file at `path` (absolute; `shown` is its workspace-relative
    /// name) if `stamp` is still the recorded one and the entry is not racy.
    pub fn get(&self, path: &str, shown: &str, stamp: &Stamp) -> Option<Parsed> {
        if self.identity.is_empty() {
            return None;
        }
        let from_old = self
            .old
            .get(path)
            .filter(|s| stamp.vouched_by(&s.stamp, self.saved_at_ns));
        let rebuild = |s: &Saved| {
            let file = SourceFile::new(
                Origin::File {
                    path: shown.to_owned(),
                },
                Arc::clone(&s.text),
            );
            let value = decode_tree(&s.tree, &file)?;
            Some(Parsed {
                file,
                digest: s.digest,
                value,
            })
        };
        if let Some(s) = from_old {
            return rebuild(s);
        }
        // Parsed earlier in this build (the same file reached through another label).
        let new = self.new.lock().unwrap_or_else(PoisonError::into_inner);
        new.get(path).filter(|s| s.stamp == *stamp).and_then(rebuild)
    }

    /// Records a fresh parse of the file at `path`, whose stamp was taken before its bytes
    /// were read (a change while reading then shows as a new stamp next time).
    pub fn insert(&self, path: &str, stamp: Stamp, parsed: &Parsed) {
        if self.identity.is_empty() {
            return;
        }
        let Some(tree) = encode_tree(&parsed.value, &parsed.file) else {
            return;
        };
        let saved = Saved {
            stamp,
            digest: parsed.digest,
            text: Arc::from(parsed.file.text()),
            tree,
        };
        self.new
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), saved);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// The saved form: the loaded entries updated with this build's. `now_ns` is the ctime
    /// of a freshly written file (the filesystem's clock, not the wall clock), against
    /// which entries are judged racy next time.
    pub fn to_bytes(&self, now_ns: i64) -> Vec<u8> {
        let new = self.new.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: BTreeMap<&str, &Saved> = self.old.iter().map(|(k, v)| (k.as_str(), v)).collect();
        all.extend(new.iter().map(|(k, v)| (k.as_str(), v)));
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        put_bytes(&mut out, self.identity.as_bytes());
        out.extend_from_slice(&now_ns.to_le_bytes());
        put_u32(&mut out, all.len());
        for (path, s) in all {
            put_bytes(&mut out, path.as_bytes());
            out.extend_from_slice(&s.stamp.to_bytes());
            out.extend_from_slice(s.digest.as_bytes());
            put_bytes(&mut out, s.text.as_bytes());
            put_bytes(&mut out, &s.tree);
        }
        let check = blake3::hash(&out);
        out.extend_from_slice(check.as_bytes());
        out
    }
}

/// Lengths beyond `u32` are never written: [`encode_tree`] refuses such files, and no
/// workspace has four billion definitions.
fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

type Loaded = (i64, BTreeMap<String, Saved>);

fn decode(bytes: &[u8], identity: &str) -> Option<Loaded> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, check) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes()[..] != *check {
        return None;
    }
    let mut c = Cursor(body);
    if c.take(MAGIC.len())? != MAGIC || c.str()? != identity {
        return None;
    }
    let saved_at = c.i64()?;
    let count = c.u32()?;
    let mut entries = BTreeMap::new();
    for _ in 0..count {
        let path = c.str()?.to_owned();
        let stamp = Stamp::from_bytes(c.take(Stamp::LEN)?)?;
        let digest = Digest(c.take(32)?.try_into().ok()?);
        let text = Arc::from(c.str()?);
        let tree = c.bytes()?.to_vec();
        entries.insert(
            path,
            Saved {
                stamp,
                digest,
                text,
                tree,
            },
        );
    }
    c.0.is_empty().then_some((saved_at, entries))
}

/// The tree in the binary form above, or `None` when it cannot be stored faithfully (a
/// span into another text, a length beyond `u32`); such a file is simply not cached.
fn encode_tree(value: &Value, file: &Arc<SourceFile>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(file.text().len() * 2);
    encode_node(value, file, &mut out)?;
    Some(out)
}

fn encode_span(span: &Span, file: &Arc<SourceFile>, out: &mut Vec<u8>) -> Option<()> {
    if !Arc::ptr_eq(&span.file, file) {
        return None;
    }
    for n in [
        u32::try_from(span.start).ok()?,
        u32::try_from(span.end).ok()?,
        span.line,
        span.col,
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    Some(())
}

fn encode_len(n: usize, out: &mut Vec<u8>) -> Option<()> {
    out.extend_from_slice(&u32::try_from(n).ok()?.to_le_bytes());
    Some(())
}

fn encode_node(value: &Value, file: &Arc<SourceFile>, out: &mut Vec<u8>) -> Option<()> {
    // Exhaustive on purpose: a new node kind or scalar style in `yaml.rs` must fail to
    // compile here rather than be stored as something else.
    let tag = match &value.node {
        Node::Scalar(s) => match s.style {
            Style::Plain => 0,
            Style::Quoted => 1,
        },
        Node::Seq(_) => 2,
        Node::Map(_) => 3,
    };
    out.push(tag);
    encode_span(&value.span, file, out)?;
    match &value.node {
        Node::Scalar(s) => {
            encode_len(s.text.len(), out)?;
            out.extend_from_slice(s.text.as_bytes());
        }
        Node::Seq(items) => {
            encode_len(items.len(), out)?;
            for item in items {
                encode_node(item, file, out)?;
            }
        }
        Node::Map(entries) => {
            encode_len(entries.len(), out)?;
            for e in entries {
                encode_len(e.key.name.len(), out)?;
                out.extend_from_slice(e.key.name.as_bytes());
                encode_span(&e.key.span, file, out)?;
                encode_node(&e.value, file, out)?;
            }
        }
    }
    Some(())
}

/// The tree stored by [`encode_tree`], with spans into `file`; `None` if it is damaged
/// (checked against the text's bounds and [`yaml::MAX_DEPTH`], so even a damaged entry
/// that passed the checksum cannot produce a span outside its text or a deep recursion).
fn decode_tree(tree: &[u8], file: &Arc<SourceFile>) -> Option<Value> {
    let mut c = Cursor(tree);
    let v = decode_node(&mut c, file, 0)?;
    c.0.is_empty().then_some(v)
}

fn decode_span(c: &mut Cursor<'_>, file: &Arc<SourceFile>) -> Option<Span> {
    let (start, end) = (c.u32()? as usize, c.u32()? as usize);
    let (line, col) = (c.u32()?, c.u32()?);
    if start > end || end > file.text().len() {
        return None;
    }
    Some(Span {
        file: Arc::clone(file),
        start,
        end,
        line,
        col,
    })
}

fn decode_node(c: &mut Cursor<'_>, file: &Arc<SourceFile>, depth: usize) -> Option<Value> {
    if depth > yaml::MAX_DEPTH + 1 {
        return None;
    }
    let tag = c.u8()?;
    let span = decode_span(c, file)?;
    let node = match tag {
        0 | 1 => Node::Scalar(Scalar {
            text: c.str()?.to_owned(),
            style: if tag == 0 { Style::Plain } else { Style::Quoted },
        }),
        2 => {
            let n = c.u32()? as usize;
            // Each item takes at least 17 bytes: a count beyond what is left is damage.
            let mut items = Vec::with_capacity(n.min(c.0.len() / 17));
            for _ in 0..n {
                items.push(decode_node(c, file, depth + 1)?);
            }
            Node::Seq(items)
        }
        3 => {
            let n = c.u32()? as usize;
            let mut entries = Vec::with_capacity(n.min(c.0.len() / 37));
            for _ in 0..n {
                let name = c.str()?.to_owned();
                let key_span = decode_span(c, file)?;
                let value = decode_node(c, file, depth + 1)?;
                entries.push(Entry {
                    key: Key { name, span: key_span },
                    value,
                });
            }
            Node::Map(entries)
        }
        _ => return None,
    };
    Some(Value { node, span })
}

/// Reads a definition file through `cache`: a hit costs one `stat`; a miss reads, parses
/// and remembers it. `None` when no regular file is at `path`.
pub fn read_through(
    cache: &ParseCache,
    path: &Path,
    shown: &str,
    read: impl FnOnce() -> Result<Option<(Vec<u8>, fs::Metadata)>, super::DefsError>,
    parse: impl FnOnce(Vec<u8>) -> Result<Parsed, super::DefsError>,
) -> Result<Option<Parsed>, super::DefsError> {
    // Paths that are not UTF-8 are read every time rather than keyed by a lossy name.
    let key = path.to_str();
    if let Some(key) = key {
        if let Ok(m) = fs::metadata(path) {
            if m.is_file() {
                if let Some(hit) = cache.get(key, shown, &Stamp::of(&m)) {
                    return Ok(Some(hit));
                }
            }
        }
    }
    let Some((bytes, meta)) = read()? else {
        return Ok(None);
    };
    let parsed = parse(bytes)?;
    if let Some(key) = key {
        cache.insert(key, Stamp::of(&meta), &parsed);
    }
    Ok(Some(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::RACY_WINDOW_NS;

    fn parsed(text: &str) -> Parsed {
        let file = SourceFile::new(
            Origin::File {
                path: "defs/x.yaml".into(),
            },
            text,
        );
        let value = yaml::parse(&file).unwrap();
        Parsed {
            digest: Digest::of(text.as_bytes()),
            file,
            value,
        }
    }

    const DOC: &str = "# comment\nkind: layer\nfiles:\n  - {path: /etc/motd, content: \"héllo\\n\", mode: \"0644\"}\n  - path: /x\n    dir: true\nanchors: &a {k: [1, two, ~]}\nalias: *a\nempty: {}\nblock: |\n  line ${VAR}\n";

    fn stamp(mtime_ns: i64) -> Stamp {
        Stamp {
            size: 10,
            mtime_ns,
            ctime_ns: mtime_ns,
            ino: 7,
        }
    }

    #[test]
    fn trees_round_trip_with_spans() {
        let p = parsed(DOC);
        let tree = encode_tree(&p.value, &p.file).unwrap();
        assert_eq!(decode_tree(&tree, &p.file).unwrap(), p.value);
        // Spans still point at the same characters.
        let back = decode_tree(&tree, &p.file).unwrap();
        let files = back.get("files").unwrap();
        assert_eq!(files.key.span.snippet(), "files");
        assert_eq!(files.key.span.line, 3);
    }

    #[test]
    fn saved_entries_hit_only_with_the_same_stamp_binary_and_outside_the_racy_window() {
        let p = parsed(DOC);
        let c = ParseCache::from_bytes("bin-1".into(), None);
        assert!(c.get("/w/defs/x.yaml", "defs/x.yaml", &stamp(1_000)).is_none());
        c.insert("/w/defs/x.yaml", stamp(1_000), &p);
        assert!(c.is_dirty());
        // Within the build: a hit by stamp.
        let hit = c.get("/w/defs/x.yaml", "defs/x.yaml", &stamp(1_000)).unwrap();
        assert_eq!((hit.value, hit.digest), (p.value.clone(), p.digest));

        let saved_at = 1_000 + RACY_WINDOW_NS + 1;
        let bytes = c.to_bytes(saved_at);
        let c2 = ParseCache::from_bytes("bin-1".into(), Some(bytes.clone()));
        assert!(!c2.is_dirty());
        let hit = c2.get("/w/defs/x.yaml", "defs/x.yaml", &stamp(1_000)).unwrap();
        assert_eq!(hit.value, p.value);
        assert_eq!(hit.file.text(), DOC);
        for other in [
            Stamp {
                size: 11,
                ..stamp(1_000)
            },
            Stamp {
                ino: 8,
                ..stamp(1_000)
            },
            Stamp {
                ctime_ns: 1_001,
                ..stamp(1_000)
            },
            stamp(1_001),
        ] {
            assert!(
                c2.get("/w/defs/x.yaml", "defs/x.yaml", &other).is_none(),
                "{other:?}"
            );
        }
        assert!(c2.get("/w/defs/y.yaml", "defs/y.yaml", &stamp(1_000)).is_none());

        // Racy: saved within the window after the file's mtime, so an edit in the same
        // timestamp tick (same size, same stamp) could hide behind it.
        let racy = ParseCache::from_bytes("bin-1".into(), Some(c.to_bytes(1_000 + RACY_WINDOW_NS)));
        assert!(racy.get("/w/defs/x.yaml", "defs/x.yaml", &stamp(1_000)).is_none());

        // Another binary ignores the file; so does a disabled cache.
        let other = ParseCache::from_bytes("bin-2".into(), Some(bytes.clone()));
        assert!(other
            .get("/w/defs/x.yaml", "defs/x.yaml", &stamp(1_000))
            .is_none());
        let off = ParseCache::from_bytes(String::new(), Some(bytes));
        off.insert("/w/defs/x.yaml", stamp(1_000), &p);
        assert!(off.get("/w/defs/x.yaml", "defs/x.yaml", &stamp(1_000)).is_none());
        assert!(!off.is_dirty());
    }

    #[test]
    fn damaged_caches_are_empty_never_wrong() {
        let c = ParseCache::from_bytes("bin".into(), None);
        c.insert("/w/a.yaml", stamp(1), &parsed("kind: layer\nfiles: []\n"));
        c.insert("/w/b.yaml", stamp(1), &parsed(DOC));
        let good = c.to_bytes(i64::MAX / 2);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            let c2 = ParseCache::from_bytes("bin".into(), Some(bad));
            assert!(c2.get("/w/a.yaml", "a.yaml", &stamp(1)).is_none(), "byte {i}");
        }
        assert!(
            ParseCache::from_bytes("bin".into(), Some(good[..good.len() / 2].to_vec()))
                .get("/w/a.yaml", "a.yaml", &stamp(1))
                .is_none()
        );
        // A damaged tree behind a valid checksum is refused too, never out of bounds.
        let p = parsed(DOC);
        let tree = encode_tree(&p.value, &p.file).unwrap();
        for i in 0..tree.len() {
            let mut bad = tree.clone();
            bad[i] = bad[i].wrapping_add(0x41);
            if let Some(v) = decode_tree(&bad, &p.file) {
                let _ = v.span.snippet();
            }
        }
    }
}
