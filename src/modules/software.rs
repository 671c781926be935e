//! The `software` module: the Debian packages and the Python environment of a hive image.
//!
//! Packages are installed on the hive's first boot for now (offline installation arrives
//! with package sets): the image carries the list (`/usr/local/lib/w4b/software/packages.txt`),
//! the Timescale apt source, and one idempotent first-boot section that installs
//! everything with retries. The list is `software.packages` plus what the other service
//! modules need, derived from the same configuration they read:
//!
//! | package                          | when                                          |
//! |----------------------------------|-----------------------------------------------|
//! | `postgresql-15`, `timescaledb-2-postgresql-15` | the database runs on the hive ([`database::local_database`]) |
//! | `prometheus-node-exporter`       | `monitoring.enabled`                          |
//! | `wireguard-tools`                | the VPN is enabled and the hive has `security` |
//! | `nftables`                       | `firewall.enabled`                            |
//! | `python3-venv`                   | the sensor manager is enabled or Python packages are listed |
//!
//! TimescaleDB comes from Timescale's own repository (packagecloud). Its list file names
//! its keyring (`signed-by=`); the key is fetched on first boot and accepted only if its
//! primary key fingerprints are the published ones ([`TIMESCALE_FINGERPRINTS`]). Until
//! the key is in place, apt runs with an empty `sources.list.d` (Debian's own
//! `sources.list` only) to install `curl` and `gpg`, because a source whose keyring is
//! missing makes `apt-get update` fail.
//!
//! The Python venv `/opt/w4b/venv` gets `python_packages` from a generated
//! `/opt/w4b/requirements.txt`; every entry must be pinned (`name==version`).
//!
//! Services are enabled by the modules that own them (a wants-symlink each), not here.

use serde::Serialize;

use super::{database, GenFile, Generated, Module, ModuleError, Section};
use crate::hive::config::HiveImage;

/// The package list the first-boot section installs, one name a line.
pub const PACKAGES_FILE: &str = "/usr/local/lib/w4b/software/packages.txt";
/// An empty directory: `Dir::Etc::SourceParts` while the Timescale key is not yet in.
pub const NO_SOURCES_DIR: &str = "/usr/local/lib/w4b/software/no-sources.d";
/// The Timescale apt source.
pub const TIMESCALE_LIST: &str = "/etc/apt/sources.list.d/timescaledb.list";
/// Its keyring, written on first boot after the fingerprint check.
pub const TIMESCALE_KEYRING: &str = "/etc/apt/keyrings/timescaledb.gpg";
/// Where the key is fetched from (HTTPS only).
pub const TIMESCALE_KEY_URL: &str = "https://packagecloud.io/timescale/timescaledb/gpgkey";
/// The fingerprints a fetched Timescale key may carry as primary keys: the packagecloud
/// signing key of `timescale/timescaledb` (published with the repository's install notes
/// and used by configuration-management modules for the repository) and the newer key
/// apt reports as signing its bookworm/trixie `InRelease` files
/// (timescale/timescaledb issue 8871).
pub const TIMESCALE_FINGERPRINTS: [&str; 2] = [
    "1005FB68604CE9B8F6879CF759F18EDF47F24417",
    "0641009A8366FDE4444A7B62E7391C94080429FF",
];
/// The sensor manager's Python environment.
pub const VENV: &str = "/opt/w4b/venv";
/// Its pinned requirements.
pub const REQUIREMENTS: &str = "/opt/w4b/requirements.txt";
/// First-boot order of the package installation: after the system and security modules'
/// early sections (host keys, users: below 30), before everything that needs a package.
pub const PACKAGES_ORDER: u32 = 30;
/// First-boot order of the venv: right after the packages (`python3-venv`).
pub const VENV_ORDER: u32 = 35;

/// Packages and Python environment.
pub struct Software;

/// Everything [`Software::generate`] reads: [`Module::inputs`] is this, serialised.
#[derive(Serialize)]
struct Plan<'a> {
    packages: &'a [String],
    python_packages: &'a [String],
    timescaledb: bool,
    node_exporter: bool,
    wireguard: bool,
    nftables: bool,
    venv: bool,
}

fn plan(cfg: &HiveImage) -> Plan<'_> {
    let s = &cfg.settings;
    Plan {
        packages: &s.software.packages,
        python_packages: &s.software.python_packages,
        timescaledb: database::local_database(cfg).is_some(),
        node_exporter: s.monitoring.enabled,
        wireguard: s.vpn_enabled && cfg.hive.security.is_some(),
        nftables: s.firewall.enabled,
        venv: s.sensor_manager.enabled || !s.software.python_packages.is_empty(),
    }
}

fn error(message: impl Into<String>, help: &str) -> ModuleError {
    ModuleError {
        module: "software",
        message: message.into(),
        help: Some(help.to_owned()),
    }
}

