//! "Did you mean …?" for misspelt keys, kinds and target names.
//!
//! A suggestion is only useful when it is probably right, so a candidate must be close by
//! edit distance relative to its length; otherwise the help lists what is valid instead.

/// The candidate closest to `given`, if any is close enough to be a likely typo.
pub fn did_you_mean<'a, I>(given: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let given_lower = given.to_ascii_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let distance = strsim::damerau_levenshtein(&given_lower, &candidate.to_ascii_lowercase());
        // One edit for short words, about a third of the length for longer ones: `mdoe` and
        // `layres` are caught, `data` is not "corrected" to `dir`.
        let allowed = (candidate.chars().count().max(given.chars().count()) / 3).max(1);
        if distance <= allowed && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// A `help:` line for an unknown `given` among `valid`: a suggestion or the full list.
pub fn help_for(given: &str, valid: &[&str], what: &str) -> String {
    match did_you_mean(given, valid.iter().copied()) {
        Some(near) => format!("did you mean `{near}`?"),
        None if valid.is_empty() => format!("no {what} are allowed here"),
        None => format!("valid {what}: {}", backticked(valid)),
    }
}

/// `a`, `b`, `c` with backticks, for lists in messages.
pub fn backticked(items: &[&str]) -> String {
    items
        .iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_typos_are_suggested() {
        let keys = ["path", "content", "mode", "owner"];
        assert_eq!(did_you_mean("mdoe", keys), Some("mode"));
        assert_eq!(did_you_mean("contnet", keys), Some("content"));
        assert_eq!(did_you_mean("Owner", keys), Some("owner"));
    }

    #[test]
    fn distant_words_are_not_suggested() {
        let keys = ["path", "content", "mode", "owner"];
        assert_eq!(did_you_mean("size", keys), None);
        assert_eq!(
            help_for("size", &keys, "keys"),
            "valid keys: `path`, `content`, `mode`, `owner`"
        );
        assert_eq!(help_for("mdoe", &keys, "keys"), "did you mean `mode`?");
    }
}
