//! What a boot test checks: [`TestSpec`], the declarative test definition of an image, and
//! [`TestDef`], the `test:` key of an image or hive definition it is made from.
//!
//! It is plain serde data so that the same shape can come from four places without a
//! translation layer: the command line (`--unit-active`, `--allow-failed`, `--timeout`),
//! a `--spec` JSON file, the `test:` key of an image or a hive file, and the `test` build
//! step that keys on it (every field is typed and defaulted, and the serialised form lists
//! fields in a fixed order, so two specs that mean the same serialise the same). Unknown
//! keys are refused, as everywhere in w4b's definitions.
//!
//! The spec lives here, in the definitions layer, because definitions are where it is
//! written; `crate::vmtest` (which runs it) depends on this module, never the reverse.
//!
//! The checks every test runs whatever the spec says (the system reaches its default
//! target, no failed units) are not in the spec; the spec only adds to them or relaxes
//! them (`allow_failed_units`).
//!
//! A [`TestDef`] is a spec as written: the timeouts only when given, so that layers of
//! definitions merge the way people expect ([`TestDef::merged`]): a hive's `test:` over its
//! image's, then the command line over both — lists concatenated, a given timeout wins.

use serde::{Deserialize, Serialize};

use super::error::DefsError;
use super::yaml::{Node, Value};

/// Seconds the system gets to finish booting (`systemctl is-system-running --wait`),
/// from the start of QEMU. Debian's minimal arm64 system needs about 40 s under TCG on a
/// 2-core x86_64 host; a full hive image several times that.
pub const DEFAULT_BOOT_TIMEOUT: u64 = 300;
/// Seconds one command check may run.
pub const DEFAULT_CHECK_TIMEOUT: u64 = 60;
/// Seconds the whole test may take, boot and checks together.
pub const DEFAULT_TOTAL_TIMEOUT: u64 = 600;

/// The test definition of one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestSpec {
    /// Units that may be in the `failed` state without failing the test (a unit that
    /// needs Raspberry Pi hardware the virtual machine lacks), by full name
    /// (`rpi-eeprom-update.service`).
    pub allow_failed_units: Vec<String>,
    /// Units that must be active once the system has booted (`ssh.service`).
    pub units_active: Vec<String>,
    /// Commands run in the guest, as root, each judged by its exit status and output.
    pub commands: Vec<CommandCheck>,
    /// Seconds for the whole test.
    pub timeout: u64,
    /// Seconds for the boot, from the start of QEMU to a settled system.
    pub boot_timeout: u64,
    /// Whether the guest sends back the files the hive checklist reads, for the host to
    /// run the checklist on the running system (`crate::validate::hive`, booted stage).
    /// On for an image built from a hive; left out of the serialised form when off, so
    /// the spec of a plain image serialises as it did before the field existed.
    #[serde(skip_serializing_if = "is_false")]
    pub hive_checklist: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for TestSpec {
    fn default() -> Self {
        TestSpec {
            allow_failed_units: Vec::new(),
            units_active: Vec::new(),
            commands: Vec::new(),
            timeout: DEFAULT_TOTAL_TIMEOUT,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            hive_checklist: false,
        }
    }
}

/// One command run in the guest with `sh -c`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandCheck {
    /// How the report names the check.
    pub name: String,
    /// The shell command (`sh -c`), run as root with `/` as working directory.
    pub run: String,
    /// The exit status it must end with.
    #[serde(default)]
    pub exit: i32,
    /// Text its standard output must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_contains: Option<String>,
    /// A regular expression (Rust `regex` syntax) its standard output must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_regex: Option<String>,
    /// Seconds it may run.
    #[serde(default = "default_check_timeout")]
    pub timeout: u64,
}

fn default_check_timeout() -> u64 {
    DEFAULT_CHECK_TIMEOUT
}

