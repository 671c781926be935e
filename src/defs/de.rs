//! `serde` deserialisation of typed definitions from a spanned [`Value`] tree.
//!
//! Typed structs derive `Deserialize` as usual; this deserializer adds what definitions need
//! and `serde` alone does not give: unknown keys are rejected at the key's span with a "did
//! you mean" (checked here against the `fields` list `serde` passes to `deserialize_struct`,
//! so no struct needs `deny_unknown_fields`), and every type error is attached to the span
//! of the node being deserialised when it happened. [`Spanned<T>`] captures a field's span.
//!
//! Scalars are converted on demand: a string field takes any scalar's text as written, an
//! integer field parses a plain scalar, and `deserialize_any` (free-form maps such as
//! `config`) uses the YAML 1.2 core schema.
//!
//! [`from_value`] stops at the first problem, which suits targets. [`from_value_collecting`]
//! reads on past problems, so a reader can report every one at once (as `w4b hive validate`
//! does): every unknown key of a map is reported and skipped, and a [`Checked`] field whose
//! value fails records the failure and reads as [`Checked::Invalid`], leaving its siblings
//! to be read. [`Verbatim`] hands a reader the node as written, for values whose meaning
//! serde cannot decide (a secret that is text, `${env:NAME}` or `{file: path}`).

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::error::{DefsError, DefsErrorKind};
use super::span::Span;
use super::suggest;
use super::yaml::{Entry, Node, Resolved, Scalar, Style, Value};

/// Deserialises `T` from `value`, turning the first failure into a spanned diagnostic.
pub fn from_value<'de, T: Deserialize<'de>>(value: &'de Value) -> Result<T, DefsError> {
    T::deserialize(ValueDeserializer { value, sink: None }).map_err(|e| e.into_defs(&value.span))
}

/// Problems recorded while reading on: see [`from_value_collecting`].
type Sink = RefCell<Vec<DeError>>;

/// Deserialises `T` from `value`, reading on past problems: every unknown key is reported
/// (and skipped), and a failure inside a [`Checked`] field is recorded while the field
/// reads as [`Checked::Invalid`]. Returns the value (`None` when a failure reached the top
/// outside any `Checked`) and every problem with the span it is about, in the order met.
pub fn from_value_collecting<'de, T: Deserialize<'de>>(
    value: &'de Value,
) -> (Option<T>, Vec<(Span, DefsError)>) {
    let sink = Sink::default();
    let result = T::deserialize(ValueDeserializer {
        value,
        sink: Some(&sink),
    });
    let mut problems = sink.into_inner();
    let value_out = match result {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(e.at(&value.span));
            None
        }
    };
    let problems = problems
        .into_iter()
        .map(|e| {
            let span = e.span.clone().unwrap_or_else(|| value.span.clone());
            (span.clone(), e.into_defs(&span))
        })
        .collect();
    (value_out, problems)
}

/// A field that may fail without failing the map it is in (with [`from_value_collecting`];
/// with [`from_value`] a failure is an error as usual).
#[derive(Clone, Debug, PartialEq)]
pub enum Checked<T> {
    Valid(T),
    /// The value was there but wrong; the problem has been recorded.
    Invalid,
}

impl<T> Checked<T> {
    pub fn valid(&self) -> Option<&T> {
        match self {
            Checked::Valid(v) => Some(v),
            Checked::Invalid => None,
        }
    }

    pub fn into_valid(self) -> Option<T> {
        match self {
            Checked::Valid(v) => Some(v),
            Checked::Invalid => None,
        }
    }
}

/// The struct name by which [`Checked`] asks this deserializer to catch its failures.
const CHECKED_NAME: &str = "$__w4b_defs_Checked";

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CheckedVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for CheckedVisitor<T> {
            type Value = Checked<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            // The deserializer offers the value as a one-element sequence; an element that
            // failed (and was recorded) comes back as the end of the sequence.
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                Ok(match seq.next_element::<T>()? {
                    Some(v) => Checked::Valid(v),
                    None => Checked::Invalid,
                })
            }
        }
        d.deserialize_struct(CHECKED_NAME, &[], CheckedVisitor(std::marker::PhantomData))
    }
}

