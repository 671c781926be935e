//! Observers of build events: bars on a terminal, lines in logs, JSON for tools, and the
//! `-v`/`--log-file` log ([`LogObserver`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use w4b_cache::Digest;
use w4b_graph::exec::{Event, Observer, StepStatus};
use w4b_graph::Cache;

use super::duration_ms;
use super::log::{self, Level};

/// Writes each event as one JSON line on stdout. Lines are buffered, and flushed at every
/// event a reader may be waiting for (anything but a cache hit): a no-op rebuild of 1,000
/// steps then costs a handful of writes instead of one per step.
pub struct JsonLines {
    out: Mutex<std::io::BufWriter<std::io::Stdout>>,
}

impl JsonLines {
    pub fn new() -> JsonLines {
        JsonLines {
            out: Mutex::new(std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout())),
        }
    }

    /// Writes out whatever is buffered.
    pub fn flush(&self) {
        if let Ok(mut out) = self.out.lock() {
            let _ = out.flush();
        }
    }
}

impl Default for JsonLines {
    fn default() -> Self {
        JsonLines::new()
    }
}

impl Observer for JsonLines {
    fn event(&self, event: &Event<'_>) {
        let Ok(line) = serde_json::to_string(event) else {
            return;
        };
        let Ok(mut out) = self.out.lock() else {
            return;
        };
        let _ = writeln!(out, "{line}");
        let cached = matches!(
            event,
            Event::StepFinished {
                status: StepStatus::Cached,
                ..
            }
        );
        if !cached {
            let _ = out.flush();
        }
    }
}

/// Plain lines on stderr, one per step that ran or failed; cached steps are counted only.
pub struct Lines {
    pub quiet: bool,
}

impl Observer for Lines {
    fn event(&self, event: &Event<'_>) {
        if self.quiet {
            if let Event::StepFailed { step, error, .. } = event {
                eprintln!("failed  {step}: {error}");
            }
            return;
        }
        match event {
            Event::StepStarted { step, kind, .. } => eprintln!("running {step} ({kind})"),
            Event::StepFinished {
                step,
                status: StepStatus::Ran,
                duration_ms: ms,
                ..
            } => eprintln!("ran     {step} in {}", duration_ms(*ms)),
            Event::StepFailed { step, error, .. } => eprintln!("failed  {step}: {error}"),
            Event::StepRetrying { step, reason } => eprintln!("retry   {step}: {reason}"),
            Event::StepNote { step, message } => eprintln!("note    {step}: {message}"),
            _ => {}
        }
    }
}

/// Progress bars: one spinner or byte bar per running step, under a total bar.
pub struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    running: Mutex<BTreeMap<String, ProgressBar>>,
}

impl Bars {
    pub fn new() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} steps {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        total.set_prefix("building");
        Bars {
            multi,
            total,
            running: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn finish(&self) {
        if let Ok(mut r) = self.running.lock() {
            for (_, bar) in std::mem::take(&mut *r) {
                bar.finish_and_clear();
            }
        }
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Default for Bars {
    fn default() -> Self {
        Bars::new()
    }
}

impl Observer for Bars {
    fn event(&self, event: &Event<'_>) {
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        match event {
            Event::Planned { steps } => {
                self.total.set_length(*steps as u64);
                self.total.set_position(0);
            }
            Event::StepStarted { step, kind, .. } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(step.to_string());
                bar.set_message(format!("({kind})"));
                bar.enable_steady_tick(Duration::from_millis(120));
                running.insert(step.to_string(), bar);
            }
            Event::StepProgress { step, done, total } => {
                if let Some(bar) = running.get(*step) {
                    let want = total.unwrap_or(0);
                    if bar.length() != Some(want) {
                        bar.set_length(want);
                        let template = if total.is_some() {
                            "  {prefix:.bold} [{bar:25}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
                        } else {
                            "{spinner} {prefix:.bold} {msg} {bytes} {bytes_per_sec} {elapsed}"
                        };
                        bar.set_style(
                            ProgressStyle::with_template(template)
                                .unwrap_or_else(|_| ProgressStyle::default_bar())
                                .progress_chars("=> "),
                        );
                    }
                    bar.set_position(*done);
                }
            }
            Event::StepFinished {
                step,
                status,
                duration_ms: ms,
                ..
            } => {
                if let Some(bar) = running.remove(*step) {
                    bar.finish_and_clear();
                }
                if *status == StepStatus::Ran {
                    let _ = self
                        .multi
                        .println(format!("     ran {step} in {}", duration_ms(*ms)));
                }
                self.total.inc(1);
            }
            Event::StepNote { step, message } => {
                let _ = self.multi.println(format!("    note {step}: {message}"));
            }
            Event::StepRetrying { step, reason } => {
                if let Some(bar) = running.remove(*step) {
                    bar.finish_and_clear();
                }
                let _ = self.multi.println(format!("   retry {step}: {reason}"));
            }
            Event::StepFailed { step, error, .. } => {
                if let Some(bar) = running.remove(*step) {
                    bar.finish_and_clear();
                }
                let _ = self.multi.println(format!("  failed {step}: {error}"));
                self.total.inc(1);
            }
        }
    }
}

/// Sends every event to each observer in turn (the display and the log).
pub struct Tee<'a>(pub Vec<&'a dyn Observer>);

impl Observer for Tee<'_> {
    fn event(&self, event: &Event<'_>) {
        for o in &self.0 {
            o.event(event);
        }
    }
}

