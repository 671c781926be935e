//! Command-line arguments (clap) and the process entry point. Argument definitions only:
//! each subcommand's behaviour lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands;

/// `w4b --version`: the crate version and the commit it was built from (`build.rs`), or
/// `unknown commit` when the source was not a git checkout.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("W4B_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(
    name = "w4b",
    version = VERSION,
    about = "Build reproducible Raspberry Pi images for W4B hives from a graph of cached steps",
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Workspace root (the directory holding `w4b.yaml`); found by walking up by default.
    #[arg(long, global = true, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Local cache directory [default: the XDG cache dir, `~/.cache/w4b`].
    #[arg(long, global = true, env = "W4B_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Size limit of the local cache, enforced after every build by evicting least recently
    /// used entries: `20GiB`, `500MiB`, or `none` [default: `cache.max_size`, else 20GiB].
    #[arg(long, global = true, env = "W4B_CACHE_MAX_SIZE", value_name = "SIZE",
          value_parser = crate::commands::cache::parse_limit_arg)]
    pub cache_max_size: Option<crate::defs::workspace::CacheLimit>,
    /// Remote cache: a shared directory (NFS) or `s3://BUCKET/PREFIX` (an S3-compatible
    /// object store; see `cache.s3`): read through, published to after success.
    #[arg(
        long,
        global = true,
        env = "W4B_REMOTE_CACHE",
        value_name = "DIR|s3://BUCKET/PREFIX"
    )]
    pub remote_cache: Option<String>,
    /// Only read from the remote cache, never publish to it.
    #[arg(long, global = true)]
    pub remote_read_only: bool,
    /// Ignore the remote cache, even one configured in `w4b.yaml`.
    #[arg(long, global = true)]
    pub no_remote: bool,
    /// Secret key (`PREFIX.key` of `w4b keygen`) that signs what is published to the remote
    /// cache; without one nothing is published [`cache.signing_key`].
    #[arg(long, global = true, env = "W4B_REMOTE_SIGN_KEY", value_name = "FILE")]
    pub remote_sign_key: Option<PathBuf>,
    /// A public key whose signed remote records are used: a `.pub` file or its text; repeat
    /// (or separate with `,`) for several. Replaces `cache.trusted_keys`.
    #[arg(
        long = "remote-trusted-key",
        global = true,
        env = "W4B_REMOTE_TRUSTED_KEYS",
        value_delimiter = ',',
        value_name = "KEY"
    )]
    pub remote_trusted_keys: Vec<String>,
    /// Set a definition value: `--set epoch=1700000000`, `--set output.level=3`.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// `human` (progress on stderr) or `json` (one JSON event per line on stdout).
    #[arg(long, global = true, value_enum, default_value_t = MessageFormat::Human)]
    pub message_format: MessageFormat,
    /// Print only errors and the summary.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More detail on stderr: `-v` each step as it starts, why it runs, cache hits and
    /// timings; `-vv` also the commands steps run and their output.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Also write everything `-vv` shows to this file, with times since the start and the
    /// final error, whatever the terminal shows (mode 0600; secret values masked).
    #[arg(long, global = true, env = "W4B_LOG_FILE", value_name = "PATH")]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MessageFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build targets: `w4b build //hives:north`, `w4b build //hives/...`.
    Build(BuildArgs),
    /// Resolve the package sets of images and hives into `w4b.lock`: `w4b lock`,
    /// `w4b lock --update postgresql-15`, `w4b lock --check` in CI.
    Lock(LockArgs),
    /// Build disk images and publish them for download: `w4b publish //hives/... --to
    /// /srv/images --base-url https://images.example.org`. Per image: the image, its
    /// `.sha256`, `.bmap`, manifest and metadata JSON, a `latest.json` per hive, and a
    /// Raspberry Pi Imager repository JSON (`os_list.json`) for everything there.
    Publish(PublishArgs),
    /// Explain why the last build of a target ran what it ran.
    Why(WhyArgs),
    /// Print the step graph of targets.
    Graph(GraphArgs),
    /// List targets and their kinds.
    Ls(LsArgs),
    /// Inspect and maintain the cache.
    Cache(CacheArgs),
    /// Show a disk image's partition table, filesystems and (with `--tree`) every entry.
    Inspect(InspectArgs),
    /// Compare two disk images entry by entry; exit status 0 identical, 1 different, 2 trouble.
    Diff(DiffArgs),
    /// Check a build manifest: signature, artifact digests, step graph, and with
    /// `--rebuild` reproducibility. Exit status is a bit mask: 1 digest mismatch, 2 bad or
    /// missing signature, 4 other error, 8 not reproducible.
    Verify(VerifyArgs),
    /// Write a software bill of materials of a built image: every installed package,
    /// pinned by sha256, as SPDX 2.3 or CycloneDX 1.5 JSON, from its build manifest.
    Sbom(SbomArgs),
    /// Create an ed25519 key pair for signing manifests and remote cache records:
    /// `PREFIX.key` and `PREFIX.pub`.
    Keygen(KeygenArgs),
    /// Check that a disk image is structurally bootable: partition table, both
    /// filesystems read completely, `cmdline.txt`, `fstab`, kernels and device trees.
    /// Exit status 0 when every check passes, 1 otherwise.
    Validate(ValidateArgs),
    /// Boot a disk image in QEMU (`qemu-system-aarch64 -M virt`) with its own kernel and
    /// judge the running system: boot settles, `multi-user.target` active, no failed
    /// units, required units active, command checks. The image is never modified. A label
    /// (`//hives:north`) is built first and tested by its `test:`, cached like any step.
    /// Exit status 0 when every check passes, 1 otherwise.
    Test(TestArgs),
    /// Install `.deb`s into a tree with the install engine and print the digests
    /// (for tests: the result as root and through a user namespace must match).
    #[command(hide = true)]
    InstallDebs(InstallDebsArgs),
    /// Create, check and list hives: `w4b hive new`, `w4b hive validate //hives/...`,
    /// `w4b hive show //hives:north`, `w4b hive list`, `w4b hive peers`.
    #[command(subcommand)]
    Hive(HiveCommand),
    /// Print a shell completion script: `w4b completions bash > ~/.local/share/bash-completion/completions/w4b`.
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout, or write one page per command with `--dir`.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// Images or hives whose package sets to lock [default: `//...`, every target; entries
    /// no target uses any more are then dropped].
    #[arg(value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Resolve again to the newest versions: every package, or only the ones named (and
    /// what their new versions need). Without it, only missing or stale entries are
    /// resolved, and locked versions that still fit are kept.
    #[arg(long, value_name = "PKG", num_args = 0..)]
    pub update: Option<Vec<String>>,
    /// Change nothing and read no network: exit 1 when `w4b.lock` does not match the
    /// definitions (a missing, stale or unused entry).
    #[arg(long, conflicts_with = "update")]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `w4b.1` and a page per subcommand (`w4b-build.1`, …) into this directory
    /// instead of printing `w4b.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum HiveCommand {
    /// Check a hive by the hive configuration manager's rules and list every problem.
    /// Exit status 0 when it is valid, 1 otherwise.
    Validate(HiveValidateArgs),
    /// Print the resolved configuration of a hive (secrets masked as `***`).
    Show(HiveShowArgs),
    /// Create a hive: `defs/hives/<hive_id>.yaml` with a new id, the next free VPN address
    /// and new credentials (SSH and WireGuard key pairs, database and admin passwords) in
    /// secret files. Asks on a terminal; `--yes` takes the flags and defaults instead.
    New(Box<HiveNewArgs>),
    /// Replace a hive's generated credentials: its SSH key pair, its WireGuard key pair or
    /// its passwords. Nothing else in the hive file changes.
    Keys(HiveKeysArgs),
    /// List the hives: id, name, location, VPN address, image, last build.
    List(HiveListArgs),
    /// Print the hub's WireGuard `[Peer]` sections, one per hive with a key and an address.
    Peers(HiveListArgs),
}