/// A node exactly as written: its scalar text and style (so `007` stays `007`), nested
/// nodes and spans. Equality looks at the whole node.
#[derive(Clone, Debug, PartialEq)]
pub struct Verbatim(pub Value);

/// The struct name by which [`Verbatim`] asks this deserializer for the node.
const VERBATIM_NAME: &str = "$__w4b_defs_Verbatim";

thread_local! {
    // The node handed from `deserialize_struct(VERBATIM_NAME)` to `Verbatim`'s visitor,
    // filled and emptied as `SPAN_SLOT` is.
    static NODE_SLOT: RefCell<Option<Value>> = const { RefCell::new(None) };
}

impl<'de> Deserialize<'de> for Verbatim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct VerbatimVisitor;
        impl<'de> Visitor<'de> for VerbatimVisitor {
            type Value = Verbatim;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node of a w4b definition")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Verbatim, E> {
                NODE_SLOT
                    .with(|slot| slot.borrow_mut().take())
                    .map(Verbatim)
                    .ok_or_else(|| E::custom("`Verbatim` can only be read from w4b definitions"))
            }
        }
        d.deserialize_struct(VERBATIM_NAME, &[], VerbatimVisitor)
    }
}

/// A value together with the span it was written at.
///
/// Equality, ordering and serialisation look at the value only: where a value was written
/// must never change what it means (nor a step key).
#[derive(Clone, Debug)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Spanned<T> {
        Spanned { value, span }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned {
            value: f(self.value),
            span: self.span,
        }
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Spanned<T> {}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// The struct name by which [`Spanned`] asks this deserializer for the current span.
const SPANNED_NAME: &str = "$__w4b_defs_Spanned";

thread_local! {
    // The span handed from `deserialize_struct(SPANNED_NAME)` to `Spanned`'s visitor. serde
    // has no side channel for non-primitive data; the slot is filled immediately before the
    // visitor runs and emptied as its first action, so nesting cannot mix spans up.
    static SPAN_SLOT: RefCell<Option<Span>> = const { RefCell::new(None) };
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SpannedVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for SpannedVisitor<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value with a source span")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                let span = SPAN_SLOT
                    .with(|slot| slot.borrow_mut().take())
                    .ok_or_else(|| de::Error::custom("`Spanned` can only be read from w4b definitions"))?;
                Ok(Spanned {
                    value: T::deserialize(d)?,
                    span,
                })
            }
        }
        d.deserialize_struct(SPANNED_NAME, &[], SpannedVisitor(std::marker::PhantomData))
    }
}

/// The top-level keys a `Deserialize` struct accepts, as `serde` reports them.
pub fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("probe"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probe"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// A deserialisation failure, attached to the innermost node it happened at.
#[derive(Debug)]
pub struct DeError {
    kind: DeErrorKind,
    span: Option<Span>,
}

#[derive(Debug)]
enum DeErrorKind {
    UnknownKey {
        key: String,
        expected: &'static [&'static str],
    },
    UnknownVariant {
        variant: String,
        expected: &'static [&'static str],
    },
    InvalidType {
        found: String,
        expected: String,
    },
    MissingField(&'static str),
    Custom(String),
}

impl DeError {
    fn new(kind: DeErrorKind) -> DeError {
        DeError { kind, span: None }
    }

    /// Attaches `span` unless an inner node already did.
    fn at(mut self, span: &Span) -> DeError {
        if self.span.is_none() {
            self.span = Some(span.clone());
        }
        self
    }

