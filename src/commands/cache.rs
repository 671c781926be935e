//! `w4b cache stats|gc|verify`.

use miette::IntoDiagnostic;
use w4b_cache::{GcReport, LeaseScan, Usage, VerifyReport};

use super::App;
use crate::cli::{CacheArgs, CacheCommand};
use crate::defs::workspace::CacheLimit;
use crate::store::{AppStore, TrustReport};
use crate::ui::bytes;

/// How many ignored remote records a build lists before it only counts the rest.
const IGNORED_SHOWN: usize = 10;

/// Parses whole numbers with an optional unit: `1024` (bytes), `500M`, `20G`, `1TiB`;
/// K, M, G and T are powers of 1024.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mul: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

/// Parses `30d`, `12h`, `45m`, `90s`.
pub fn parse_age(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let num = &s[..s.len() - unit.len_utf8()];
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        'd' => n.checked_mul(86_400)?,
        'h' => n.checked_mul(3_600)?,
        'm' => n.checked_mul(60)?,
        's' => n,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

/// clap value parser for `--max-size` (a bad value is a usage error, exit 2).
pub fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s)
        .ok_or_else(|| format!("`{s}` is not a size; use a number with an optional unit: `500M`, `20G`"))
}

/// clap value parser for `--cache-max-size` and `W4B_CACHE_MAX_SIZE`.
pub fn parse_limit_arg(s: &str) -> Result<CacheLimit, String> {
    CacheLimit::parse(s).map_err(|e| format!("`{s}` {e}; {}", CacheLimit::HELP))
}

/// clap value parser for `--max-age`.
pub fn parse_age_arg(s: &str) -> Result<std::time::Duration, String> {
    parse_age(s).ok_or_else(|| format!("`{s}` is not an age; use a number with a unit: `30d`, `12h`, `45m`"))
}

pub fn run(app: &App, args: &CacheArgs) -> miette::Result<i32> {
    let ws = app.workspace().ok();
    let store = app.store_for(ws.as_ref())?;
    match &args.command {
        CacheCommand::Stats => {
            for (name, location, s) in store.stats()? {
                println!("{name} cache `{location}`");
                println!("  blobs    {:>8}  {}", s.blobs, bytes(s.blob_bytes));
                if s.indexes > 0 {
                    println!(
                        "  indexes  {:>8}  chunked outputs: {} logical in {} stored",
                        s.indexes,
                        bytes(s.logical_bytes),
                        bytes(s.physical_bytes)
                    );
                }
                println!("  records  {:>8}", s.records);
                if s.memos > 0 {
                    println!(
                        "  memos    {:>8}  local hints, kept while their value is",
                        s.memos
                    );
                }
                if !s.divergent_keys.is_empty() {
                    println!(
                        "  warning: {} key(s) have records with different outputs: a step is not deterministic (see `w4b cache verify`)",
                        s.divergent_keys.len()
                    );
                }
                if s.tmp_files > 0 {
                    println!(
                        "  tmp      {:>8}  leftovers of interrupted writes (removed by `w4b cache gc`)",
                        s.tmp_files
                    );
                }
                if name == "local" {
                    for line in limit_lines(
                        &store.local().usage().into_diagnostic()?,
                        &store.local().scan_leases(false).into_diagnostic()?,
                        app.cache_limit(ws.as_ref()),
                    ) {
                        println!("  {line}");
                    }
                }
            }
            Ok(0)
        }
        CacheCommand::Gc {
            max_size,
            max_age,
            remote,
        } => {
            // Locally, without `--max-size`, the configured limit applies.
            let max_size = match (max_size, remote) {
                (Some(m), _) => Some(*m),
                (None, false) => app.cache_limit(ws.as_ref()),
                (None, true) => None,
            };
            let report = store.gc(*remote, max_size, *max_age)?;
            println!("{}", gc_summary(&report));
            if report.leases_live > 0 {
                println!(
                    "kept what {} running build(s) use ({} record(s) pinned)",
                    report.leases_live, report.records_pinned
                );
            }
            Ok(0)
        }
        CacheCommand::Verify { remote } => {
            let report = store.verify(*remote)?;
            println!("{}", verify_summary(&report));
            let mut clean = verify_clean(&report);
            if *remote {
                let trust = store.remote_trust()?;
                println!("{}", trust_summary(&trust));
                clean &= trust.conflicts.is_empty();
            }
            Ok(if clean { 0 } else { 1 })
        }
    }
}

