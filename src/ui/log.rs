//! The log a person reads to learn what a build did: `-v`, `-vv` and `--log-file`.
//!
//! | level              | shows                                                                |
//! |--------------------|----------------------------------------------------------------------|
//! | [`Level::Step`]    | each step as it starts (and why: the miss reason, and what changed since the last build, in `why`'s words), cache hits, timings |
//! | [`Level::Command`] | the external commands a step runs (argv, directory, exit status) and their output, each line prefixed with the step |
//!
//! The terminal shows the levels up to the `-v` count, on stderr (stdout stays data, and
//! JSON with `--message-format json`); `-q` shows none. The log file (`--log-file`,
//! `W4B_LOG_FILE`) gets every level whatever the terminal shows, each line stamped with the
//! time since the process started (a monotonic [`Instant`], never the wall clock), and the
//! errors a command ends with. It is created with mode 0600 and is never cached.
//!
//! Every line passes through [`crate::redact`] first: no registered secret value reaches
//! the terminal or the file.
//!
//! One process-wide sink rather than a logger threaded through every call: commands run
//! deep inside step implementations (the package installer's dpkg runs), which know
//! nothing of the terminal, and a `-vv` line must be cheap to skip when nobody reads it
//! ([`enabled`]). The step a line belongs to is the one running on the current thread:
//! the engine runs a step on the thread that announced it, and [`StepScope`] (set by the
//! [`LogObserver`](super::progress::LogObserver)) remembers it. Why no `log`/`tracing`
//! crate: see `docs/decisions.md`.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// How much detail a line carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `-v`: steps, reasons, cache hits, timings.
    Step = 1,
    /// `-vv`: external commands and their output.
    Command = 2,
}

/// Opening the log file failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("cannot create the log file `{}`", path.display())]
#[diagnostic(
    code(w4b::log::file),
    help("check that the directory exists and is writable, or pass another `--log-file`/`W4B_LOG_FILE`")
)]
pub struct LogFileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

struct Sink {
    /// Terminal verbosity: 0 (default or `-q`), 1 (`-v`), 2 (`-vv` or more).
    verbosity: u8,
    file: Option<Mutex<File>>,
    start: Instant,
}

static SINK: OnceLock<Sink> = OnceLock::new();

thread_local! {
    /// The steps running on this thread, innermost last (a repair runs an input step
    /// inside the step that found its input missing).
    static STEPS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Sets up the process's log once: terminal verbosity and the optional file. `quiet` wins
/// over `verbosity` on the terminal; the file gets everything regardless.
pub fn init(verbosity: u8, quiet: bool, file: Option<&Path>) -> Result<(), LogFileError> {
    let file = match file {
        None => None,
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| LogFileError {
                    path: path.to_path_buf(),
                    source,
                })?;
            // An existing file keeps its mode when opened: make it private too. Only a
            // regular file: `--log-file /dev/null` or a pipe to a collector is no file
            // of ours, and run as root a chmod would make `/dev/null` 0600 for everyone.
            use std::os::unix::fs::PermissionsExt;
            let regular = f.metadata().is_ok_and(|m| m.is_file());
            if regular {
                f.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(|source| LogFileError {
                        path: path.to_path_buf(),
                        source,
                    })?;
            }
            Some(Mutex::new(f))
        }
    };
    let _ = SINK.set(Sink {
        verbosity: if quiet { 0 } else { verbosity.min(2) },
        file,
        start: Instant::now(),
    });
    Ok(())
}

/// Whether a line at `level` would be shown anywhere: callers skip formatting otherwise.
pub fn enabled(level: Level) -> bool {
    SINK.get()
        .is_some_and(|s| s.file.is_some() || s.verbosity >= level as u8)
}

/// Whether the terminal shows `level` (the progress display then steps aside).
pub fn terminal_shows(level: Level) -> bool {
    SINK.get().is_some_and(|s| s.verbosity >= level as u8)
}