    fn into_defs(self, fallback: &Span) -> DefsError {
        let span = self.span.unwrap_or_else(|| fallback.clone());
        match self.kind {
            DeErrorKind::UnknownKey { key, expected } => DefsErrorKind::UnknownKey {
                src: span.src(),
                span: span.ss(),
                help: suggest::help_for(&key, expected, "keys"),
                key,
                context: String::new(),
            }
            .into(),
            DeErrorKind::UnknownVariant { variant, expected } => span.invalid_value(
                format!("unknown value `{variant}`"),
                format!("expected one of {}", suggest::backticked(expected)),
                Some(suggest::help_for(&variant, expected, "values")),
            ),
            DeErrorKind::InvalidType { found, expected } => {
                let expected = humanise_expected(&expected);
                DefsErrorKind::InvalidType {
                    src: span.src(),
                    span: span.ss(),
                    help: Some(type_help(&expected)),
                    expected,
                    found,
                }
                .into()
            }
            DeErrorKind::MissingField(field) => DefsErrorKind::MissingKey {
                src: span.src(),
                span: span.ss(),
                field: field.to_owned(),
                help: None,
            }
            .into(),
            DeErrorKind::Custom(message) => span.invalid_value(message, "invalid value", None),
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DeErrorKind::UnknownKey { key, .. } => write!(f, "unknown key `{key}`"),
            DeErrorKind::UnknownVariant { variant, .. } => write!(f, "unknown value `{variant}`"),
            DeErrorKind::InvalidType { found, expected } => {
                write!(f, "invalid type: expected {expected}, found {found}")
            }
            DeErrorKind::MissingField(field) => write!(f, "missing key `{field}`"),
            DeErrorKind::Custom(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<M: fmt::Display>(msg: M) -> DeError {
        DeError::new(DeErrorKind::Custom(msg.to_string()))
    }
    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> DeError {
        DeError::new(DeErrorKind::InvalidType {
            found: describe_unexpected(&unexp),
            expected: exp.to_string(),
        })
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> DeError {
        DeError::new(DeErrorKind::UnknownKey {
            key: field.to_owned(),
            expected,
        })
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> DeError {
        DeError::new(DeErrorKind::UnknownVariant {
            variant: variant.to_owned(),
            expected,
        })
    }
    fn missing_field(field: &'static str) -> DeError {
        DeError::new(DeErrorKind::MissingField(field))
    }
}

/// serde's Rust-flavoured expectations (`u64`, `a sequence`, `struct RawFile`) in YAML words.
fn humanise_expected(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "`true` or `false`".into(),
        "a sequence" => "a list".into(),
        other if other.starts_with("struct ") || other == "a map" => "a map".into(),
        other => other.to_owned(),
    }
}

/// A `help:` line saying how to write a value of the expected type.
fn type_help(expected: &str) -> String {
    if expected == "a list" {
        "write a list: `[a, b]`, or one `- item` per line".into()
    } else if expected == "a map" {
        "write a map: `{key: value}`, or one `key: value` per line".into()
    } else if expected.contains("whole number") || expected == "a number" {
        "write the number without quotes".into()
    } else if expected.contains("true") {
        "write `true` or `false` without quotes".into()
    } else if expected.contains("string") {
        "write text; quote it (`\"…\"`) if it could be read as something else".into()
    } else {
        format!("write {expected} here; `docs/defs.md` lists every key and its type")
    }
}

fn describe_unexpected(unexp: &de::Unexpected<'_>) -> String {
    match unexp {
        de::Unexpected::Str(s) => format!("string {s:?}"),
        de::Unexpected::Unit => "nothing (null)".into(),
        de::Unexpected::Seq => "a list".into(),
        de::Unexpected::Map => "a map".into(),
        other => other.to_string(),
    }
}

/// Deserialises one node; with a sink, reads on past problems (see [`from_value_collecting`]).
#[derive(Clone, Copy)]
struct ValueDeserializer<'de, 's> {
    value: &'de Value,
    sink: Option<&'s Sink>,
}

impl<'de> ValueDeserializer<'de, '_> {
    fn invalid<V: Visitor<'de>>(&self, visitor: &V) -> DeError {
        DeError::new(DeErrorKind::InvalidType {
            found: self.value.describe(),
            expected: expecting(visitor),
        })
        .at(&self.value.span)
    }

    fn plain(&self) -> Option<&'de Scalar> {
        match &self.value.node {
            Node::Scalar(s) if s.style == Style::Plain => Some(s),
            _ => None,
        }
    }

    fn span(&self) -> &'de Span {
        &self.value.span
    }
}

