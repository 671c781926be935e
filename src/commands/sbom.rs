//! `w4b sbom IMAGE_OR_MANIFEST [--format spdx|cyclonedx] [-o FILE]`: the software bill of
//! materials of a built image, from its build manifest ([`crate::manifest::sbom`]).
//!
//! Given an image, the manifest is the `<name>.manifest.json` beside it (`edge.img.zst` →
//! `edge.manifest.json`), and the image must be that manifest's subject, byte for byte:
//! an SBOM that describes another build than the file in hand would mislead an auditor.
//! Either way the manifest must be internally consistent (what `w4b verify` checks
//! without artifacts or key): an edited manifest gives no SBOM. Signatures are checked
//! by `w4b verify --key`, not here.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::App;
use crate::cli::{SbomArgs, SbomFormatArg};
use crate::manifest::sbom::{self, SbomFormat};
use crate::manifest::verify::{self, ArtifactDigest, OTHER_ERROR};

/// A manifest larger than this is not one w4b wrote (they are kilobytes to a few
/// megabytes for thousands of steps).
const MAX_MANIFEST: u64 = 256 << 20;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SbomCommandError {
    #[error("no build manifest beside `{image}`: looked for {looked}")]
    #[diagnostic(
        code(w4b::sbom::no_manifest),
        help("pass the manifest itself (`w4b sbom NAME.manifest.json`); `w4b build` writes it beside the image")
    )]
    NoManifest { image: String, looked: String },

    #[error("cannot read `{path}`: {source}")]
    #[diagnostic(code(w4b::sbom::read))]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{path}` is larger than {MAX_MANIFEST} bytes: not a build manifest")]
    #[diagnostic(
        code(w4b::sbom::too_large),
        help("pass the `.manifest.json` that `w4b build` wrote")
    )]
    TooLarge { path: String },

    #[error("`{path}` is not a w4b build manifest:\n{findings}")]
    #[diagnostic(
        code(w4b::sbom::bad_manifest),
        help(
            "run `w4b verify {path}` for the details; an SBOM is only written from a manifest that verifies"
        )
    )]
    BadManifest { path: String, findings: String },

    #[error("`{image}` is not a subject of `{manifest}`: {why}")]
    #[diagnostic(
        code(w4b::sbom::not_the_image),
        help("the manifest beside an image must be the one its build wrote; rebuild, or pass the right manifest")
    )]
    NotTheImage {
        image: String,
        manifest: String,
        why: String,
    },

    #[error("cannot write `{path}`: {source}")]
    #[diagnostic(
        code(w4b::sbom::write),
        help("check that the directory exists and is writable")
    )]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub fn run(app: &App, args: &SbomArgs) -> miette::Result<i32> {
    let input = app.cwd.join(&args.input);
    let shown = |p: &Path| app.display_path(p);
    let is_manifest = input
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(".json"));
    let (manifest_path, image) = if is_manifest {
        (input.clone(), None)
    } else {
        (manifest_beside(&input, &shown)?, Some(input.clone()))
    };
    let doc = read_bounded(&manifest_path, &shown)?;
    let manifest_shown = shown(&manifest_path);

    // The manifest's own consistency, as `w4b verify` judges it (no key, no artifacts).
    let v = verify::verify(&doc, &[], None);
    let problems: Vec<String> = v
        .findings
        .iter()
        .filter(|f| f.bit & OTHER_ERROR != 0)
        .map(|f| format!("  error[{}]: {}", f.code, f.message))
        .collect();
    let statement = match verify::statement_of(&doc) {
        Some(s) if problems.is_empty() => s,
        _ => {
            return Err(SbomCommandError::BadManifest {
                path: manifest_shown,
                findings: if problems.is_empty() {
                    "  the statement could not be read".to_owned()
                } else {
                    problems.join("\n")
                },
            }
            .into())
        }
    };

    if let Some(image) = &image {
        let name = image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = std::fs::File::open(image).map_err(|source| SbomCommandError::Read {
            path: shown(image),
            source,
        })?;
        let got = ArtifactDigest::of_reader(&name, file).map_err(|source| SbomCommandError::Read {
            path: shown(image),
            source,
        })?;
        let why = match statement.subject.iter().find(|s| s.name == name) {
            None => Some(format!("it lists no `{name}`")),
            Some(s) if s.digest.sha256 != got.sha256 || s.annotations.size != got.size => Some(format!(
                "the manifest records sha256 {} ({} bytes), the file has {} ({} bytes)",
                s.digest.sha256, s.annotations.size, got.sha256, got.size
            )),
            Some(_) => None,
        };
        if let Some(why) = why {
            return Err(SbomCommandError::NotTheImage {
                image: shown(image),
                manifest: manifest_shown,
                why,
            }
            .into());
        }
    }

    let format = match args.format {
        SbomFormatArg::Spdx => SbomFormat::Spdx,
        SbomFormatArg::CycloneDx => SbomFormat::CycloneDx,
    };
    let text = sbom::render(&statement, format)?;
    match &args.output {
        None => print!("{text}"),
        Some(out) => {
            let dest = app.cwd.join(out);
            write_atomic(&dest, text.as_bytes()).map_err(|source| SbomCommandError::Write {
                path: shown(&dest),
                source,
            })?;
            if !app.style.quiet {
                let packages = crate::manifest::packages::packages_of(&statement).len();
                eprintln!(
                    "wrote `{}`: {packages} package(s) of `{}`",
                    shown(&dest),
                    statement.predicate.build_definition.external_parameters.target
                );
            }
        }
    }
    Ok(0)
}