/// A `test:` key as written (image, hive, `--spec` file, command line): the lists, and
/// each timeout only when it was given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestDef {
    pub allow_failed_units: Vec<String>,
    pub units_active: Vec<String>,
    pub commands: Vec<CommandCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_timeout: Option<u64>,
    /// Run the hive checklist in the guest; given, it wins over what is below it (a
    /// hive's image has it on, a `test:` may turn it off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hive_checklist: Option<bool>,
}

impl TestDef {
    /// `over` on top of `self`: lists concatenated (`self`'s entries first; a unit named
    /// again is kept once, and a command named again replaces the earlier one where it
    /// stood, so a hive can relax a check its modules add), and each timeout `over` gives
    /// replaces `self`'s.
    pub fn merged(mut self, over: TestDef) -> TestDef {
        for (mine, theirs) in [
            (&mut self.allow_failed_units, over.allow_failed_units),
            (&mut self.units_active, over.units_active),
        ] {
            for unit in theirs {
                if !mine.contains(&unit) {
                    mine.push(unit);
                }
            }
        }
        for command in over.commands {
            match self.commands.iter_mut().find(|c| c.name == command.name) {
                Some(earlier) => *earlier = command,
                None => self.commands.push(command),
            }
        }
        self.timeout = over.timeout.or(self.timeout);
        self.boot_timeout = over.boot_timeout.or(self.boot_timeout);
        self.hive_checklist = over.hive_checklist.or(self.hive_checklist);
        self
    }

    /// The complete spec, defaults filled in.
    pub fn spec(&self) -> TestSpec {
        TestSpec {
            allow_failed_units: self.allow_failed_units.clone(),
            units_active: self.units_active.clone(),
            commands: self.commands.clone(),
            timeout: self.timeout.unwrap_or(DEFAULT_TOTAL_TIMEOUT),
            boot_timeout: self.boot_timeout.unwrap_or(DEFAULT_BOOT_TIMEOUT),
            hive_checklist: self.hive_checklist.unwrap_or(false),
        }
    }
}

/// A command check's `stdout_regex`, compiled as the test judges it: multi-line, so `^`
/// and `$` match at each line and `^active$` matches the line `active` of an output that
/// ends with a newline, as people expect.
pub fn stdout_regex(text: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(text).multi_line(true).build()
}

