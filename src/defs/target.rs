//! Typed targets: what a `kind: layer` or `kind: image` definition means once validated.
//!
//! Deserialisation happens in two phases. `Raw*` structs mirror the YAML shape (so serde
//! and [`super::de`] report unknown keys and type errors at their spans); conversion then
//! checks meaning — exactly one operation per file entry, octal modes, normalised absolute
//! paths, digests, labels — and fills in defaults, so the typed values below are complete
//! and canonical. Only these typed values may feed step keys: two definitions that differ
//! in comments, key order, quoting or where a value was inherited from load equal.
//!
//! `Spanned` fields keep where a value was written for later diagnostics; their equality
//! and serialisation ignore the span.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Serialize};

use super::de::{from_value, struct_fields, Spanned};
use super::error::{DefsError, DefsErrorKind};
use super::label::Label;
use super::span::Span;
use super::suggest;
use super::yaml::Value;

/// The kinds of target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Layer,
    Image,
    Base,
    Board,
    /// A package set (`kind: packages`).
    Packages,
    /// A hive file in the hive configuration manager's format: no `kind`, but `hive_id`
    /// and `metadata` (the application's hive reader types the rest).
    Hive,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::Layer,
        Kind::Image,
        Kind::Base,
        Kind::Board,
        Kind::Packages,
        Kind::Hive,
    ];
    /// The kinds a `kind:` key may name (a hive is recognised by its keys instead).
    pub const NAMES: &'static [&'static str] = &["layer", "image", "base", "board", "packages"];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Layer => "layer",
            Kind::Image => "image",
            Kind::Base => "base",
            Kind::Board => "board",
            Kind::Packages => "packages",
            Kind::Hive => "hive",
        }
    }

    /// The keys a definition of this kind may set after `kind` and `extends` are taken out.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Layer => struct_fields::<RawLayer>(),
            Kind::Image => struct_fields::<RawImage>(),
            Kind::Base => struct_fields::<RawBase>(),
            Kind::Board => struct_fields::<RawBoard>(),
            Kind::Packages => struct_fields::<super::packages::RawPackageSet>(),
            Kind::Hive => struct_fields::<RawHiveKeys>(),
        }
    }

    /// Every top-level key of any kind, for checking `--set` paths.
    pub fn all_keys() -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = Kind::ALL.iter().flat_map(|k| k.keys()).copied().collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A loaded, validated target.
// An image's settings make it the largest variant by far; targets are loaded once per
// label and cached, so boxing would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    Layer(Layer),
    Image(Image),
    Base(BaseImage),
    Board(Board),
    Packages(super::packages::PackageSet),
    Hive(HiveTarget),
}

impl Target {
    pub fn kind(&self) -> Kind {
        match self {
            Target::Layer(_) => Kind::Layer,
            Target::Image(_) => Kind::Image,
            Target::Base(_) => Kind::Base,
            Target::Board(_) => Kind::Board,
            Target::Packages(_) => Kind::Packages,
            Target::Hive(_) => Kind::Hive,
        }
    }
}

/// A reusable set of file operations (`kind: layer`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Layer {
    pub files: Vec<Spanned<FileEntry>>,
    pub description: Option<String>,
}

/// A root filesystem built from a base and layers (`kind: image`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Image {
    pub base: Base,
    /// The board the image is for; required when `base` is a disk image.
    pub board: Option<Spanned<Label>>,
    /// How the disk's partitions are sized.
    pub partitions: Partitions,
    /// Applied in order, each over the result of the previous.
    pub layers: Vec<Spanned<Label>>,
    /// Package sets (`kind: packages`) installed onto the base before the layers, as
    /// `w4b.lock` pins them.
    pub packages: Vec<Spanned<Label>>,
    /// `SOURCE_DATE_EPOCH`; `None` when neither the image nor `w4b.yaml` gives one.
    pub epoch: Option<u64>,
    pub output: Output,
    /// Free-form template context, available to templates as `config`.
    pub config: BTreeMap<String, ConfigValue>,
    pub description: Option<String>,
    /// The hive this image is configured for (`hive_file:` or a `hive:` section).
    pub hive: Option<ImageHive>,
    /// The old image generator's `system`, `security`, `services` and `software` keys,
    /// with defaults.
    pub settings: super::image_settings::ImageSettings,
    /// `security.vpn.server`: the hub's host, replacing the host of the hive's WireGuard
    /// endpoint.
    pub vpn_server: super::image_settings::VpnServer,
    /// `test:`: what `w4b build --test` and `w4b test LABEL` check in the booted image.
    pub test: Option<Spanned<super::test_spec::TestDef>>,
}

/// Where an image target's hive is written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageHive {
    /// `hive_file: path`, relative to the image's YAML; a workspace path.
    File(Spanned<WsPath>),
    /// A `hive:` section in the image's own document.
    Section,
}

/// A hive target (a hive file under `defs/`). Only the image it builds on is typed here;
/// the application's hive reader types the hive itself from [`super::de::from_value_collecting`],
/// because it reports every problem at once and resolves secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HiveTarget {
    /// `image:` in the hive file; `None` means `hives.image` of `w4b.yaml`.
    pub image: Option<Spanned<Label>>,
}

/// Where an image's tree starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// An empty tree.
    Scratch,
    /// A vendor disk image (`kind: base`), unpacked.
    Image(Spanned<Label>),
}

/// Partition sizes. Both partitions keep the base's sizes unless told otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Partitions {
    /// Free space the root filesystem must keep after the layers are applied; the root
    /// partition grows (never shrinks) to provide it. `None`: the base's size, and a tree
    /// that does not fit is an error.
    pub root_headroom: Option<u64>,
}

/// Where an image starts from (`kind: base`): a vendor disk image, or a root built from
/// locked Debian packages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BaseImage {
    /// Downloaded (`url`, `sha256`) or bootstrapped (`bootstrap:`).
    pub source: BaseSource,
    pub arch: Arch,
    /// The OS release (`bookworm`), for messages and the boot mount point.
    pub release: Option<String>,
    /// The release date (`2024-11-19`): given, or read from the URL's file name.
    pub date: Option<Date>,
    /// Where the boot partition is mounted in the root tree: `/boot/firmware` from
    /// bookworm on, `/boot` before.
    pub boot_mount: TreePath,
    pub description: Option<String>,
}

impl BaseImage {
    /// The epoch a base implies: midnight UTC of its release date.
    pub fn epoch(&self) -> Option<i64> {
        self.date.map(Date::epoch)
    }

    /// The disk image to download, when the base is one.
    pub fn download(&self) -> Option<&Download> {
        match &self.source {
            BaseSource::Download(d) => Some(d),
            BaseSource::Bootstrap(_) => None,
        }
    }

