//! The `software` module: the Debian packages and the Python environment of a hive image.
//!
//! Packages are installed **at build time** from package sets (DESIGN §4), never on the
//! hive's first boot: [`package_sets`] names the sets the hive's configuration needs, the
//! compiler adds them to the image's own `packages:` (see `compile::packages`), `w4b lock`
//! pins them and the build installs them. The sets are workspace definitions with the
//! convention labels below (the shipped workspace has them in `defs/packages/`), so their
//! repositories, keys and version constraints are the user's to read and change:
//!
//! | set                      | packages (shipped)                          | when                                          |
//! |--------------------------|---------------------------------------------|-----------------------------------------------|
//! | `//packages:w4b-system`    | `locales` (`locale-gen`, run by the first boot) | always                                     |
//! | `//packages:w4b-database`  | `postgresql-15`, `timescaledb-2-postgresql-15` | the database runs on the hive ([`database::local_database`]) |
//! | `//packages:w4b-monitoring`| `prometheus-node-exporter`, `python3`       | `monitoring.enabled`                          |
//! | `//packages:w4b-vpn`       | `wireguard-tools`                           | the VPN is enabled and the hive has `security` |
//! | `//packages:w4b-firewall`  | `nftables`, `netbase` (`/etc/protocols`)    | `firewall.enabled`                            |
//! | `//packages:w4b-python`    | `python3-venv`                              | the sensor manager is enabled or Python packages are listed |
//! | `//packages:w4b-software`  | none: its repositories serve `software.packages` | `software.packages` is not empty         |
//!
//! TimescaleDB comes from Timescale's own repository, which the shipped `w4b-database` set
//! marks `apt_source: true`: the image carries its apt source and pinned key, so the
//! monitoring module's unattended upgrades reach it.
//!
//! What remains for the first boot is only what needs the running system, offline: the
//! Python venv `/opt/w4b/venv` (`python3 -m venv`, from the installed `python3-venv`) and,
//! when `python_packages` are listed, their installation from a generated
//! `/opt/w4b/requirements.txt` with every entry pinned (`name==version`) — the one step
//! that still needs a network, and only for hives that list Python packages.
//!
//! Services are enabled by the modules that own them (a wants-symlink each), not here.

use serde::Serialize;

use super::{database, GenFile, Generated, Module, ModuleError, Section};
use crate::hive::config::HiveImage;

/// The sensor manager's Python environment.
pub const VENV: &str = "/opt/w4b/venv";
/// Its pinned requirements.
pub const REQUIREMENTS: &str = "/opt/w4b/requirements.txt";
/// First-boot order of the venv: after the system and security modules' early sections
/// (host keys, users: below 30).
pub const VENV_ORDER: u32 = 35;

/// Packages and Python environment.
pub struct Software;

/// Everything [`Software::generate`] reads: [`Module::inputs`] is this, serialised.
#[derive(Serialize)]
struct Plan<'a> {
    python_packages: &'a [String],
    venv: bool,
}

fn plan(cfg: &HiveImage) -> Plan<'_> {
    let s = &cfg.settings;
    Plan {
        python_packages: &s.software.python_packages,
        venv: venv(cfg),
    }
}

fn venv(cfg: &HiveImage) -> bool {
    let s = &cfg.settings;
    s.sensor_manager.enabled || !s.software.python_packages.is_empty()
}

/// The package sets (`//packages:<name>`) the hive's configuration needs, in a fixed
/// order: see the module's table.
pub fn package_sets(cfg: &HiveImage) -> Vec<&'static str> {
    let s = &cfg.settings;
    let mut sets = Vec::new();
    let mut need = |on: bool, name: &'static str| {
        if on {
            sets.push(name);
        }
    };
    need(true, "w4b-system");
    need(database::local_database(cfg).is_some(), "w4b-database");
    need(s.monitoring.enabled, "w4b-monitoring");
    need(s.vpn_enabled && cfg.hive.security.is_some(), "w4b-vpn");
    need(s.firewall.enabled, "w4b-firewall");
    need(venv(cfg), "w4b-python");
    need(!s.software.packages.is_empty(), "w4b-software");
    sets
}

fn error(message: impl Into<String>, help: &str) -> ModuleError {
    ModuleError {
        module: "software",
        message: message.into(),
        help: Some(help.to_owned()),
    }
}

