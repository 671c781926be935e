//! A YAML document as a tree whose every node and every map key knows its source span.
//!
//! The `saphyr` loaders build trees that forget where a value was written and silently keep
//! one of two duplicate keys, so definitions are parsed here from `saphyr-parser`'s spanned
//! events instead. Scalars keep their source text and style; they are resolved to null, bool,
//! int, float or string only when a consumer asks (see [`Scalar::resolve`]), so a plain
//! `mode: 0644` reaches a string field as `"0644"` rather than the integer 644.
//!
//! Supported: one document per file, block and flow collections, all scalar styles, anchors
//! and aliases, and the `!!str` tag. Rejected with a diagnostic: other tags, non-scalar keys,
//! several documents, duplicate keys, nesting deeper than [`MAX_DEPTH`] and trees of more
//! than [`MAX_NODES`] values.
//!
//! An alias is a copy of its anchor's tree, so nine anchors that each alias the previous one
//! nine times ("billion laughs") stand for 9⁹ values written in a few hundred bytes. Every
//! node counts against [`MAX_NODES`] when it is built, an alias as the size of the tree it
//! copies, *before* the copy is made: such a file fails after at most [`MAX_NODES`] values,
//! never after gigabytes. Everything here is linear in the input: duplicate keys are found
//! through a per-map index, not by scanning the keys already read.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Tag};

use super::error::{DefsError, DefsErrorKind};
use super::span::{SourceFile, Span};

/// How deep collections may nest; deeper input is rejected rather than risking the stack.
pub const MAX_DEPTH: usize = 64;

/// How many values (scalars, lists, maps) one document may hold, an alias counting as every
/// value of the tree it copies. A node of the tree takes about 100 bytes, so this bounds a
/// parsed file at about 100 MB; the largest definitions in real use hold a few thousand.
pub const MAX_NODES: usize = 1_000_000;

/// A node of the document and the span it was written at.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub node: Node,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Scalar(Scalar),
    Seq(Vec<Value>),
    Map(Vec<Entry>),
}

/// One `key: value` pair of a map, in source order.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: Key,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

/// A scalar's text as written (after YAML unescaping) and whether it was quoted.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub text: String,
    pub style: Style,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Unquoted: subject to core-schema resolution (`null`, `true`, `12`, `1.5`).
    Plain,
    /// Single- or double-quoted, `|`/`>` block, or tagged `!!str`: always a string.
    Quoted,
}

/// A scalar resolved by the YAML 1.2 core schema.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// Integers above `i64::MAX`.
    UInt(u64),
    Float(f64),
    Str(&'a str),
}

impl Scalar {
    /// The core-schema meaning of the scalar (quoted scalars are always strings).
    pub fn resolve(&self) -> Resolved<'_> {
        if self.style == Style::Quoted {
            return Resolved::Str(&self.text);
        }
        let t = self.text.as_str();
        match t {
            "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
            "true" | "True" | "TRUE" => return Resolved::Bool(true),
            "false" | "False" | "FALSE" => return Resolved::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Resolved::Float(f64::INFINITY),
            "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
            ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
            _ => {}
        }
        if let Some(int) = parse_int(t) {
            return int;
        }
        if is_core_float(t) {
            if let Ok(f) = t.parse::<f64>() {
                return Resolved::Float(f);
            }
        }
        Resolved::Str(t)
    }

    pub fn is_null(&self) -> bool {
        matches!(self.resolve(), Resolved::Null)
    }
}

