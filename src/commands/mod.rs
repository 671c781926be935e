//! One file per subcommand, plus [`App`]: the context every command shares (arguments,
//! environment, workspace, store) and the single place where errors become exit codes.

pub mod build;
pub mod cache;
pub mod completions;
pub mod diff;
pub mod graph;
pub mod hive;
pub mod hive_fleet;
pub mod hive_new;
pub mod inspect;
pub mod install_debs;
pub mod keygen;
pub mod lock;
pub mod ls;
pub mod publish;
pub mod rebuild;
pub mod sbom;
pub mod test;
pub mod validate;
pub mod verify;
pub mod why;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use w4b_cache::Producer;
use w4b_graph::StepError;

use crate::cli::{Cli, Command, Global, MessageFormat};
use crate::compile::{self, Plan};
use crate::defs::workspace::KeyRef;
use crate::defs::{Label, Pattern, Workspace};
use crate::store::AppStore;
use crate::trust::RemoteTrust;
use crate::ui::Style;

/// What every command gets: parsed arguments, a snapshot of the environment (the only
/// place w4b reads it), and how to talk to the user.
pub struct App {
    pub global: Global,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub style: Style,
}

pub fn run(cli: Cli) -> i32 {
    #[allow(clippy::disallowed_methods)] // The application's one snapshot of the environment.
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let no_color = env.contains_key("NO_COLOR");
    let style = Style::detect(
        cli.global.message_format == MessageFormat::Json,
        cli.global.quiet,
        no_color,
    );
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(style.color)
                .unicode(style.color)
                .terminal_links(false)
                .width(100)
                .build(),
        )
    }));
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let log_file = cli.global.log_file.as_ref().map(|p| cwd.join(p));
    if let Err(e) = crate::ui::log::init(cli.global.verbose, cli.global.quiet, log_file.as_deref()) {
        eprintln!("{:?}", miette::Report::new(e));
        return 1;
    }
    let app = App {
        global: cli.global,
        env,
        cwd,
        style,
    };
    let result = match &cli.command {
        Command::Build(a) => build::run(&app, a),
        Command::Lock(a) => lock::run(&app, a),
        Command::Publish(a) => publish::run(&app, a),
        Command::Why(a) => why::run(&app, a),
        Command::Graph(a) => graph::run(&app, a),
        Command::Ls(a) => ls::run(&app, a),
        Command::Cache(a) => cache::run(&app, a),
        Command::Inspect(a) => inspect::run(&app, a),
        Command::Diff(a) => diff::run(&app, a),
        Command::Verify(a) => verify::run(&app, a),
        Command::Sbom(a) => sbom::run(&app, a),
        Command::Keygen(a) => keygen::run(&app, a),
        Command::Validate(a) => validate::run(&app, a),
        Command::Test(a) => test::run(&app, a),
        Command::InstallDebs(a) => install_debs::run(&app, a),
        Command::Hive(a) => hive::run(&app, a),
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => completions::man(&app, a),
    };
    // `diff` follows diff(1): 1 means "different", so its failures exit with 2.
    // `verify` exits with a bit mask, in which 4 is "other error".
    let failure = match &cli.command {
        Command::Diff(_) => 2,
        Command::Verify(_) => 4,
        _ => 1,
    };
    match result {
        Ok(code) => code,
        Err(report) => {
            // Errors never show a secret value either, whatever wrapped it.
            let rendered = format!("{report:?}");
            eprintln!("{}", crate::redact::redact(&rendered));
            if let Some(code) = report.code() {
                crate::ui::log::error(&format!("[{code}] {}", plain(&report)));
            } else {
                crate::ui::log::error(&plain(&report));
            }
            failure
        }
    }
}

/// A diagnostic a command shows and goes on after (a hive that does not validate among
/// others, a target `--keep-going` sets aside): on stderr and in the log file, as the
/// final error is, with secret values masked — its snippet may show a line of a hive file
/// with an inline password next to the one it is about.
pub(crate) fn show_diagnostic(report: &miette::Report) {
    eprintln!("{}", crate::redact::redact(&format!("{report:?}")));
    match report.code() {
        Some(code) => crate::ui::log::error(&format!("[{code}] {}", plain(report))),
        None => crate::ui::log::error(&plain(report)),
    }
}