/// A Debian package name (Debian Policy §5.6.7), optionally with `:arch` or `=version`.
/// The section word-splits the list file, so nothing else may appear.
fn check_package(name: &str) -> Result<(), ModuleError> {
    let (base, suffix) = match name.find(['=', ':']) {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (name, ""),
    };
    let base_ok = base.len() >= 2
        && base.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && base
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    let suffix_ok = suffix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '~' | ':'));
    if base_ok && suffix_ok && (suffix.is_empty() != name.contains(['=', ':'])) {
        Ok(())
    } else {
        Err(error(
            format!("`{name}` in `software.packages` is not a Debian package name"),
            "use names like `i2c-tools`, optionally `name=version` or `name:arch`",
        ))
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

/// The packages to install, sorted and unique (the list is a set; its order would only
/// change the image for nothing).
fn package_list(p: &Plan<'_>) -> Vec<String> {
    let mut v: Vec<String> = p.packages.to_vec();
    let mut need = |on: bool, names: &[&str]| {
        if on {
            v.extend(names.iter().map(|n| (*n).to_owned()));
        }
    };
    need(p.timescaledb, &["postgresql-15", "timescaledb-2-postgresql-15"]);
    need(p.node_exporter, &["prometheus-node-exporter"]);
    need(p.wireguard, &["wireguard-tools"]);
    need(p.nftables, &["nftables"]);
    need(p.venv, &["python3-venv"]);
    v.sort();
    v.dedup();
    v
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

/// apt options for an unattended first boot: wait for a boot-time apt run instead of
/// failing on its lock, and keep the configuration files the image already carries
/// (`/etc/default/prometheus-node-exporter`) instead of asking.
const APT_OPTS: &str =
    "-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";

fn packages_section(p: &Plan<'_>) -> Section {
    let mut s = String::from("# Install the image's Debian packages (list: ");
    s.push_str(PACKAGES_FILE);
    s.push_str(").\n");
    s.push_str(RETRY_FN);
    s.push_str("export DEBIAN_FRONTEND=noninteractive\n");
    s.push_str(&format!("w4b_apt_opts='{APT_OPTS}'\n"));
    s.push_str("# A power cut may have interrupted dpkg on an earlier run.\n");
    s.push_str("dpkg --configure -a\n");
    if p.timescaledb {
        let accepted = TIMESCALE_FINGERPRINTS.join("|");
        s.push_str(&format!(
            r#"if [ ! -s {TIMESCALE_KEYRING} ]; then
    echo "software: fetching the Timescale apt key"
    # {TIMESCALE_LIST} names a keyring that does not exist yet; leave sources.list.d out.
    w4b_retry apt-get update -o Dir::Etc::SourceParts={NO_SOURCES_DIR}
    w4b_retry apt-get install -y --no-install-recommends $w4b_apt_opts ca-certificates curl gpg
    w4b_tmp=$(mktemp -d)
    mkdir -m 0700 "$w4b_tmp/gnupg"
    w4b_retry curl -fsSL --proto '=https' --tlsv1.2 -o "$w4b_tmp/key.asc" {TIMESCALE_KEY_URL}
    w4b_fprs=$(GNUPGHOME="$w4b_tmp/gnupg" gpg --batch --show-keys --with-colons "$w4b_tmp/key.asc" \
        | awk -F: '$1 == "pub" {{ want = 1; next }} $1 == "fpr" && want {{ print $10; want = 0 }}')
    if [ -z "$w4b_fprs" ]; then
        echo "software: {TIMESCALE_KEY_URL} holds no OpenPGP key" >&2
        exit 1
    fi
    for w4b_fpr in $w4b_fprs; do
        case "$w4b_fpr" in
            {accepted}) echo "software: Timescale key $w4b_fpr accepted" ;;
            *)
                echo "software: the Timescale key has the unexpected fingerprint $w4b_fpr; refusing it" >&2
                exit 1
                ;;
        esac
    done
    GNUPGHOME="$w4b_tmp/gnupg" gpg --batch --yes --dearmor -o "$w4b_tmp/keyring.gpg" "$w4b_tmp/key.asc"
    install -d -m 0755 /etc/apt/keyrings
    install -m 0644 "$w4b_tmp/keyring.gpg" {TIMESCALE_KEYRING}.w4b-new
    mv -f {TIMESCALE_KEYRING}.w4b-new {TIMESCALE_KEYRING}
    rm -rf "$w4b_tmp"
fi
"#
        ));
    }
    s.push_str(&format!(
        r#"w4b_retry apt-get update
# The list holds validated package names only; split it into words, without globbing.
set -f
w4b_pkgs=$(cat {PACKAGES_FILE})
echo "software: installing" $w4b_pkgs
w4b_retry apt-get install -y --no-install-recommends $w4b_apt_opts $w4b_pkgs
set +f
echo "software: packages installed"
"#
    ));
    Section {
        order: PACKAGES_ORDER,
        name: "software/packages".into(),
        script: s,
    }
}

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
        1
    }

    fn inputs<'a>(&self, cfg: &'a HiveImage) -> Result<crate::modules::Inputs<'a>, ModuleError> {
        Ok((crate::modules::inputs_json(self.name(), plan(cfg))?, Vec::new()))
    }

    fn enabled(&self, cfg: &HiveImage) -> bool {
        let p = plan(cfg);
        !package_list(&p).is_empty() || p.venv
    }

    fn generate(&self, cfg: &HiveImage) -> Result<Generated, ModuleError> {
        let p = plan(cfg);
        for name in p.packages {
            check_package(name)?;
        }
        for req in p.python_packages {
            check_python(req)?;
        }
        let mut files = Vec::new();
        let mut sections = Vec::new();
        let packages = package_list(&p);
        if !packages.is_empty() {
            let mut list = packages.join("\n");
            list.push('\n');
            files.extend([
                GenFile::dir("/usr/local/lib/w4b", 0o755),
                GenFile::dir("/usr/local/lib/w4b/software", 0o755),
                GenFile::file(PACKAGES_FILE, list, 0o644),
            ]);
            if p.timescaledb {
                files.extend([
                    GenFile::dir(NO_SOURCES_DIR, 0o755),
                    GenFile::dir("/etc/apt/keyrings", 0o755),
                    GenFile::file(
                        TIMESCALE_LIST,
                        format!(
                            "# TimescaleDB for PostgreSQL 15 (w4b). The keyring is fetched on first\n\
                             # boot and accepted only with the fingerprint {}\n\
                             # (see software/packages in /var/log/w4b/firstboot.log).\n\
                             deb [signed-by={TIMESCALE_KEYRING}] https://packagecloud.io/timescale/timescaledb/debian/ bookworm main\n",
                            TIMESCALE_FINGERPRINTS.join(" or ")
                        ),
                        0o644,
                    ),
                ]);
            }
            sections.push(packages_section(&p));
        }
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
    fn snapshot_lan() {
        let mut cfg = lan_hive();
        // The LAN fixture without a VPN and with a remote database: a different package set.
        cfg.settings.vpn_enabled = false;
        if let Some(s) = cfg.hive.security.as_mut() {
            s.database.host = "db.example.org".into();
        }
        insta::assert_snapshot!(render(&generate(&cfg)));
    }

    #[test]
    fn the_list_has_what_the_modules_need() {
        let g = generate(&wifi_hive());
        let list = text(&g, PACKAGES_FILE);
        let names: Vec<&str> = list.lines().collect();
        assert_eq!(
            names,
            [
                "i2c-tools",
                "nftables",
                "postgresql-15",
                "prometheus-node-exporter",
                "python3-venv",
                "timescaledb-2-postgresql-15",
                "wireguard-tools"
            ]
        );
        let sources = text(&g, TIMESCALE_LIST);
        assert!(sources.contains(&format!("deb [signed-by={TIMESCALE_KEYRING}] https://")));
        assert!(sources.contains("bookworm main"));
        let s = &g.sections[0];
        assert_eq!((s.order, s.name.as_str()), (PACKAGES_ORDER, "software/packages"));
        for f in TIMESCALE_FINGERPRINTS {
            assert!(s.script.contains(f));
        }
        assert!(s.script.contains("--no-install-recommends"));
        assert!(s.script.contains("w4b_retry apt-get install"));
    }

    #[test]
    fn no_timescale_source_without_a_local_database() {
        let mut cfg = wifi_hive();
        cfg.hive.security = None;
        let g = generate(&cfg);
        assert!(g.files.iter().all(|f| f.path.to_string() != TIMESCALE_LIST));
        let list = text(&g, PACKAGES_FILE);
        assert!(
            !list.contains("timescaledb") && !list.contains("wireguard"),
            "{list}"
        );
        assert!(!g.sections[0].script.contains("gpgkey"));
    }

    #[test]
    fn requirements_are_pinned_and_the_venv_is_made_once() {
        let g = generate(&wifi_hive());
        assert!(text(&g, REQUIREMENTS)
            .lines()
            .any(|l| l == "w1thermsensor==2.3.0"));
        let venv = &g.sections[1];
        assert_eq!(
            (venv.order, venv.name.as_str()),
            (VENV_ORDER, "software/python-venv")
        );
        assert!(venv.script.contains(&format!("if [ ! -x {VENV}/bin/pip ]")));
        assert!(venv.script.contains(&format!("-r {REQUIREMENTS}")));
    }

    #[test]
    fn bad_names_are_errors() {
        for bad in [
            "Vim",
            "x",
            "a;rm -rf /",
            "foo bar",
            "$(reboot)",
            "i2c-tools=",
            "-o",
        ] {
            assert!(check_package(bad).is_err(), "accepted package `{bad}`");
        }
        for good in [
            "i2c-tools",
            "python3-smbus",
            "libstdc++6",
            "vim=2:9.0.1378-2",
            "gcc:arm64",
        ] {
            assert!(check_package(good).is_ok(), "refused package `{good}`");
        }
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
        unrelated.settings.monitoring.health_interval = 30;
        if let Some(s) = unrelated.hive.security.as_mut() {
            s.database.password = Secret::new("security.database.password", "other");
            s.database.username = "other".into();
        }
        assert_eq!(Software.inputs(&unrelated).expect("inputs").0, json);
        let mut related = base.clone();
        related.settings.monitoring.enabled = false;
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
