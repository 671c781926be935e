//! Values set from outside the definition files: documented `W4B_*` environment variables
//! and `--set key.path=value` arguments.
//!
//! Precedence is defaults < extended target < file < environment < command line, so the
//! environment table is applied first and `--set` arguments after it, in the order given.
//! Each override is parsed into a small source text of its own (`W4B_EPOCH=…`,
//! `output.format=…`), so a bad override is underlined like a bad file and the location
//! table records `env W4B_EPOCH` or `--set epoch=…` as where the value came from.
//!
//! An override applies to every loaded target whose kind has its first key (`epoch` changes
//! images, not layers); a first key that no kind has is rejected up front.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::{DefsError, DefsErrorKind};
use super::span::{Origin, SourceFile, Span};
use super::suggest;
use super::target::Kind;
use super::yaml::{self, Entry, Key, Node, Style, Value};

/// An environment variable that overrides a definition key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvOverride {
    pub var: &'static str,
    /// The key path it sets, in `--set` syntax.
    pub path: &'static str,
    /// How the variable's value is written at `path`: `{}` stands for the value
    /// (`//boards:{}` turns `W4B_PI_MODEL=pi4` into the label `//boards:pi4`).
    pub value: &'static str,
    /// The kind of target it applies to; `None`: every kind that has the path's first key.
    pub kind: Option<Kind>,
    pub description: &'static str,
}

/// The documented `W4B_*` variables that override definition keys. The one place they are
/// listed; `docs/defs.md` mirrors this table.
pub const ENV_OVERRIDES: &[EnvOverride] = &[
    EnvOverride {
        var: "W4B_EPOCH",
        path: "epoch",
        value: "{}",
        kind: None,
        description: "SOURCE_DATE_EPOCH of every image, in seconds since 1970-01-01 UTC",
    },
    EnvOverride {
        var: "W4B_OUTPUT_FORMAT",
        path: "output.format",
        value: "{}",
        kind: None,
        description: "output format of every image",
    },
    // The old image generator's variables (REFERENCE §2) that still mean something.
    EnvOverride {
        var: "W4B_HIVE_ID",
        path: "hive_id",
        value: "{}",
        kind: Some(Kind::Hive),
        description: "`hive_id` of every hive target (not of an image's `hive_file`)",
    },
    EnvOverride {
        var: "W4B_TIMEZONE",
        path: "system.timezone",
        value: "{}",
        kind: Some(Kind::Image),
        description: "default time zone of every image (a hive's own `metadata.location.timezone` wins)",
    },
    EnvOverride {
        var: "W4B_HOSTNAME_PREFIX",
        path: "system.hostname_prefix",
        value: "{}",
        kind: Some(Kind::Image),
        description: "host name prefix of every image (`w4b` → `w4b-<id>`)",
    },
    EnvOverride {
        var: "W4B_PI_MODEL",
        path: "board",
        value: "//boards:{}",
        kind: Some(Kind::Image),
        description: "board of every image: `pi4` means `//boards:pi4`",
    },
    EnvOverride {
        var: "W4B_VPN_SERVER",
        path: "security.vpn.server",
        value: "{}",
        kind: Some(Kind::Image),
        description: "the VPN hub's host, replacing the host of every hive's WireGuard endpoint",
    },
];

/// The parsed overrides, in the order they apply.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    items: Vec<Override>,
}

#[derive(Clone, Debug)]
struct Override {
    path: Vec<Segment>,
    value: Value,
    kind: Option<Kind>,
}

#[derive(Clone, Debug)]
enum Segment {
    Key(Key),
    Index(usize, Span),
}

impl Segment {
    fn span(&self) -> &Span {
        match self {
            Segment::Key(key) => &key.span,
            Segment::Index(_, span) => span,
        }
    }
}

