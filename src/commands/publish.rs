//! `w4b publish LABEL… --to DIR|URL`: builds the labels exactly as `w4b build` does (the
//! same options, the same code: [`build::build`]; what is cached is not built again),
//! then puts each disk image's release at the destination ([`crate::publish`]) and
//! prints its download URL. A failed build publishes nothing; with `--keep-going`, the
//! targets that built are published and the command still fails for the others.

use std::io::Read;
use std::path::Path;

use sha2::Digest as _;

use super::build::{self, Built, TargetResult, Tests};
use super::App;
use crate::cli::PublishArgs;
use crate::publish::dest::{self, Destination, Sent};
use crate::publish::{imager, Names, Release};
use crate::store::AppStore;

pub fn run(app: &App, args: &PublishArgs) -> miette::Result<i32> {
    let tests = args.build.test.then(|| Tests::of_build(app));
    build::with_store(app, |ws, store| {
        // Before a long build: a destination or template that cannot work fails now.
        let dest = open(app, ws, args)?;
        check_template(&args.name_template)?;
        let outcome = build::build(app, &args.build, ws, store, tests.as_ref())?;
        // Without `--keep-going`, a failed fleet publishes nothing, not the part that
        // happened to finish before the failure.
        if outcome.error.is_some() && !args.build.keep_going {
            return outcome.into_result();
        }
        if let Some(b) = outcome
            .targets
            .iter()
            .find(|b| b.result == TargetResult::Ok && b.disk.is_none())
        {
            return Err(not_a_disk(&b.label.to_string()));
        }
        let mut entries = Vec::new();
        let mut lines = Vec::new();
        for b in outcome.targets.iter().filter(|b| b.result == TargetResult::Ok) {
            let (release, line) = publish_one(app, store, dest.as_ref(), args, b)?;
            entries.push(imager::entry(&release, &line.url));
            lines.push(line);
        }
        if !entries.is_empty() {
            let existing = dest.get(crate::publish::INDEX)?;
            let index = imager::merge(crate::publish::INDEX, existing.as_deref(), &entries)?;
            let sent =
                dest.publish_bytes(crate::publish::INDEX, crate::publish::pretty(&index).as_bytes())?;
            if !app.style.quiet && !app.style.json {
                let what = match sent {
                    Sent::Unchanged => "unchanged",
                    Sent::Uploaded(_) => "updated",
                };
                eprintln!(
                    "  index {} ({what}): point Raspberry Pi Imager at it with `rpi-imager --repo {}`",
                    crate::publish::INDEX,
                    url_of(dest.as_ref(), args, crate::publish::INDEX)
                );
            }
        }
        for l in &lines {
            if app.style.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "event": "published",
                        "target": l.target,
                        "url": l.url,
                        "path": l.path,
                        "files_sent": l.files_sent,
                        "bytes_sent": l.bytes_sent,
                    })
                );
            } else {
                if !app.style.quiet {
                    let sent = match l.files_sent {
                        0 => "already there, nothing sent".to_owned(),
                        n => format!("{n} file(s) sent, {}", crate::ui::bytes(l.bytes_sent)),
                    };
                    eprintln!("  published {} as `{}` ({sent})", l.target, l.path);
                }
                // The download URL is the command's data: stdout.
                println!("{}", l.url);
            }
        }
        outcome.into_result()
    })
}

/// What publishing one image did.
struct Line {
    target: String,
    path: String,
    url: String,
    files_sent: usize,
    bytes_sent: u64,
}

fn open(app: &App, ws: &crate::defs::Workspace, args: &PublishArgs) -> miette::Result<Box<dyn Destination>> {
    let s3 = || {
        let o = crate::store::s3_options(&args.to, false, &ws.config().cache.s3, &app.env);
        w4b_cache::S3Bucket::open(&o)
    };
    let token = app
        .env
        .get("W4B_PUBLISH_TOKEN")
        .filter(|t| !t.is_empty())
        .cloned();
    Ok(dest::open(&args.to, &app.cwd, s3, token)?)
}

/// The template applied to a stand-in release: its errors do not depend on the build.
fn check_template(template: &str) -> miette::Result<()> {
    let probe = Release {
        target: "//hives:x".into(),
        id: "x".into(),
        hive_version: None,
        title: None,
        board: None,
        arch: None,
        base: None,
        epoch: 0,
        image_name: "x.img.zst".into(),
        image_size: 0,
        image_sha256: String::new(),
        extract_size: 0,
        extract_sha256: String::new(),
        manifest_sha256: String::new(),
        w4b_version: String::new(),
    };
    probe.names(template)?;
    Ok(())
}

/// `--base-url` + `rel`, else the destination's own URL, else (a directory) a `file://`
/// URL of the published file.
fn url_of(dest: &dyn Destination, args: &PublishArgs, rel: &str) -> String {
    if let Some(base) = &args.base_url {
        return format!("{}/{rel}", base.trim_end_matches('/'));
    }
    dest.url(rel).unwrap_or_else(|| {
        let d = dest.describe();
        match d.starts_with("s3://") {
            true => format!("{d}/{rel}"),
            false => format!("file://{d}/{rel}"),
        }
    })
}

