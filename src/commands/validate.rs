//! `w4b validate IMAGE`: the structural checks a build runs on every image before writing
//! it out ([`crate::validate`]), on any image — plus, on request, the reference tools
//! (`--oracles`: `fsck.fat -n`, `e2fsck -fn`) and the kernel's own view (`--mount`, root
//! only). Prints one line per check (or `w4b.validate/1` JSON) on stdout; exits 0 when
//! nothing failed, 1 otherwise, with one diagnostic per failure on stderr.

use std::fmt::Write as _;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use miette::IntoDiagnostic;
use serde::Serialize;

use super::inspect::ImageInfo;
use super::App;
use crate::cli::{ReportFormat, ValidateArgs};
use crate::image::{self, Compression, OpenedImage};
use crate::validate::{self, board_check, mount, oracle, BoardCheck, Check, Report, Status};

/// The board a run checked for.
#[derive(Debug, Serialize)]
pub struct BoardInfo {
    pub name: String,
    pub arch: String,
    #[serde(flatten)]
    pub files: BoardCheck,
}

/// The JSON report.
#[derive(Debug, Serialize)]
pub struct Output<'a> {
    pub schema: &'static str,
    pub image: ImageInfo,
    pub board: Option<BoardInfo>,
    pub passed: bool,
    pub checks: &'a [Check],
}

/// The boot files a workspace's `kind: board` needs for `arch`: its kernel for that
/// architecture (Raspberry Pi OS's by default) and its device trees.
fn workspace_board(app: &App, name: &str, arch: &str) -> miette::Result<BoardInfo> {
    use crate::defs::{Arch, Loader, Target};
    let ws = app.workspace()?;
    let label = app.resolve_one(&ws, name)?;
    let loader = Loader::new(ws, app.env.clone(), &app.global.set)?;
    let t = loader.load(&label)?;
    let Target::Board(board) = &t.target else {
        return Err(miette::miette!(
            code = "w4b::validate::not_a_board",
            help = "`--board` takes a `kind: board` label (`//boards:pi4`) or a known model",
            "`{label}` is a {}, not a board",
            t.target.kind()
        ));
    };
    let userland = match arch {
        "armhf" => Arch::Armhf,
        _ => Arch::Arm64,
    };
    let kernel = board.kernel.get(&userland).ok_or_else(|| {
        miette::miette!(
            code = "w4b::validate::no_kernel",
            help = format!("add `kernel: {{{userland}: <file>}}` to `{label}`, or pass the board's `--arch`"),
            "`{label}` names no kernel for {userland}"
        )
    })?;
    Ok(BoardInfo {
        name: label.to_string(),
        arch: arch.to_owned(),
        files: BoardCheck {
            kernels: vec![kernel.clone()],
            device_trees: board.device_trees.clone(),
        },
    })
}