/// A pinned Python requirement: `name==version`, name per PEP 508 (with optional
/// extras), version per PEP 440's character set.
fn check_python(req: &str) -> Result<(), ModuleError> {
    let bad = || {
        error(
            format!("`{req}` in `software.python_packages` is not pinned as `name==version`"),
            "pin every Python package exactly, e.g. `w1thermsensor==2.3.0`",
        )
    };
    let (name, version) = req.split_once("==").ok_or_else(bad)?;
    let (bare, extras) = match name.split_once('[') {
        Some((b, rest)) => (b, rest.strip_suffix(']').ok_or_else(bad)?),
        None => (name, ""),
    };
    let name_ok = bare.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bare.ends_with(|c: char| c.is_ascii_alphanumeric())
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let extras_ok = extras
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ','));
    let version_ok = !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '!' | '-' | '_'));
    if name_ok && extras_ok && version_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A retry helper each section defines for itself (sections may be run one by one).
const RETRY_FN: &str = r#"w4b_retry() {
    w4b_try=1
    until "$@"; do
        if [ "$w4b_try" -ge 5 ]; then
            echo "software: giving up after $w4b_try attempts: $*" >&2
            return 1
        fi
        echo "software: attempt $w4b_try failed, retrying in $((w4b_try * 15)) s: $*" >&2
        sleep $((w4b_try * 15))
        w4b_try=$((w4b_try + 1))
    done
}
"#;

fn venv_section(p: &Plan<'_>) -> Section {
    let mut s = format!(
        r#"# Create the Python venv {VENV} and install the pinned requirements.
{RETRY_FN}# A venv is complete once pip is in it; a half-made one (power cut) is made again.
if [ ! -x {VENV}/bin/pip ]; then
    rm -rf {VENV}
    python3 -m venv {VENV}
    echo "software: created {VENV}"
fi
"#
    );
    if !p.python_packages.is_empty() {
        s.push_str(&format!(
            "w4b_retry {VENV}/bin/pip install --no-cache-dir --disable-pip-version-check \
             --no-input -r {REQUIREMENTS}\necho \"software: Python requirements installed\"\n"
        ));
    }
    Section {
        order: VENV_ORDER,
        name: "software/python-venv".into(),
        script: s,
    }
}

