//! The `database` module: TimescaleDB on the PostgreSQL 15 of Debian bookworm, sized for
//! a Raspberry Pi, holding the hive's `sensor_readings` hypertable (REFERENCE §3).
//!
//! It owns the database password file (`/etc/w4b/secrets/db_password`, 0600 root), the
//! server settings, the schema SQL, and the first-boot section that applies them. The
//! packages themselves are installed by the `software` module's first-boot section
//! (order 30), which asks [`local_database`] whether they are needed.
//!
//! Two bookworm facts shape it:
//! - `pg_createcluster` (run by the `postgresql-15` package) refuses to create a cluster
//!   whose configuration directory already exists, so nothing may be put under
//!   `/etc/postgresql/15/main/` in the image: the settings ship in
//!   `/usr/local/lib/w4b/db/postgresql.conf` and the first-boot section installs them as
//!   `/etc/postgresql/15/main/conf.d/w4b.conf` once the cluster exists (Debian's
//!   `postgresql.conf` includes `conf.d`), restarting the server when they changed
//!   (`shared_preload_libraries` needs a restart).
//! - psql 15 has `\getenv`: the section reads the password file into the environment of
//!   one `psql` process, which moves it into the psql variable `pw`, and the SQL uses it
//!   only as `:'pw'` (psql quotes it as a literal). The password is never in the SQL
//!   text, a shell command line or a process's arguments.
//!
//! Every statement is idempotent (`IF NOT EXISTS`, `\gexec` guards, policies removed and
//! added again), so the section may run again after a power cut; a marker under
//! `/var/lib/w4b` keeps a completed run from repeating.

use serde::Serialize;

use super::{Body, GenFile, Generated, Module, ModuleError, Section};
use crate::hive::config::{Database as DbCredentials, HiveImage, Secret};

/// The database password, read by the first-boot section (as root) and handed to the
/// sensor manager by systemd (`LoadCredential=`), so it stays root-owned and 0600.
pub const PASSWORD_FILE: &str = "/etc/w4b/secrets/db_password";
/// The schema, applied by the first-boot section.
pub const SCHEMA_FILE: &str = "/usr/local/lib/w4b/db/schema.sql";
/// The server settings, installed into the cluster's `conf.d` on first boot.
pub const CONF_SOURCE: &str = "/usr/local/lib/w4b/db/postgresql.conf";
/// Where [`CONF_SOURCE`] ends up.
pub const CONF_TARGET: &str = "/etc/postgresql/15/main/conf.d/w4b.conf";
/// The systemd unit of the cluster (Debian's `postgresql.service` is only an umbrella).
pub const CLUSTER_UNIT: &str = "postgresql@15-main.service";
/// First-boot order of the schema section: PostgreSQL and TimescaleDB are installed at
/// build time (`//packages:w4b-database`); before the sensor manager starts.
pub const SECTION_ORDER: u32 = 50;

const DONE_MARKER: &str = "/var/lib/w4b/db-schema.done";

/// The database credentials when the database runs on the hive itself (host `localhost`,
/// `127.0.0.1`, `::1` or empty) — the case in which this module installs PostgreSQL.
pub fn local_database(cfg: &HiveImage) -> Option<&DbCredentials> {
    let db = &cfg.hive.security.as_ref()?.database;
    matches!(db.host.as_str(), "" | "localhost" | "127.0.0.1" | "::1").then_some(db)
}

/// TimescaleDB on the hive.
pub struct Database;

/// Everything [`Database::generate`] reads: [`Module::inputs`] is this, serialised.
#[derive(Serialize)]
struct Plan<'a> {
    username: &'a str,
    database: &'a str,
    port: u16,
    /// False when the database is elsewhere: only the password file is written (the
    /// sensor manager still needs it).
    local: bool,
    retention_days: u64,
    compress_after_days: u64,
    password: &'a Secret,
}

fn plan(cfg: &HiveImage) -> Option<Plan<'_>> {
    let db = &cfg.hive.security.as_ref()?.database;
    Some(Plan {
        username: &db.username,
        database: &db.database,
        port: db.port,
        local: local_database(cfg).is_some(),
        retention_days: cfg.settings.database.retention_days,
        compress_after_days: cfg.settings.database.compress_after_days,
        password: &db.password,
    })
}