#[derive(Debug, Args)]
pub struct HiveValidateArgs {
    /// A hive file (`hives/hive_AbCd1234.yaml`; any path ending in `.yaml`/`.yml`), the
    /// label of a hive target or of an image carrying a hive (`//hives:north`), or a pattern
    /// (`//hives/...`): every hive it names, and no hive id or VPN address used twice.
    #[arg(value_name = "FILE|LABEL|PATTERN")]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct HiveNewArgs {
    /// Ask nothing: take the flags, and defaults for what they leave out (`--name` is
    /// required). Needed where there is no terminal.
    #[arg(long, short)]
    pub yes: bool,
    /// The hive's name (`metadata.name`): "Lindenhof Apiary".
    #[arg(long)]
    pub name: Option<String>,
    /// Where it stands (`metadata.location.address`).
    #[arg(long, value_name = "ADDRESS")]
    pub location: Option<String>,
    /// Latitude in degrees, −90 to 90 [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub latitude: Option<f64>,
    /// Longitude in degrees, −180 to 180 [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub longitude: Option<f64>,
    /// An IANA time zone (`Europe/Berlin`) [default: the image's `system.timezone`].
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// The administrator's full name [default: `W4B Operator`, unless `hives.defaults`
    /// gives `administrators`].
    #[arg(long, value_name = "NAME")]
    pub admin_name: Option<String>,
    /// The administrator's e-mail address [default: `operator@example.org`].
    #[arg(long, value_name = "EMAIL")]
    pub admin_email: Option<String>,
    /// The administrator's login (`[a-z_][a-z0-9_-]*`) [default: `operator`].
    #[arg(long, value_name = "LOGIN")]
    pub admin_username: Option<String>,
    /// An OpenSSH public key of the administrator (repeatable): `ssh-ed25519 AAAA… jo@laptop`.
    #[arg(long = "admin-ssh-key", value_name = "KEY")]
    pub admin_ssh_keys: Vec<String>,
    /// The image the hive builds on, when not `hives.image` of `w4b.yaml`.
    #[arg(long, value_name = "LABEL")]
    pub image: Option<String>,
    /// The hub's `host:port`, when `hives.defaults` of `w4b.yaml` does not give
    /// `security.wireguard.endpoint`.
    #[arg(long, value_name = "HOST:PORT")]
    pub hub_endpoint: Option<String>,
    /// The hub's WireGuard public key, when `hives.defaults` does not give
    /// `security.wireguard.peer_public_key`.
    #[arg(long, value_name = "KEY")]
    pub hub_public_key: Option<String>,
    /// Write the secrets into the hive file itself instead of secret files under
    /// `secrets/<hive_id>/`.
    #[arg(long)]
    pub inline_secrets: bool,
}