/// What serde cannot check in a `test:` value (`value` is the key's value): every
/// `stdout_regex` must compile, and no two command checks may share a name (the report and
/// the cached verdicts name checks by it). The first problem, at its span.
pub fn check(value: &Value) -> Result<(), DefsError> {
    let Some(commands) = value.get("commands").map(|e| &e.value) else {
        return Ok(());
    };
    let Node::Seq(items) = &commands.node else {
        return Ok(());
    };
    let mut names: Vec<(&str, &Value)> = Vec::new();
    for item in items {
        if let Some(name) = item.get("name") {
            if let Some(s) = name.value.as_scalar() {
                if let Some((_, first)) = names.iter().find(|(n, _)| *n == s.text) {
                    return Err(name.value.span.invalid_value(
                        format!("two command checks are named `{}`", s.text),
                        "second check of this name",
                        Some(format!(
                            "give each check its own name (the first is at `{}`); the report names checks by it",
                            first.span.location()
                        )),
                    ));
                }
                names.push((&s.text, &name.value));
            }
        }
        if let Some(re) = item.get("stdout_regex") {
            if let Some(s) = re.value.as_scalar() {
                if let Err(e) = stdout_regex(&s.text) {
                    let first_line = e.to_string().lines().last().unwrap_or_default().trim().to_owned();
                    return Err(re.value.span.invalid_value(
                        format!("`stdout_regex` is not a valid regular expression: {first_line}"),
                        "not a regular expression",
                        Some("the syntax is Rust's `regex` crate's (https://docs.rs/regex): no look-around or back-references".into()),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_reads_from_json_with_defaults() {
        let spec: TestSpec = serde_json::from_str(
            r#"{"units_active": ["ssh.service"],
                "commands": [{"name": "hostname", "run": "hostname", "stdout_contains": "north"}]}"#,
        )
        .unwrap();
        assert_eq!(spec.units_active, ["ssh.service"]);
        assert_eq!(spec.timeout, DEFAULT_TOTAL_TIMEOUT);
        assert_eq!(spec.commands[0].exit, 0);
        assert_eq!(spec.commands[0].timeout, DEFAULT_CHECK_TIMEOUT);
        assert_eq!(spec.commands[0].stdout_contains.as_deref(), Some("north"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = serde_json::from_str::<TestSpec>(r#"{"unit_active": []}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `unit_active`"), "{e}");
        let e = serde_json::from_str::<TestSpec>(r#"{"commands": [{"name": "a", "run": "b", "exits": 1}]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `exits`"), "{e}");
    }

    #[test]
    fn a_definition_fills_only_what_it_does_not_give() {
        let def: TestDef = serde_json::from_str(r#"{"boot_timeout": 30, "units_active": ["a"]}"#).unwrap();
        assert_eq!(def.timeout, None);
        let spec = def.spec();
        assert_eq!((spec.timeout, spec.boot_timeout), (DEFAULT_TOTAL_TIMEOUT, 30));
        // Merging: lists concatenated, a given timeout wins, an absent one leaves it.
        let over = TestDef {
            units_active: vec!["b".into()],
            timeout: Some(10),
            ..TestDef::default()
        };
        let m = def.clone().merged(over);
        assert_eq!(m.units_active, ["a", "b"]);
        assert_eq!((m.timeout, m.boot_timeout), (Some(10), Some(30)));
        assert_eq!(def.clone().merged(TestDef::default()), def);
        // The hive checklist: a given value wins, off by default.
        let on = TestDef {
            hive_checklist: Some(true),
            ..TestDef::default()
        };
        assert!(on.clone().merged(TestDef::default()).spec().hive_checklist);
        let off = TestDef {
            hive_checklist: Some(false),
            ..TestDef::default()
        };
        assert!(!on.merged(off).spec().hive_checklist);
        assert!(!def.spec().hive_checklist);
        // The spec of an empty definition is the default spec.
        assert_eq!(TestDef::default().spec(), TestSpec::default());
    }

    #[test]
    fn a_unit_named_again_is_asked_once_and_a_command_named_again_replaces_the_earlier() {
        let lower: TestDef = serde_json::from_str(
            r#"{"units_active": ["a", "b"], "commands": [{"name": "x", "run": "true"}, {"name": "y", "run": "true"}]}"#,
        )
        .unwrap();
        let upper: TestDef = serde_json::from_str(
            r#"{"units_active": ["b", "c"], "commands": [{"name": "x", "run": "false", "exit": 1}, {"name": "z", "run": "true"}]}"#,
        )
        .unwrap();
        let m = lower.merged(upper);
        assert_eq!(m.units_active, ["a", "b", "c"]);
        let commands: Vec<(&str, &str)> = m
            .commands
            .iter()
            .map(|c| (c.name.as_str(), c.run.as_str()))
            .collect();
        assert_eq!(commands, [("x", "false"), ("y", "true"), ("z", "true")]);
    }

    #[test]
    fn the_serialised_form_is_stable() {
        let spec = TestSpec {
            commands: vec![CommandCheck {
                name: "n".into(),
                run: "true".into(),
                exit: 0,
                stdout_contains: None,
                stdout_regex: None,
                timeout: 5,
            }],
            ..TestSpec::default()
        };
        assert_eq!(
            serde_json::to_string(&spec).unwrap(),
            r#"{"allow_failed_units":[],"units_active":[],"commands":[{"name":"n","run":"true","exit":0,"timeout":5}],"timeout":600,"boot_timeout":300}"#
        );
        // The hive checklist appears only when on.
        let hive = TestSpec {
            hive_checklist: true,
            ..TestSpec::default()
        };
        let json = serde_json::to_string(&hive).unwrap();
        assert!(
            json.ends_with(r#","boot_timeout":300,"hive_checklist":true}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<TestSpec>(&json).unwrap(), hive);
    }
}