/// The local cache's size limit, its usage estimate, the last GC and the builds holding
/// leases, for `cache stats`.
fn limit_lines(usage: &Usage, leases: &LeaseScan, limit: Option<u64>) -> Vec<String> {
    let mut out = vec![match limit {
        Some(l) => format!(
            "limit    {:>8}  least recently used entries are evicted after a build that exceeds it",
            bytes(l)
        ),
        None => "limit        none  (`cache.max_size: none`): nothing is evicted unless `w4b cache gc` is asked to".into(),
    }];
    out.push(match usage.estimate() {
        Some(e) => format!(
            "usage   ~{:>8}  counted at the last GC, plus what {} build(s) published since",
            bytes(e),
            usage.delta_files
        ),
        None => "usage    unknown  (counted after the next build, or by `w4b cache gc`)".into(),
    });
    out.push(match usage.base.as_ref().and_then(|b| b.last_gc.as_ref()) {
        Some(g) => format!(
            "last gc  {}  removed {} record(s), freed {}",
            super::inspect::utc(i64::try_from(g.at).unwrap_or(i64::MAX)),
            g.records_removed,
            bytes(g.bytes_freed)
        ),
        None => "last gc  never".into(),
    });
    if leases.live + leases.stale > 0 {
        out.push(format!(
            "leases   {:>8}  running build(s) pinning what they use; {} stale (removed by the next GC)",
            leases.live, leases.stale
        ));
    }
    out
}

/// One line: what `cache gc` removed and what it kept.
fn gc_summary(r: &GcReport) -> String {
    // Chunk indexes are named only in stores that have some.
    let indexes = |n: u64| match r.indexes_removed + r.indexes_kept {
        0 => String::new(),
        _ => format!(", {n} chunk index(es)"),
    };
    let memos = match r.memos_removed {
        0 => String::new(),
        n => format!("; removed {n} memo(s) whose value was gone"),
    };
    format!(
        "removed {} record(s), {} blob(s){}, {} temp file(s): {} freed; kept {} record(s), {} blob(s){}, {}{memos}",
        r.records_removed,
        r.blobs_removed,
        indexes(r.indexes_removed),
        r.tmp_removed,
        bytes(r.bytes_freed),
        r.records_kept,
        r.blobs_kept,
        indexes(r.indexes_kept),
        bytes(r.bytes_kept)
    )
}

/// Whether `cache verify` found nothing wrong.
fn verify_clean(r: &VerifyReport) -> bool {
    r.corrupt_blobs.is_empty()
        && r.invalid_records.is_empty()
        && r.incomplete_listings.is_empty()
        && r.corrupt_indexes.is_empty()
        && r.incomplete_indexes.is_empty()
        && r.dangling_records.is_empty()
        && r.divergent_keys.is_empty()
}