fn error(message: impl Into<String>, help: impl Into<String>) -> ModuleError {
    ModuleError {
        module: "database",
        message: message.into(),
        help: Some(help.into()),
    }
}

/// A PostgreSQL identifier we accept for the role and the database: lower-case, as
/// PostgreSQL folds unquoted names, so `psql -U hiveuser` and the SQL agree.
fn check_identifier(what: &str, name: &str) -> Result<(), ModuleError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || name.len() > 63 {
        return Err(error(
            format!("the database {what} `{name}` is not a plain PostgreSQL name"),
            "use 1 to 63 characters of `a-z`, `0-9` and `_`, not starting with a digit",
        ));
    }
    if name.starts_with("pg_") || name == "postgres" || name == "template0" || name == "template1" {
        return Err(error(
            format!("the database {what} `{name}` is reserved by PostgreSQL"),
            "choose another name in `security.database`",
        ));
    }
    Ok(())
}

fn check(p: &Plan<'_>) -> Result<(), ModuleError> {
    check_identifier("username", p.username)?;
    check_identifier("name", p.database)?;
    if p.retention_days == 0 || p.compress_after_days == 0 {
        return Err(error(
            "database `retention_days` and `compress_after_days` must be at least 1",
            "set `database.retention_days` (default 30) and `database.compress_after_days` (default 7)",
        ));
    }
    if p.compress_after_days >= p.retention_days {
        return Err(error(
            format!(
                "chunks would be dropped ({} days) before they are compressed ({} days)",
                p.retention_days, p.compress_after_days
            ),
            "make `database.compress_after_days` smaller than `database.retention_days`",
        ));
    }
    if p.port == 0 {
        return Err(error(
            "the database port is 0",
            "set `security.database.port` (default 5432)",
        ));
    }
    if p.password.expose().is_empty() {
        return Err(error(
            "the database password is empty",
            "set `security.database.password` (the manager generates 20 characters)",
        ));
    }
    Ok(())
}

fn server_conf(p: &Plan<'_>) -> String {
    format!(
        "# w4b: PostgreSQL settings for a Raspberry Pi hive node (generated; installed as\n\
         # {CONF_TARGET} on first boot).\n\
         port = {port}\n\
         listen_addresses = 'localhost'\n\
         # A Pi has 1-8 GB shared with the sensor manager: small buffers, few connections.\n\
         shared_buffers = 128MB\n\
         work_mem = 16MB\n\
         max_connections = 20\n\
         shared_preload_libraries = 'timescaledb'\n\
         # No usage reports leave the hive.\n\
         timescaledb.telemetry_level = off\n",
        port = p.port
    )
}

