//! What can go wrong while compiling targets into a graph: wrong kinds, missing boards,
//! architectures that do not match, images with no epoch or one out of range.

use crate::defs;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CompileError {
    #[error("`{label}` is a {kind} target; only images can be built")]
    #[diagnostic(
        code(w4b::compile::not_buildable),
        help(
            "build an image that uses it, e.g. `w4b build //images/...`; `w4b ls` shows every target's kind"
        )
    )]
    NotBuildable { label: String, kind: String },

    #[error("nothing to build: no image among {labels}")]
    #[diagnostic(
        code(w4b::compile::nothing_to_build),
        help("`w4b ls` shows every target's kind; images are buildable")
    )]
    NothingToBuild { labels: String },

    #[error("`{path}` leads outside the workspace through a symlink (at {at})")]
    #[diagnostic(
        code(w4b::compile::escapes_workspace),
        help("w4b reads only files inside the workspace: copy the file in, or point the symlink at a path inside the workspace")
    )]
    EscapesWorkspace { path: String, at: String },

    #[error("cannot resolve `{path}` (at {at}): {source}")]
    #[diagnostic(code(w4b::compile::unresolvable))]
    Unresolvable {
        path: String,
        at: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{label}` has no epoch")]
    #[diagnostic(
        code(w4b::compile::no_epoch),
        help("an image on `scratch` has no base to take a time from: add `epoch: <seconds since 1970>` to the image (or to `w4b.yaml` for every target); it is the only time the build sees")
    )]
    NoEpoch { label: String },

    #[error("the epoch of `{label}` is out of range: {value}, {origin}, does not lie {range}")]
    #[diagnostic(code(w4b::compile::epoch_out_of_range))]
    EpochOutOfRange {
        label: String,
        /// The value as written: seconds, or a base's release date.
        value: String,
        /// `written at defs/…:4:8`, or `the release date of //bases:… at …`.
        origin: String,
        range: String,
        #[help]
        help: String,
    },

    #[error("`{image}` installs package sets but starts from `scratch` (at {at})")]
    #[diagnostic(
        code(w4b::compile::packages_without_base),
        help(
            "package sets are installed with the base's own `dpkg`: name a `base:` (a `kind: base` target)"
        )
    )]
    PackagesWithoutBase { image: String, at: String },

    #[error("the {module} module of `{hive}` needs the package set `{set}`, which the workspace does not have ({problem})")]
    #[diagnostic(
        code(w4b::hive::package_set),
        help("the W4B modules install their Debian packages from package sets with these names; copy `defs/packages/{name}.yaml` (and its keys) from the workspace shipped with w4b, or write a `kind: packages` set of that name (docs/hives.md, \"Packages\")")
    )]
    ModuleSetMissing {
        module: &'static str,
        hive: String,
        set: String,
        name: String,
        problem: String,
    },

    #[error("the key `{key}` of repository `{repo}` is missing (at {at})")]
    #[diagnostic(
        code(w4b::lock::key_missing),
        help("the repository is an `apt_source` of the image, so its key goes into the image; run `w4b lock` (it fetches a key with a `key_url`), or put the archive's key at `{key}`")
    )]
    AptSourceKeyMissing { repo: String, key: String, at: String },

    #[error("`w4b.lock` has no entry for the package sets of `{image}` (at {at})")]
    #[diagnostic(
        code(w4b::lock::missing),
        help("run `w4b lock` to resolve `{entry}` into `w4b.lock`, and commit it; a build never resolves packages itself")
    )]
    NotLocked {
        image: String,
        entry: String,
        at: String,
    },

    #[error("the package sets of `{image}` changed since `w4b.lock` was written (at {at})")]
    #[diagnostic(
        code(w4b::lock::stale),
        help("run `w4b lock` to resolve `{entry}` again (it keeps the locked versions that still fit), and commit `w4b.lock`")
    )]
    StaleLock {
        image: String,
        entry: String,
        at: String,
    },

    #[error("`w4b.lock` is not UTF-8 text")]
    #[diagnostic(
        code(w4b::lock::unreadable),
        help("`w4b.lock` is written by `w4b lock`; restore it from version control, or delete it and run `w4b lock` again")
    )]
    LockNotText,

    #[error("layer `{layer}` appears twice in `{image}`")]
    #[diagnostic(
        code(w4b::compile::duplicate_layer),
        help("list each layer once; order matters")
    )]
    DuplicateLayer {
        image: String,
        layer: String,
        at: String,
    },

    #[error("`{layer}` (used by `{image}` at {at}) is a {kind} target, not a layer")]
    #[diagnostic(
        code(w4b::compile::not_a_layer),
        help("`layers:` lists labels of `kind: layer` targets")
    )]
    NotALayer {
        image: String,
        layer: String,
        kind: String,
        at: String,
    },

    #[error("`{target}` (the `{key}` of `{image}` at {at}) is a {kind} target, not a {wanted}")]
    #[diagnostic(
        code(w4b::compile::wrong_kind),
        help("`base:` names a `kind: base` target (or `scratch`), `board:` a `kind: board` target; `w4b ls` shows every target's kind")
    )]
    WrongKind {
        image: String,
        key: &'static str,
        target: String,
        kind: String,
        wanted: &'static str,
        at: String,
    },

    #[error("`{image}` starts from the disk image `{base}` but names no board (at {at})")]
    #[diagnostic(
        code(w4b::compile::no_board),
        help("add `board: //boards:pi4` (or pi3, pi5, zero2w, cm4): the board decides config.txt, the kernel and the checks")
    )]
    NoBoard { image: String, base: String, at: String },

    #[error("`{base}` is not bootstrapped from packages")]
    #[diagnostic(code(w4b::compile::not_bootstrapped))]
    NotBootstrapped { base: String },

    #[error("`{base}` has no `date:`, and its lock entry `{entry}` records no release date (at {at})")]
    #[diagnostic(
        code(w4b::compile::bootstrap_without_date),
        help("give the base a `date:` (YYYY-MM-DD), or lock it against repositories whose release files carry a `Date:`")
    )]
    BootstrapWithoutDate { base: String, entry: String, at: String },

    #[error("`{base}` is bootstrapped from packages: it has no disk image to download and unpack (for `{image}`, at {at})")]
    #[diagnostic(
        code(w4b::compile::bootstrap_disk_image),
        help("this is a w4b bug: a bootstrapped base's partitions come from its `raspi-layout` step; please report it with `w4b graph` of the image")
    )]
    BootstrapDiskImage { image: String, base: String, at: String },

    #[error("`{board}` cannot run `{base}`: the base is {base_arch}, the board runs only {board_arch} (in `{image}` at {at})")]
    #[diagnostic(
        code(w4b::compile::arch_mismatch),
        help("use a {board_arch} base (e.g. `//bases:raspios-bookworm-armhf-lite`), or a board that runs {base_arch} (pi3, pi4, pi5, zero2w, cm4)")
    )]
    ArchMismatch {
        image: String,
        base: String,
        base_arch: defs::Arch,
        board: String,
        board_arch: defs::Arch,
        at: String,
    },

    #[error("`{board}` names no kernel for {arch} (at {at})")]
    #[diagnostic(
        code(w4b::compile::no_kernel),
        help("the board's `kernel:` map names no kernel for this architecture: add it (e.g. `kernel: {{arm64: kernel8.img, armhf: kernel7l.img}}`), or leave `kernel:` out for Raspberry Pi OS's kernels")
    )]
    NoKernel {
        board: String,
        arch: defs::Arch,
        at: String,
    },

    #[error("`{label}`: {codec} level {level} is out of range ({range})")]
    #[diagnostic(
        code(w4b::compile::bad_level),
        help("set `output.level` ({at}) to a level from {range}")
    )]
    BadLevel {
        label: String,
        codec: &'static str,
        level: i32,
        range: &'static str,
        at: String,
    },

    #[error("cannot start the downloader")]
    #[diagnostic(code(w4b::compile::downloader))]
    Fetcher(#[source] crate::steps::fetch::FetchError),
}