impl Overrides {
    /// Reads the [`ENV_OVERRIDES`] variables present (and non-empty) in `env`, then the `--set`
    /// arguments. `known_keys` are the top-level keys of all target kinds.
    pub fn new(
        env: &BTreeMap<String, String>,
        sets: &[String],
        known_keys: &[&str],
    ) -> Result<Overrides, DefsError> {
        let mut items = Vec::new();
        for known in ENV_OVERRIDES {
            let Some(value) = env.get(known.var).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            let file = SourceFile::new(
                Origin::Env {
                    var: known.var.to_owned(),
                },
                format!("{}={}", known.var, known.value.replace("{}", value)),
            );
            let var_span = Span {
                file: Arc::clone(&file),
                start: 0,
                end: known.var.len(),
                line: 1,
                col: 1,
            };
            let path = known
                .path
                .split('.')
                .map(|name| {
                    Segment::Key(Key {
                        name: name.to_owned(),
                        span: var_span.clone(),
                    })
                })
                .collect();
            let value = parse_value(&file, known.var.len() + 1)?;
            items.push(Override {
                path,
                value,
                kind: known.kind,
            });
        }
        for arg in sets {
            items.push(parse_set(arg, known_keys)?);
        }
        Ok(Overrides { items })
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Applies the overrides whose first key is one of `kind`'s top-level keys and whose
    /// kind, if they name one, is `kind`: `W4B_VPN_SERVER` sets an image's
    /// `security.vpn.server`, never a hive's `security`.
    pub fn apply_for(&self, doc: &mut Value, kind: Kind) -> Result<(), DefsError> {
        self.apply_where(doc, kind.keys(), Some(kind))
    }

    /// Applies the overrides whose first key is in `keys`, whatever kind they name.
    pub fn apply(&self, doc: &mut Value, keys: &[&str]) -> Result<(), DefsError> {
        self.apply_where(doc, keys, None)
    }

    fn apply_where(&self, doc: &mut Value, keys: &[&str], kind: Option<Kind>) -> Result<(), DefsError> {
        for item in &self.items {
            let Some(Segment::Key(first)) = item.path.first() else {
                continue;
            };
            let for_kind = match (item.kind, kind) {
                (Some(wanted), Some(kind)) => wanted == kind,
                _ => true,
            };
            if for_kind && keys.contains(&first.name.as_str()) {
                set(doc, &item.path, item.value.clone())?;
            }
        }
        Ok(())
    }
}

fn bad(span: &Span, message: &str, label: &str, help: &str) -> DefsError {
    DefsErrorKind::BadOverride {
        src: span.src(),
        span: span.ss(),
        message: message.to_owned(),
        label: label.to_owned(),
        help: help.to_owned(),
    }
    .into()
}

const SET_HELP: &str = "write `--set key.path=value`, such as `--set epoch=1700000000`, `--set output.level=3` or `--set layers[0]=//layers:motd`";

fn parse_value(file: &Arc<SourceFile>, offset: usize) -> Result<Value, DefsError> {
    let text = file.text().get(offset..).unwrap_or("");
    if text.trim().is_empty() {
        // An empty document would read as an empty map; `key=` means "no value".
        let span = Span {
            file: Arc::clone(file),
            start: offset,
            end: offset,
            line: 1,
            col: u32::try_from(offset + 1).unwrap_or(u32::MAX),
        };
        return Ok(Value::scalar("", Style::Plain, span));
    }
    yaml::parse_at(file, offset)
}

fn parse_set(arg: &str, known_keys: &[&str]) -> Result<Override, DefsError> {
    let file = SourceFile::new(Origin::Cli { arg: arg.to_owned() }, arg);
    let whole = Span {
        file: Arc::clone(&file),
        start: 0,
        end: arg.len(),
        line: 1,
        col: 1,
    };
    let Some(eq) = arg.find('=') else {
        return Err(bad(
            &whole,
            "no `=` in `--set` argument",
            "expected `key=value`",
            SET_HELP,
        ));
    };
    let path = parse_path(&file, &arg[..eq])?;
    if let Some(Segment::Key(first)) = path.first() {
        if !known_keys.contains(&first.name.as_str()) {
            return Err(bad(
                &first.span,
                &format!("no target kind has a key `{}`", first.name),
                "unknown key",
                &suggest::help_for(&first.name, known_keys, "keys"),
            ));
        }
    }
    let value = parse_value(&file, eq + 1)?;
    Ok(Override {
        path,
        value,
        kind: None,
    })
}

/// Parses `a.b[1].c` with a span per segment.
fn parse_path(file: &Arc<SourceFile>, path: &str) -> Result<Vec<Segment>, DefsError> {
    let span = |start: usize, end: usize| Span {
        file: Arc::clone(file),
        start,
        end,
        line: 1,
        col: u32::try_from(start + 1).unwrap_or(u32::MAX),
    };
    let mut segments = Vec::new();
    let mut pos = 0;
    let bytes = path.as_bytes();
    loop {
        let start = pos;
        while pos < bytes.len() && !matches!(bytes[pos], b'.' | b'[') {
            pos += 1;
        }
        let name = &path[start..pos];
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !name_ok {
            return Err(bad(
                &span(start, pos.max(start + 1).min(path.len().max(start))),
                "invalid key path",
                "expected a key of letters, digits, `_` or `-`",
                SET_HELP,
            ));
        }
        segments.push(Segment::Key(Key {
            name: name.to_owned(),
            span: span(start, pos),
        }));
        while pos < bytes.len() && bytes[pos] == b'[' {
            let open = pos;
            let Some(close) = path[open..].find(']').map(|i| open + i) else {
                return Err(bad(
                    &span(open, path.len()),
                    "invalid key path",
                    "`[` is never closed",
                    SET_HELP,
                ));
            };
            let Ok(index) = path[open + 1..close].parse::<usize>() else {
                return Err(bad(
                    &span(open, close + 1),
                    "invalid key path",
                    "expected a list index",
                    SET_HELP,
                ));
            };
            segments.push(Segment::Index(index, span(open, close + 1)));
            pos = close + 1;
        }
        if pos == bytes.len() {
            return Ok(segments);
        }
        if bytes[pos] != b'.' {
            return Err(bad(
                &span(pos, pos + 1),
                "invalid key path",
                "expected `.` or `[`",
                SET_HELP,
            ));
        }
        pos += 1;
    }
}

/// Sets `path` under `node` to `value`, creating maps on the way.
fn set(node: &mut Value, path: &[Segment], value: Value) -> Result<(), DefsError> {
    let Some((segment, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    if node.is_null() && matches!(segment, Segment::Key(_)) {
        node.node = Node::Map(Vec::new());
    }
    let describe = node.describe();
    match (segment, &mut node.node) {
        (Segment::Key(key), Node::Map(entries)) => {
            let i = match entries.iter().position(|e| e.key.name == key.name) {
                Some(i) => {
                    if rest.is_empty() {
                        entries[i].key = key.clone();
                    }
                    i
                }
                None => {
                    let placeholder = Value::scalar("", Style::Plain, key.span.clone());
                    entries.push(Entry {
                        key: key.clone(),
                        value: placeholder,
                    });
                    entries.len() - 1
                }
            };
            set(&mut entries[i].value, rest, value)
        }
        (Segment::Index(index, span), Node::Seq(items)) => {
            let len = items.len();
            if *index == len && rest.is_empty() {
                items.push(value);
                return Ok(());
            }
            match items.get_mut(*index) {
                Some(item) => set(item, rest, value),
                None => Err(bad(
                    span,
                    &format!("index {index} is past the end of a list of {len}"),
                    "no such item",
                    "an index may name an existing item, or one past the last to append",
                )),
            }
        }
        (segment, _) => Err(bad(
            segment.span(),
            &format!("cannot set this inside {describe}"),
            match segment {
                Segment::Key(_) => "not a map",
                Segment::Index(..) => "not a list",
            },
            SET_HELP,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &["epoch", "output", "layers", "config", "files"];

    fn doc(text: &str) -> Value {
        yaml::parse(&SourceFile::new(
            Origin::File {
                path: "t.yaml".into(),
            },
            text,
        ))
        .unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn text_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
        let mut v = v;
        for key in path {
            v = &v.get(key).unwrap().value;
        }
        &v.as_scalar().unwrap().text
    }

    #[test]
    fn cli_beats_env_beats_file() {
        let mut d = doc("epoch: 1\noutput: {format: tar}\n");
        let o = Overrides::new(
            &env(&[
                ("W4B_EPOCH", "2"),
                ("W4B_OUTPUT_FORMAT", "tar"),
                ("UNRELATED", "x"),
            ]),
            &["epoch=3".to_owned()],
            KEYS,
        )
        .unwrap();
        o.apply(&mut d, KEYS).unwrap();
        assert_eq!(text_at(&d, &["epoch"]), "3");
        assert_eq!(
            d.get("epoch").unwrap().value.span.location().to_string(),
            "--set epoch=3"
        );
        assert_eq!(
            d.get("output")
                .unwrap()
                .value
                .get("format")
                .unwrap()
                .value
                .span
                .location()
                .to_string(),
            "env W4B_OUTPUT_FORMAT"
        );
        let o = Overrides::new(&env(&[("W4B_EPOCH", "2")]), &[], KEYS).unwrap();
        let mut d = doc("epoch: 1\n");
        o.apply(&mut d, KEYS).unwrap();
        assert_eq!(text_at(&d, &["epoch"]), "2");
    }

    #[test]
    fn paths_create_maps_and_index_lists() {
        let mut d = doc("layers: ['//a:b', '//a:c']\n");
        let sets = [
            "layers[1]=//x:y".to_owned(),
            "layers[2]=//x:z".to_owned(),
            "config.site.name=north".to_owned(),
            "output={format: tar, level: 3}".to_owned(),
        ];
        Overrides::new(&BTreeMap::new(), &sets, KEYS)
            .unwrap()
            .apply(&mut d, KEYS)
            .unwrap();
        let Node::Seq(items) = &d.get("layers").unwrap().value.node else {
            panic!()
        };
        let layers: Vec<_> = items
            .iter()
            .map(|i| i.as_scalar().unwrap().text.as_str())
            .collect();
        assert_eq!(layers, ["//a:b", "//x:y", "//x:z"]);
        assert_eq!(text_at(&d, &["config", "site", "name"]), "north");
        assert_eq!(text_at(&d, &["output", "level"]), "3");
        let mut d = doc("layers: []\n");
        Overrides::new(
            &BTreeMap::new(),
            &["layers=[//layers:a, //layers:b]".to_owned()],
            KEYS,
        )
        .unwrap()
        .apply(&mut d, KEYS)
        .unwrap();
        let Node::Seq(items) = &d.get("layers").unwrap().value.node else {
            panic!()
        };
        assert_eq!(items[1].as_scalar().unwrap().text, "//layers:b");
    }

    #[test]
    fn overrides_skip_kinds_without_the_key() {
        let mut d = doc("files: []\n");
        let o = Overrides::new(&env(&[("W4B_EPOCH", "2")]), &[], KEYS).unwrap();
        o.apply(&mut d, &["files"]).unwrap();
        assert!(d.get("epoch").is_none());
    }

    #[test]
    fn bad_overrides_are_diagnosed() {
        let e = BTreeMap::new();
        for (arg, label) in [
            ("epoch", "expected `key=value`"),
            ("epoc=1", "unknown key"),
            ("output..format=tar", "expected a key"),
            ("layers[x]=1", "expected a list index"),
            ("layers[1=1", "never closed"),
        ] {
            let err = Overrides::new(&e, &[arg.to_owned()], KEYS).unwrap_err();
            match err.kind() {
                DefsErrorKind::BadOverride { label: l, .. } => {
                    assert!(l.contains(label), "{arg}: {l}")
                }
                other => panic!("{arg}: {other:?}"),
            }
        }
        let err = Overrides::new(&e, &["epoc=1".to_owned()], KEYS).unwrap_err();
        let DefsErrorKind::BadOverride { help, .. } = err.kind() else {
            panic!()
        };
        assert_eq!(help, "did you mean `epoch`?");
        let mut d = doc("epoch: 1\nlayers: []\n");
        let o = Overrides::new(&e, &["epoch.x=1".to_owned()], KEYS).unwrap();
        assert!(o.apply(&mut d, KEYS).is_err());
        let o = Overrides::new(&e, &["layers[3]=1".to_owned()], KEYS).unwrap();
        assert!(o.apply(&mut d, KEYS).is_err());
    }
}