/// The build as [`super::log`] lines: each step as it starts and why, cache hits, timings,
/// and for a step whose key changed since the target's last build, what changed, in
/// `w4b why`'s words (component, old → new, where it is written).
pub struct LogObserver<'a> {
    /// Reads the records of the previous and the new key of a step that ran.
    pub cache: &'a dyn Cache,
    /// Each step's key in the last recorded build of the targets being built.
    pub previous: BTreeMap<String, Digest>,
}

impl LogObserver<'_> {
    /// What changed in a step's key since its previous build, one line per component.
    fn changes(&self, step: &str, key: &str) -> Vec<String> {
        let Some(prev) = self.previous.get(step) else {
            return Vec::new();
        };
        if prev.to_hex() == key {
            return Vec::new();
        }
        let preimage = |k: &Digest| {
            self.cache
                .records(k)
                .ok()
                .and_then(|r| r.into_iter().next())
                .map(|r| r.preimage)
        };
        let (Some(old), Some(new)) = (
            preimage(prev),
            key.parse::<Digest>().ok().and_then(|k| preimage(&k)),
        ) else {
            return vec!["changed since the last build (its old record is no longer in the cache)".into()];
        };
        w4b_graph::explain::diff(&old, &new)
            .iter()
            .map(|c| {
                if c.component == "upstream" {
                    let from = c.location.as_deref().unwrap_or("an input step");
                    return format!(
                        "input {} from {from} changed: {} → {}",
                        c.name,
                        short(c.old.as_deref()),
                        short(c.new.as_deref())
                    );
                }
                let at = c
                    .location
                    .as_deref()
                    .map(|l| format!(" at {l}"))
                    .unwrap_or_default();
                format!(
                    "changed: {} {}: {} → {}{at}",
                    c.component,
                    c.name,
                    short(c.old.as_deref()),
                    short(c.new.as_deref())
                )
            })
            .collect()
    }
}

/// A key component's value on one line, cut when long (as `w4b why` prints it); a digest
/// shows its first 12 hex digits.
fn short(v: Option<&str>) -> String {
    match v {
        None => "(absent)".into(),
        Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => s[..12].to_owned(),
        Some(s) => {
            let one_line = s.replace('\n', "\\n");
            if one_line.chars().count() > 72 {
                let cut: String = one_line.chars().take(64).collect();
                format!("`{cut}…` ({} bytes)", s.len())
            } else {
                format!("`{one_line}`")
            }
        }
    }
}

impl Observer for LogObserver<'_> {
    fn event(&self, event: &Event<'_>) {
        if !log::enabled(Level::Step) {
            return;
        }
        match event {
            Event::Planned { steps } => log::line(Level::Step, None, &format!("planned {steps} steps")),
            Event::StepStarted {
                step,
                kind,
                key,
                miss,
                ..
            } => {
                log::enter(step);
                let changed = self.previous.get(*step).is_some_and(|p| p.to_hex() != *key);
                let why = if changed {
                    "its key changed since the last build".to_owned()
                } else {
                    miss.map(|m| m.to_string())
                        .unwrap_or_else(|| "not in the cache".into())
                };
                log::line(Level::Step, Some(step), &format!("start ({kind}): {why}"));
            }
            Event::StepProgress { .. } => {}
            Event::StepFinished {
                step,
                kind,
                status,
                key,
                duration_ms: ms,
                ..
            } => match status {
                StepStatus::Ran => {
                    log::leave(step);
                    let mut text = format!("ran ({kind}) in {}", duration_ms(*ms));
                    for c in self.changes(step, key) {
                        text.push_str("\n  ");
                        text.push_str(&c);
                    }
                    log::line(Level::Step, Some(step), &text);
                }
                StepStatus::Cached => log::line(Level::Step, Some(step), &format!("cached ({kind})")),
                _ => {}
            },
            Event::StepFailed { step, kind, error } => {
                log::leave(step);
                log::line(Level::Step, Some(step), &format!("failed ({kind}): {error}"));
            }
            Event::StepNote { step, message } => {
                log::line(Level::Step, Some(step), &format!("note: {message}"))
            }
            Event::StepRetrying { step, reason } => {
                log::leave(step);
                log::line(Level::Step, Some(step), &format!("retry: {reason}"));
            }
        }
    }
}