pub fn run(app: &App, args: &ValidateArgs) -> miette::Result<i32> {
    // Refuse early: `--mount` without root would otherwise fail after reading everything.
    if args.mount {
        if !mount::is_root() {
            return Err(validate::ValidateError::Mount(mount::MountError::NotRoot).into());
        }
        if !std::path::Path::new("/dev/loop-control").exists() {
            return Err(validate::ValidateError::Mount(mount::MountError::NoLoop).into());
        }
    }
    let board = match &args.board {
        Some(name) if name.contains(':') => Some(workspace_board(app, name, &args.arch)?),
        Some(name) => {
            let files = board_check(name, &args.arch).ok_or_else(|| {
                miette::miette!(
                    code = "w4b::validate::unknown_board",
                    help = format!(
                        "known boards: {}; architectures: arm64, armhf",
                        validate::BOARDS.join(", ")
                    ),
                    "no boot file table for board `{name}` with architecture `{}`",
                    args.arch
                )
            })?;
            Some(BoardInfo {
                name: name.clone(),
                arch: args.arch.clone(),
                files,
            })
        }
        None => None,
    };
    let full = app.cwd.join(&args.image);
    let shown = app.display_path(&full);
    let context = |e: image::ImageError| miette::Report::new(e).wrap_err(format!("cannot read `{shown}`"));
    let mut opened = image::open_image(&full, args.max_image_size).map_err(context)?;
    let info = ImageInfo {
        path: shown.clone(),
        compression: opened.compression,
        stored_size: opened.stored_size,
        size: opened.size,
    };
    let size = opened.size;
    let mut v = validate::inspect_disk(
        &mut opened.file,
        size,
        board.as_ref().map(|b| &b.files),
        args.mount,
    )
    .map_err(|e| miette::Report::new(e).wrap_err(format!("cannot validate `{shown}`")))?;
    // A hive's root filesystem also gets the hive checklist (the same rules the build
    // applies before writing a hive image).
    if let Some(root) = v
        .layout
        .root
        .and_then(|i| v.layout.parts.iter().find(|p| p.info.index == i))
    {
        if root.inside {
            let file = opened.file.try_clone().into_diagnostic()?;
            let reader = std::io::BufReader::with_capacity(1 << 20, file);
            if let Ok(files) = validate::hive::Ext4Files::open(reader, root.offset, root.len) {
                if validate::hive::is_hive(&files) {
                    match validate::hive::check(&files, validate::hive::Stage::Image) {
                        Ok(hive) => v.report.checks.extend(hive.checks),
                        // A file the checklist could not read: a failed check, not a
                        // checklist that judged it absent.
                        Err(e) => v.report.fail(
                            "hive",
                            Some(format!("partition {}", root.info.index)),
                            format!("the hive checklist cannot run: {}", crate::validate::chain(&e)),
                            "the root filesystem is damaged; check it with `e2fsck -fn` (or `w4b validate --oracles`) and rebuild the image",
                        ),
                    }
                }
            }
        }
    }
    let tool_path = tool_path(&opened);
    if args.oracles {
        oracle::run_oracles(&tool_path, &v.layout, &mut v.report);
    }
    if args.mount {
        mount::compare_with_kernel(
            &tool_path,
            &v.layout,
            v.boot_tree.as_deref(),
            v.root_tree.as_deref(),
            &mut v.report,
        )
        .map_err(|e| miette::Report::new(validate::ValidateError::Mount(e)))?;
    }
    let report = v.report;
    match args.format {
        ReportFormat::Json => {
            let out = Output {
                schema: validate::SCHEMA,
                image: info,
                board,
                passed: report.passed(),
                checks: &report.checks,
            };
            println!("{}", serde_json::to_string_pretty(&out).into_diagnostic()?);
        }
        ReportFormat::Text => print!("{}", render_text(&info, board.as_ref(), &report)),
    }
    match report.into_result() {
        Ok(_) => Ok(0),
        Err(failed) => Err(miette::Report::new(failed).wrap_err(format!("`{shown}` is not a valid image"))),
    }
}

/// A path other processes (`losetup`, `e2fsck`) can open: the image itself, or for a
/// decompressed copy (an anonymous temporary file) its `/proc/<pid>/fd/<n>` link, which
/// reopens the file even though it has no name.
fn tool_path(opened: &OpenedImage) -> PathBuf {
    if opened.compression == Compression::None {
        opened.path.clone()
    } else {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            opened.file.as_raw_fd()
        ))
    }
}

/// One line per check, then a summary.
pub fn render_text(image: &ImageInfo, board: Option<&BoardInfo>, report: &Report) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "`{}` ({}, {})",
        image.path,
        image.compression,
        crate::ui::bytes(image.size)
    );
    if let Some(b) = board {
        let _ = write!(s, ", board {} {}", b.name, b.arch);
    }
    s.push('\n');
    let width = report.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in &report.checks {
        let _ = write!(s, "{:<4}  {:<width$}  ", c.status, c.name);
        if let Some(f) = &c.file {
            let _ = write!(s, "`{f}`: ");
        }
        let _ = writeln!(s, "{}", c.detail);
    }
    let count = |st: Status| report.checks.iter().filter(|c| c.status == st).count();
    let _ = writeln!(
        s,
        "{} checks: {} passed, {} failed, {} skipped",
        report.checks.len(),
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip)
    );
    s
}