/// What `cache verify` checked, one line per problem, and the verdict.
fn verify_summary(r: &VerifyReport) -> String {
    let mut lines = vec![format!(
        "checked {} blob(s) ({}), {} record(s)",
        r.blobs_checked,
        bytes(r.bytes_checked),
        r.records_checked
    )];
    for d in &r.corrupt_blobs {
        lines.push(format!(
            "corrupt blob `{d}` (quarantined; the next build that needs it rebuilds it)"
        ));
    }
    for p in &r.invalid_records {
        lines.push(format!("unreadable record `{}` (quarantined)", p.display()));
    }
    for d in &r.incomplete_listings {
        lines.push(format!("listing `{d}` names blobs that are missing"));
    }
    for d in &r.corrupt_indexes {
        lines.push(format!(
            "corrupt chunk index `{d}` (quarantined; the next build that needs it rebuilds it)"
        ));
    }
    for d in &r.incomplete_indexes {
        lines.push(format!("chunk index `{d}` names chunks that are missing"));
    }
    // Memos are hints: one without its value is removed, not a problem.
    for (kind, key) in &r.memos_without_value {
        lines.push(format!("removed `{kind}` memo `{key}`: its value is gone"));
    }
    for (k, d) in &r.dangling_records {
        lines.push(format!("record for key `{k}` names missing output `{d}`"));
    }
    for k in &r.divergent_keys {
        lines.push(format!(
            "key `{k}` has records with different outputs: the step is not deterministic"
        ));
    }
    lines.push(if verify_clean(r) {
        "ok".into()
    } else {
        "problems found".into()
    });
    lines.join("\n")
}

/// What `cache verify --remote` found about trust: conflicts between trusted signers
/// (a problem) and records no build uses (listed; they are ignored, not deleted).
fn trust_summary(t: &TrustReport) -> String {
    let mut lines = Vec::new();
    if !t.trusts_anyone {
        lines.push(
            "no key is trusted: builds use no remote record (set `cache.trusted_keys` or `--remote-trusted-key`)"
                .to_owned(),
        );
    }
    for (key, vouched) in &t.conflicts {
        let who: Vec<String> = vouched
            .iter()
            .map(|v| format!("key `{}` signed outputs `{}`", v.keyid, v.outputs))
            .collect();
        lines.push(format!(
            "key `{key}` has trusted records that disagree: {}; builds use neither",
            who.join(", ")
        ));
    }
    for (key, i) in &t.untrusted {
        lines.push(format!(
            "record for key `{key}` with outputs `{}` is ignored by builds: {}",
            i.outputs, i.why
        ));
    }
    lines.push(format!(
        "trust: {} conflict(s), {} record(s) not signed by a trusted key",
        t.conflicts.len(),
        t.untrusted.len()
    ));
    lines.join("\n")
}