fn expecting<'de, V: Visitor<'de>>(visitor: &V) -> String {
    struct Expecting<'a, V>(&'a V);
    impl<'de, V: Visitor<'de>> fmt::Display for Expecting<'_, V> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.expecting(f)
        }
    }
    Expecting(visitor).to_string()
}

macro_rules! deserialize_integer {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match self.plain().map(Scalar::resolve) {
                Some(Resolved::Int(i)) => visitor.visit_i64(i),
                Some(Resolved::UInt(u)) => visitor.visit_u64(u),
                _ => Err(self.invalid(&visitor)),
            }
            .map_err(|e| e.at(self.span()))
        }
    )*};
}

impl<'de> Deserializer<'de> for ValueDeserializer<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.value.node {
            Node::Scalar(s) => match s.resolve() {
                Resolved::Null => visitor.visit_unit(),
                Resolved::Bool(b) => visitor.visit_bool(b),
                Resolved::Int(i) => visitor.visit_i64(i),
                Resolved::UInt(u) => visitor.visit_u64(u),
                Resolved::Float(f) => visitor.visit_f64(f),
                Resolved::Str(_) => visitor.visit_borrowed_str(&s.text),
            },
            Node::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
                sink: self.sink,
            }),
            Node::Map(entries) => visitor.visit_map(MapAccess {
                entries: entries.iter(),
                pending: None,
                sink: self.sink,
                known: None,
            }),
        };
        result.map_err(|e| e.at(self.span()))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain().map(Scalar::resolve) {
            Some(Resolved::Bool(b)) => visitor.visit_bool(b),
            _ => Err(self.invalid(&visitor)),
        }
        .map_err(|e| e.at(self.span()))
    }

    deserialize_integer!(
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    );

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain().map(Scalar::resolve) {
            Some(Resolved::Float(f)) => visitor.visit_f64(f),
            Some(Resolved::Int(i)) => visitor.visit_i64(i),
            Some(Resolved::UInt(u)) => visitor.visit_u64(u),
            _ => Err(self.invalid(&visitor)),
        }
        .map_err(|e| e.at(self.span()))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    /// Any non-null scalar is text as written: `mode: 0644` reads as `"0644"`.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.value.node {
            Node::Scalar(s) if !s.is_null() => visitor.visit_borrowed_str(&s.text),
            _ => Err(self.invalid(&visitor)),
        }
        .map_err(|e| e.at(self.span()))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        Err(self.invalid(&visitor))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        Err(self.invalid(&visitor))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.value.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
        .map_err(|e| e.at(self.span()))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.value.is_null() {
            visitor.visit_unit().map_err(|e: DeError| e.at(self.span()))
        } else {
            Err(self.invalid(&visitor))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self).map_err(|e| e.at(self.span()))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.value.node {
            Node::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
                sink: self.sink,
            }),
            _ => Err(self.invalid(&visitor)),
        }
        .map_err(|e| e.at(self.span()))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.value.node {
            Node::Map(entries) => visitor.visit_map(MapAccess {
                entries: entries.iter(),
                pending: None,
                sink: self.sink,
                known: None,
            }),
            _ => Err(self.invalid(&visitor)),
        }
        .map_err(|e| e.at(self.span()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == SPANNED_NAME {
            SPAN_SLOT.with(|slot| *slot.borrow_mut() = Some(self.value.span.clone()));
            let result = visitor.visit_newtype_struct(self);
            SPAN_SLOT.with(|slot| slot.borrow_mut().take());
            return result;
        }
        if name == CHECKED_NAME {
            return visitor.visit_seq(CheckedAccess {
                value: Some(self.value),
                sink: self.sink,
            });
        }
        if name == VERBATIM_NAME {
            NODE_SLOT.with(|slot| *slot.borrow_mut() = Some(self.value.clone()));
            let result = visitor.visit_unit();
            NODE_SLOT.with(|slot| slot.borrow_mut().take());
            return result;
        }
        let Node::Map(entries) = &self.value.node else {
            return Err(self.invalid(&visitor));
        };
        // Reject unknown keys here, with the key's own span, before serde sees them: the
        // first as the error, or, reading on, every one as a problem while the map's known
        // keys are read.
        let unknown = |e: &&Entry| !fields.contains(&e.key.name.as_str());
        let known = match self.sink {
            None => {
                if let Some(unknown) = entries.iter().find(unknown) {
                    return Err(DeError::new(DeErrorKind::UnknownKey {
                        key: unknown.key.name.clone(),
                        expected: fields,
                    })
                    .at(&unknown.key.span));
                }
                None
            }
            Some(sink) => {
                for e in entries.iter().filter(unknown) {
                    sink.borrow_mut().push(
                        DeError::new(DeErrorKind::UnknownKey {
                            key: e.key.name.clone(),
                            expected: fields,
                        })
                        .at(&e.key.span),
                    );
                }
                Some(fields)
            }
        };
        visitor
            .visit_map(MapAccess {
                entries: entries.iter(),
                pending: None,
                sink: self.sink,
                known,
            })
            .map_err(|e| e.at(self.span()))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.value.node {
            Node::Scalar(s) if !s.is_null() => visitor.visit_enum(EnumAccess {
                variant: &s.text,
                variant_span: &self.value.span,
                content: None,
                sink: self.sink,
            }),
            Node::Map(entries) if entries.len() == 1 => visitor.visit_enum(EnumAccess {
                variant: &entries[0].key.name,
                variant_span: &entries[0].key.span,
                content: Some(&entries[0].value),
                sink: self.sink,
            }),
            _ => Err(self.invalid(&visitor)),
        }
        .map_err(|e| e.at(self.span()))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

/// A [`Checked`] value, offered as a sequence of one element that ends early when the
/// element failed and the failure was recorded.
struct CheckedAccess<'de, 's> {
    value: Option<&'de Value>,
    sink: Option<&'s Sink>,
}

impl<'de> de::SeqAccess<'de> for CheckedAccess<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        let Some(value) = self.value.take() else {
            return Ok(None);
        };
        match seed.deserialize(ValueDeserializer {
            value,
            sink: self.sink,
        }) {
            Ok(v) => Ok(Some(v)),
            Err(e) => match self.sink {
                Some(sink) => {
                    sink.borrow_mut().push(e.at(&value.span));
                    Ok(None)
                }
                None => Err(e.at(&value.span)),
            },
        }
    }
}