/// The manifest `w4b build` wrote beside `image`: `<stem>.manifest.json`, where the stem
/// is the file name with its extensions taken off one by one (`edge.img.zst` →
/// `edge.img`, `edge`), the longest that has a manifest.
fn manifest_beside(image: &Path, shown: &dyn Fn(&Path) -> String) -> Result<PathBuf, SbomCommandError> {
    let dir = image.parent().unwrap_or(Path::new("."));
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut looked = Vec::new();
    let mut stem = name.as_str();
    while let Some((shorter, _)) = stem.rsplit_once('.') {
        stem = shorter;
        if stem.is_empty() {
            break;
        }
        let candidate = dir.join(format!("{stem}.manifest.json"));
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(format!("`{}`", shown(&candidate)));
    }
    Err(SbomCommandError::NoManifest {
        image: shown(image),
        looked: if looked.is_empty() {
            "nothing (the file name has no extension)".to_owned()
        } else {
            looked.join(", ")
        },
    })
}

fn read_bounded(path: &Path, shown: &dyn Fn(&Path) -> String) -> Result<Vec<u8>, SbomCommandError> {
    let read = |source| SbomCommandError::Read {
        path: shown(path),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut doc = Vec::new();
    file.take(MAX_MANIFEST.saturating_add(1))
        .read_to_end(&mut doc)
        .map_err(read)?;
    if doc.len() as u64 > MAX_MANIFEST {
        return Err(SbomCommandError::TooLarge { path: shown(path) });
    }
    Ok(doc)
}

/// Writes `bytes` to a temporary file beside `dest` and renames it into place, readable
/// by all like every other output.
fn write_atomic(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_beside_an_image_is_found_by_its_stem() {
        let dir = tempfile::tempdir().unwrap();
        let shown = |p: &Path| p.display().to_string();
        std::fs::write(dir.path().join("edge.manifest.json"), "{}").unwrap();
        assert_eq!(
            manifest_beside(&dir.path().join("edge.img.zst"), &shown).unwrap(),
            dir.path().join("edge.manifest.json")
        );
        assert_eq!(
            manifest_beside(&dir.path().join("edge.tar"), &shown).unwrap(),
            dir.path().join("edge.manifest.json")
        );
        let e = manifest_beside(&dir.path().join("north.img.xz"), &shown).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("north.img.manifest.json") && text.contains("north.manifest.json"),
            "{text}"
        );
        assert!(manifest_beside(&dir.path().join("edge"), &shown).is_err());
    }
}