#[derive(Debug, Args)]
pub struct HiveKeysArgs {
    /// The hive target (`//hives:hive_AbCd1234`).
    #[arg(value_name = "LABEL")]
    pub label: String,
    /// What to replace (repeatable): `ssh` (the key pair), `wireguard` (the key pair; give
    /// the hub the new `w4b hive peers`), `passwords` (database and local admin).
    #[arg(long, value_enum, required = true, value_name = "WHAT")]
    pub rotate: Vec<RotateWhat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum RotateWhat {
    Ssh,
    Wireguard,
    Passwords,
}

#[derive(Debug, Args)]
pub struct HiveListArgs {
    /// Hives to include [default: `//...`, every hive of the workspace].
    #[arg(value_name = "PATTERN")]
    pub pattern: Option<String>,
}

#[derive(Debug, Args)]
pub struct HiveShowArgs {
    /// A hive target, or an image carrying a hive.
    #[arg(value_name = "LABEL")]
    pub label: String,
    #[arg(long, value_enum, default_value_t = ShowFormat::Yaml)]
    pub format: ShowFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Labels or patterns: `//images:demo`, `:demo`, `//hives/...`.
    #[arg(required = true, value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Parallel steps [default: number of cores].
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// Where outputs go [default: `out/` in the workspace].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run every step even when a cached result exists.
    #[arg(long)]
    pub force: bool,
    /// Keep building the other targets and independent steps after a failure, and set
    /// aside a target whose definition does not compile; the exit status is still 1.
    #[arg(long, short)]
    pub keep_going: bool,
    /// Sign each manifest with this ed25519 key (from `w4b keygen`): the manifest becomes
    /// a DSSE envelope that `w4b verify --key PREFIX.pub` checks.
    #[arg(long, value_name = "PREFIX.key")]
    pub sign_key: Option<PathBuf>,
    /// After building, build again from nothing — an empty cache, no remote, another
    /// working directory, TZ, locale, umask and thread count — and fail with the first
    /// step whose output differs.
    #[arg(long)]
    pub check: bool,
    /// Boot each disk image in QEMU and judge it by its `test:` (`#test`, the last step;
    /// an image that passed the same test before is not booted again).
    #[arg(long)]
    pub test: bool,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Where to publish: a directory, an `http(s)://` URL of a server that takes `PUT`
    /// (a bearer token from `W4B_PUBLISH_TOKEN`), or `s3://BUCKET/PREFIX` (reached as the
    /// remote cache is: `cache.s3`, `AWS_*`).
    #[arg(long, env = "W4B_IMAGE_SERVER_BASEPATH", value_name = "DIR|URL")]
    pub to: String,
    /// The URL the destination is served at, for download links and the Imager index
    /// [default: the `--to` URL itself; `file://` for a directory].
    #[arg(long, env = "W4B_IMAGE_DOWNLOAD_URL_BASE", value_name = "URL")]
    pub base_url: Option<String>,
    /// The image's path below the destination: `{hive_id}` (an image without a hive: its
    /// target name), `{version}` (the hive's; `0.0.0` without one), `{date}` (the build's
    /// epoch, YYYY-MM-DD), `{target}`, `{board}`. The `.img…` extension is the built one.
    #[arg(long = "name", value_name = "TEMPLATE", default_value = crate::publish::DEFAULT_TEMPLATE)]
    pub name_template: String,
    /// Overwrite an image published under the same name with other contents (refused
    /// otherwise).
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, Args)]
pub struct WhyArgs {
    #[arg(value_name = "LABEL")]
    pub label: String,
    #[arg(long, value_enum, default_value_t = WhyFormat::Text)]
    pub format: WhyFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WhyFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[arg(required = true, value_name = "LABEL")]
    pub labels: Vec<String>,
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Json,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// A label pattern [default: `//...`].
    pub pattern: Option<String>,
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Entries, sizes and non-determinism evidence of the local (and remote) cache.
    Stats,
    /// Delete records not used within `--max-age` and what only they referenced.
    Gc {
        /// Keep at most this much: `20G`, `500M` [default for the local cache: its size
        /// limit, `--cache-max-size`]. Least recently used records go first; what running
        /// builds use stays.
        #[arg(long, value_name = "SIZE", value_parser = crate::commands::cache::parse_size_arg)]
        max_size: Option<u64>,
        /// Drop records unused for longer than this: `30d`, `12h`.
        #[arg(long, value_name = "AGE", value_parser = crate::commands::cache::parse_age_arg)]
        max_age: Option<std::time::Duration>,
        /// Collect the remote directory instead of the local one (age-based, safe with
        /// concurrent builds).
        #[arg(long)]
        remote: bool,
    },
    /// Re-hash every blob and check every record; corrupt entries are quarantined.
    Verify {
        #[arg(long)]
        remote: bool,
    },
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A disk image or a bare ext4/FAT image: `.img`, `.img.xz`, `.img.zst`, `.img.gz`.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// List every entry: mode, owner, size, path, symlink target, xattr names, SHA-256.
    #[arg(long)]
    pub tree: bool,
    /// List the Debian packages of the image's root filesystem instead (its
    /// `/var/lib/dpkg/status`): name, version, architecture, status.
    #[arg(long, conflicts_with = "tree")]
    pub packages: bool,
    /// `text` for people, `json` (`w4b.inspect/1`, always with every entry) for tools.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Refuse a compressed image that decompresses to more than SIZE (`64G`, `500M`):
    /// the bound on a decompression bomb.
    #[arg(long, value_name = "SIZE", env = "W4B_MAX_IMAGE_SIZE", default_value = "64G",
          value_parser = crate::commands::cache::parse_size_arg)]
    pub max_image_size: u64,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The old image.
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// The new image.
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// `text` (one line per difference) or `json` (`w4b.diff/1`).
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Leave a field out of the comparison (repeatable).
    #[arg(long, value_enum, value_name = "FIELD")]
    pub ignore: Vec<DiffField>,
    /// Refuse a compressed image that decompresses to more than SIZE (`64G`, `500M`):
    /// the bound on a decompression bomb.
    #[arg(long, value_name = "SIZE", env = "W4B_MAX_IMAGE_SIZE", default_value = "64G",
          value_parser = crate::commands::cache::parse_size_arg)]
    pub max_image_size: u64,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A `.manifest.json`: a bare in-toto statement or a DSSE envelope around one.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// A built file to check against the subject of the same file name (repeatable).
    #[arg(long = "artifact", value_name = "PATH")]
    pub artifacts: Vec<PathBuf>,
    /// A public key (`w4b keygen`'s `.pub`): the manifest must carry a signature by it.
    #[arg(long, value_name = "PUB")]
    pub key: Option<PathBuf>,
    /// Rebuild the manifest's target from nothing in this workspace (an empty cache, no
    /// remote, other TZ, locale, umask, `-j`) and compare every step's outputs with the
    /// manifest's; a difference sets bit 8.
    #[arg(long)]
    pub rebuild: bool,
    /// `text` for people, `json` (`w4b.verify/1`) for tools.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