/// The schema as a psql script. The role and database names are validated identifiers;
/// they still go through psql variables (`:"name"`, `:'name'`) so the SQL never depends
/// on that. The password is the variable `pw`, set by the caller (`\getenv` or `-v`).
fn schema_sql(p: &Plan<'_>) -> String {
    format!(
        r#"-- w4b: the hive database (generated). Idempotent: safe to run again.
-- Run as the PostgreSQL superuser with the role's password in the psql variable `pw`:
--   psql -X -v ON_ERROR_STOP=1 -v pw="$(cat {PASSWORD_FILE})" -f {SCHEMA_FILE}
-- (first boot uses `\getenv pw W4B_DB_PASSWORD` instead, keeping it out of argv).
\set ON_ERROR_STOP on
\if :{{?pw}}
\else
-- (`\quit` would end psql with status 0: fail with an error instead.)
DO $$ BEGIN RAISE EXCEPTION 'schema.sql: set the psql variable pw (the role password)'; END $$;
\endif
\set w4b_user '{user}'
\set w4b_db '{db}'
-- The "already exists, skipping" notices of a re-run are not news.
SET client_min_messages = warning;

-- The role: created once, its password (re)set from the secret every run.
SELECT format('CREATE ROLE %I LOGIN', :'w4b_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'w4b_user') \gexec
ALTER ROLE :"w4b_user" WITH LOGIN PASSWORD :'pw';

-- The database, owned by the role (CREATE DATABASE cannot run in a transaction block,
-- hence \gexec rather than a DO block).
SELECT format('CREATE DATABASE %I OWNER %I', :'w4b_db', :'w4b_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'w4b_db') \gexec

\connect :"w4b_db"
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE IF NOT EXISTS sensor_readings (
    time        timestamptz      NOT NULL,
    hive_id     text,
    sensor_id   text,
    metric_name text,
    value       double precision,
    unit        text,
    status      text,
    metadata    jsonb
);
SELECT create_hypertable('sensor_readings', 'time', if_not_exists => TRUE);

CREATE INDEX IF NOT EXISTS sensor_readings_sensor_time_idx
    ON sensor_readings (sensor_id, time DESC);
CREATE INDEX IF NOT EXISTS sensor_readings_metric_time_idx
    ON sensor_readings (metric_name, time DESC);
CREATE INDEX IF NOT EXISTS sensor_readings_hive_time_idx
    ON sensor_readings (hive_id, time DESC);

GRANT USAGE ON SCHEMA public TO :"w4b_user";
GRANT SELECT, INSERT, UPDATE, DELETE ON sensor_readings TO :"w4b_user";

-- Compression settings cannot change once chunks are compressed: set them only while
-- compression is still off.
SELECT NOT compression_enabled AS w4b_compress_off
  FROM timescaledb_information.hypertables
 WHERE hypertable_schema = 'public' AND hypertable_name = 'sensor_readings' \gset
\if :w4b_compress_off
ALTER TABLE sensor_readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'sensor_id, metric_name',
    timescaledb.compress_orderby = 'time DESC'
);
\endif

-- Policies are replaced, not kept: a changed setting takes effect on the next run.
SELECT remove_compression_policy('sensor_readings', if_exists => TRUE);
SELECT add_compression_policy('sensor_readings', INTERVAL '{compress} days');
SELECT remove_retention_policy('sensor_readings', if_exists => TRUE);
SELECT add_retention_policy('sensor_readings', INTERVAL '{retention} days');
"#,
        user = p.username,
        db = p.database,
        compress = p.compress_after_days,
        retention = p.retention_days,
    )
}

fn section(p: &Plan<'_>) -> Section {
    let script = format!(
        r#"# Apply the TimescaleDB settings and schema (installed at build time from //packages:w4b-database).
if [ -e {DONE_MARKER} ]; then
    echo "database: schema already applied ({DONE_MARKER})"
else
    if [ ! -d /etc/postgresql/15/main/conf.d ]; then
        echo "database: the PostgreSQL 15 cluster is missing; is postgresql-15 in the image (//packages:w4b-database)?" >&2
        exit 1
    fi
    if ! cmp -s {CONF_SOURCE} {CONF_TARGET}; then
        install -o postgres -g postgres -m 0644 {CONF_SOURCE} {CONF_TARGET}.w4b-new
        mv -f {CONF_TARGET}.w4b-new {CONF_TARGET}
        echo "database: installed {CONF_TARGET}; restarting {CLUSTER_UNIT}"
        systemctl restart {CLUSTER_UNIT}
    fi
    w4b_db_try=0
    until pg_isready -q -h /var/run/postgresql -p {port}; do
        w4b_db_try=$((w4b_db_try + 1))
        if [ "$w4b_db_try" -ge 60 ]; then
            echo "database: PostgreSQL did not accept connections within 120 s" >&2
            exit 1
        fi
        sleep 2
    done
    # The password goes from its 0600 file into psql's environment only; \getenv moves
    # it into the psql variable `pw`, which the SQL quotes as a literal (:'pw').
    W4B_DB_PASSWORD="$(cat {PASSWORD_FILE})" runuser -u postgres -- \
        psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p {port} -d postgres \
        -c '\getenv pw W4B_DB_PASSWORD' -f {SCHEMA_FILE}
    install -d -m 0755 /var/lib/w4b
    : > {DONE_MARKER}
    echo "database: schema applied"
fi
"#,
        port = p.port
    );
    Section {
        order: SECTION_ORDER,
        name: "database/schema".into(),
        script,
    }
}

impl Module for Database {
    fn name(&self) -> &'static str {
        "database"
    }

    fn version(&self) -> u32 {
        2
    }

    fn inputs<'a>(&self, cfg: &'a HiveImage) -> Result<crate::modules::Inputs<'a>, ModuleError> {
        Ok(match plan(cfg) {
            Some(p) => (crate::modules::inputs_json(self.name(), &p)?, vec![p.password]),
            // Disabled: no step is planned, and nothing is read.
            None => (serde_json::Value::Null, Vec::new()),
        })
    }

    /// Without the hive's `security.database` there are no credentials to set up.
    fn enabled(&self, cfg: &HiveImage) -> bool {
        plan(cfg).is_some()
    }

    fn generate(&self, cfg: &HiveImage) -> Result<Generated, ModuleError> {
        let Some(p) = plan(cfg) else {
            return Ok(Generated::default());
        };
        check(&p)?;
        let mut files = vec![
            GenFile::dir("/etc/w4b", 0o755),
            GenFile::dir("/etc/w4b/secrets", 0o700),
            GenFile::owned(
                PASSWORD_FILE,
                Body::File(p.password.expose().as_bytes().to_vec()),
                0o600,
                0,
                0,
            ),
        ];
        let mut sections = Vec::new();
        if p.local {
            files.extend([
                GenFile::dir("/usr/local/lib/w4b", 0o755),
                GenFile::dir("/usr/local/lib/w4b/db", 0o755),
                GenFile::file(CONF_SOURCE, server_conf(&p), 0o644),
                GenFile::file(SCHEMA_FILE, schema_sql(&p), 0o644),
                // Debian enables its packaged units on install; the link says so in the
                // image too, so validation sees the database as an enabled service.
                GenFile::symlink(
                    "/etc/systemd/system/multi-user.target.wants/postgresql.service",
                    "/lib/systemd/system/postgresql.service",
                ),
            ]);
            sections.push(section(&p));
        }
        Ok(Generated { files, sections })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::oracles;
    use crate::modules::testing::{file_text as text, find, lan_hive, render, wifi_hive};

    fn generate(cfg: &HiveImage) -> Generated {
        match Database.generate(cfg) {
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
        insta::assert_snapshot!(render(&generate(&lan_hive())));
    }

    #[test]
    fn password_file_is_root_0600_and_nowhere_else() {
        let cfg = wifi_hive();
        let g = generate(&cfg);
        let pw = find(&g, PASSWORD_FILE);
        assert_eq!((pw.mode, pw.uid, pw.gid), (0o600, 0, 0));
        assert_eq!(text(pw), "SECRET-db-pass-1234567");
        assert_eq!(find(&g, "/etc/w4b/secrets").mode, 0o700);
        let secret = "SECRET-db-pass-1234567";
        for f in g.files.iter().filter(|f| f.path.to_string() != PASSWORD_FILE) {
            if let Body::File(b) = &f.body {
                assert!(
                    !String::from_utf8_lossy(b).contains(secret),
                    "{} has the password",
                    f.path
                );
            }
        }
        for s in &g.sections {
            assert!(!s.script.contains(secret), "section {} has the password", s.name);
        }
    }

    #[test]
    fn settings_and_schema_carry_the_configuration() {
        let mut cfg = lan_hive();
        cfg.settings.database.retention_days = 90;
        cfg.settings.database.compress_after_days = 14;
        let g = generate(&cfg);
        let conf = text(find(&g, CONF_SOURCE));
        for line in [
            "shared_buffers = 128MB",
            "work_mem = 16MB",
            "max_connections = 20",
            "shared_preload_libraries = 'timescaledb'",
            "timescaledb.telemetry_level = off",
            "port = 5432",
        ] {
            assert!(conf.lines().any(|l| l == line), "missing `{line}` in\n{conf}");
        }
        let sql = text(find(&g, SCHEMA_FILE));
        assert!(sql.contains("INTERVAL '90 days'"), "{sql}");
        assert!(sql.contains("INTERVAL '14 days'"), "{sql}");
        assert!(sql.contains("\\set w4b_user 'hiveuser'"));
        assert!(sql.contains("PASSWORD :'pw'"));
        assert!(sql.contains("create_hypertable('sensor_readings', 'time', if_not_exists => TRUE)"));
        // Nothing may sit under the cluster's directory in the image (pg_createcluster
        // would refuse to create it).
        assert!(g
            .files
            .iter()
            .all(|f| !f.path.to_string().starts_with("/etc/postgresql")));
    }

    #[test]
    fn the_section_passes_the_password_through_the_environment() {
        let g = generate(&wifi_hive());
        assert_eq!(g.sections.len(), 1);
        let s = &g.sections[0];
        assert_eq!((s.order, s.name.as_str()), (SECTION_ORDER, "database/schema"));
        assert!(s.script.contains(r"-c '\getenv pw W4B_DB_PASSWORD'"));
        assert!(s
            .script
            .contains(&format!("W4B_DB_PASSWORD=\"$(cat {PASSWORD_FILE})\"")));
        assert!(!s.script.contains("-v pw="), "the password must not reach argv");
    }

    #[test]
    fn a_remote_database_gets_only_the_password_file() {
        let mut cfg = wifi_hive();
        if let Some(s) = cfg.hive.security.as_mut() {
            s.database.host = "db.example.org".into();
        }
        let g = generate(&cfg);
        assert!(g.sections.is_empty());
        let paths: Vec<String> = g.files.iter().map(|f| f.path.to_string()).collect();
        assert_eq!(paths, ["/etc/w4b", "/etc/w4b/secrets", PASSWORD_FILE]);
        assert!(local_database(&cfg).is_none());
    }

    #[test]
    fn no_security_means_no_database() {
        let mut cfg = wifi_hive();
        cfg.hive.security = None;
        assert!(!Database.enabled(&cfg));
        assert_eq!(Database.inputs(&cfg).expect("inputs").0, serde_json::Value::Null);
        assert_eq!(generate(&cfg), Generated::default());
    }

    #[test]
    fn bad_names_and_retention_are_errors() {
        type Case = (&'static str, fn(&mut HiveImage));
        let cases: [Case; 5] = [
            ("not a plain PostgreSQL name", |c| {
                if let Some(s) = c.hive.security.as_mut() {
                    s.database.username = "hive'user".into();
                }
            }),
            ("not a plain PostgreSQL name", |c| {
                if let Some(s) = c.hive.security.as_mut() {
                    s.database.database = "HiveDB".into();
                }
            }),
            ("reserved by PostgreSQL", |c| {
                if let Some(s) = c.hive.security.as_mut() {
                    s.database.username = "postgres".into();
                }
            }),
            ("dropped", |c| c.settings.database.compress_after_days = 30),
            ("at least 1", |c| c.settings.database.retention_days = 0),
        ];
        for (want, change) in cases {
            let mut cfg = wifi_hive();
            change(&mut cfg);
            match Database.generate(&cfg) {
                Ok(_) => panic!("accepted a configuration that should fail with `{want}`"),
                Err(e) => {
                    assert!(e.to_string().contains(want), "`{e}` lacks `{want}`");
                    assert!(e.help.is_some());
                }
            }
        }
    }

    #[test]
    fn inputs_ignore_unrelated_fields_and_follow_related_ones() {
        let base = wifi_hive();
        let (json, secrets) = Database.inputs(&base).expect("inputs");
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].name, "security.database.password");
        assert!(!json.to_string().contains("SECRET"), "{json}");

        let mut unrelated = base.clone();
        unrelated.hive.sensors.clear();
        unrelated.hive.collector.interval = 5;
        unrelated.hive.network.wifi.clear();
        unrelated.settings.monitoring.health_interval = 60;
        unrelated
            .settings
            .software
            .packages
            .push(crate::modules::testing::spanned("vim"));
        assert_eq!(Database.inputs(&unrelated).expect("inputs").0, json);

        let mut related = base.clone();
        related.settings.database.retention_days = 60;
        assert_ne!(Database.inputs(&related).expect("inputs").0, json);
    }

    /// The real oracle, PostgreSQL as Debian's `postgresql` package installs it (the server
    /// binaries under `/usr/lib/postgresql/<major>/bin`, the newest major taken; 15 on
    /// bookworm, as on the hive): a scratch cluster runs the whole
    /// script twice (TimescaleDB, which these machines lack, replaced by stand-ins with its
    /// functions' signatures), with a password full of quotes passed the way the first-boot
    /// section passes it; the role can then log in over TCP with exactly that password and
    /// write a reading, and the policies hold the configured intervals once each.
    #[test]
    #[allow(clippy::disallowed_methods)] // reads the uid, runs the oracle
    fn the_schema_runs_on_a_scratch_postgres() {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
            .filter(|(_, dir)| dir.join("bin/initdb").exists())
            .max()
            .map(|(_, dir)| dir.join("bin"));
        let Some(bin) = bin else {
            crate::oracle::unavailable(
                "no PostgreSQL server under `/usr/lib/postgresql/*/bin` (Debian's `postgresql`)",
            );
            return;
        };
        crate::oracle::require!("psql", "setpriv");
        let sql = schema_sql(&match plan(&wifi_hive()) {
            Some(p) => p,
            None => panic!("no plan"),
        });
        // TimescaleDB stand-ins with its functions' names and parameters: each policy
        // lands in a table, whose primary key fails a second `add` without a `remove`.
        let stubs = r#"CREATE SCHEMA IF NOT EXISTS timescaledb_information;
CREATE OR REPLACE VIEW timescaledb_information.hypertables AS
    SELECT 'public'::name AS hypertable_schema, 'sensor_readings'::name AS hypertable_name,
           true AS compression_enabled;
CREATE TABLE IF NOT EXISTS stub_policies (kind text PRIMARY KEY, after interval);
CREATE OR REPLACE FUNCTION create_hypertable(relation regclass, time_column_name name,
    if_not_exists boolean DEFAULT false) RETURNS text LANGUAGE sql AS $$ SELECT relation::text $$;
CREATE OR REPLACE FUNCTION add_compression_policy(hypertable regclass, compress_after anyelement,
    if_not_exists boolean DEFAULT false) RETURNS int LANGUAGE sql
    AS $$ INSERT INTO stub_policies VALUES ('compress', compress_after) RETURNING 1 $$;
CREATE OR REPLACE FUNCTION remove_compression_policy(hypertable regclass, if_exists boolean DEFAULT false)
    RETURNS boolean LANGUAGE sql AS $$ DELETE FROM stub_policies WHERE kind = 'compress' RETURNING true $$;
CREATE OR REPLACE FUNCTION add_retention_policy(relation regclass, drop_after anyelement,
    if_not_exists boolean DEFAULT false) RETURNS int LANGUAGE sql
    AS $$ INSERT INTO stub_policies VALUES ('retention', drop_after) RETURNING 1 $$;
CREATE OR REPLACE FUNCTION remove_retention_policy(relation regclass, if_exists boolean DEFAULT false)
    RETURNS boolean LANGUAGE sql AS $$ DELETE FROM stub_policies WHERE kind = 'retention' RETURNING true $$;
"#;
        let extension = "CREATE EXTENSION IF NOT EXISTS timescaledb;\n";
        assert!(sql.contains(extension));
        let prefix = sql.replace(extension, stubs);
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let d = dir.path();
        let password = "it's a \"pass\\word\"'; DROP ROLE hiveuser; -- :'pw' $HOME `id`";
        for (name, body) in [("schema.sql", prefix.as_str()), ("pw", password)] {
            if let Err(e) = std::fs::write(d.join(name), body) {
                panic!("{e}");
            }
            // Readable by the cluster's user whatever the umask.
            use std::os::unix::fs::PermissionsExt as _;
            if let Err(e) = std::fs::set_permissions(d.join(name), std::fs::Permissions::from_mode(0o644)) {
                panic!("{e}");
            }
        }
        // PostgreSQL refuses to run as root: the cluster belongs to `nobody` then.
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let as_user = if root {
            if let Err(e) = std::os::unix::fs::chown(d, Some(65534), Some(65534)) {
                panic!("{e}");
            }
            "setpriv --reuid=65534 --regid=65534 --clear-groups"
        } else {
            ""
        };
        let port = 40000 + std::process::id() % 20000;
        let script = format!(
            r#"set -e
cd '{d}'
export PATH={bin}:$PATH
{as_user} initdb --no-sync -D data -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
{as_user} pg_ctl -s -D data -l log -w -o "-k {d} -p {port} -c listen_addresses=127.0.0.1" start
trap '{as_user} pg_ctl -s -D data -m immediate stop' EXIT
for run in 1 2; do
    W4B_DB_PASSWORD="$(cat pw)" {as_user} psql -X -q -A -t -v ON_ERROR_STOP=1 -h '{d}' -p {port} -U postgres -d postgres \
        -c '\getenv pw W4B_DB_PASSWORD' -f schema.sql >/dev/null
done
# Without the password the script stops before touching anything.
if {as_user} psql -X -q -h '{d}' -p {port} -U postgres -d postgres -f schema.sql >/dev/null 2>&1; then
    echo "ran without pw"
fi
PGPASSWORD="$(cat pw)" {as_user} psql -X -A -t -h 127.0.0.1 -p {port} -U hiveuser -d hivedb \
    -c "INSERT INTO sensor_readings VALUES (now(), 'h', 's', 'temperature', 21.5, 'C', 'ok', '{{}}')" \
    -c "SELECT current_user || '@' || current_database() || ' ' || count(*) FROM sensor_readings"
{as_user} psql -X -A -t -h '{d}' -p {port} -U postgres -d hivedb \
    -c "SELECT kind || ' ' || after FROM stub_policies ORDER BY kind" \
    -c "SELECT count(*) || ' indexes' FROM pg_indexes WHERE tablename = 'sensor_readings'"
"#,
            d = d.display(),
            bin = bin.display(),
        );
        let out = oracles::run_sh(&script);
        assert_eq!(
            out,
            "INSERT 0 1\nhiveuser@hivedb 1\ncompress 7 days\nretention 30 days\n3 indexes\n"
        );
    }

    #[test]
    fn the_section_parses_as_posix_sh() {
        for s in generate(&wifi_hive()).sections {
            oracles::sh_syntax_ok(&s.name, &s.script);
        }
    }

    /// Across the four service modules and both fixtures: no secret text in a section, in
    /// `inputs()`, or in any file but a mode-0600 one.
    #[test]
    fn service_modules_keep_secrets_in_0600_files() {
        use crate::modules::{monitoring::Monitoring, sensor_manager::SensorManager, software::Software};
        let modules: [&dyn Module; 4] = [&Software, &Database, &SensorManager, &Monitoring];
        for cfg in [wifi_hive(), lan_hive()] {
            let secrets: Vec<String> = cfg.secrets().iter().map(|s| s.expose().to_owned()).collect();
            assert!(secrets.len() >= 4, "the fixture lost its secrets");
            for m in modules {
                let g = match m.generate(&cfg) {
                    Ok(g) => g,
                    Err(e) => panic!("{}: {e}", m.name()),
                };
                let inputs = m.inputs(&cfg).expect("inputs").0.to_string();
                for secret in &secrets {
                    assert!(
                        !inputs.contains(secret.as_str()),
                        "{}: inputs hold a secret",
                        m.name()
                    );
                    for s in &g.sections {
                        assert!(
                            !s.script.contains(secret.as_str()),
                            "section {} holds a secret",
                            s.name
                        );
                    }
                    for f in g.files.iter().filter(|f| f.mode & 0o077 != 0) {
                        if let Body::File(b) | Body::Append(b) = &f.body {
                            let text = String::from_utf8_lossy(b);
                            assert!(
                                !text.contains(secret.as_str()),
                                "{} ({:o}) holds a secret",
                                f.path,
                                f.mode
                            );
                        }
                    }
                }
            }
        }
    }

    /// psql itself would be the real oracle; without a server, check the script's
    /// structure: every `\if` closed, and every statement either a meta-command or ended.
    #[test]
    fn the_psql_script_is_balanced() {
        let sql = schema_sql(&match plan(&wifi_hive()) {
            Some(p) => p,
            None => panic!("no plan"),
        });
        let ifs = sql.lines().filter(|l| l.starts_with("\\if")).count();
        let ends = sql.lines().filter(|l| l.starts_with("\\endif")).count();
        assert_eq!(ifs, ends);
        assert_eq!(sql.matches('(').count(), sql.matches(')').count());
    }
}