fn parse_int(t: &str) -> Option<Resolved<'static>> {
    let (digits, radix) = if let Some(hex) = t.strip_prefix("0x") {
        (hex, 16)
    } else if let Some(oct) = t.strip_prefix("0o") {
        (oct, 8)
    } else {
        (t, 10)
    };
    let unsigned = if radix == 10 {
        digits.strip_prefix(['-', '+']).unwrap_or(digits)
    } else {
        digits
    };
    if unsigned.is_empty() || !unsigned.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    if let Ok(i) = i64::from_str_radix(digits, radix) {
        return Some(Resolved::Int(i));
    }
    u64::from_str_radix(digits.strip_prefix('+').unwrap_or(digits), radix)
        .ok()
        .map(Resolved::UInt)
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` without a regex engine.
fn is_core_float(t: &str) -> bool {
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match frac {
        None => !int.is_empty() && digits(int),
        Some(frac) => digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

impl Value {
    pub fn scalar(text: impl Into<String>, style: Style, span: Span) -> Value {
        Value {
            node: Node::Scalar(Scalar {
                text: text.into(),
                style,
            }),
            span,
        }
    }

    /// An empty map, for documents that are empty files.
    pub fn empty_map(span: Span) -> Value {
        Value {
            node: Node::Map(Vec::new()),
            span,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.node, Node::Scalar(s) if s.is_null())
    }

    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.node {
            Node::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.node {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The entry for `key`, if this is a map holding it.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.as_map()?.iter().find(|e| e.key.name == key)
    }

    /// Removes and returns the entry for `key`, if this is a map holding it.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        match &mut self.node {
            Node::Map(entries) => {
                let i = entries.iter().position(|e| e.key.name == key)?;
                Some(entries.remove(i))
            }
            _ => None,
        }
    }

    /// A short description for "expected …, found …" messages.
    pub fn describe(&self) -> String {
        match &self.node {
            Node::Map(_) => "a map".into(),
            Node::Seq(_) => "a list".into(),
            Node::Scalar(s) => match s.resolve() {
                Resolved::Null => "nothing (null)".into(),
                Resolved::Bool(b) => format!("boolean `{b}`"),
                Resolved::Int(i) => format!("integer `{i}`"),
                Resolved::UInt(u) => format!("integer `{u}`"),
                Resolved::Float(f) => format!("number `{f}`"),
                Resolved::Str(s) => format!("string {s:?}"),
            },
        }
    }
}

/// Parses the whole of `file` as one YAML document. An empty file is an empty map.
pub fn parse(file: &Arc<SourceFile>) -> Result<Value, DefsError> {
    parse_at(file, 0)
}

/// Parses `file.text()[offset..]` as one YAML document, with spans into the whole text. Used
/// for the value part of `--set key=value`, so errors underline the value inside the argument.
pub fn parse_at(file: &Arc<SourceFile>, offset: usize) -> Result<Value, DefsError> {
    let text = file.text();
    let part = text.get(offset..).unwrap_or("");
    let mut builder = Builder {
        file: Arc::clone(file),
        positions: Positions::new(part, offset, text.get(..offset).unwrap_or("")),
        parser: Parser::new_from_str(part),
        anchors: BTreeMap::new(),
        nodes: 0,
        deepest: 0,
    };
    builder.document()
}

/// Converts saphyr's character-indexed markers into byte offsets, lines and columns.
struct Positions {
    /// Byte offset of each character of the parsed part, when it is not pure ASCII.
    char_starts: Option<Vec<usize>>,
    part_len: usize,
    offset: usize,
    /// Characters before the parsed part on its first line.
    first_line_cols: u32,
}

impl Positions {
    fn new(part: &str, offset: usize, before: &str) -> Positions {
        let char_starts = (!part.is_ascii()).then(|| part.char_indices().map(|(i, _)| i).collect());
        let first_line_cols = before.rsplit('\n').next().unwrap_or("").chars().count();
        Positions {
            char_starts,
            part_len: part.len(),
            offset,
            first_line_cols: u32::try_from(first_line_cols).unwrap_or(u32::MAX),
        }
    }

    fn byte(&self, marker: &Marker) -> usize {
        let i = marker.index();
        let within = match &self.char_starts {
            None => i.min(self.part_len),
            Some(starts) => starts.get(i).copied().unwrap_or(self.part_len),
        };
        self.offset + within
    }

    fn span(&self, file: &Arc<SourceFile>, start: &Marker, end: &Marker) -> Span {
        let line = u32::try_from(start.line().max(1)).unwrap_or(u32::MAX);
        let mut col = u32::try_from(start.col() + 1).unwrap_or(u32::MAX);
        if line == 1 {
            col = col.saturating_add(self.first_line_cols);
        }
        let start_byte = self.byte(start);
        Span {
            file: Arc::clone(file),
            start: start_byte,
            end: self.byte(end).max(start_byte),
            line,
            col,
        }
    }
}

struct Builder<'a> {
    file: Arc<SourceFile>,
    positions: Positions,
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: BTreeMap<usize, Anchored>,
    /// Values built so far, aliases counted as the size of what they copy.
    nodes: usize,
    /// The deepest level reached inside the node being built.
    deepest: usize,
}

/// A tree written with an anchor (`&name`), for the aliases (`*name`) that copy it.
struct Anchored {
    value: Value,
    /// How many values it holds, copies included.
    size: usize,
    /// How many levels it nests below its root.
    height: usize,
}

type Spanned<'a> = (Event<'a>, saphyr_parser::Span);

impl<'a> Builder<'a> {
    fn span(&self, span: &saphyr_parser::Span) -> Span {
        self.positions.span(&self.file, &span.start, &span.end)
    }

    fn next(&mut self) -> Result<Spanned<'a>, DefsError> {
        match self.parser.next_event() {
            Some(Ok(event)) => Ok(event),
            Some(Err(e)) => {
                let at = self.positions.span(&self.file, e.marker(), e.marker());
                Err(DefsErrorKind::Syntax {
                    src: at.src(),
                    span: at.ss(),
                    message: e.info().to_owned(),
                }
                .into())
            }
            None => {
                let end = Marker::new(usize::MAX, 1, 0);
                let at = self.positions.span(&self.file, &end, &end);
                Err(DefsErrorKind::Syntax {
                    src: at.src(),
                    span: at.ss(),
                    message: "unexpected end of input".into(),
                }
                .into())
            }
        }
    }

    fn unsupported(&self, span: &Span, message: &str, help: Option<&str>) -> DefsError {
        DefsErrorKind::UnsupportedYaml {
            src: span.src(),
            span: span.ss(),
            message: message.into(),
            help: help.map(str::to_owned),
        }
        .into()
    }

    fn document(&mut self) -> Result<Value, DefsError> {
        let mut root: Option<Value> = None;
        loop {
            let (event, raw) = self.next()?;
            match event {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => break,
                Event::DocumentStart(_) => {
                    if root.is_some() {
                        let at = self.span(&raw);
                        return Err(self.unsupported(
                            &at,
                            "a definition file holds exactly one YAML document",
                            Some("remove the `---` separator and everything after it, or move it to its own file"),
                        ));
                    }
                    let (event, raw) = self.next()?;
                    root = Some(self.node(event, raw, 0)?);
                }
                _ => {
                    let at = self.span(&raw);
                    return Err(self.unsupported(&at, "unexpected YAML event", None));
                }
            }
        }
        let empty = self
            .positions
            .span(&self.file, &Marker::new(0, 1, 0), &Marker::new(0, 1, 0));
        Ok(root.unwrap_or_else(|| Value::empty_map(empty)))
    }

    fn check_tag(&self, tag: Option<&Cow<'_, Tag>>, at: &Span, scalar: bool) -> Result<bool, DefsError> {
        let Some(tag) = tag else { return Ok(false) };
        if scalar && tag.is_yaml_core_schema() && tag.suffix == "str" {
            return Ok(true);
        }
        Err(self.unsupported(
            at,
            &format!("YAML tag `{tag}` is not supported"),
            Some("remove the tag; quote a scalar to make it a string"),
        ))
    }

    fn node(&mut self, event: Event<'a>, raw: saphyr_parser::Span, depth: usize) -> Result<Value, DefsError> {
        let at = self.span(&raw);
        let too_deep =
            |b: &Self| b.unsupported(&at, &format!("nesting deeper than {MAX_DEPTH} levels"), None);
        if depth > MAX_DEPTH {
            return Err(too_deep(self));
        }
        if let Event::Alias(id) = event {
            let Some(anchored) = self.anchors.get(&id) else {
                return Err(self.unsupported(&at, "alias to an unknown anchor", None));
            };
            // The copy lands `depth` levels down: it must fit the nesting limit as written
            // here, or chained aliases would build trees deep enough to exhaust the stack.
            if depth + anchored.height > MAX_DEPTH {
                return Err(too_deep(self));
            }
            count(&mut self.nodes, anchored.size, &at, true)?;
            self.deepest = self.deepest.max(depth + anchored.height);
            return Ok(anchored.value.clone());
        }
        count(&mut self.nodes, 1, &at, false)?;
        let (start, outer_deepest) = (self.nodes, self.deepest);
        self.deepest = depth;
        let (value, anchor) = self.build(event, at, depth)?;
        let height = self.deepest - depth;
        self.deepest = self.deepest.max(outer_deepest);
        if anchor != 0 {
            let anchored = Anchored {
                value: value.clone(),
                size: self.nodes - start + 1,
                height,
            };
            self.anchors.insert(anchor, anchored);
        }
        Ok(value)
    }

    /// The value of a scalar or collection event, and the anchor it defines (0: none).
    fn build(&mut self, event: Event<'a>, at: Span, depth: usize) -> Result<(Value, usize), DefsError> {
        Ok(match event {
            Event::Scalar(text, style, anchor, tag) => {
                let forced = self.check_tag(tag.as_ref(), &at, true)?;
                let style = if forced || style != ScalarStyle::Plain {
                    Style::Quoted
                } else {
                    Style::Plain
                };
                (Value::scalar(text.into_owned(), style, at), anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_tag(tag.as_ref(), &at, false)?;
                let mut items = Vec::new();
                let mut end = at.clone();
                loop {
                    let (event, raw) = self.next()?;
                    if event == Event::SequenceEnd {
                        let close = self.span(&raw);
                        end = if close.end > close.start {
                            close
                        } else {
                            items.last().map_or(end, |v: &Value| v.span.clone())
                        };
                        break;
                    }
                    items.push(self.node(event, raw, depth + 1)?);
                }
                let span = join(&at, &end);
                (
                    Value {
                        node: Node::Seq(items),
                        span,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, tag) => {
                self.check_tag(tag.as_ref(), &at, false)?;
                let mut entries: Vec<Entry> = Vec::new();
                // Key → index in `entries`, for the duplicate check in O(log n).
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                let mut end = at.clone();
                loop {
                    let (event, raw) = self.next()?;
                    if event == Event::MappingEnd {
                        let close = self.span(&raw);
                        end = if close.end > close.start {
                            close
                        } else {
                            entries.last().map_or(end, |e| e.value.span.clone())
                        };
                        break;
                    }
                    let key_span = self.span(&raw);
                    let name = match event {
                        Event::Scalar(text, _, _, tag) => {
                            self.check_tag(tag.as_ref(), &key_span, true)?;
                            text.into_owned()
                        }
                        _ => return Err(self.unsupported(&key_span, "map keys must be plain strings", None)),
                    };
                    if let Some(first) = seen.get(&name).and_then(|&i| entries.get(i)) {
                        return Err(DefsErrorKind::DuplicateKey {
                            src: key_span.src(),
                            span: key_span.ss(),
                            first: first.key.span.ss(),
                            key: name,
                        }
                        .into());
                    }
                    seen.insert(name.clone(), entries.len());
                    let (event, raw) = self.next()?;
                    let value = self.node(event, raw, depth + 1)?;
                    entries.push(Entry {
                        key: Key { name, span: key_span },
                        value,
                    });
                }
                let span = join(&at, &end);
                (
                    Value {
                        node: Node::Map(entries),
                        span,
                    },
                    anchor,
                )
            }
            _ => return Err(self.unsupported(&at, "unexpected YAML event", None)),
        })
    }
}

/// Counts `n` more values in `nodes`, failing at `at` once the document holds more than
/// [`MAX_NODES`]. Called before the values are built, so a copy that would pass the limit
/// is never made.
fn count(nodes: &mut usize, n: usize, at: &Span, alias: bool) -> Result<(), DefsError> {
    *nodes = nodes.saturating_add(n);
    if *nodes <= MAX_NODES {
        return Ok(());
    }
    Err(DefsErrorKind::TooManyValues {
        src: at.src(),
        span: at.ss(),
        file: at.file.display_name(),
        limit: MAX_NODES,
        label: if alias {
            format!("this alias copies {n} values")
        } else {
            "the limit is passed here".to_owned()
        },
    }
    .into())
}

/// The span from the start of `a` to the end of `b`.
fn join(a: &Span, b: &Span) -> Span {
    Span {
        end: b.end.max(a.start),
        ..a.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::span::Origin;

    fn file(text: &str) -> Arc<SourceFile> {
        SourceFile::new(
            Origin::File {
                path: "t.yaml".into(),
            },
            text,
        )
    }

    fn parse_str(text: &str) -> Result<Value, DefsError> {
        parse(&file(text))
    }

    #[test]
    fn spans_are_byte_offsets_with_one_based_lines_and_columns() {
        let v = parse_str("# c\nkind: layer\nfiles:\n  - {path: /é, mode: 0644}\n").unwrap();
        let files = &v.get("files").unwrap().value;
        let Node::Seq(items) = &files.node else {
            panic!("not a seq")
        };
        let entry = &items[0];
        assert_eq!(entry.span.snippet(), "{path: /é, mode: 0644}");
        let mode = entry.get("mode").unwrap();
        assert_eq!(mode.key.span.snippet(), "mode");
        assert_eq!(mode.value.span.snippet(), "0644");
        assert_eq!((mode.value.span.line, mode.value.span.col), (4, 22));
        let kind = v.get("kind").unwrap();
        assert_eq!((kind.key.span.line, kind.key.span.col), (2, 1));
        assert_eq!(kind.value.span.location().to_string(), "t.yaml:2:7");
    }

    #[test]
    fn plain_scalars_resolve_by_the_core_schema_and_quoted_ones_stay_strings() {
        let v = parse_str("a: 0644\nb: '0644'\nc: ~\nd:\ne: true\nf: 1.5e3\ng: 0x1F\nh: 1.2.3\n").unwrap();
        let r = |k: &str| v.get(k).unwrap().value.as_scalar().unwrap().clone();
        assert_eq!(r("a").resolve(), Resolved::Int(644));
        assert_eq!(r("a").text, "0644");
        assert_eq!(r("b").resolve(), Resolved::Str("0644"));
        assert_eq!(r("c").resolve(), Resolved::Null);
        assert_eq!(r("d").resolve(), Resolved::Null);
        assert_eq!(r("e").resolve(), Resolved::Bool(true));
        assert_eq!(r("f").resolve(), Resolved::Float(1500.0));
        assert_eq!(r("g").resolve(), Resolved::Int(31));
        assert_eq!(r("h").resolve(), Resolved::Str("1.2.3"));
    }

    #[test]
    fn duplicate_keys_point_at_the_second_key() {
        let err = parse_str("a: 1\nb: 2\na: 3\n").unwrap_err();
        match err.kind() {
            DefsErrorKind::DuplicateKey { span, first, key, .. } => {
                assert_eq!(key, "a");
                assert_eq!(span.offset(), 10);
                assert_eq!(first.offset(), 0);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn empty_files_are_empty_maps_and_aliases_are_copied() {
        assert_eq!(parse_str("").unwrap().as_map().map(<[Entry]>::len), Some(0));
        assert_eq!(
            parse_str("# only a comment\n")
                .unwrap()
                .as_map()
                .map(<[Entry]>::len),
            Some(0)
        );
        let v = parse_str("x: &a [1, 2]\ny: *a\n").unwrap();
        let Node::Seq(items) = &v.get("y").unwrap().value.node else {
            panic!()
        };
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn unsupported_constructs_are_rejected() {
        for bad in ["a: 1\n---\nb: 2\n", "a: !custom 1\n", "? [1]\n: 2\n", "a: [1,\n"] {
            assert!(parse_str(bad).is_err(), "{bad:?} was accepted");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse_str(&deep).is_err());
    }

    /// Nine anchors, each a list aliasing the previous one nine times: 9⁹ values.
    fn alias_bomb() -> String {
        let mut s = String::from("a0: &a0 [lol]\n");
        for level in 1..=9 {
            let items = vec![format!("*a{}", level - 1); 9].join(", ");
            s.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        s
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_is_expanded() {
        let text = alias_bomb();
        let err = parse_str(&text).unwrap_err();
        let DefsErrorKind::TooManyValues {
            span, file, limit, ..
        } = err.kind()
        else {
            panic!("unexpected {err:?}")
        };
        assert_eq!((file.as_str(), *limit), ("t.yaml", MAX_NODES));
        // It points at the alias that would pass the limit: level 6 lists nine copies of
        // level 5's 125,479 values, and the seventh passes 10⁶.
        let at = &text[span.offset()..span.offset() + span.len()];
        assert_eq!(at, "*a5");
        let line = text[..span.offset()].matches('\n').count() + 1;
        assert_eq!(line, 7, "{at:?} on line {line}");
    }

    #[test]
    fn aliases_count_as_the_values_they_copy() {
        // The map, the anchored list (1 + 3 items) and two copies of it.
        let text = "x: &a [1, 2, 3]\ny: *a\nz: *a\n";
        let mut b = Builder {
            file: file(text),
            positions: Positions::new(text, 0, ""),
            parser: Parser::new_from_str(text),
            anchors: BTreeMap::new(),
            nodes: 0,
            deepest: 0,
        };
        b.document().unwrap();
        assert_eq!(b.nodes, 1 + 4 * 3);
    }

    #[test]
    fn chained_aliases_cannot_nest_deeper_than_the_limit() {
        // Each anchor is a list 40 levels deep holding the previous anchor: written, no
        // level is deeper than 41, but the copies would nest 120 deep.
        let deep = |inner: &str| format!("{}{inner}{}", "[".repeat(40), "]".repeat(40));
        let text = format!(
            "a: &a {}\nb: &b {}\nc: &c {}\n",
            deep("1"),
            deep("*a"),
            deep("*b")
        );
        let err = parse_str(&text).unwrap_err();
        assert!(err.to_string().contains("nesting deeper than 64 levels"), "{err}");
        assert!(parse_str(&format!("a: &a {}\nb: {}\n", deep("1"), "[*a]")).is_ok());
    }

    #[test]
    fn a_large_map_is_read_whole_and_its_duplicate_key_found() {
        let n = 40_000;
        let mut text: String = (0..n).map(|i| format!("k{i}: {i}\n")).collect();
        let v = parse_str(&text).unwrap();
        let entries = v.as_map().unwrap();
        assert_eq!(entries.len(), n);
        assert_eq!(entries[n - 1].key.name, format!("k{}", n - 1));
        assert_eq!(v.get("k12345").unwrap().value.as_scalar().unwrap().text, "12345");
        text.push_str("k7: again\n");
        match parse_str(&text).unwrap_err().kind() {
            DefsErrorKind::DuplicateKey { key, first, .. } => {
                assert_eq!(key, "k7");
                assert_eq!(
                    first.offset(),
                    "k0: 0\nk1: 1\nk2: 2\nk3: 3\nk4: 4\nk5: 5\nk6: 6\n".len()
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parse_at_offsets_spans_into_the_whole_text() {
        let f = SourceFile::new(
            Origin::Cli {
                arg: "layers=[a, b]".into(),
            },
            "layers=[a, b]",
        );
        let v = parse_at(&f, 7).unwrap();
        let Node::Seq(items) = &v.node else { panic!() };
        assert_eq!(items[1].span.snippet(), "b");
        assert_eq!(items[1].span.col, 12);
    }

    proptest::proptest! {
        // Errors are fine, panics are bugs: arbitrary text, and text built from YAML's
        // punctuation, must parse or fail cleanly, and whatever parses must type-check or
        // fail cleanly too.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_str(&text);
        }

        #[test]
        fn yaml_shaped_text_never_panics(text in "[a-z0-9:{}\\[\\], \n\"'#&*!|>-]{0,120}") {
            if let Ok(v) = parse_str(&text) {
                let _ = crate::defs::de::from_value::<std::collections::BTreeMap<String, crate::defs::ConfigValue>>(&v);
            }
        }
    }
}