/// A diagnostic without colour or box drawing, for the log file.
fn plain(report: &miette::Report) -> String {
    let mut out = String::new();
    let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::none()).with_width(100);
    if handler.render_report(&mut out, report.as_ref()).is_err() {
        out = format!("{report}");
    }
    out
}

/// A failed step as a diagnostic that names the step.
pub fn step_error(step: &str, error: StepError) -> miette::Report {
    match error {
        StepError::Diagnostic(d) => miette::Report::new_boxed(d).wrap_err(format!("step `{step}` failed")),
        StepError::Failed { message, help } => match help {
            Some(h) => miette::miette!(
                code = "w4b::build::step_failed",
                help = h,
                "step `{step}` failed: {message}"
            ),
            None => miette::miette!(
                code = "w4b::build::step_failed",
                "step `{step}` failed: {message}"
            ),
        },
        other => miette::miette!(code = "w4b::build::step_failed", "step `{step}` failed: {other}"),
    }
}

impl App {
    pub fn workspace(&self) -> miette::Result<Workspace> {
        Ok(match &self.global.workspace {
            Some(root) => Workspace::open(&self.cwd.join(root), &self.env)?,
            None => Workspace::discover(&self.cwd, &self.env)?,
        })
    }

    /// The package of the current directory, for relative labels (`:demo`): the path of
    /// the current directory below the defs folder.
    fn current_package(&self, ws: &Workspace) -> Option<String> {
        let defs = ws.defs_dir();
        let defs = defs.canonicalize().unwrap_or(defs);
        let cwd = self.cwd.canonicalize().unwrap_or_else(|_| self.cwd.clone());
        let rel = cwd.strip_prefix(&defs).ok()?;
        Some(rel.to_string_lossy().into_owned())
    }

    pub fn pattern(&self, ws: &Workspace, text: &str) -> miette::Result<Pattern> {
        let pkg = self.current_package(ws);
        Pattern::parse(text, pkg.as_deref()).map_err(|e| miette::Report::new(e.into_defs(None)))
    }

    pub fn resolve(&self, ws: &Workspace, patterns: &[String]) -> miette::Result<Vec<Label>> {
        let mut out = Vec::new();
        for p in patterns {
            let pattern = self.pattern(ws, p)?;
            for l in ws.expand(&pattern)? {
                if !out.contains(&l) {
                    out.push(l);
                }
            }
        }
        Ok(out)
    }

    pub fn resolve_one(&self, ws: &Workspace, pattern: &str) -> miette::Result<Label> {
        let mut v = self.resolve(ws, &[pattern.to_string()])?;
        if v.len() != 1 {
            return Err(miette::miette!(
                code = "w4b::label::not_one",
                help = "name a single target, e.g. `//images:demo`",
                "`{pattern}` matches {} targets",
                v.len()
            ));
        }
        Ok(v.remove(0))
    }

    /// The store of a command that reads or writes entries: it holds a build lease
    /// (`w4b_cache::Lease`) until the store is dropped, so a GC beside it keeps what it uses.
    pub fn store(&self, ws: &Workspace) -> miette::Result<Arc<AppStore>> {
        let store = self.store_for(Some(ws))?;
        store.begin_lease()?;
        Ok(store)
    }

    /// The local cache's size limit: `--cache-max-size`/`W4B_CACHE_MAX_SIZE` >
    /// `w4b.yaml cache.max_size` > 20 GiB; `None` when it is `none`.
    pub fn cache_limit(&self, ws: Option<&Workspace>) -> Option<u64> {
        self.global
            .cache_max_size
            .or_else(|| ws.and_then(|w| w.config().cache.max_size))
            .unwrap_or(crate::defs::workspace::CacheLimit::DEFAULT)
            .0
    }

