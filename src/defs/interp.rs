//! `${VAR}` and `${VAR:-default}` substitution in string scalars.
//!
//! The environment is injected as a map: the definitions layer never reads the process
//! environment, so a test (or `w4b verify --rebuild`) controls exactly what a definition
//! sees. Only scalar values are substituted, never keys, so the shape of a document cannot
//! depend on the environment. `$${` writes a literal `${`; a `$` not followed by `{` is kept.
//! As in the shell, `:-` uses the default when the variable is unset *or empty*.
//! `${env:NAME}` is left as written: it is a secret reference, resolved only at a hive's
//! secret positions, by the hive reader that types the document.

use std::collections::BTreeMap;

use super::error::{DefsError, DefsErrorKind};
use super::span::Span;
use super::yaml::{Node, Style, Value};

/// Substitutes variables in every scalar of `value`, in place.
pub fn interpolate(value: &mut Value, env: &BTreeMap<String, String>) -> Result<(), DefsError> {
    match &mut value.node {
        Node::Scalar(scalar) => {
            if scalar.text.contains('$') {
                let plain = scalar.style == Style::Plain;
                scalar.text = substitute(&scalar.text, env, &value.span, plain)?;
            }
            Ok(())
        }
        Node::Seq(items) => items.iter_mut().try_for_each(|item| interpolate(item, env)),
        Node::Map(entries) => entries
            .iter_mut()
            .try_for_each(|entry| interpolate(&mut entry.value, env)),
    }
}

/// Substitutes variables in `text`, the content of the scalar at `span`.
pub fn substitute(
    text: &str,
    env: &BTreeMap<String, String>,
    span: &Span,
    plain: bool,
) -> Result<String, DefsError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
            consumed += dollar + 3;
            continue;
        }
        if !after.starts_with("${") {
            out.push('$');
            rest = &after[1..];
            consumed += dollar + 1;
            continue;
        }
        let Some(close) = after.find('}') else {
            return Err(bad(
                span,
                text,
                plain,
                consumed + dollar,
                text.len(),
                "`${` is never closed",
            ));
        };
        let inner = &after[2..close];
        if inner.starts_with("env:") {
            // `${env:NAME}` names a secret in the environment: it is resolved where a hive
            // secret is read (by the hive reader), so the secret's text never enters the
            // document, its locations or any diagnostic about it.
            out.push_str(&after[..=close]);
            rest = &after[close + 1..];
            consumed += dollar + close + 1;
            continue;
        }
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let at = consumed + dollar;
        if !valid {
            return Err(bad(
                span,
                text,
                plain,
                at,
                at + close + 1,
                &format!("`{name}` is not a variable name"),
            ));
        }
        match (
            env.get(name).filter(|v| !(v.is_empty() && default.is_some())),
            default,
        ) {
            (Some(value), _) => out.push_str(value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                let at = sub_span(span, text, plain, at, at + close + 1);
                return Err(DefsErrorKind::MissingVar {
                    src: at.src(),
                    span: at.ss(),
                    var: name.to_owned(),
                    help: format!(
                        "set `{name}` in the environment, give a default with `${{{name}:-default}}`, or write `$${{` for a literal `${{`"
                    ),
                }
                .into());
            }
        }
        rest = &after[close + 1..];
        consumed += dollar + close + 1;
    }
    out.push_str(rest);
    Ok(out)
}

fn bad(span: &Span, text: &str, plain: bool, start: usize, end: usize, message: &str) -> DefsError {
    let at = sub_span(span, text, plain, start, end);
    DefsErrorKind::BadSubstitution {
        src: at.src(),
        span: at.ss(),
        message: message.to_owned(),
    }
    .into()
}

/// The span of `text[start..end]` in the source, when the scalar's source text is its content
/// verbatim (plain, or quoted without escapes on one line); otherwise the whole scalar.
fn sub_span(span: &Span, text: &str, plain: bool, start: usize, end: usize) -> Span {
    let source = span.snippet();
    let inner_offset = if plain && source == text {
        Some(0)
    } else if source.len() == text.len() + 2
        && (source.starts_with('"') || source.starts_with('\''))
        && &source[1..source.len() - 1] == text
    {
        Some(1)
    } else {
        None
    };
    match inner_offset {
        Some(offset) => {
            let cols = text.get(..start).map_or(0, |s| s.chars().count()) + offset;
            Span {
                start: span.start + offset + start,
                end: span.start + offset + end,
                col: span.col.saturating_add(u32::try_from(cols).unwrap_or(0)),
                ..span.clone()
            }
        }
        None => span.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::span::{Origin, SourceFile};
    use crate::defs::yaml;

    fn env() -> BTreeMap<String, String> {
        [("HOST", "north"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn run(text: &str) -> Result<String, DefsError> {
        let file = SourceFile::new(
            Origin::File {
                path: "t.yaml".into(),
            },
            format!("v: {text}\n"),
        );
        let mut v = yaml::parse(&file)?;
        interpolate(&mut v, &env())?;
        Ok(v.get("v").unwrap().value.as_scalar().unwrap().text.clone())
    }

    #[test]
    fn variables_defaults_and_escapes() {
        assert_eq!(run("${HOST}").unwrap(), "north");
        assert_eq!(run("'hive-${HOST}.local'").unwrap(), "hive-north.local");
        assert_eq!(run("${NOPE:-south}").unwrap(), "south");
        assert_eq!(run("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(run("\"x${EMPTY}y\"").unwrap(), "xy");
        assert_eq!(run("${NOPE:-}").unwrap(), "");
        assert_eq!(run("'$${HOST} $HOST $'").unwrap(), "${HOST} $HOST $");
        assert_eq!(run("'$$HOST'").unwrap(), "$$HOST");
    }

    #[test]
    fn unset_variables_point_at_the_reference() {
        let err = run("'a ${MISSING} b'").unwrap_err();
        match err.kind() {
            DefsErrorKind::MissingVar { var, span, help, .. } => {
                assert_eq!(var, "MISSING");
                // `v: 'a ` is 6 bytes.
                assert_eq!((span.offset(), span.len()), (6, 10));
                assert!(help.contains("${MISSING:-default}"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(run("'${HOST'").is_err());
        assert!(run("'${1X}'").is_err());
        assert!(run("'${}'").is_err());
    }

    #[test]
    fn keys_are_never_substituted() {
        let file = SourceFile::new(
            Origin::File {
                path: "t.yaml".into(),
            },
            "${HOST}: 1\n",
        );
        let mut v = yaml::parse(&file).unwrap();
        interpolate(&mut v, &env()).unwrap();
        assert!(v.get("${HOST}").is_some());
    }
}