/// The warnings a build prints at the end about the store: remote publication that
/// failed or was skipped, remote records that were ignored, trusted signers that
/// disagree. Each line is whole (`warning: …` or `  help: …`).
pub fn store_warnings(store: &AppStore) -> Vec<String> {
    let mut out = Vec::new();
    for q in store.take_quarantined() {
        out.push(format!(
            "warning: quarantined `{}`: {}; moved to `{}`",
            q.path.display(),
            q.reason,
            q.evidence.display()
        ));
    }
    if let Ok(w) = store.warnings.lock() {
        if let Some(first) = w.first() {
            out.push(format!("warning: {first}"));
            if w.len() > 1 {
                out.push(format!(
                    "warning: … and {} more remote publication failure(s)",
                    w.len() - 1
                ));
            }
        }
    }
    let Ok(log) = store.trust_log.lock() else {
        return out;
    };
    for (step, key, vouched) in &log.conflicts {
        let who: Vec<String> = vouched
            .iter()
            .map(|v| format!("key `{}` signed outputs `{}`", v.keyid, v.outputs))
            .collect();
        out.push(format!(
            "warning: trusted signers disagree on `{step}` (key `{key}`): {}; neither was used, the step ran here",
            who.join(", ")
        ));
    }
    if !log.conflicts.is_empty() {
        out.push("  help: the step is not deterministic, or a signing key is compromised; `w4b cache verify --remote` lists every such key".into());
    }
    for (step, i) in log.ignored.iter().take(IGNORED_SHOWN) {
        out.push(format!(
            "warning: ignored a remote cache record for `{step}` (outputs `{}`): {}",
            i.outputs.short(16),
            i.why
        ));
    }
    if log.ignored.len() > IGNORED_SHOWN {
        out.push(format!(
            "warning: … and {} more ignored remote cache record(s)",
            log.ignored.len() - IGNORED_SHOWN
        ));
    }
    if !log.ignored.is_empty() && !store.trust().trusts_anyone() {
        out.push("  help: no key is trusted, so no remote record is used: list the fleet's `PREFIX.pub` in `cache.trusted_keys` (or pass `--remote-trusted-key`)".into());
    }
    if let Some(first) = log.unsigned.first() {
        out.push(format!(
            "warning: {} result(s) (`{first}`{}) were not published to the remote cache: no signing key is set",
            log.unsigned.len(),
            if log.unsigned.len() > 1 { ", …" } else { "" }
        ));
        out.push("  help: create a key with `w4b keygen --out ci-cache`, then set `cache.signing_key: ci-cache.key` in `w4b.yaml` (or `--remote-sign-key`, `W4B_REMOTE_SIGN_KEY`); builds that should only read pass `--remote-read-only`".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages() {
        assert_eq!(parse_size("500M"), Some(500 << 20));
        assert_eq!(parse_size("20G"), Some(20 << 30));
        assert_eq!(parse_size("20GiB"), Some(20 << 30));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("x"), None);
        assert_eq!(
            parse_age("30d"),
            Some(std::time::Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_age("12h"), Some(std::time::Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_age("12"), None);
        assert_eq!(parse_age(""), None);
        assert_eq!(parse_age("3é"), None);
        assert_eq!(parse_size("5BB"), None);
        assert_eq!(parse_size("é"), None);
    }

    #[test]
    fn gc_and_verify_summaries() {
        let gc = GcReport {
            records_removed: 2,
            blobs_removed: 5,
            tmp_removed: 1,
            bytes_freed: 1536,
            records_kept: 3,
            blobs_kept: 7,
            bytes_kept: 10,
            ..GcReport::default()
        };
        assert_eq!(
            gc_summary(&gc),
            "removed 2 record(s), 5 blob(s), 1 temp file(s): 1.5 KiB freed; kept 3 record(s), 7 blob(s), 10 B"
        );
        let chunked = GcReport {
            indexes_removed: 1,
            indexes_kept: 2,
            ..gc.clone()
        };
        assert_eq!(
            gc_summary(&chunked),
            "removed 2 record(s), 5 blob(s), 1 chunk index(es), 1 temp file(s): 1.5 KiB freed; kept 3 record(s), 7 blob(s), 2 chunk index(es), 10 B"
        );
        let memos = GcReport {
            memos_removed: 4,
            ..gc.clone()
        };
        assert!(gc_summary(&memos).ends_with("10 B; removed 4 memo(s) whose value was gone"));
        let mut r = VerifyReport {
            blobs_checked: 4,
            bytes_checked: 2048,
            records_checked: 2,
            ..VerifyReport::default()
        };
        assert!(verify_clean(&r));
        assert_eq!(verify_summary(&r), "checked 4 blob(s) (2.0 KiB), 2 record(s)\nok");
        r.incomplete_indexes.push(w4b_cache::Digest([2; 32]));
        assert!(!verify_clean(&r));
        assert!(verify_summary(&r).contains(&format!(
            "chunk index `{}` names chunks that are missing",
            "02".repeat(32)
        )));
        r.incomplete_indexes.clear();
        r.memos_without_value
            .push(("frame-zstd".into(), w4b_cache::Digest([3; 32])));
        assert!(verify_clean(&r), "a memo is a hint");
        assert!(verify_summary(&r).contains(&format!(
            "removed `frame-zstd` memo `{}`: its value is gone",
            "03".repeat(32)
        )));
        r.memos_without_value.clear();
        r.divergent_keys.push(w4b_cache::Digest([1; 32]));
        assert!(!verify_clean(&r));
        let text = verify_summary(&r);
        assert!(
            text.ends_with("the step is not deterministic\nproblems found"),
            "{text}"
        );
    }
}
