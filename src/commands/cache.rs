//! `w4b cache stats|gc|verify`.

use miette::IntoDiagnostic;

use super::App;
use crate::cli::{CacheArgs, CacheCommand};
use crate::ui::bytes;

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

/// clap value parser for `--max-age`.
pub fn parse_age_arg(s: &str) -> Result<std::time::Duration, String> {
    parse_age(s).ok_or_else(|| format!("`{s}` is not an age; use a number with a unit: `30d`, `12h`, `45m`"))
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
            let report = store.gc(*remote, *max_size, *max_age)?;
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
        assert_eq!(parse_age("3é"), None);
        assert_eq!(parse_size("5BB"), None);
        assert_eq!(parse_size("é"), None);
    }
}