impl Module for Software {
    fn name(&self) -> &'static str {
        "software"
    }

    fn version(&self) -> u32 {
        2
    }

    fn inputs<'a>(&self, cfg: &'a HiveImage) -> Result<crate::modules::Inputs<'a>, ModuleError> {
        Ok((crate::modules::inputs_json(self.name(), plan(cfg))?, Vec::new()))
    }

    fn enabled(&self, cfg: &HiveImage) -> bool {
        plan(cfg).venv
    }

    fn generate(&self, cfg: &HiveImage) -> Result<Generated, ModuleError> {
        let p = plan(cfg);
        for req in p.python_packages {
            check_python(req)?;
        }
        let mut files = Vec::new();
        let mut sections = Vec::new();
        if p.venv {
            let mut req = String::from("# Python packages of the w4b sensor manager (generated, pinned).\n");
            for r in p.python_packages {
                req.push_str(r);
                req.push('\n');
            }
            files.extend([
                GenFile::dir("/opt/w4b", 0o755),
                GenFile::file(REQUIREMENTS, req, 0o644),
            ]);
            sections.push(venv_section(&p));
        }
        Ok(Generated { files, sections })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hive::config::Secret;
    use crate::modules::testing::{lan_hive, render, text, wifi_hive};

    fn generate(cfg: &HiveImage) -> Generated {
        match Software.generate(cfg) {
            Ok(g) => g,
            Err(e) => panic!("generate: {e}"),
        }
    }

    #[test]
    fn snapshot_wifi() {
        insta::assert_snapshot!(render(&generate(&wifi_hive())));
    }

    #[test]
    fn the_sets_are_what_the_modules_need() {
        assert_eq!(
            package_sets(&wifi_hive()),
            [
                "w4b-system",
                "w4b-database",
                "w4b-monitoring",
                "w4b-vpn",
                "w4b-firewall",
                "w4b-python",
                "w4b-software"
            ]
        );
        // Without a VPN, with a remote database, without extra packages or Python.
        let mut cfg = lan_hive();
        cfg.settings.vpn_enabled = false;
        cfg.settings.software.packages.clear();
        cfg.settings.software.python_packages.clear();
        cfg.settings.sensor_manager.enabled = false;
        if let Some(s) = cfg.hive.security.as_mut() {
            s.database.host = "db.example.org".into();
        }
        assert_eq!(
            package_sets(&cfg),
            ["w4b-system", "w4b-monitoring", "w4b-firewall"]
        );
        // No security section: no local database, no tunnel.
        let mut cfg = wifi_hive();
        cfg.hive.security = None;
        let sets = package_sets(&cfg);
        assert!(
            !sets.contains(&"w4b-database") && !sets.contains(&"w4b-vpn"),
            "{sets:?}"
        );
    }

    #[test]
    fn first_boot_installs_no_debian_package() {
        let g = generate(&wifi_hive());
        for s in &g.sections {
            assert!(
                !s.script.contains("apt-get") && !s.script.contains("dpkg"),
                "{}",
                s.script
            );
        }
        assert!(g
            .files
            .iter()
            .all(|f| !f.path.to_string().starts_with("/etc/apt")));
    }

    #[test]
    fn requirements_are_pinned_and_the_venv_is_made_once() {
        let g = generate(&wifi_hive());
        assert!(text(&g, REQUIREMENTS)
            .lines()
            .any(|l| l == "w1thermsensor==2.3.0"));
        let venv = &g.sections[0];
        assert_eq!(
            (venv.order, venv.name.as_str()),
            (VENV_ORDER, "software/python-venv")
        );
        assert!(venv.script.contains(&format!("if [ ! -x {VENV}/bin/pip ]")));
        assert!(venv.script.contains(&format!("-r {REQUIREMENTS}")));
    }

    #[test]
    fn no_venv_no_module() {
        let mut cfg = wifi_hive();
        cfg.settings.software.python_packages.clear();
        cfg.settings.sensor_manager.enabled = false;
        assert!(!Software.enabled(&cfg));
        cfg.settings.sensor_manager.enabled = true;
        assert!(Software.enabled(&cfg));
        assert!(!generate(&cfg).sections[0].script.contains("pip install"));
    }

    #[test]
    fn bad_requirements_are_errors() {
        for bad in [
            "requests",
            "requests>=2",
            "x==",
            "==1",
            "a==1;rm",
            "a[b==1",
            "-e==1",
        ] {
            assert!(check_python(bad).is_err(), "accepted requirement `{bad}`");
        }
        for good in [
            "w1thermsensor==2.3.0",
            "adafruit-circuitpython-dht==4.0.4",
            "psycopg[binary]==3.2.3",
        ] {
            assert!(check_python(good).is_ok(), "refused requirement `{good}`");
        }
        let mut cfg = wifi_hive();
        cfg.settings.software.python_packages.push("flask".into());
        match Software.generate(&cfg) {
            Ok(_) => panic!("an unpinned requirement was accepted"),
            Err(e) => assert!(e.to_string().contains("`flask`") && e.help.is_some(), "{e}"),
        }
    }

    #[test]
    fn inputs_ignore_unrelated_fields_and_follow_related_ones() {
        let base = wifi_hive();
        let (json, secrets) = Software.inputs(&base).expect("inputs");
        assert!(secrets.is_empty());
        let mut unrelated = base.clone();
        unrelated.hive.sensors.clear();
        unrelated.hive.collector.batch_size = 7;
        unrelated.settings.database.retention_days = 90;
        unrelated.settings.monitoring.enabled = false;
        if let Some(s) = unrelated.hive.security.as_mut() {
            s.database.password = Secret::new("security.database.password", "other");
            s.database.username = "other".into();
        }
        assert_eq!(Software.inputs(&unrelated).expect("inputs").0, json);
        let mut related = base.clone();
        related
            .settings
            .software
            .python_packages
            .push("smbus2==0.5.1".into());
        assert_ne!(Software.inputs(&related).expect("inputs").0, json);
    }

    /// The sections are POSIX sh: `sh -n` (dash on Debian) parses them, where present.
    #[test]
    fn sections_parse_as_posix_sh() {
        let g = generate(&wifi_hive());
        for s in &g.sections {
            crate::modules::oracles::sh_syntax_ok(&s.name, &s.script);
        }
    }
}
