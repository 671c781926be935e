//! Labels: the names of targets (`//hives:north`), of steps (`//hives:north#rootfs`) and of
//! sets of targets (`//hives/...`).
//!
//! A label names a file: `//pkg:name` is `<defs>/pkg/name.yaml`. Keeping the mapping this
//! direct means a person can always find the definition behind a name, and the build engine
//! can use the label text as a stable identity. Components are restricted to a small
//! character set so a label can never escape the defs folder or need quoting in a shell.

use std::fmt;

use serde::Serialize;

use super::error::{DefsError, DefsErrorKind};
use super::span::Span;

/// A target: `package` (`""` for the root, `a/b` nested) and `name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub package: String,
    pub name: String,
}

/// A step inside a target: `//hives:north#rootfs`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepLabel {
    pub target: Label,
    pub step: String,
}

/// What a command line may name: one target or every target below a package.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    Target(Label),
    /// `//pkg/...` (`package` is `""` for `//...`).
    Recursive {
        package: String,
    },
}

/// Why a label text is not a label; rendered with or without a source span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelError {
    pub text: String,
    pub reason: String,
}

impl LabelError {
    fn new(text: &str, reason: impl Into<String>) -> LabelError {
        LabelError {
            text: text.to_owned(),
            reason: reason.into(),
        }
    }

    const HELP: &'static str = "write `//package:name` (the file `<defs>/package/name.yaml`), `:name` for a target in the same package, or `//package/...` for every target below a package; names use letters, digits, `.`, `_` and `-`";

    /// The error as a diagnostic pointing at `span` (where the label was written), if any.
    pub fn into_defs(self, span: Option<&Span>) -> DefsError {
        DefsErrorKind::BadLabel {
            src: span.map(Span::src),
            span: span.map(Span::ss),
            text: self.text,
            reason: self.reason,
            help: LabelError::HELP.to_owned(),
        }
        .into()
    }
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid label `{}`: {}", self.text, self.reason)
    }
}

impl std::error::Error for LabelError {}

/// Checks one package component or target name.
fn check_component(text: &str, component: &str, what: &str) -> Result<(), LabelError> {
    if component.is_empty() {
        return Err(LabelError::new(text, format!("empty {what}")));
    }
    if component.starts_with('.') {
        return Err(LabelError::new(
            text,
            format!("{what} `{component}` starts with `.`"),
        ));
    }
    if let Some(bad) = component
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(LabelError::new(
            text,
            format!("{what} `{component}` contains `{bad}`"),
        ));
    }
    Ok(())
}

fn check_package(text: &str, package: &str) -> Result<(), LabelError> {
    if package.is_empty() {
        return Ok(());
    }
    package
        .split('/')
        .try_for_each(|component| check_component(text, component, "package component"))
}

