//! `w4b cache stats|gc|verify`.

use miette::IntoDiagnostic;

use super::App;
use crate::cli::{CacheArgs, CacheCommand};
use crate::ui::bytes;

/// Parses `20G`, `500M`, `1024` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let mul: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return None,
            };
            (&s[..i], mul)
        }
        None => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

/// Parses `30d`, `12h`, `45m`, `90s`.
pub fn parse_age(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "d" => n.checked_mul(86_400)?,
        "h" => n.checked_mul(3_600)?,
        "m" => n.checked_mul(60)?,
        "s" => n,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

pub fn run(app: &App, args: &CacheArgs) -> miette::Result<i32> {
    let ws = app.workspace().ok();
    let store = app.store_for(ws.as_ref())?;
    match &args.command {
        CacheCommand::Stats => {
            for (name, dir) in store.dirs() {
                let s = dir.stats().into_diagnostic()?;
                println!("{name} cache `{}`", dir.root().display());
                println!("  blobs    {:>8}  {}", s.blobs, bytes(s.blob_bytes));
                println!("  records  {:>8}", s.records);
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
            }
            Ok(0)
        }
        CacheCommand::Gc {
            max_size,
            max_age,
            remote,
        } => {
            let max_bytes = match max_size {
                Some(s) => Some(parse_size(s).ok_or_else(|| {
                    miette::miette!(
                        help = "use a number with an optional unit: `500M`, `20G`",
                        "`{s}` is not a size"
                    )
                })?),
                None => None,
            };
            let max_age = match max_age {
                Some(s) => Some(parse_age(s).ok_or_else(|| {
                    miette::miette!(
                        help = "use a number with a unit: `30d`, `12h`, `45m`",
                        "`{s}` is not an age"
                    )
                })?),
                None => None,
            };
            let report = store.gc(*remote, max_bytes, max_age)?;
            println!("{report}");
            Ok(0)
        }
        CacheCommand::Verify { remote } => {
            let (ok, text) = store.verify(*remote)?;
            println!("{text}");
            Ok(if ok { 0 } else { 1 })
        }
    }
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
    }
}