    /// The package sets to bootstrap from, when the base is built.
    pub fn bootstrap(&self) -> Option<&Bootstrap> {
        match &self.source {
            BaseSource::Download(_) => None,
            BaseSource::Bootstrap(b) => Some(b),
        }
    }
}

/// How a base's root comes to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseSource {
    /// A vendor disk image, fetched and unpacked.
    Download(Download),
    /// Debian packages installed into an empty root, as `w4b.lock` pins them.
    Bootstrap(Bootstrap),
}

/// A vendor disk image (`url`, `sha256`, `size`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Download {
    /// Where it is published (http, https or file).
    pub url: String,
    /// The publisher's sha256 of the file at `url`, lowercase hex.
    pub sha256: String,
    /// The file's size in bytes, if declared: the download stops beyond it.
    pub size: Option<u64>,
}

/// A base built from packages (`bootstrap:`), as `mmdebstrap` builds a root: every
/// `Essential: yes` package of the repositories (unless `essential: false`), every
/// package of `priority` or higher if given, the sets' packages, and the closure of
/// their dependencies, installed into an empty merged-`/usr` root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bootstrap {
    /// Package sets (`kind: packages`): the repositories and the packages wanted.
    pub packages: Vec<Spanned<Label>>,
    /// Include every `Essential: yes` package (mmdebstrap's `essential` variant).
    pub essential: bool,
    /// Include every package of this priority or higher (mmdebstrap's `minbase`,
    /// `important`, `standard` variants).
    pub priority: Option<BootstrapPriority>,
    /// Bytes of the FAT boot partition of a disk image on the base (`boot_size`), when
    /// given; a whole number of MiB, at least [`MIN_BOOTSTRAP_BOOT_SIZE`].
    pub boot_size: Option<u64>,
    /// Bytes of its ext4 root partition before an image's headroom (`root_size`), when
    /// given; a whole number of MiB, at least [`MIN_BOOTSTRAP_ROOT_SIZE`].
    pub root_size: Option<u64>,
}

/// The smallest `bootstrap.boot_size`: FAT32 needs 65,525 clusters, and the Pi's firmware
/// reads FAT32 with 4 KiB clusters at least as well as any (260 MiB, as Windows and
/// Debian's images use).
pub const MIN_BOOTSTRAP_BOOT_SIZE: u64 = 260 << 20;
/// The smallest `bootstrap.root_size`.
pub const MIN_BOOTSTRAP_ROOT_SIZE: u64 = 64 << 20;

/// `bootstrap.priority`: Debian's priorities that name a variant of a system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootstrapPriority {
    Required,
    Important,
    Standard,
}

impl BootstrapPriority {
    pub fn name(self) -> &'static str {
        match self {
            BootstrapPriority::Required => "required",
            BootstrapPriority::Important => "important",
            BootstrapPriority::Standard => "standard",
        }
    }
}

/// A calendar date (proleptic Gregorian, UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// `YYYY-MM-DD`, a real day of a year from 1970 to 9999.
    pub fn parse(text: &str) -> Option<Date> {
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let s = &text[r];
            s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        (year >= 1970 && (1..=days).contains(&day)).then_some(Date {
            year: year as i32,
            month,
            day,
        })
    }

    /// The first `YYYY-MM-DD` in a URL's last path segment (`2024-11-19-raspios-….img.xz`).
    pub fn in_url(url: &str) -> Option<Date> {
        let name = url.rsplit('/').next().unwrap_or(url);
        (0..name.len().saturating_sub(9))
            .filter(|&i| name.is_char_boundary(i) && name.is_char_boundary(i + 10))
            .find_map(|i| Date::parse(&name[i..i + 10]))
    }

    /// Seconds since 1970-01-01T00:00:00Z at the start of the day.
    pub fn epoch(self) -> i64 {
        // Days from civil, after Howard Hinnant's algorithm (public domain description).
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        (era * 146_097 + doe - 719_468) * 86_400
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A CPU architecture, as Debian names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// 64-bit ARM (ARMv8-A): Pi 3, 4, 5, Zero 2 W, CM4.
    Arm64,
    /// 32-bit hard-float ARM as Raspberry Pi OS builds it (ARMv6 and up): every Pi.
    Armhf,
}

impl Arch {
    pub const NAMES: &'static [&'static str] = &["arm64", "armhf"];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
        }
    }

    /// Whether a board whose widest architecture is `self` runs `userland` binaries:
    /// every 64-bit Pi also runs 32-bit Raspberry Pi OS; a 32-bit-only Pi runs only armhf.
    pub fn runs(self, userland: Arch) -> bool {
        self == userland || (self == Arch::Arm64 && userland == Arch::Armhf)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Raspberry Pi model (`kind: board`): what it runs and how it must be configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Board {
    /// The widest architecture it runs (see [`Arch::runs`]).
    pub arch: Arch,
    /// The partition table its firmware boots from in this project's images.
    pub partition_table: TableType,
    /// Lines added to `config.txt` under `[all]`, after those the interfaces imply.
    pub config_txt: Vec<String>,
    pub interfaces: Interfaces,
    /// The kernel file the firmware loads, per userland architecture; an image's base
    /// must provide it on the boot partition.
    pub kernel: BTreeMap<Arch, String>,
    /// Device tree blobs the firmware needs for this model (on the boot partition).
    pub device_trees: Vec<String>,
    pub description: Option<String>,
}

impl Board {
    /// The kernels a board without `kernel:` boots: Raspberry Pi OS's 64-bit kernel
    /// (`kernel8.img`) for arm64 userlands and its ARMv7 LPAE kernel (`kernel7l.img`) for
    /// armhf, for every architecture the board runs.
    pub fn default_kernels(arch: Arch) -> BTreeMap<Arch, String> {
        [(Arch::Arm64, "kernel8.img"), (Arch::Armhf, "kernel7l.img")]
            .into_iter()
            .filter(|(userland, _)| arch.runs(*userland))
            .map(|(userland, file)| (userland, file.to_owned()))
            .collect()
    }

    /// The `config.txt` lines this board adds: interfaces first, then `config_txt`.
    pub fn config_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.interfaces.i2c {
            lines.push("dtparam=i2c_arm=on".to_owned());
        }
        if self.interfaces.spi {
            lines.push("dtparam=spi=on".to_owned());
        }
        if self.interfaces.uart {
            lines.push("enable_uart=1".to_owned());
        }
        if let Some(pin) = self.interfaces.onewire {
            lines.push(format!("dtoverlay=w1-gpio,gpiopin={pin}"));
        }
        lines.extend(self.config_txt.iter().cloned());
        lines
    }
}