#[derive(Debug, Args)]
pub struct SbomArgs {
    /// A `.manifest.json` (bare or signed), or an image `w4b build` wrote: its
    /// `<name>.manifest.json` beside it is read.
    #[arg(value_name = "IMAGE_OR_MANIFEST")]
    pub input: PathBuf,
    /// `spdx` (SPDX 2.3 JSON) or `cyclonedx` (CycloneDX 1.5 JSON).
    #[arg(long, value_enum, default_value_t = SbomFormatArg::Spdx)]
    pub format: SbomFormatArg,
    /// Write to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SbomFormatArg {
    Spdx,
    #[value(name = "cyclonedx")]
    CycloneDx,
}

#[derive(Debug, Args)]
pub struct InstallDebsArgs {
    /// The base tree, by digest, in the cache.
    #[arg(long, value_name = "DIGEST", conflicts_with = "base_tree")]
    pub base: Option<String>,
    /// The base tree, captured from a host directory into the cache first.
    #[arg(long, value_name = "DIR")]
    pub base_tree: Option<PathBuf>,
    /// `arm64` or `armhf`.
    #[arg(long, default_value = "arm64")]
    pub arch: String,
    /// `SOURCE_DATE_EPOCH` of the install.
    #[arg(long)]
    pub epoch: i64,
    /// Only capture `--base-tree` and print its digest.
    #[arg(long)]
    pub capture_only: bool,
    /// The packages.
    pub debs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Writes `PREFIX.key` (secret, mode 0600) and `PREFIX.pub`; refuses to overwrite.
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
}

