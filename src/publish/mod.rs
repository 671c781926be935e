//! What `w4b publish` puts at a destination, and how it decides what to send.
//!
//! A release of one disk image is a set of files below the destination (a directory, an
//! HTTP(S) server taking `PUT`, or an `s3://bucket/prefix`), named by a template
//! ([`Names`]): the image, its `.sha256` (`sha256sum` format, naming the published file),
//! its `.bmap`, its build manifest and a metadata JSON ([`Release::metadata`]). Beside them,
//! per hive, `<hive_id>/latest.json` names the release published last, and at the top the
//! Raspberry Pi Imager repository JSON ([`imager`]) lists every hive published there.
//!
//! Nothing here reads the clock: a release's date is its build's epoch, so publishing
//! the same build again writes the same bytes under the same names, and [`dest`] finds
//! them already there and sends nothing. The index is read, merged and written back in
//! a fixed order, so it too only changes when a release does.

pub mod dest;
pub mod imager;

use serde_json::json;

/// The default name template of a published image.
pub const DEFAULT_TEMPLATE: &str = "{hive_id}/{hive_id}-{version}-{date}.img.zst";

/// The Raspberry Pi Imager repository JSON at the top of the destination.
pub const INDEX: &str = "os_list.json";

/// Everything known about one built disk image that publishing needs.
#[derive(Clone, Debug)]
pub struct Release {
    /// `//hives:north`.
    pub target: String,
    /// The hive's id, or for an image without a hive its target name.
    pub id: String,
    /// The hive's `version`; `None` for an image without a hive.
    pub hive_version: Option<String>,
    /// A person's name for it: the hive's `metadata.name`, the image's `description`.
    pub title: Option<String>,
    /// `//boards:pi4`, `arm64`, `//bases:…`.
    pub board: Option<String>,
    pub arch: Option<String>,
    pub base: Option<String>,
    /// The build's `SOURCE_DATE_EPOCH`.
    pub epoch: i64,
    /// The built image's file name (`north.img.zst`), its size and sha256.
    pub image_name: String,
    pub image_size: u64,
    pub image_sha256: String,
    /// The uncompressed disk's size and sha256.
    pub extract_size: u64,
    pub extract_sha256: String,
    /// The sha256 of the build manifest's bytes.
    pub manifest_sha256: String,
    pub w4b_version: String,
}

/// The paths, below the destination, of one release's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub image: String,
    pub sha256: String,
    pub bmap: String,
    pub manifest: String,
    pub metadata: String,
    /// `<id>/latest.json`.
    pub latest: String,
}

/// A problem with `--name`.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("the name template `{template}` {problem}")]
#[diagnostic(
    code(w4b::publish::template),
    help("use `{{hive_id}}`, `{{version}}`, `{{date}}`, `{{target}}` and `{{board}}` in a relative path, e.g. `{DEFAULT_TEMPLATE}`")
)]
pub struct TemplateError {
    pub template: String,
    pub problem: String,
}

/// `YYYY-MM-DD` of a Unix time (UTC): the date part of the manifest's RFC 3339 time; no
/// clock, no zone.
pub fn date_of(epoch: i64) -> String {
    let mut t = timestamp_of(epoch);
    t.truncate(t.find('T').unwrap_or(t.len()));
    t
}

/// `2024-11-19T00:00:00Z` of a Unix time.
fn timestamp_of(epoch: i64) -> String {
    crate::manifest::sbom::rfc3339(epoch)
}

/// The image's extension as built: `.img.zst`, `.img.xz`, `.img.gz`, `.img`.
fn image_extension(name: &str) -> &str {
    name.find(".img").map_or("", |i| &name[i..])
}

impl Release {
    /// `{version}`: the hive's version, else `0.0.0` (an image without a hive has none).
    pub fn version(&self) -> &str {
        self.hive_version.as_deref().unwrap_or("0.0.0")
    }

    pub fn date(&self) -> String {
        date_of(self.epoch)
    }