/// Sensor buses a board enables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Interfaces {
    /// `dtparam=i2c_arm=on` and the `i2c-dev` module (for `/dev/i2c-*`).
    pub i2c: bool,
    /// `dtparam=spi=on`.
    pub spi: bool,
    /// `enable_uart=1`.
    pub uart: bool,
    /// 1-Wire on this GPIO pin: `dtoverlay=w1-gpio,gpiopin=N`.
    pub onewire: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableType {
    Mbr,
    Gpt,
}

/// How the image is written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Output {
    pub format: Format,
    pub compression: Compression,
    /// Compression level; 0 when `compression` is `none`.
    pub level: i32,
}

impl Output {
    /// zstd level 3 unless the definition says otherwise. Measured on a 200 MB slice of a
    /// Debian `/usr/lib`, one thread: level 3 took 1.6 s (66 MB), level 9 4.0 s (60 MB),
    /// level 19 114 s (52 MB). Level 19 saves 21% but turns a 2 GB rootfs into a
    /// twenty-minute step, so it is opt-in (`level: 19`) for release images.
    pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

    /// zstd level 19 for disk images: they are built once and flashed many times, and
    /// a multithreaded level 19 over a 2.5 GiB image with ~1 GiB of data is minutes, not
    /// the tens of minutes a single-threaded rootfs tarball would take.
    pub const DEFAULT_IMAGE_ZSTD_LEVEL: i32 = 19;
    /// xz's own default preset.
    pub const DEFAULT_XZ_LEVEL: i32 = 6;
    /// gzip's own default.
    pub const DEFAULT_GZ_LEVEL: i32 = 6;

    /// The artifact's file name for a target called `name`: `north.tar.zst`,
    /// `north.img.xz`.
    pub fn file_name(&self, name: &str) -> String {
        let ext = match self.format {
            Format::Tar => "tar",
            Format::Image => "img",
        };
        match self.compression.extension() {
            None => format!("{name}.{ext}"),
            Some(c) => format!("{name}.{ext}.{c}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Format {
    /// A tar archive of the root filesystem.
    Tar,
    /// A whole disk image (partition table, boot and root filesystems).
    Image,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zstd,
    Xz,
    Gz,
}

impl Compression {
    pub const NAMES: &'static [&'static str] = &["none", "zstd", "xz", "gz"];

    /// The file-name extension it adds, if any.
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Zstd => Some("zst"),
            Compression::Xz => Some("xz"),
            Compression::Gz => Some("gz"),
        }
    }
}

/// One operation on one path of the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    pub path: TreePath,
    pub op: FileOp,
    /// Owner of what the operation creates (`0:0` by default; unused by `remove`).
    pub owner: Owner,
}

/// What a file entry does. Modes are resolved: files default to `0644`, directories `0755`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOp {
    /// A regular file with this content.
    Content { content: String, mode: Mode },
    /// A file or directory tree copied from the workspace. `source` is already resolved
    /// against the directory of the YAML file that wrote it. `mode`, when given, applies to
    /// every regular file copied; otherwise files keep 0644 (0755 if executable in the
    /// workspace) and directories 0755.
    Source { source: WsPath, mode: Option<Mode> },
    /// A file rendered from a minijinja template in the workspace (resolved like `source`).
    Template { template: WsPath, mode: Mode },
    /// A symbolic link to `target` (any text, relative or absolute).
    Symlink { target: String },
    /// A directory.
    Dir { mode: Mode },
    /// Removes the path (and everything below it) if present.
    Remove,
    /// Appends text to an existing file, or creates it (mode 0644) if absent.
    Append { content: String },
    /// A file downloaded from `url` and verified against `sha256` (and `size`, if given)
    /// before use.
    Fetch {
        url: String,
        sha256: String,
        size: Option<u64>,
        mode: Mode,
    },
}

impl FileOp {
    pub const NAMES: &'static [&'static str] = &[
        "content", "source", "template", "symlink", "dir", "remove", "append", "fetch",
    ];
}

/// A normalised absolute path in the image: starts with `/`, no `.` or `..` components, no
/// empty components, no trailing `/` (except the root itself).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TreePath(String);