fn not_a_disk(label: &str) -> miette::Report {
    miette::miette!(
        code = "w4b::publish::not_a_disk",
        help = "publish disk images (`output.format: image`, the default on a base); a tar archive is part of an image, not something to flash",
        "`{label}` builds a tar archive: only disk images are published"
    )
}

/// The sha256 of everything `r` yields.
fn sha256_of(mut r: impl Read) -> std::io::Result<String> {
    let mut h = sha2::Sha256::default();
    std::io::copy(&mut r, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Puts one built image's release at the destination.
fn publish_one(
    app: &App,
    store: &AppStore,
    dest: &dyn Destination,
    args: &PublishArgs,
    b: &Built,
) -> miette::Result<(Release, Line)> {
    let label = b.label.to_string();
    let Some((image_name, disk, extract_size)) = &b.disk else {
        return Err(not_a_disk(&label));
    };
    let file = |name: &str| b.files.iter().find(|f| f.0 == name).map(|f| (f.1.as_path(), f.2));
    let missing = |what: &str| {
        miette::miette!(
            code = "w4b::publish::incomplete",
            help = "build it again with `w4b build`; `w4b cache verify` checks the cache",
            "`{label}` was built, but its {what} was not exported"
        )
    };
    let (image_path, image_size) = file(image_name).ok_or_else(|| missing("image"))?;
    let sha_line = std::fs::read_to_string(image_path.with_file_name(format!("{image_name}.sha256")))
        .map_err(|_| missing("`.sha256`"))?;
    let image_sha256 = sha_line.get(..64).ok_or_else(|| missing("`.sha256`"))?.to_owned();
    let bmap = b
        .files
        .iter()
        .find(|f| f.0.ends_with(".bmap"))
        .map(|f| f.1.clone())
        .ok_or_else(|| missing("`.bmap`"))?;
    let manifest_path = b.manifest.as_ref().ok_or_else(|| missing("manifest"))?;
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| {
            miette::miette!(
                code = "w4b::publish::read",
                help = "build it again with `w4b build`",
                "cannot read `{}`: {e}",
                app.display_path(p)
            )
        })
    };
    let manifest = read(manifest_path)?;
    let bmap = read(&bmap)?;
    let epoch = b.epoch.ok_or_else(|| missing("epoch"))?;
    // Imager checks the uncompressed image it wrote against this: hash the disk itself
    // (the cached output the compressed file was made from).
    let extract_sha256 = store
        .inner()
        .open_output(disk)
        .map_err(miette::Report::new)
        .and_then(|r| {
            sha256_of(r).map_err(|e| {
                miette::miette!(
                    code = "w4b::publish::read",
                    help = "`w4b cache verify` checks the cache; build it again with `w4b build`",
                    "cannot read the disk of `{label}` from the cache: {e}"
                )
            })
        })?;
    let about = &b.about;
    let release = Release {
        target: label.clone(),
        id: about
            .hive
            .as_ref()
            .map_or_else(|| b.label.name.clone(), |(id, _)| id.clone()),
        hive_version: about.hive.as_ref().map(|(_, v)| v.clone()),
        title: about.title.clone(),
        board: about.board.as_ref().map(ToString::to_string),
        arch: about.arch.clone(),
        base: about.base.as_ref().map(ToString::to_string),
        epoch,
        image_name: image_name.clone(),
        image_size,
        image_sha256,
        extract_size: *extract_size,
        extract_sha256,
        manifest_sha256: sha256_of(&manifest[..]).unwrap_or_default(),
        w4b_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let names: Names = release.names(&args.name_template)?;
    let url = url_of(dest, args, &names.image);
    let line = release.sha256_line(&names);
    // A published name is never silently given other bytes.
    if let Some(there) = dest.get(&names.sha256)? {
        if there != line.as_bytes() && !args.replace {
            return Err(miette::miette!(
                code = "w4b::publish::exists",
                help = "bump the hive's `version`, change `--name`, or pass `--replace` to overwrite it",
                "`{}` is already published at `{}` with other contents ({})",
                names.image,
                dest.describe(),
                String::from_utf8_lossy(&there).trim()
            ));
        }
    }
    // The image first (its `.sha256` right after it), the pointer to it last.
    let sent = [
        dest.publish_file(&names.image, image_path, image_size, &names.sha256, &line)?,
        dest.publish_bytes(&names.bmap, &bmap)?,
        dest.publish_bytes(&names.manifest, &manifest)?,
        dest.publish_bytes(&names.metadata, release.metadata(&names, &url).as_bytes())?,
        dest.publish_bytes(&names.latest, release.latest(&names, &url).as_bytes())?,
    ];
    let mut files_sent = 0;
    let mut bytes_sent = 0;
    for s in sent {
        if let Sent::Uploaded(n) = s {
            files_sent += 1;
            bytes_sent += n;
        }
    }
    Ok((
        release,
        Line {
            target: label,
            path: names.image.clone(),
            url,
            files_sent,
            bytes_sent,
        },
    ))
}