/// `--board`: a known model, or a label (anything with a `:`), resolved in the workspace.
fn board_name(s: &str) -> Result<String, String> {
    if s.contains(':') || crate::validate::BOARDS.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "not a known board (possible values: {}) nor a `//boards:<name>` label",
            crate::validate::BOARDS.join(", ")
        ))
    }
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A disk image: `.img`, `.img.xz`, `.img.zst`, `.img.gz`.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// Also require this board's kernel and device trees (without it: any `kernel*.img`
    /// and any `*.dtb`): a known model (pi3, pi4, pi5, zero2w, cm4) or, in a workspace, a
    /// `kind: board` label such as `//boards:pi4`.
    #[arg(long, value_name = "BOARD", value_parser = board_name)]
    pub board: Option<String>,
    /// The image's architecture, which picks the board's kernel.
    #[arg(long, value_name = "ARCH", default_value = "arm64", value_parser = ["arm64", "armhf"])]
    pub arch: String,
    /// Also run the reference tools: `fsck.fat -n` and `e2fsck -fn` (skipped when missing).
    #[arg(long)]
    pub oracles: bool,
    /// As root: mount each filesystem read-only through a loop device and compare the
    /// kernel's view with w4b's reader (names, types, sizes, modes, owners, contents).
    #[arg(long)]
    pub mount: bool,
    /// `text` for people, `json` (`w4b.validate/1`) for tools.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Refuse a compressed image that decompresses to more than SIZE (`64G`, `500M`):
    /// the bound on a decompression bomb.
    #[arg(long, value_name = "SIZE", env = "W4B_MAX_IMAGE_SIZE", default_value = "64G",
          value_parser = crate::commands::cache::parse_size_arg)]
    pub max_image_size: u64,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A disk image (`.img`, `.img.xz`, `.img.zst`, `.img.gz`), or the label of an image or
    /// hive (`//hives:north`, `:demo`) to build and test by its `test:`.
    #[arg(value_name = "IMAGE|LABEL")]
    pub target: String,
    /// With a label: where the build's outputs go [default: `out/` in the workspace].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// With a label: parallel steps [default: number of cores].
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// With a label: boot again even when this image passed this test before.
    #[arg(long)]
    pub retest: bool,
    /// Boot this kernel instead of the image's own (a generic arm64 `vmlinuz`; needs
    /// `--initrd`): for images whose kernel drives only Raspberry Pi hardware.
    #[arg(long, value_name = "PATH", requires = "initrd")]
    pub kernel: Option<PathBuf>,
    /// The initramfs for `--kernel`.
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Memory of the virtual machine, in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 1024)]
    pub memory: u32,
    /// Virtual CPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub cpus: u32,
    /// Seconds the whole test may take [default: the spec's, else 600].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Seconds the system may take to finish booting [default: the spec's, else 300].
    #[arg(long, value_name = "SECS")]
    pub boot_timeout: Option<u64>,
    /// A unit that may fail without failing the test (repeatable): one that needs
    /// Raspberry Pi hardware.
    #[arg(long = "allow-failed", value_name = "UNIT")]
    pub allow_failed: Vec<String>,
    /// A unit that must be active after the boot (repeatable).
    #[arg(long = "unit-active", value_name = "UNIT")]
    pub unit_active: Vec<String>,
    /// A test definition in JSON (`allow_failed_units`, `units_active`, `commands`:
    /// `[{name, run, exit, stdout_contains, stdout_regex, timeout}]`, `timeout`,
    /// `boot_timeout`, `hive_checklist`); the options above add to it.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Where the boot log (the whole serial console) goes [default: beside the image, as
    /// `NAME.boot.log`; with a label, with the report `NAME.test.json` in the output
    /// directory].
    #[arg(long, value_name = "DIR")]
    pub log: Option<PathBuf>,
    /// Refuse a compressed image that decompresses to more than SIZE (`64G`, `500M`).
    #[arg(long, value_name = "SIZE", env = "W4B_MAX_IMAGE_SIZE", default_value = "64G",
          value_parser = crate::commands::cache::parse_size_arg)]
    pub max_image_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// Entry fields `w4b diff --ignore` can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum DiffField {
    /// Modification times.
    Mtime,
    /// Permission bits.
    Mode,
    /// uid and gid.
    Owner,
    /// Extended attributes.
    Xattrs,
}

/// Parses arguments, runs the command, maps errors to exit codes (0 ok, 1 failure,
/// 2 usage; clap exits with 2 on its own).
pub fn main() -> i32 {
    // An unprivileged install's session (src/install/userns.rs): it must create a user
    // namespace while it still has a single thread, so it is told apart before clap.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some((first, rest)) = args.split_first() {
        if first == crate::install::userns::SESSION_ARG {
            return crate::install::userns::main(rest);
        }
    }
    let cli = Cli::parse();
    commands::run(cli)
}

/// The build script's commit lookup, tested here (a build script has no tests of its own).
#[cfg(test)]
#[path = "../../build/commit.rs"]
mod build_commit;