/// Writes `text` (one or more lines) at `level`, each line prefixed with `step` or, when
/// `None`, with the step running on this thread, if any.
pub fn line(level: Level, step: Option<&str>, text: &str) {
    let Some(sink) = SINK.get() else { return };
    let to_terminal = sink.verbosity >= level as u8;
    if !to_terminal && sink.file.is_none() {
        return;
    }
    let current = match step {
        Some(s) => Some(s.to_owned()),
        None => STEPS.with(|s| s.borrow().last().cloned()),
    };
    let text = crate::redact::redact(text);
    let prefix = current.map(|s| format!("{s}: ")).unwrap_or_default();
    let mut out = String::new();
    for l in text.lines() {
        out.push_str(&prefix);
        out.push_str(l);
        out.push('\n');
    }
    if to_terminal {
        eprint!("{out}");
    }
    if let Some(file) = &sink.file {
        let t = sink.start.elapsed();
        let stamp = format!("[{:>4}.{:03}] ", t.as_secs(), t.subsec_millis());
        let mut stamped = String::new();
        for l in out.lines() {
            stamped.push_str(&stamp);
            stamped.push_str(l);
            stamped.push('\n');
        }
        if let Ok(mut f) = file.lock() {
            let _ = f.write_all(stamped.as_bytes());
        }
    }
}

/// Writes a command's final error (already rendered, with its code) to the log file; the
/// terminal has shown it.
pub fn error(rendered: &str) {
    let Some(sink) = SINK.get() else { return };
    let Some(file) = &sink.file else { return };
    let t = sink.start.elapsed();
    let text = crate::redact::redact(rendered);
    let mut out = String::new();
    for l in text.lines() {
        out.push_str(&format!(
            "[{:>4}.{:03}] error: {l}\n",
            t.as_secs(),
            t.subsec_millis()
        ));
    }
    if let Ok(mut f) = file.lock() {
        let _ = f.write_all(out.as_bytes());
    }
}

/// Marks `step` as running on this thread until the scope is dropped (or [`leave`]).
pub fn enter(step: &str) {
    STEPS.with(|s| s.borrow_mut().push(step.to_owned()));
}

/// Ends `step` on this thread, if it is the innermost one running here.
pub fn leave(step: &str) {
    STEPS.with(|s| {
        let mut s = s.borrow_mut();
        if s.last().is_some_and(|l| l == step) {
            s.pop();
        }
    });
}

/// `argv` as a shell would need it typed: words with spaces or quotes are single-quoted.
pub fn shell_words<'a>(argv: impl IntoIterator<Item = &'a OsStr>) -> String {
    let mut out = String::new();
    for (i, a) in argv.into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let a = a.to_string_lossy();
        let plain = !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
        if plain {
            out.push_str(&a);
        } else {
            out.push('\'');
            out.push_str(&a.replace('\'', "'\\''"));
            out.push('\'');
        }
    }
    out
}

/// `$ program args… (in DIR)` for a command about to run, at [`Level::Command`].
pub fn command(cmd: &Command) {
    if !enabled(Level::Command) {
        return;
    }
    line(Level::Command, None, &command_line(cmd));
}

/// The line [`command`] writes.
pub fn command_line(cmd: &Command) -> String {
    let words = shell_words(std::iter::once(cmd.get_program()).chain(cmd.get_args()));
    match cmd.get_current_dir() {
        Some(dir) => format!("$ {words}  (in {})", dir.display()),
        None => format!("$ {words}"),
    }
}

/// A finished command: its output, each line as `| …`, then its exit status.
pub fn finished(program: &OsStr, status: &ExitStatus, output: &[u8]) {
    if !enabled(Level::Command) {
        return;
    }
    output_lines(output);
    let name = Path::new(program)
        .file_name()
        .unwrap_or(program)
        .to_string_lossy();
    line(Level::Command, None, &format!("{name}: {status}"));
}

/// Output of commands, each line as `| …`, at [`Level::Command`].
pub fn output_lines(output: &[u8]) {
    if !enabled(Level::Command) || output.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(output);
    let mut quoted = String::with_capacity(text.len() + text.len() / 16);
    for l in text.lines() {
        quoted.push_str("| ");
        quoted.push_str(l);
        quoted.push('\n');
    }
    line(Level::Command, None, &quoted);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_that_need_quotes_get_them() {
        let argv = ["dpkg", "--unpack", "/tmp/a b.deb", "it's", ""].map(OsStr::new);
        assert_eq!(shell_words(argv), "dpkg --unpack '/tmp/a b.deb' 'it'\\''s' ''");
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // builds a command to print it, never runs it
    fn a_command_line_names_its_directory() {
        let mut cmd = Command::new("/usr/sbin/chroot");
        cmd.args(["/r", "sh", "-c", "umask 022"]).current_dir("/");
        assert_eq!(
            command_line(&cmd),
            "$ /usr/sbin/chroot /r sh -c 'umask 022'  (in /)"
        );
    }
}
