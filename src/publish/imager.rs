//! The Raspberry Pi Imager repository JSON: `{"os_list": [entry, …]}`, the document
//! Imager reads from a custom repository (`rpi-imager --repo URL`).
//!
//! Per entry Imager reads `name`, `description`, `url`, `icon`, `release_date`, `devices`
//! (tags such as `pi4-64bit`; an entry with tags is shown only for those devices, one
//! without for every device), `extract_size` and `extract_sha256` (the uncompressed image,
//! which it verifies after writing), `image_download_size` and `image_download_sha256`
//! (the file it downloads, which it verifies and caches by), `init_format`, `website`,
//! `tooltip`, `random` and `subitems`. w4b writes the first nine it knows values for.
//! It leaves out `init_format`: a hive image is configured when built, and with
//! `init_format` Imager would offer to customise it (user, Wi-Fi, SSH) on first boot,
//! over the hive's own settings.
//!
//! The index holds one entry per hive (`w4b_hive_id`, a key Imager ignores, says whose),
//! the one published last (publishing an older build again rolls it back); entries of
//! other hives and of other tools are kept. Entries are sorted by name, then URL, so the
//! same releases always give the same bytes.

use serde_json::{json, Map, Value};

use super::Release;

/// The key that marks an entry as w4b's, and whose.
pub const HIVE_KEY: &str = "w4b_hive_id";

/// Imager's device tags for a board (`//boards:pi4`) and architecture, by the board's
/// name; `None` for a board Imager has no tag for (the entry is then shown for every
/// device).
pub fn devices(board: &str, arch: &str) -> Option<Vec<String>> {
    let name = board.rsplit(':').next().unwrap_or(board);
    let bits = match arch {
        "arm64" => "64bit",
        "armhf" => "32bit",
        _ => return None,
    };
    // Imager's model families: the Zero 2 W is tagged as a Pi 3, the CM4 as a Pi 4,
    // the first Zero as a Pi 1.
    let family = match name {
        "pi5" | "cm5" => "pi5",
        "pi4" | "pi400" | "cm4" => "pi4",
        "pi3" | "zero2w" | "cm3" => "pi3",
        "pi2" => "pi2",
        "zero" | "pi1" => "pi1",
        _ => return None,
    };
    if family == "pi1" && bits == "64bit" {
        return None;
    }
    Some(vec![format!("{family}-{bits}")])
}

/// The `os_list` entry of a release downloadable at `url`.
pub fn entry(r: &Release, url: &str) -> Value {
    let title = r.title.as_deref().unwrap_or(&r.id);
    let name = match &r.hive_version {
        Some(v) => format!("W4B {title} ({}) {v}", r.id),
        None => format!("W4B {title}"),
    };
    let mut description = format!("W4B hive image for {}", r.id);
    if let Some(b) = &r.board {
        description.push_str(&format!(", {}", b.rsplit(':').next().unwrap_or(b)));
    }
    if let Some(a) = &r.arch {
        description.push_str(&format!(" ({a})"));
    }
    description.push_str(&format!(", built {}", r.date()));
    let mut e = json!({
        "name": name,
        "description": description,
        "url": url,
        "extract_size": r.extract_size,
        "extract_sha256": r.extract_sha256,
        "image_download_size": r.image_size,
        "image_download_sha256": r.image_sha256,
        "release_date": r.date(),
        HIVE_KEY: r.id,
    });
    if let (Some(b), Some(a)) = (&r.board, &r.arch) {
        if let Some(d) = devices(b, a) {
            e["devices"] = json!(d);
        }
    }
    e
}

/// A problem with the index already at the destination.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("the Raspberry Pi Imager index `{path}` at the destination is not an object with an `os_list` array: {problem}")]
#[diagnostic(
    code(w4b::publish::index),
    help("move the file aside (w4b writes a new one), or publish somewhere else with `--to`")
)]
pub struct IndexError {
    pub path: String,
    pub problem: String,
}