    /// The release's paths by `template`. A template ending in an image extension gets
    /// the built image's (a `.img.xz` build is not published as `.img.zst`).
    pub fn names(&self, template: &str) -> Result<Names, TemplateError> {
        let bad = |problem: &str| TemplateError {
            template: template.to_owned(),
            problem: problem.to_owned(),
        };
        let board = self
            .board
            .as_deref()
            .map(|b| b.rsplit(':').next().unwrap_or(b))
            .unwrap_or("none");
        let mut out = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                return Err(bad("has a `{` without its `}`"));
            };
            let value = match &rest[open + 1..open + close] {
                "hive_id" => self.id.clone(),
                "version" => self.version().to_owned(),
                "date" => self.date(),
                "target" => self.target.rsplit(':').next().unwrap_or(&self.target).to_owned(),
                "board" => board.to_owned(),
                other => return Err(bad(&format!("names `{{{other}}}`, which is not a placeholder"))),
            };
            out.push_str(&value);
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        let stem = match out.find(".img") {
            Some(i) => out[..i].to_owned(),
            None => out.clone(),
        };
        let image = format!("{stem}{}", image_extension(&self.image_name));
        let safe = !image.starts_with('/')
            && !image.is_empty()
            && image
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
            && !image.contains('\\');
        if !safe {
            return Err(bad(&format!(
                "gives `{image}`, which is not a relative path of plain names"
            )));
        }
        let names = Names {
            sha256: format!("{image}.sha256"),
            bmap: format!("{stem}.bmap"),
            manifest: format!("{stem}.manifest.json"),
            metadata: format!("{stem}.json"),
            latest: format!("{}/latest.json", self.id),
            image,
        };
        // The index and the pointers are publishing's own names.
        for n in [
            &names.image,
            &names.sha256,
            &names.bmap,
            &names.manifest,
            &names.metadata,
        ] {
            if n == INDEX || base_name(n) == "latest.json" {
                return Err(bad(&format!("gives `{n}`, a name publishing keeps for itself")));
            }
        }
        Ok(names)
    }

    /// The `.sha256` file: `sha256sum -c` checks it in the image's directory.
    pub fn sha256_line(&self, names: &Names) -> String {
        format!("{}  {}\n", self.image_sha256, base_name(&names.image))
    }

    /// The metadata JSON (`w4b.release/1`); file names are relative to its directory.
    pub fn metadata(&self, names: &Names, url: &str) -> String {
        let doc = json!({
            "schema": "w4b.release/1",
            "target": self.target,
            "hive_id": self.id,
            "hive_version": self.hive_version,
            "name": self.title,
            "board": self.board,
            "arch": self.arch,
            "base": self.base,
            "build_date": timestamp_of(self.epoch),
            "epoch": self.epoch,
            "image": {
                "file": base_name(&names.image),
                "url": url,
                "size": self.image_size,
                "sha256": self.image_sha256,
            },
            "extracted": {
                "size": self.extract_size,
                "sha256": self.extract_sha256,
            },
            "bmap": base_name(&names.bmap),
            "manifest": {
                "file": base_name(&names.manifest),
                "sha256": self.manifest_sha256,
                // The image's name as the manifest's subject (`w4b verify --artifact`
                // matches by name): the name it was built under.
                "subject": self.image_name,
            },
            "w4b_version": self.w4b_version,
        });
        pretty(&doc)
    }

    /// `<id>/latest.json`: the release of this hive published last, by path below the
    /// destination.
    pub fn latest(&self, names: &Names, url: &str) -> String {
        pretty(&json!({
            "schema": "w4b.latest/1",
            "hive_id": self.id,
            "version": self.version(),
            "date": self.date(),
            "image": names.image,
            "url": url,
            "sha256": self.image_sha256,
            "metadata": names.metadata,
        }))
    }
}

/// The last path segment.
fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Two-space-indented JSON with a final newline (keys sorted: `serde_json`'s map is a
/// `BTreeMap`).
pub fn pretty(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> Release {
        Release {
            target: "//hives:north".into(),
            id: "hive_North001".into(),
            hive_version: Some("1.2.3".into()),
            title: Some("North".into()),
            board: Some("//boards:pi4".into()),
            arch: Some("arm64".into()),
            base: Some("//bases:test".into()),
            epoch: 1_700_000_000,
            image_name: "north.img.xz".into(),
            image_size: 10,
            image_sha256: "ab".repeat(32),
            extract_size: 20,
            extract_sha256: "cd".repeat(32),
            manifest_sha256: "ef".repeat(32),
            w4b_version: "0.1.0".into(),
        }
    }

    #[test]
    fn dates_come_from_the_epoch_in_utc() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(1_700_000_000), "2023-11-14");
        assert_eq!(date_of(951_782_400), "2000-02-29");
        assert_eq!(date_of(-1), "1969-12-31");
        assert_eq!(timestamp_of(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn the_default_template_names_the_hive_version_and_date_with_the_built_extension() {
        let n = release().names(DEFAULT_TEMPLATE).unwrap();
        assert_eq!(n.image, "hive_North001/hive_North001-1.2.3-2023-11-14.img.xz");
        assert_eq!(
            n.sha256,
            "hive_North001/hive_North001-1.2.3-2023-11-14.img.xz.sha256"
        );
        assert_eq!(n.bmap, "hive_North001/hive_North001-1.2.3-2023-11-14.bmap");
        assert_eq!(n.metadata, "hive_North001/hive_North001-1.2.3-2023-11-14.json");
        assert_eq!(n.latest, "hive_North001/latest.json");
        assert_eq!(
            release().sha256_line(&n),
            format!("{}  hive_North001-1.2.3-2023-11-14.img.xz\n", "ab".repeat(32))
        );
    }

    #[test]
    fn templates_that_escape_or_name_unknown_placeholders_are_refused() {
        for t in [
            "../{hive_id}.img",
            "/abs/{hive_id}.img",
            "{nope}.img",
            "{hive_id",
            "a//b.img",
            "os_list.img",
            "x/latest.img",
        ] {
            assert!(release().names(t).is_err(), "{t}");
        }
        let n = release().names("{board}/{target}-{date}.img.zst").unwrap();
        assert_eq!(n.image, "pi4/north-2023-11-14.img.xz");
    }
}