impl Label {
    /// Builds a label from checked parts.
    pub fn new(package: &str, name: &str) -> Result<Label, LabelError> {
        let text = format!("//{package}:{name}");
        check_package(&text, package)?;
        check_component(&text, name, "target name")?;
        Ok(Label {
            package: package.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Parses `//pkg:name`, `//pkg` (= `//pkg:<last component>`) or, given the package of the
    /// file it was written in, `:name`.
    pub fn parse(text: &str, current_package: Option<&str>) -> Result<Label, LabelError> {
        if text.contains('#') {
            return Err(LabelError::new(text, "a step name (`#…`) is not allowed here"));
        }
        if text.ends_with("...") {
            return Err(LabelError::new(
                text,
                "a pattern (`...`) names several targets; one is needed here",
            ));
        }
        if let Some(name) = text.strip_prefix(':') {
            let Some(package) = current_package else {
                return Err(LabelError::new(
                    text,
                    "a relative label needs a current package; write `//package:name`",
                ));
            };
            check_component(text, name, "target name")?;
            return Ok(Label {
                package: package.to_owned(),
                name: name.to_owned(),
            });
        }
        let Some(rest) = text.strip_prefix("//") else {
            return Err(LabelError::new(text, "a label starts with `//` or `:`"));
        };
        let (package, name) = match rest.split_once(':') {
            Some((package, name)) => (package, name),
            None => {
                let last = rest.rsplit('/').next().unwrap_or("");
                if last.is_empty() {
                    return Err(LabelError::new(text, "no target name"));
                }
                (rest, last)
            }
        };
        check_package(text, package)?;
        check_component(text, name, "target name")?;
        Ok(Label {
            package: package.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The definition file, relative to the defs folder: `pkg/name.yaml`.
    pub fn file_name(&self) -> String {
        if self.package.is_empty() {
            format!("{}.yaml", self.name)
        } else {
            format!("{}/{}.yaml", self.package, self.name)
        }
    }

    /// A step of this target.
    pub fn step(&self, step: &str) -> Result<StepLabel, LabelError> {
        let text = format!("{self}#{step}");
        check_component(&text, step, "step name")?;
        Ok(StepLabel {
            target: self.clone(),
            step: step.to_owned(),
        })
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "//{}:{}", self.package, self.name)
    }
}

impl Serialize for Label {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl StepLabel {
    /// Parses `//pkg:name#step` (or `:name#step` given the current package).
    pub fn parse(text: &str, current_package: Option<&str>) -> Result<StepLabel, LabelError> {
        let Some((target, step)) = text.split_once('#') else {
            return Err(LabelError::new(text, "a step label ends with `#step`"));
        };
        let target = Label::parse(target, current_package).map_err(|e| LabelError {
            text: text.to_owned(),
            ..e
        })?;
        check_component(text, step, "step name")?;
        Ok(StepLabel {
            target,
            step: step.to_owned(),
        })
    }
}

impl fmt::Display for StepLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.target, self.step)
    }
}

impl Serialize for StepLabel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Pattern {
    /// Parses a label or `//pkg/...`, `//...`.
    pub fn parse(text: &str, current_package: Option<&str>) -> Result<Pattern, LabelError> {
        if let Some(rest) = text.strip_prefix("//") {
            if rest == "..." {
                return Ok(Pattern::Recursive {
                    package: String::new(),
                });
            }
            if let Some(package) = rest.strip_suffix("/...") {
                check_package(text, package)?;
                if package.is_empty() {
                    return Err(LabelError::new(text, "empty package component"));
                }
                return Ok(Pattern::Recursive {
                    package: package.to_owned(),
                });
            }
        }
        Label::parse(text, current_package).map(Pattern::Target)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Target(label) => label.fmt(f),
            Pattern::Recursive { package } if package.is_empty() => f.write_str("//..."),
            Pattern::Recursive { package } => write!(f, "//{package}/..."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(package: &str, name: &str) -> Label {
        Label {
            package: package.into(),
            name: name.into(),
        }
    }

    #[test]
    fn absolute_relative_and_short_forms() {
        assert_eq!(Label::parse("//hives:north", None).unwrap(), l("hives", "north"));
        assert_eq!(Label::parse("//a/b:c", None).unwrap(), l("a/b", "c"));
        assert_eq!(Label::parse("//:top", None).unwrap(), l("", "top"));
        assert_eq!(
            Label::parse("//images/demo", None).unwrap(),
            l("images/demo", "demo")
        );
        assert_eq!(
            Label::parse(":motd", Some("layers")).unwrap(),
            l("layers", "motd")
        );
        assert_eq!(l("hives", "north").to_string(), "//hives:north");
        assert_eq!(l("", "top").file_name(), "top.yaml");
        assert_eq!(l("a/b", "c").file_name(), "a/b/c.yaml");
    }

    #[test]
    fn bad_labels_are_rejected_with_a_reason() {
        for (text, reason) in [
            ("hives:north", "starts with"),
            ("//hives:", "empty target name"),
            ("//hives/../x:y", "starts with `.`"),
            ("//hi ves:x", "contains ` `"),
            ("//a//b:c", "empty package component"),
            ("//", "no target name"),
            (":x", "current package"),
            ("//a:b#c", "step name"),
            ("//a:b/c", "contains `/`"),
        ] {
            let err = Label::parse(text, None).unwrap_err();
            assert!(err.reason.contains(reason), "{text}: {}", err.reason);
        }
    }

    #[test]
    fn step_labels_keep_the_step() {
        let s = StepLabel::parse("//hives:north#rootfs", None).unwrap();
        assert_eq!(s.target, l("hives", "north"));
        assert_eq!(s.step, "rootfs");
        assert_eq!(s.to_string(), "//hives:north#rootfs");
        assert!(StepLabel::parse("//hives:north#", None).is_err());
        assert_eq!(l("a", "b").step("x").unwrap().to_string(), "//a:b#x");
    }

    #[test]
    fn patterns() {
        assert_eq!(
            Pattern::parse("//hives/...", None).unwrap(),
            Pattern::Recursive {
                package: "hives".into()
            }
        );
        assert_eq!(Pattern::parse("//...", None).unwrap().to_string(), "//...");
        assert_eq!(
            Pattern::parse("//a:b", None).unwrap(),
            Pattern::Target(l("a", "b"))
        );
        assert!(Pattern::parse("///...", None).is_err());
        assert!(Label::parse("//hives/...", None).is_err());
    }
}