struct SeqAccess<'de, 's> {
    items: std::slice::Iter<'de, Value>,
    sink: Option<&'s Sink>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(value) => seed
                .deserialize(ValueDeserializer {
                    value,
                    sink: self.sink,
                })
                .map(Some)
                .map_err(|e| e.at(&value.span)),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'de, 's> {
    entries: std::slice::Iter<'de, Entry>,
    pending: Option<&'de Entry>,
    sink: Option<&'s Sink>,
    /// Reading on: the keys to read (the others were reported as unknown).
    known: Option<&'static [&'static str]>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let known = self.known;
        let Some(entry) = self
            .entries
            .find(|e| known.is_none_or(|k| k.contains(&e.key.name.as_str())))
        else {
            return Ok(None);
        };
        self.pending = Some(entry);
        let key = de::value::BorrowedStrDeserializer::<DeError>::new(entry.key.name.as_str());
        seed.deserialize(key).map(Some).map_err(|e| e.at(&entry.key.span))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let entry = self
            .pending
            .take()
            .ok_or_else(|| de::Error::custom("map value requested before its key"))?;
        seed.deserialize(ValueDeserializer {
            value: &entry.value,
            sink: self.sink,
        })
        .map_err(|e| e.at(&entry.value.span))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct EnumAccess<'de, 's> {
    variant: &'de str,
    variant_span: &'de Span,
    content: Option<&'de Value>,
    sink: Option<&'s Sink>,
}

impl<'de, 's> de::EnumAccess<'de> for EnumAccess<'de, 's> {
    type Error = DeError;
    type Variant = VariantAccess<'de, 's>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantAccess<'de, 's>), DeError> {
        let name = de::value::BorrowedStrDeserializer::<DeError>::new(self.variant);
        let variant = seed.deserialize(name).map_err(|e| e.at(self.variant_span))?;
        Ok((
            variant,
            VariantAccess {
                content: self.content,
                span: self.variant_span,
                sink: self.sink,
            },
        ))
    }
}