/// `existing` (the index at the destination, if any) with `entries` in place of the
/// entries of the same hives, sorted. Other top-level keys are kept.
pub fn merge(path: &str, existing: Option<&[u8]>, entries: &[Value]) -> Result<Value, IndexError> {
    let bad = |problem: String| IndexError {
        path: path.to_owned(),
        problem,
    };
    let mut root: Map<String, Value> = match existing {
        None => Map::new(),
        Some(bytes) => match serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))? {
            Value::Object(m) => m,
            _ => return Err(bad("it is not a JSON object".into())),
        },
    };
    let mut list = match root.remove("os_list") {
        None => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("`os_list` is not an array".into())),
    };
    for new in entries {
        let id = &new[HIVE_KEY];
        list.retain(|old| &old[HIVE_KEY] != id || id.is_null());
        list.push(new.clone());
    }
    let key = |v: &Value| {
        (
            v["name"].as_str().unwrap_or_default().to_owned(),
            v["url"].as_str().unwrap_or_default().to_owned(),
        )
    };
    list.sort_by_key(key);
    root.insert("os_list".into(), Value::Array(list));
    Ok(Value::Object(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(id: &str, version: &str) -> Release {
        Release {
            target: format!("//hives:{id}"),
            id: id.into(),
            hive_version: Some(version.into()),
            title: Some(id.to_uppercase()),
            board: Some("//boards:zero2w".into()),
            arch: Some("arm64".into()),
            base: None,
            epoch: 86_400,
            image_name: "x.img.zst".into(),
            image_size: 1,
            image_sha256: "00".repeat(32),
            extract_size: 2,
            extract_sha256: "11".repeat(32),
            manifest_sha256: "22".repeat(32),
            w4b_version: "0".into(),
        }
    }

    #[test]
    fn an_entry_has_every_field_imager_verifies_with() {
        let e = entry(&release("b", "1.0.0"), "https://x/b.img.zst");
        assert_eq!(e["url"], "https://x/b.img.zst");
        assert_eq!(e["extract_size"], 2);
        assert_eq!(e["extract_sha256"], "11".repeat(32));
        assert_eq!(e["image_download_size"], 1);
        assert_eq!(e["image_download_sha256"], "00".repeat(32));
        assert_eq!(e["release_date"], "1970-01-02");
        assert_eq!(e["devices"], json!(["pi3-64bit"]));
        assert!(e.get("init_format").is_none());
    }

    #[test]
    fn merging_replaces_a_hives_entry_keeps_others_and_sorts() {
        let foreign = br#"{"imager": {"latest_version": "1"}, "os_list": [{"name": "Zeta OS", "url": "z"}]}"#;
        let first = merge(
            "os_list.json",
            Some(foreign),
            &[entry(&release("b", "1.0.0"), "u1")],
        )
        .unwrap();
        let bytes = serde_json::to_vec(&first).unwrap();
        let again = merge(
            "os_list.json",
            Some(&bytes),
            &[
                entry(&release("b", "1.0.1"), "u2"),
                entry(&release("a", "2.0.0"), "u3"),
            ],
        )
        .unwrap();
        let names: Vec<&str> = again["os_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["W4B A (a) 2.0.0", "W4B B (b) 1.0.1", "Zeta OS"]);
        assert_eq!(again["imager"]["latest_version"], "1");
        assert!(merge("x", Some(b"[]"), &[]).is_err());
        assert!(merge("x", Some(b"{\"os_list\": 3}"), &[]).is_err());
    }

    #[test]
    fn devices_follow_imagers_families() {
        assert_eq!(devices("//boards:pi4", "arm64"), Some(vec!["pi4-64bit".into()]));
        assert_eq!(devices("//boards:pi3", "armhf"), Some(vec!["pi3-32bit".into()]));
        assert_eq!(devices("//boards:cm4", "arm64"), Some(vec!["pi4-64bit".into()]));
        assert_eq!(devices("//boards:zero", "armhf"), Some(vec!["pi1-32bit".into()]));
        assert_eq!(devices("//boards:custom", "arm64"), None);
    }
}