impl TreePath {
    pub fn parse(text: &str) -> Result<TreePath, &'static str> {
        if !text.starts_with('/') {
            return Err("must be absolute");
        }
        if text.contains('\0') {
            return Err("contains a NUL byte");
        }
        if text == "/" {
            return Ok(TreePath(text.to_owned()));
        }
        if text.ends_with('/') {
            return Err("ends with `/`");
        }
        for component in text[1..].split('/') {
            match component {
                "" => return Err("contains `//`"),
                "." => return Err("contains a `.` component"),
                ".." => return Err("contains a `..` component"),
                _ => {}
            }
        }
        Ok(TreePath(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A normalised path relative to the workspace root, with `/` separators.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct WsPath(String);

impl WsPath {
    /// `relative` joined onto the workspace-relative directory `dir`, normalised; `None` if
    /// it would leave the workspace.
    pub fn join(dir: &str, relative: &str) -> Option<WsPath> {
        let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        for part in relative.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop()?;
                }
                part => parts.push(part),
            }
        }
        (!parts.is_empty()).then(|| WsPath(parts.join("/")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Permission bits, at most `07777`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mode(pub u32);

impl Mode {
    pub const FILE: Mode = Mode(0o644);
    pub const DIR: Mode = Mode(0o755);

    /// Parses an octal string: `"0644"`, `"644"`, `"04755"`.
    pub fn parse(text: &str) -> Result<Mode, &'static str> {
        if text.is_empty() {
            return Err("empty");
        }
        if text.len() > 5 || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err("not an octal number");
        }
        match u32::from_str_radix(text, 8) {
            Ok(bits) if bits <= 0o7777 => Ok(Mode(bits)),
            _ => Err("larger than 07777"),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Numeric owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// `"uid:gid"`, or `"uid"` meaning the group of the same number.
    pub fn parse(text: &str) -> Option<Owner> {
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
        };
        match text.split_once(':') {
            Some((uid, gid)) => Some(Owner {
                uid: number(uid)?,
                gid: number(gid)?,
            }),
            None => {
                let id = number(text)?;
                Some(Owner { uid: id, gid: id })
            }
        }
    }
}

/// A value of the free-form `config` map, resolved by the YAML core schema.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ConfigValue {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    String(String),
    List(Vec<ConfigValue>),
    Map(BTreeMap<String, ConfigValue>),
}

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ConfigValue, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ConfigValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Null)
            }
            fn visit_none<E>(self) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ConfigValue, E> {
                Ok(i64::try_from(v).map_or(ConfigValue::UInt(v), ConfigValue::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<ConfigValue, E> {
                Ok(ConfigValue::String(v.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ConfigValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(ConfigValue::List(items))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<ConfigValue, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, ConfigValue>()? {
                    entries.insert(key, value);
                }
                Ok(ConfigValue::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------
// The YAML shapes.

#[derive(Deserialize)]
struct RawLayer {
    #[serde(default)]
    files: Vec<Spanned<RawFile>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawFile {
    path: Spanned<String>,
    content: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
    template: Option<Spanned<String>>,
    symlink: Option<Spanned<String>>,
    dir: Option<Spanned<bool>>,
    remove: Option<Spanned<bool>>,
    append: Option<Spanned<String>>,
    fetch: Option<Spanned<RawFetch>>,
    mode: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawFetch {
    url: Spanned<String>,
    sha256: Spanned<String>,
    #[serde(default)]
    size: Option<Size>,
}

#[derive(Deserialize)]
struct RawImage {
    base: Spanned<String>,
    #[serde(default)]
    board: Option<Spanned<String>>,
    #[serde(default)]
    partitions: Option<RawPartitions>,
    #[serde(default)]
    layers: Vec<Spanned<String>>,
    #[serde(default)]
    packages: Vec<Spanned<String>>,
    #[serde(default)]
    epoch: Option<u64>,
    #[serde(default)]
    output: Option<RawOutput>,
    #[serde(default)]
    config: BTreeMap<String, ConfigValue>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    hive_file: Option<Spanned<String>>,
    /// Typed by the hive reader, which reports all of its problems at once.
    #[serde(default)]
    hive: Option<Spanned<de::IgnoredAny>>,
    #[serde(default)]
    system: Option<super::image_settings::RawSystem>,
    #[serde(default)]
    security: Option<super::image_settings::RawSecurity>,
    #[serde(default)]
    services: Option<super::image_settings::RawServices>,
    #[serde(default)]
    software: Option<super::image_settings::RawSoftware>,
    #[serde(default)]
    test: Option<Spanned<super::test_spec::TestDef>>,
}

/// The top-level keys of a hive file (the manager's, plus `image`). Only `image` is read
/// here; the hive loader reads the rest.
#[derive(Deserialize)]
#[allow(dead_code)] // The fields exist for their names (`Kind::keys`) and type checks.
struct RawHiveKeys {
    #[serde(default)]
    image: Option<Spanned<String>>,
    hive_id: de::IgnoredAny,
    #[serde(default)]
    version: Option<de::IgnoredAny>,
    metadata: de::IgnoredAny,
    #[serde(default)]
    network: Option<de::IgnoredAny>,
    #[serde(default)]
    administrators: Option<de::IgnoredAny>,
    #[serde(default)]
    collector: Option<de::IgnoredAny>,
    #[serde(default)]
    sensors: Option<de::IgnoredAny>,
    #[serde(default)]
    maintenance: Option<de::IgnoredAny>,
    #[serde(default)]
    security: Option<de::IgnoredAny>,
    /// w4b's own: the hive's boot test, merged over its image's.
    #[serde(default)]
    test: Option<de::IgnoredAny>,
}

#[derive(Deserialize)]
struct RawOutput {
    format: Option<Spanned<Format>>,
    compression: Option<Spanned<Compression>>,
    level: Option<Spanned<i32>>,
}

#[derive(Deserialize)]
struct RawPartitions {
    root: Option<RawPartition>,
}

#[derive(Deserialize)]
struct RawPartition {
    headroom: Option<Spanned<Size>>,
}

#[derive(Deserialize)]
struct RawBase {
    #[serde(default)]
    url: Option<Spanned<String>>,
    #[serde(default)]
    sha256: Option<Spanned<String>>,
    #[serde(default)]
    size: Option<Spanned<Size>>,
    #[serde(default)]
    bootstrap: Option<Spanned<RawBootstrap>>,
    arch: Arch,
    #[serde(default)]
    release: Option<String>,
    #[serde(default)]
    date: Option<Spanned<String>>,
    #[serde(default)]
    boot_mount: Option<Spanned<String>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawBootstrap {
    packages: Vec<Spanned<String>>,
    #[serde(default)]
    essential: Option<bool>,
    #[serde(default)]
    priority: Option<BootstrapPriority>,
    #[serde(default)]
    boot_size: Option<Spanned<Size>>,
    #[serde(default)]
    root_size: Option<Spanned<Size>>,
}

#[derive(Deserialize)]
struct RawBoard {
    arch: Arch,
    #[serde(default)]
    partition_table: Option<TableType>,
    #[serde(default)]
    config_txt: Vec<Spanned<String>>,
    #[serde(default)]
    interfaces: Option<RawInterfaces>,
    #[serde(default)]
    kernel: Option<BTreeMap<Arch, String>>,
    #[serde(default)]
    device_trees: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawInterfaces {
    #[serde(default)]
    i2c: bool,
    #[serde(default)]
    spi: bool,
    #[serde(default)]
    uart: bool,
    #[serde(default)]
    onewire: Option<RawOneWire>,
}

#[derive(Deserialize)]
struct RawOneWire {
    gpio: Spanned<u8>,
}

/// A byte count written as a number or with a unit: `1073741824`, `512MiB`, `1G`, `64 KiB`.
/// Units are binary (`K`, `KiB` = 1024; `M`, `MiB` = 1024²; `G`, `GiB` = 1024³).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(text: &str) -> Option<Size> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().ok()?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "K" | "KiB" => 10,
            "M" | "MiB" => 20,
            "G" | "GiB" => 30,
            "T" | "TiB" => 40,
            _ => return None,
        };
        n.checked_mul(1u64 << shift).map(Size)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as `512MiB`, `2G` or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "`{v}` is not a size; write bytes or a number with K, M, G (KiB, MiB, GiB)"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// What conversion needs to know about the target being loaded.
pub(crate) struct Context<'a> {
    /// Workspace-relative defs folder, such as `defs`.
    pub defs_dir: &'a str,
    /// The target's own package, for values that came from overrides.
    pub package: &'a str,
    /// Workspace-relative directory of the target's own file.
    pub dir: &'a str,
}

impl Context<'_> {
    /// The package and directory of the file `span` points into (or the target's own).
    fn origin_of(&self, span: &Span) -> (String, String) {
        let Some(path) = span.file.path() else {
            return (self.package.to_owned(), self.dir.to_owned());
        };
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned();
        let package = if dir == self.defs_dir {
            String::new()
        } else {
            dir.strip_prefix(self.defs_dir)
                .and_then(|rest| rest.strip_prefix('/'))
                .unwrap_or(self.package)
                .to_owned()
        };
        (package, dir)
    }
}

/// Converts the merged document (without `kind` and `extends`) into a typed target.
pub(crate) fn convert(kind: Kind, doc: &Value, ctx: &Context<'_>) -> Result<Target, DefsError> {
    match kind {
        Kind::Layer => {
            let raw: RawLayer = from_value(doc)?;
            let files = raw
                .files
                .into_iter()
                .map(|entry| convert_file(entry, ctx))
                .collect::<Result<_, _>>()?;
            Ok(Target::Layer(Layer {
                files,
                description: raw.description,
            }))
        }
        Kind::Image => {
            let raw: RawImage = from_value(doc)?;
            let base = match raw.base.value.as_str() {
                "scratch" => Base::Scratch,
                other if other.contains(':') => {
                    let (package, _) = ctx.origin_of(&raw.base.span);
                    match Label::parse(other, Some(&package)) {
                        Ok(label) => Base::Image(Spanned::new(label, raw.base.span.clone())),
                        Err(e) => return Err(e.into_defs(Some(&raw.base.span))),
                    }
                }
                other => {
                    return Err(raw.base.span.invalid_value(
                        format!("unknown base `{other}`"),
                        "not a base",
                        Some(format!(
                            "write `scratch` for an empty tree, or the label of a `kind: base` target such as `//bases:{other}`"
                        )),
                    ))
                }
            };
            let layers = raw
                .layers
                .into_iter()
                .map(|text| {
                    let (package, _) = ctx.origin_of(&text.span);
                    match Label::parse(&text.value, Some(&package)) {
                        Ok(label) => Ok(Spanned::new(label, text.span)),
                        Err(e) => Err(e.into_defs(Some(&text.span))),
                    }
                })
                .collect::<Result<_, _>>()?;
            let label_of = |text: &Spanned<String>| -> Result<Spanned<Label>, DefsError> {
                let (package, _) = ctx.origin_of(&text.span);
                match Label::parse(&text.value, Some(&package)) {
                    Ok(label) => Ok(Spanned::new(label, text.span.clone())),
                    Err(e) => Err(e.into_defs(Some(&text.span))),
                }
            };
            let board = raw.board.as_ref().map(label_of).transpose()?;
            let mut packages: Vec<Spanned<Label>> = Vec::new();
            for text in &raw.packages {
                let label = label_of(text)?;
                if let Some(first) = packages.iter().find(|p| p.value == label.value) {
                    return Err(text.span.invalid_value(
                        format!("package set `{}` is listed twice", label.value),
                        "second entry",
                        Some(format!(
                            "list it once (the first is at `{}`)",
                            first.span.location()
                        )),
                    ));
                }
                packages.push(label);
            }
            let format_default = match base {
                Base::Scratch => Format::Tar,
                Base::Image(_) => Format::Image,
            };
            let output = convert_output(raw.output, format_default)?;
            if let (Base::Scratch, Format::Image) = (&base, output.format) {
                return Err(raw.base.span.invalid_value(
                    "a disk image needs a base disk image, not `scratch`",
                    "no partitions to start from",
                    Some("name a base (`base: //bases:raspios-bookworm-arm64-lite`), or set `output.format: tar`".into()),
                ));
            }
            let partitions = Partitions {
                root_headroom: raw
                    .partitions
                    .and_then(|p| p.root)
                    .and_then(|r| r.headroom)
                    .map(|h| h.value.0),
            };
            let hive = match (raw.hive_file, raw.hive) {
                (Some(file), Some(section)) => {
                    return Err(section.span.invalid_value(
                        "an image has either `hive_file` or a `hive` section, not both",
                        "second hive",
                        Some(format!(
                            "remove this section, or the `hive_file: {}` line",
                            file.value
                        )),
                    ))
                }
                (Some(file), None) => Some(ImageHive::File(Spanned::new(
                    ws_path_of(&file, ctx, "a hive file")?,
                    file.span,
                ))),
                (None, Some(_)) => Some(ImageHive::Section),
                (None, None) => None,
            };
            let source_path = |p: &Spanned<String>| -> Result<String, DefsError> {
                ws_path_of(p, ctx, "the sensor manager's source").map(|w| w.as_str().to_owned())
            };
            if let Some(entry) = doc.get("test") {
                super::test_spec::check(&entry.value)?;
            }
            let (settings, vpn_server) = super::image_settings::convert(
                super::image_settings::RawSettings {
                    system: raw.system,
                    security: raw.security,
                    services: raw.services,
                    software: raw.software,
                },
                &source_path,
            )?;
            Ok(Target::Image(Image {
                base,
                board,
                partitions,
                layers,
                packages,
                epoch: raw.epoch,
                output,
                config: raw.config,
                description: raw.description,
                hive,
                settings,
                vpn_server,
                test: raw.test,
            }))
        }
        Kind::Base => convert_base(from_value(doc)?, doc, ctx),
        Kind::Board => convert_board(from_value(doc)?),
        Kind::Packages => {
            let raw: super::packages::RawPackageSet = from_value(doc)?;
            let ws = |text: &Spanned<String>, what: &str| ws_path_of(text, ctx, what);
            Ok(Target::Packages(super::packages::convert(raw, &ws)?))
        }
        Kind::Hive => {
            // Only `image` is read here; the hive reader reads (and diagnoses) the rest, all
            // at once.
            let image = match doc.get("image").filter(|e| !e.value.is_null()) {
                None => None,
                Some(entry) => {
                    let text: Spanned<String> = from_value(&entry.value)?;
                    let (package, _) = ctx.origin_of(&text.span);
                    match Label::parse(&text.value, Some(&package)) {
                        Ok(label) => Some(Spanned::new(label, text.span)),
                        Err(e) => return Err(e.into_defs(Some(&text.span))),
                    }
                }
            };
            Ok(Target::Hive(HiveTarget { image }))
        }
    }
}

/// A path written in a definition, relative to the file it was written in, as a workspace
/// path; it must stay inside the workspace.
fn ws_path_of(text: &Spanned<String>, ctx: &Context<'_>, what: &str) -> Result<WsPath, DefsError> {
    let (_, dir) = ctx.origin_of(&text.span);
    WsPath::join(&dir, &text.value)
        .filter(|_| !text.value.starts_with('/'))
        .ok_or_else(|| {
            text.span.bad_path(
                &text.value,
                format!("{what} must be inside the workspace"),
                Some("write a path relative to this file that stays inside the workspace".into()),
            )
        })
}

/// The scheme of a URL for a message, never the rest: a URL may carry credentials
/// (`https://user:token@host/…`), and only the scheme is wrong here.
pub(crate) fn url_scheme(url: &str) -> &str {
    match url.split_once(':') {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            scheme
        }
        _ => "(none)",
    }
}

fn convert_base(raw: RawBase, doc: &Value, ctx: &Context<'_>) -> Result<Target, DefsError> {
    let source = match (&raw.url, &raw.bootstrap) {
        (Some(url), Some(bootstrap)) => {
            return Err(url.span.invalid_value(
                "a base is either downloaded (`url`) or bootstrapped (`bootstrap`), not both",
                "downloaded here",
                Some(format!(
                    "remove `url`, `sha256` and `size` to build the base from packages, or remove \
                     `bootstrap` (at `{}`) to download it",
                    bootstrap.span.location()
                )),
            ))
        }
        (None, None) => {
            return Err(doc.span.invalid_value(
                "a base needs `url` and `sha256` (a disk image to download) or `bootstrap` (Debian packages to build it from)",
                "this base",
                Some(
                    "add `url:` and `sha256:` of a Raspberry Pi OS image, or `bootstrap: {packages: \
                     [//packages:debian-bookworm-raspi]}`"
                        .into(),
                ),
            ))
        }
        (Some(url), None) => BaseSource::Download(convert_download(url, &raw)?),
        (None, Some(bootstrap)) => {
            for (key, span) in [
                ("sha256", raw.sha256.as_ref().map(|s| &s.span)),
                ("size", raw.size.as_ref().map(|s| &s.span)),
            ] {
                if let Some(span) = span {
                    return Err(span.invalid_value(
                        format!("`{key}` describes a downloaded image; this base is bootstrapped"),
                        "not with `bootstrap`",
                        Some(format!(
                            "remove `{key}`: a bootstrapped base is pinned by `w4b.lock`"
                        )),
                    ));
                }
            }
            BaseSource::Bootstrap(convert_bootstrap(bootstrap, ctx)?)
        }
    };
    let url = raw.url.as_ref().map(|u| u.value.as_str()).unwrap_or_default();
    let date = match &raw.date {
        Some(text) => Some(Date::parse(&text.value).ok_or_else(|| {
            text.span.invalid_value(
                format!("`{}` is not a date", text.value),
                "not YYYY-MM-DD",
                Some("write the release date as `2024-11-19`".into()),
            )
        })?),
        None => Date::in_url(url),
    };
    let boot_mount = match &raw.boot_mount {
        Some(text) => TreePath::parse(&text.value).map_err(|reason| {
            text.span.bad_path(
                &text.value,
                reason,
                Some("the boot partition's mount point, such as `/boot/firmware`".into()),
            )
        })?,
        None => {
            // Raspberry Pi OS moved the boot partition from /boot to /boot/firmware in
            // bookworm (Debian 12); older releases mount it at /boot.
            let old = matches!(raw.release.as_deref(), Some("buster" | "bullseye" | "stretch"));
            TreePath::parse(if old { "/boot" } else { "/boot/firmware" })
                .map_err(|reason| doc.span.bad_path("/boot/firmware", reason, None))?
        }
    };
    if boot_mount.as_str() == "/" {
        if let Some(text) = &raw.boot_mount {
            return Err(text.span.bad_path(
                &text.value,
                "is the root directory",
                Some("the boot partition is mounted below `/`, such as `/boot/firmware`".into()),
            ));
        }
    }
    Ok(Target::Base(BaseImage {
        source,
        arch: raw.arch,
        release: raw.release,
        date,
        boot_mount,
        description: raw.description,
    }))
}

/// `url`, `sha256` and `size` of a downloaded base.
fn convert_download(url: &Spanned<String>, raw: &RawBase) -> Result<Download, DefsError> {
    let text = url.value.clone();
    if !["http://", "https://", "file://"]
        .iter()
        .any(|s| text.starts_with(s))
    {
        return Err(url.span.invalid_value(
            format!("unsupported URL scheme `{}`", url_scheme(&text)),
            "not an http, https or file URL",
            Some("download from `https://…`, `http://…`, or use a local file as `file:///path/to/image.img.xz`".into()),
        ));
    }
    let Some(sha) = &raw.sha256 else {
        return Err(url.span.invalid_value(
            "a downloaded base needs the `sha256` of the file at `url`",
            "no `sha256` for this URL",
            Some("copy the digest the publisher lists next to the image (the `.sha256` file), or compute it with `sha256sum <file>`".into()),
        ));
    };
    let sha256 = sha.value.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(sha.span.invalid_value(
            "`sha256` must be 64 hex characters",
            "not a SHA-256 digest",
            Some("copy the digest the publisher lists next to the image (the `.sha256` file), or compute it with `sha256sum <file>`".into()),
        ));
    }
    Ok(Download {
        url: text,
        sha256,
        size: raw.size.as_ref().map(|s| s.value.0),
    })
}

/// `bootstrap:`: the package sets as labels (relative ones resolved against the file that
/// wrote them), each once, at least one.
fn convert_bootstrap(raw: &Spanned<RawBootstrap>, ctx: &Context<'_>) -> Result<Bootstrap, DefsError> {
    let mut packages: Vec<Spanned<Label>> = Vec::new();
    for text in &raw.value.packages {
        let (package, _) = ctx.origin_of(&text.span);
        let label = match Label::parse(&text.value, Some(&package)) {
            Ok(label) => Spanned::new(label, text.span.clone()),
            Err(e) => return Err(e.into_defs(Some(&text.span))),
        };
        if let Some(first) = packages.iter().find(|p| p.value == label.value) {
            return Err(text.span.invalid_value(
                format!("package set `{}` is listed twice", label.value),
                "second entry",
                Some(format!(
                    "list it once (the first is at `{}`)",
                    first.span.location()
                )),
            ));
        }
        packages.push(label);
    }
    if packages.is_empty() {
        return Err(raw.span.invalid_value(
            "`bootstrap.packages` names no package set",
            "no package set",
            Some("list the sets that give the repositories and packages, such as `packages: [//packages:debian-bookworm-raspi]`".into()),
        ));
    }
    let size = |key: &str, given: &Option<Spanned<Size>>, min: u64, example: &str| match given {
        Some(s) if !s.value.0.is_multiple_of(1 << 20) || s.value.0 < min => Err(s.span.invalid_value(
            format!(
                "`bootstrap.{key}` is {} bytes, not a whole number of MiB of at least {} MiB",
                s.value.0,
                min >> 20
            ),
            "partition size",
            Some(format!(
                "give a whole number of MiB or GiB, for example `{key}: {example}`"
            )),
        )),
        Some(s) => Ok(Some(s.value.0)),
        None => Ok(None),
    };
    Ok(Bootstrap {
        packages,
        essential: raw.value.essential.unwrap_or(true),
        priority: raw.value.priority,
        boot_size: size(
            "boot_size",
            &raw.value.boot_size,
            MIN_BOOTSTRAP_BOOT_SIZE,
            "512MiB",
        )?,
        root_size: size("root_size", &raw.value.root_size, MIN_BOOTSTRAP_ROOT_SIZE, "4GiB")?,
    })
}

fn convert_board(raw: RawBoard) -> Result<Target, DefsError> {
    let mut config_txt = Vec::new();
    for line in raw.config_txt {
        if line.value.contains('\n') || line.value.contains('\r') || line.value.trim().is_empty() {
            return Err(line.span.invalid_value(
                "a `config_txt` entry must be one non-empty line",
                "not one line",
                Some("write one list item per line of `config.txt`".into()),
            ));
        }
        config_txt.push(line.value);
    }
    let interfaces = match raw.interfaces {
        None => Interfaces::default(),
        Some(i) => Interfaces {
            i2c: i.i2c,
            spi: i.spi,
            uart: i.uart,
            onewire: match i.onewire {
                None => None,
                Some(w) if w.gpio.value <= 27 => Some(w.gpio.value),
                Some(w) => {
                    return Err(w.gpio.span.invalid_value(
                        format!("GPIO {} does not exist on the 40-pin header", w.gpio.value),
                        "not in 0..=27",
                        Some("1-Wire sensors are usually wired to GPIO 4 (pin 7)".into()),
                    ))
                }
            },
        },
    };
    Ok(Target::Board(Board {
        arch: raw.arch,
        partition_table: raw.partition_table.unwrap_or(TableType::Mbr),
        config_txt,
        interfaces,
        kernel: raw.kernel.unwrap_or_else(|| Board::default_kernels(raw.arch)),
        device_trees: raw.device_trees,
        description: raw.description,
    }))
}

fn convert_output(raw: Option<RawOutput>, format_default: Format) -> Result<Output, DefsError> {
    let default_level = |format: Format, c: Compression| match (format, c) {
        (_, Compression::None) => 0,
        (Format::Tar, Compression::Zstd) => Output::DEFAULT_ZSTD_LEVEL,
        (Format::Image, Compression::Zstd) => Output::DEFAULT_IMAGE_ZSTD_LEVEL,
        (_, Compression::Xz) => Output::DEFAULT_XZ_LEVEL,
        (_, Compression::Gz) => Output::DEFAULT_GZ_LEVEL,
    };
    let Some(raw) = raw else {
        return Ok(Output {
            format: format_default,
            compression: Compression::Zstd,
            level: default_level(format_default, Compression::Zstd),
        });
    };
    let format = raw.format.as_ref().map_or(format_default, |f| f.value);
    let compression = raw.compression.as_ref().map_or(Compression::Zstd, |c| c.value);
    if let (Format::Tar, Some(c)) = (format, &raw.compression) {
        if matches!(c.value, Compression::Xz | Compression::Gz) {
            return Err(c.span.invalid_value(
                "a tar output is compressed with zstd or not at all",
                "not available for `format: tar`",
                Some("use `compression: zstd` (or `none`)".into()),
            ));
        }
    }
    let range = |c: Compression| match c {
        Compression::Zstd => 1..=22,
        Compression::Xz => 0..=9,
        Compression::Gz => 1..=9,
        Compression::None => 0..=0,
    };
    let level = match (compression, raw.level) {
        (c, None) => default_level(format, c),
        (Compression::None, Some(level)) => {
            return Err(level.span.invalid_value(
                "`level` is set but `compression` is `none`",
                "nothing to apply this level to",
                Some("remove `level`, or set `compression: zstd`".into()),
            ))
        }
        (c, Some(level)) if range(c).contains(&level.value) => level.value,
        (c, Some(level)) => {
            let r = range(c);
            return Err(level.span.invalid_value(
                format!("{c:?} level {} is out of range", level.value).to_lowercase(),
                format!("not in {}..={}", r.start(), r.end()),
                Some(format!(
                    "use a level from {} (fastest) to {} (smallest); the default is {}",
                    r.start(),
                    r.end(),
                    default_level(format, c)
                )),
            ));
        }
    };
    Ok(Output {
        format,
        compression,
        level,
    })
}

fn convert_file(raw: Spanned<RawFile>, ctx: &Context<'_>) -> Result<Spanned<FileEntry>, DefsError> {
    let entry_span = raw.span;
    let raw = raw.value;
    let path_text = raw.path.value.as_str();
    let path = TreePath::parse(path_text).map_err(|reason| {
        raw.path.span.bad_path(
            path_text,
            reason,
            Some("paths in an image are absolute and normalised, such as `/etc/motd`".into()),
        )
    })?;

    let present: Vec<&str> = [
        ("content", raw.content.is_some()),
        ("source", raw.source.is_some()),
        ("template", raw.template.is_some()),
        ("symlink", raw.symlink.is_some()),
        ("dir", raw.dir.is_some()),
        ("remove", raw.remove.is_some()),
        ("append", raw.append.is_some()),
        ("fetch", raw.fetch.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    let op_error = |message: String, label: &str, help: String| -> DefsError {
        DefsErrorKind::FileOperation {
            src: entry_span.src(),
            span: entry_span.ss(),
            message,
            label: label.to_owned(),
            help,
        }
        .into()
    };
    match present.len() {
        1 => {}
        0 => {
            return Err(op_error(
                format!("the entry for `{path_text}` has no operation"),
                "no operation",
                format!("give exactly one of {}", suggest::backticked(FileOp::NAMES)),
            ))
        }
        _ => {
            return Err(op_error(
                format!(
                    "the entry for `{path_text}` has {} operations: {}",
                    present.len(),
                    suggest::backticked(&present)
                ),
                "more than one operation",
                "split it into one entry per operation; entries apply in order".into(),
            ))
        }
    }
    let op_name = present[0];
    if path.as_str() == "/" && op_name != "dir" {
        return Err(raw.path.span.bad_path(
            path_text,
            "is the root directory",
            Some("only `dir: true` may name `/`".into()),
        ));
    }

    let mode = match &raw.mode {
        None => None,
        Some(text) => Some(Mode::parse(&text.value).map_err(|reason| -> DefsError {
            DefsErrorKind::BadMode {
                src: text.span.src(),
                span: text.span.ss(),
                text: text.value.clone(),
                reason: reason.to_owned(),
            }
            .into()
        })?),
    };
    let owner = match &raw.owner {
        None => Owner::default(),
        Some(text) => Owner::parse(&text.value).ok_or_else(|| -> DefsError {
            DefsErrorKind::BadOwner {
                src: text.span.src(),
                span: text.span.ss(),
                text: text.value.clone(),
            }
            .into()
        })?,
    };
    let not_with = |key: &str, value: &Option<Spanned<String>>, why: &str| -> Result<(), DefsError> {
        match value {
            Some(value) => Err(value.span.invalid_value(
                format!("`{key}` cannot be used with `{op_name}`"),
                why.to_owned(),
                Some(format!("remove `{key}`")),
            )),
            None => Ok(()),
        }
    };
    let ws_path = |text: &Spanned<String>| -> Result<WsPath, DefsError> {
        let value = text.value.as_str();
        if value.is_empty() || value.starts_with('/') || value.contains('\0') {
            return Err(text.span.bad_path(
                value,
                "must be relative to the definition file",
                Some("write a path relative to the YAML file's directory, such as `files/app.conf`".into()),
            ));
        }
        let (_, dir) = ctx.origin_of(&text.span);
        WsPath::join(&dir, value).ok_or_else(|| {
            text.span.bad_path(
                value,
                "leaves the workspace",
                Some("files used by a definition must be inside the workspace".into()),
            )
        })
    };
    let flag = |value: &Spanned<bool>, key: &str| -> Result<(), DefsError> {
        if value.value {
            Ok(())
        } else {
            Err(value.span.invalid_value(
                format!("`{key}: false` does nothing"),
                "only `true` is meaningful",
                Some(format!("write `{key}: true`, or remove the entry")),
            ))
        }
    };

    let op = if let Some(content) = raw.content {
        FileOp::Content {
            content: content.value,
            mode: mode.unwrap_or(Mode::FILE),
        }
    } else if let Some(source) = &raw.source {
        FileOp::Source {
            source: ws_path(source)?,
            mode,
        }
    } else if let Some(template) = &raw.template {
        FileOp::Template {
            template: ws_path(template)?,
            mode: mode.unwrap_or(Mode::FILE),
        }
    } else if let Some(target) = raw.symlink {
        not_with("mode", &raw.mode, "symbolic links have no mode")?;
        if target.value.is_empty() || target.value.contains('\0') {
            return Err(target.span.invalid_value(
                "empty or NUL-containing symlink target",
                "invalid target",
                None,
            ));
        }
        FileOp::Symlink { target: target.value }
    } else if let Some(dir) = &raw.dir {
        flag(dir, "dir")?;
        FileOp::Dir {
            mode: mode.unwrap_or(Mode::DIR),
        }
    } else if let Some(remove) = &raw.remove {
        flag(remove, "remove")?;
        not_with("mode", &raw.mode, "nothing is created")?;
        not_with("owner", &raw.owner, "nothing is created")?;
        FileOp::Remove
    } else if let Some(append) = raw.append {
        not_with("mode", &raw.mode, "appending keeps the file's mode")?;
        not_with("owner", &raw.owner, "appending keeps the file's owner")?;
        FileOp::Append {
            content: append.value,
        }
    } else if let Some(fetch) = raw.fetch {
        let RawFetch { url, sha256, size } = fetch.value;
        if !["http://", "https://", "file://"]
            .iter()
            .any(|scheme| url.value.starts_with(scheme))
        {
            return Err(url.span.invalid_value(
                format!("unsupported URL scheme `{}`", url_scheme(&url.value)),
                "not an http, https or file URL",
                Some("fetch from `https://…`, `http://…` or `file:///…`".into()),
            ));
        }
        let digest = sha256.value.to_ascii_lowercase();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(sha256.span.invalid_value(
                "`sha256` must be 64 hex characters",
                "not a SHA-256 digest",
                Some("compute it with `sha256sum <file>`".into()),
            ));
        }
        FileOp::Fetch {
            url: url.value,
            sha256: digest,
            size: size.map(|s| s.0),
            mode: mode.unwrap_or(Mode::FILE),
        }
    } else {
        // `present.len() == 1` above guarantees one branch matched.
        return Err(op_error(
            format!("the entry for `{path_text}` has no operation"),
            "no operation",
            format!("give exactly one of {}", suggest::backticked(FileOp::NAMES)),
        ));
    };
    Ok(Spanned::new(FileEntry { path, op, owner }, entry_span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("0644"), Ok(Mode(0o644)));
        assert_eq!(Mode::parse("644"), Ok(Mode(0o644)));
        assert_eq!(Mode::parse("04755"), Ok(Mode(0o4755)));
        assert_eq!(Mode::parse("7777"), Ok(Mode(0o7777)));
        assert!(Mode::parse("10000").is_err());
        assert!(Mode::parse("0o644").is_err());
        assert!(Mode::parse("0x1ff").is_err());
        assert!(Mode::parse("0648").is_err());
        assert!(Mode::parse("").is_err());
        assert!(Mode::parse("000644").is_err());
        assert_eq!(Mode(0o644).to_string(), "0644");
    }

    #[test]
    fn owners() {
        assert_eq!(Owner::parse("1000:100"), Some(Owner { uid: 1000, gid: 100 }));
        assert_eq!(Owner::parse("1000"), Some(Owner { uid: 1000, gid: 1000 }));
        for bad in ["", "root", "1:", ":1", "-1", "1:2:3", "99999999999"] {
            assert_eq!(Owner::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn tree_paths() {
        assert!(TreePath::parse("/etc/motd").is_ok());
        assert!(TreePath::parse("/").is_ok());
        for bad in [
            "etc/motd",
            "/etc/",
            "/etc//motd",
            "/etc/../x",
            "/./x",
            "/a\0b",
            "",
        ] {
            assert!(TreePath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn workspace_paths() {
        assert_eq!(
            WsPath::join("defs/layers", "files/app").unwrap().as_str(),
            "defs/layers/files/app"
        );
        assert_eq!(
            WsPath::join("defs/layers", "../shared/./x").unwrap().as_str(),
            "defs/shared/x"
        );
        assert!(WsPath::join("defs/layers", "../../../etc/passwd").is_none());
    }

    #[test]
    fn output_file_names() {
        let out = Output {
            format: Format::Tar,
            compression: Compression::Zstd,
            level: 3,
        };
        assert_eq!(out.file_name("demo"), "demo.tar.zst");
    }

    #[test]
    fn kinds_know_their_keys() {
        assert!(Kind::Image.keys().contains(&"layers"));
        assert!(Kind::Layer.keys().contains(&"files"));
        assert!(Kind::all_keys().contains(&"epoch"));
    }
}