    /// Cache directory: `--cache-dir`/`W4B_CACHE_DIR` > `w4b.yaml cache.dir` > XDG.
    /// Remote: `--remote-cache`/`W4B_REMOTE_CACHE` > `w4b.yaml cache.remote`, with the
    /// keys that sign and are trusted there.
    pub fn store_for(&self, ws: Option<&Workspace>) -> miette::Result<Arc<AppStore>> {
        let settings = ws.map(|w| w.config().cache.clone()).unwrap_or_default();
        let local = self
            .global
            .cache_dir
            .clone()
            .or_else(|| {
                settings
                    .dir
                    .as_ref()
                    .map(|d| ws.map(|w| w.root().join(d)).unwrap_or_else(|| d.clone()))
            })
            .or_else(|| {
                self.env
                    .get("XDG_CACHE_HOME")
                    .map(|x| PathBuf::from(x).join("w4b"))
            })
            .or_else(|| self.env.get("HOME").map(|h| PathBuf::from(h).join(".cache/w4b")))
            .unwrap_or_else(|| std::env::temp_dir().join("w4b-cache"));
        let remote = if self.global.no_remote {
            None
        } else {
            self.global
                .remote_cache
                .as_ref()
                .map(|r| match r.starts_with("s3://") {
                    true => r.clone(),
                    false => self.cwd.join(r).display().to_string(),
                })
                .or_else(|| settings.remote.clone())
        };
        let read_only = self.global.remote_read_only || settings.remote_read_only;
        let remote_store = match &remote {
            None => None,
            Some(r) => Some(crate::store::open_remote(r, read_only, &settings.s3, &self.env)?),
        };
        let store = AppStore::open_with(&local, remote_store)?;
        if remote.is_none() {
            return Ok(Arc::new(store));
        }
        // Keys: `--remote-sign-key`/`W4B_REMOTE_SIGN_KEY` > `cache.signing_key` (only for a
        // writable remote); `--remote-trusted-key`/`W4B_REMOTE_TRUSTED_KEYS` replace
        // `cache.trusted_keys`. Paths on the command line are relative to the current
        // directory, those in `w4b.yaml` to the workspace.
        let signing_key = match read_only {
            true => None,
            false => self
                .global
                .remote_sign_key
                .as_ref()
                .map(|p| self.cwd.join(p))
                .or(settings.signing_key),
        };
        let trusted: Vec<KeyRef> = match self.global.remote_trusted_keys.as_slice() {
            [] => settings.trusted_keys,
            given => given
                .iter()
                .filter(|k| !k.trim().is_empty())
                .map(|k| KeyRef::parse(k, &self.cwd))
                .collect(),
        };
        let trust = RemoteTrust::load(signing_key.as_deref(), &trusted)?;
        Ok(Arc::new(store.with_trust(trust)))
    }

    pub fn compile(
        &self,
        ws: &Workspace,
        store: &Arc<AppStore>,
        patterns: &[String],
    ) -> miette::Result<Plan> {
        self.compile_with(ws, store, patterns, false)
    }

    /// [`Self::compile`]; with `keep_going`, a target that does not compile is set aside
    /// in [`Plan::broken`] rather than failing the others.
    pub fn compile_with(
        &self,
        ws: &Workspace,
        store: &Arc<AppStore>,
        patterns: &[String],
        keep_going: bool,
    ) -> miette::Result<Plan> {
        let labels = self.resolve(ws, patterns)?;
        // Labels named one by one must be buildable; patterns pick the buildable targets.
        let mut explicit = std::collections::BTreeSet::new();
        for p in patterns {
            if let Pattern::Target(l) = self.pattern(ws, p)? {
                explicit.insert(l);
            }
        }
        compile::compile(
            ws,
            store,
            &labels,
            &explicit,
            &self.env,
            &self.global.set,
            keep_going,
        )
    }

    pub fn producer(&self) -> Producer {
        Producer {
            tool: format!("w4b {}", env!("CARGO_PKG_VERSION")),
            host: self.env.get("HOSTNAME").cloned(),
        }
    }

    /// `--out`, else the old image generator's `W4B_IMAGE_OUTPUT_DIR`, else `out/` in the
    /// workspace.
    pub fn out_dir(&self, ws: &Workspace, explicit: Option<&Path>) -> PathBuf {
        let from_env = self
            .env
            .get("W4B_IMAGE_OUTPUT_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        match explicit.map(Path::to_path_buf).or(from_env) {
            Some(p) if p.is_absolute() => p,
            Some(p) => self.cwd.join(p),
            None => ws.root().join("out"),
        }
    }

    /// A path relative to the current directory when it is below it.
    pub fn display_path(&self, p: &Path) -> String {
        p.strip_prefix(&self.cwd).unwrap_or(p).display().to_string()
    }
}