struct VariantAccess<'de, 's> {
    content: Option<&'de Value>,
    span: &'de Span,
    sink: Option<&'s Sink>,
}

impl<'de> VariantAccess<'de, '_> {
    fn content(&self, expected: &str) -> Result<&'de Value, DeError> {
        self.content.ok_or_else(|| {
            DeError::new(DeErrorKind::InvalidType {
                found: "a plain value".into(),
                expected: expected.into(),
            })
            .at(self.span)
        })
    }
}

impl<'de> de::VariantAccess<'de> for VariantAccess<'de, '_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.content {
            None => Ok(()),
            Some(value) if value.is_null() => Ok(()),
            Some(value) => Err(DeError::new(DeErrorKind::InvalidType {
                found: value.describe(),
                expected: "nothing after a plain value".into(),
            })
            .at(&value.span)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        let value = self.content("a map with one key")?;
        seed.deserialize(ValueDeserializer {
            value,
            sink: self.sink,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, DeError> {
        let value = self.content("a map with one key holding a list")?;
        ValueDeserializer {
            value,
            sink: self.sink,
        }
        .deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let value = self.content("a map with one key holding a map")?;
        ValueDeserializer {
            value,
            sink: self.sink,
        }
        .deserialize_struct("", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::defs::span::{Origin, SourceFile};
    use crate::defs::yaml;

    fn doc(text: &str) -> Value {
        let file = SourceFile::new(
            Origin::File {
                path: "t.yaml".into(),
            },
            Arc::<str>::from(text),
        );
        yaml::parse(&file).unwrap()
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Entry {
        path: Spanned<String>,
        #[serde(default)]
        mode: Option<String>,
        #[serde(default)]
        size: Option<u32>,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        extra: BTreeMap<String, Spanned<String>>,
    }

    #[test]
    fn typed_structs_load_with_spans() {
        let v = doc("path: /etc/motd\nmode: 0644\nsize: 12\ntags: [a, 'b']\nextra: {k: v}\n");
        let e: Entry = from_value(&v).unwrap();
        assert_eq!(e.path.value, "/etc/motd");
        assert_eq!(e.path.span.location().to_string(), "t.yaml:1:7");
        assert_eq!(e.mode.as_deref(), Some("0644"));
        assert_eq!(e.size, Some(12));
        assert_eq!(e.tags, ["a", "b"]);
        assert_eq!(e.extra["k"].span.location().to_string(), "t.yaml:5:12");
    }

    #[test]
    fn unknown_keys_are_reported_at_the_key_with_a_suggestion() {
        let v = doc("path: /x\nmdoe: '0644'\n");
        let err = from_value::<Entry>(&v).unwrap_err();
        match err.kind() {
            DefsErrorKind::UnknownKey { key, help, span, .. } => {
                assert_eq!(key, "mdoe");
                assert_eq!(help, "did you mean `mode`?");
                assert_eq!(span.offset(), 9);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn type_errors_point_at_the_offending_value() {
        let v = doc("path: /x\nsize: [1]\n");
        let err = from_value::<Entry>(&v).unwrap_err();
        match err.kind() {
            DefsErrorKind::InvalidType { span, found, .. } => {
                assert_eq!(span.offset(), 15);
                assert_eq!(found, "a list");
            }
            other => panic!("unexpected {other:?}"),
        }
        let v = doc("path: /x\ntags: [a, [b]]\n");
        let err = from_value::<Entry>(&v).unwrap_err();
        let DefsErrorKind::InvalidType { span, .. } = err.kind() else {
            panic!("{err:?}")
        };
        assert_eq!(span.offset(), 19);
        let v = doc("path: /x\nsize: '12'\n");
        assert!(from_value::<Entry>(&v).is_err(), "a quoted number is a string");
    }

    #[test]
    fn missing_fields_point_at_the_map() {
        let v = doc("mode: '0644'\n");
        let err = from_value::<Entry>(&v).unwrap_err();
        let DefsErrorKind::MissingKey { field, .. } = err.kind() else {
            panic!("{err:?}")
        };
        assert_eq!(field, "path");
    }

    #[test]
    fn struct_fields_reports_the_accepted_keys() {
        assert_eq!(
            struct_fields::<Entry>(),
            ["path", "mode", "size", "tags", "extra"]
        );
    }

    #[derive(Debug, Deserialize)]
    struct Lenient {
        #[serde(default)]
        size: Option<Checked<Spanned<u32>>>,
        #[serde(default)]
        items: Option<Vec<Checked<Spanned<Entry>>>>,
        #[serde(default)]
        secret: Option<Verbatim>,
        #[serde(default)]
        flag: Option<Checked<bool>>,
    }

    #[test]
    fn reading_on_collects_every_problem_and_keeps_what_was_readable() {
        let v = doc("sise: 1\nsize: [1]\nitems:\n  - {path: /a, mdoe: x}\n  - {path: /b, size: no}\n  - {path: /c}\nsecret: 007\nflag: maybe\nextra: 1\n");
        let (value, problems) = from_value_collecting::<Lenient>(&v);
        let value = value.expect("the top level reads");
        assert_eq!(value.size, Some(Checked::Invalid));
        let items = value.items.unwrap();
        assert!(matches!(&items[0], Checked::Valid(e) if e.path.value == "/a"));
        assert_eq!(items[1], Checked::Invalid);
        assert!(matches!(&items[2], Checked::Valid(e) if e.path.value == "/c"));
        // A verbatim node keeps its text as written.
        let secret = value.secret.unwrap();
        assert_eq!(secret.0.as_scalar().map(|s| s.text.as_str()), Some("007"));
        assert_eq!(value.flag, Some(Checked::Invalid));
        let found: Vec<String> = problems
            .iter()
            .map(|(span, e)| format!("{} {e}", span.location()))
            .collect();
        assert_eq!(
            found,
            [
                "t.yaml:1:1 unknown key `sise`",
                "t.yaml:9:1 unknown key `extra`",
                "t.yaml:2:7 invalid type: expected a whole number (0 or more), found a list",
                "t.yaml:4:16 unknown key `mdoe`",
                "t.yaml:5:22 invalid type: expected a whole number (0 or more), found string \"no\"",
                "t.yaml:8:7 invalid type: expected `true` or `false`, found string \"maybe\"",
            ]
        );
        // The same reader stops at the first problem with `from_value`.
        let err = from_value::<Lenient>(&v).unwrap_err();
        assert!(matches!(err.kind(), DefsErrorKind::UnknownKey { key, .. } if key == "sise"));
    }

    #[test]
    fn spanned_outside_definitions_is_an_error_not_a_panic() {
        let r: Result<Spanned<String>, _> = serde_json::from_str("\"x\"");
        assert!(r.is_err());
    }
}
