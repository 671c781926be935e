//! `raspi-layout`: a root tree built from Debian packages into what `unpack` makes of a
//! downloaded Raspberry Pi image — the boot partition's tree, the root partition's tree and
//! the partition table — so that every step after it (`graft`, the layers, `split`, the
//! filesystem writers, `disk`, `validate`) treats a bootstrapped base like any other.
//!
//! The boot partition is what Debian's own `raspi-firmware` package puts in
//! `/boot/firmware` when it is configured in a chroot (its maintainer script and kernel
//! hooks copy the firmware blobs, the kernel, the initramfs and the `bcm*.dtb` device trees
//! there and write `config.txt` and `cmdline.txt`), so the layout is Debian's by
//! construction; this step moves that subtree onto the FAT partition and writes the rest of
//! what Debian's Raspberry Pi images carry:
//!
//! - `/etc/fstab` naming both filesystems by label, as Debian's images do
//!   (`LABEL=RASPIROOT` for `/`, `LABEL=RASPIFIRM` for `/boot/firmware`) — the same labels
//!   `cmdline.txt` gets through `/etc/default/raspi-firmware`'s `ROOTPART`;
//! - a first-boot unit that grows the root partition and its ext4 filesystem to the end of
//!   the card, once (`w4b-grow-root.service`, the job Debian's `rpi-resizerootfs` and
//!   Raspberry Pi OS's `init_resize.sh` do), needing `sfdisk` (`fdisk`), `resize2fs`
//!   (`e2fsprogs`) and util-linux in the root;
//! - the partition table: MBR, FAT32 `bootfs` at sector 8192 (type `0x0c`), ext4 `rootfs`
//!   right after it (type `0x83`). The disk signature, the FAT volume id, the ext4 UUID and
//!   hash seed are derived from the step's inputs (the root tree's digest and the sizes),
//!   so the same packages always give the same disk and a different base never shares an
//!   identity with it.
//!
//! Keyed: the sizes, the labels and the epoch (the mtime of the files it writes); the root
//! tree is an upstream output.

#![forbid(unsafe_code)]

use std::sync::Arc;

use w4b_cache::{Digest, OutputRef};
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::graft::{split, GraftError};
use super::table::{
    uuid_text, Ext4Json, FatJson, PartitionJson, TableJson, DEFAULT_BOOT_MOUNT, TABLE_SCHEMA,
};
use super::tree_error;
use crate::image::FsKind;
use crate::store::AppStore;
use crate::tree::layer::{apply, Changeset, Op};
use crate::tree::{lookup, Blobs, Entry, Kind, TreePath};

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
/// The boot partition's first sector, as on Raspberry Pi OS and Debian's images (4 MiB).
pub const BOOT_START: u64 = 8192;
/// Debian's Raspberry Pi images' filesystem labels.
pub const BOOT_LABEL: &str = "RASPIFIRM";
pub const ROOT_LABEL: &str = "RASPIROOT";
/// The smallest FAT32 boot partition with 4 KiB clusters (65,525 clusters and the FATs).
pub const MIN_BOOT_SIZE: u64 = crate::defs::MIN_BOOTSTRAP_BOOT_SIZE;
/// The files the firmware needs on every model this layout serves, checked before anything
/// is written: without them the card does not boot and nothing later would say why.
const REQUIRED_BOOT_FILES: &[&str] = &[
    "config.txt",
    "cmdline.txt",
    "start4.elf",
    "fixup4.dat",
    "bootcode.bin",
];

/// The first-boot unit that grows the root partition (see the module docs).
pub const GROW_UNIT_PATH: &str = "/usr/lib/systemd/system/w4b-grow-root.service";
pub const GROW_UNIT_LINK: &str = "/etc/systemd/system/multi-user.target.wants/w4b-grow-root.service";
pub const GROW_SCRIPT_PATH: &str = "/usr/libexec/w4b/grow-root";
/// Its stamp: the unit runs while this does not exist.
pub const GROW_STAMP: &str = "/var/lib/w4b/root-grown";

const GROW_UNIT: &str = "\
# Written by w4b (Raspberry Pi layout): grows the root partition and its filesystem to the
# end of the card at the first boot, then never again.
[Unit]
Description=Grow the root partition and filesystem to fill the disk
ConditionPathExists=!/var/lib/w4b/root-grown
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/usr/libexec/w4b/grow-root
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
";

const GROW_SCRIPT: &str = r#"#!/bin/sh
# Written by w4b (Raspberry Pi layout): grows the partition holding / to the end of its
# disk and the ext4 filesystem in it with it (online), then leaves a stamp so that the unit
# does not run again. On a disk with no room left, sfdisk changes nothing and resize2fs
# has nothing to do.
set -eu
part=$(findmnt --noheadings --output SOURCE --mountpoint /)
name=${part##*/}
disk=/dev/$(lsblk --noheadings --nodeps --output PKNAME "$part")
number=$(cat "/sys/class/block/$name/partition")
echo ', +' | flock "$disk" sfdisk --quiet --no-reread --no-tell-kernel -N "$number" "$disk"
partx --update --nr "$number" "$disk"
resize2fs "$part"
mkdir -p /var/lib/w4b
touch /var/lib/w4b/root-grown
"#;

/// What the layout is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutParams {
    /// Bytes of the FAT boot partition (a whole number of MiB, at least [`MIN_BOOT_SIZE`]).
    pub boot_size: u64,
    /// Bytes of the ext4 root partition (a whole number of MiB); images grow it with
    /// `partitions.root.headroom`, and the card's first boot to the end of the card.
    pub root_size: u64,
    /// The mtime of the files the layout writes.
    pub epoch: i64,
}

/// Why a root tree could not be laid out.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LayoutError {
    #[error("the bootstrapped root has no Raspberry Pi boot files in `/boot/firmware` (missing: {missing})")]
    #[diagnostic(
        code(w4b::layout::no_boot_files),
        help("add `raspi-firmware` and a kernel (`linux-image-arm64`) to the base's packages: their maintainer scripts fill `/boot/firmware`")
    )]
    NoBootFiles { missing: String },

    #[error("the boot partition's size {size} is not a whole number of MiB of at least {min} MiB")]
    #[diagnostic(
        code(w4b::layout::boot_size),
        help("give `boot_size` in MiB, for example `512MiB`")
    )]
    BootSize { size: u64, min: u64 },

    #[error("the root partition's size {size} is not a whole number of MiB of at least 64 MiB")]
    #[diagnostic(
        code(w4b::layout::root_size),
        help("give `root_size` in MiB or GiB, for example `2GiB`")
    )]
    RootSize { size: u64 },
}

/// The identity bytes the layout derives for one purpose from its inputs.
fn derive(purpose: &str, root: &Digest, params: &LayoutParams) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(&format!("w4b raspi-layout {purpose} v1"));
    h.update(root.as_bytes());
    h.update(&params.boot_size.to_le_bytes());
    h.update(&params.root_size.to_le_bytes());
    *h.finalize().as_bytes()
}

fn sixteen(bytes: &[u8; 32]) -> [u8; 16] {
    let mut out = [0; 16];
    out.copy_from_slice(&bytes[..16]);
    out
}

/// A random-looking but derived RFC 4122 version-4 UUID (the variant and version bits set
/// as `uuidgen` would, so tools that check them are content).
fn uuid_v4(bytes: &[u8; 32]) -> [u8; 16] {
    let mut u = sixteen(bytes);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// The journal `mke2fs` gives a filesystem of `blocks` 4 KiB blocks (e2fsprogs'
/// `ext2fs_default_journal_size`, before 1.47's larger defaults).
fn default_journal_blocks(blocks: u64) -> Option<u32> {
    match blocks {
        0..=2047 => None,
        2048..=32_767 => Some(1024),
        32_768..=262_143 => Some(4096),
        262_144..=524_287 => Some(8192),
        524_288..=4_194_303 => Some(16_384),
        4_194_304..=8_388_607 => Some(32_768),
        8_388_608..=16_777_215 => Some(65_536),
        16_777_216..=33_554_431 => Some(131_072),
        _ => Some(262_144),
    }
}

/// The partition table of a laid-out disk (see the module docs).
pub fn table(root: &Digest, params: &LayoutParams) -> Result<TableJson, LayoutError> {
    if !params.boot_size.is_multiple_of(MIB) || params.boot_size < MIN_BOOT_SIZE {
        return Err(LayoutError::BootSize {
            size: params.boot_size,
            min: MIN_BOOT_SIZE / MIB,
        });
    }
    if !params.root_size.is_multiple_of(MIB) || params.root_size < crate::defs::MIN_BOOTSTRAP_ROOT_SIZE {
        return Err(LayoutError::RootSize {
            size: params.root_size,
        });
    }
    let signature = derive("disk signature", root, params);
    let mut disk_id = u32::from_le_bytes([signature[0], signature[1], signature[2], signature[3]]);
    if disk_id == 0 {
        // Zero means "no signature" to some tools.
        disk_id = 1;
    }
    let volume = derive("fat volume id", root, params);
    let volume_id = u32::from_le_bytes([volume[0], volume[1], volume[2], volume[3]]);
    let boot_sectors = params.boot_size / SECTOR;
    let root_start = BOOT_START + boot_sectors;
    let root_sectors = params.root_size / SECTOR;
    let blocks = params.root_size / 4096;
    let inode_ratio: u32 = 16_384;
    let reserved_blocks = blocks * 5 / 100;
    let partuuid = |i: u32| Some(format!("{disk_id:08x}-{i:02x}"));
    Ok(TableJson {
        boot_code: None,
        boot_mount: DEFAULT_BOOT_MOUNT.to_owned(),
        disk_id: format!("{disk_id:08x}"),
        disk_size: (root_start + root_sectors) * SECTOR,
        gpt: None,
        kind: "mbr".into(),
        partitions: vec![
            PartitionJson {
                attributes: None,
                bootable: false,
                ext4: None,
                fat: Some(FatJson {
                    cluster_size: 4096,
                    fat_type: "FAT32".into(),
                    hidden_sectors: BOOT_START as u32,
                    label: Some(BOOT_LABEL.into()),
                    oem_name: "mkfs.fat".into(),
                    volume_id: Some(format!("{volume_id:08x}")),
                }),
                filesystem: FsKind::Fat,
                index: 1,
                name: None,
                partuuid: partuuid(1),
                size: boot_sectors,
                start: BOOT_START,
                type_id: "c".into(),
            },
            PartitionJson {
                attributes: None,
                bootable: false,
                ext4: Some(Ext4Json {
                    block_size: 4096,
                    blocks,
                    hash_seed: uuid_text(&uuid_v4(&derive("ext4 hash seed", root, params))),
                    inode_count: params.root_size / u64::from(inode_ratio),
                    inode_ratio,
                    journal_blocks: default_journal_blocks(blocks),
                    label: ROOT_LABEL.into(),
                    reserved_blocks,
                    reserved_percent: 5,
                    uuid: uuid_text(&uuid_v4(&derive("ext4 uuid", root, params))),
                }),
                fat: None,
                filesystem: FsKind::Ext4,
                index: 2,
                name: None,
                partuuid: partuuid(2),
                size: root_sectors,
                start: root_start,
                type_id: "83".into(),
            },
        ],
        schema: TABLE_SCHEMA,
        sector_size: SECTOR as u32,
    })
}

/// `/etc/fstab` of a laid-out root.
pub fn fstab() -> String {
    format!(
        "# /etc/fstab: static file system information, written by w4b for the Raspberry Pi\n\
         # layout (the labels are the filesystems' own; see `w4b inspect`).\n\
         LABEL={ROOT_LABEL}\t/\text4\trw,noatime\t0\t1\n\
         LABEL={BOOT_LABEL}\t{DEFAULT_BOOT_MOUNT}\tvfat\trw,noatime\t0\t2\n"
    )
}

/// The files the layout adds to the root, as a changeset.
fn root_files(blobs: &dyn Blobs, epoch: i64) -> Result<Changeset, crate::tree::TreeError> {
    let file = |text: &str, mode: u32| -> Result<Entry, crate::tree::TreeError> {
        let digest = blobs.put(text.as_bytes())?;
        Ok(Entry {
            mtime: epoch,
            ..Entry::file(digest, text.len() as u64, mode)
        })
    };
    let path = |p: &str| TreePath::parse(p).expect("a valid constant path");
    Ok(Changeset::new(vec![
        Op::Put {
            path: path("/etc/fstab"),
            entry: file(&fstab(), 0o644)?,
        },
        Op::Put {
            path: path(GROW_SCRIPT_PATH),
            entry: file(GROW_SCRIPT, 0o755)?,
        },
        Op::Put {
            path: path(GROW_UNIT_PATH),
            entry: file(GROW_UNIT, 0o644)?,
        },
        Op::Put {
            path: path(GROW_UNIT_LINK),
            entry: Entry {
                mtime: epoch,
                ..Entry::symlink(GROW_UNIT_PATH)
            },
        },
    ]))
}

/// Lays out `root` (a combined tree, `/boot/firmware` filled by the packages): `(bootfs,
/// rootfs, table)`, or `None` when cancelled.
pub fn layout(
    blobs: &dyn Blobs,
    root: Digest,
    params: &LayoutParams,
    cancel: &dyn Fn() -> bool,
) -> Result<Option<(Digest, Digest, TableJson)>, StepError> {
    let table = table(&root, params).map_err(StepError::diag)?;
    let mount = TreePath::parse(DEFAULT_BOOT_MOUNT).map_err(tree_error)?;
    let mut missing = Vec::new();
    for name in REQUIRED_BOOT_FILES {
        let p = mount.join(name).map_err(tree_error)?;
        match lookup(blobs, root, &p).map_err(tree_error)? {
            Some(Entry {
                kind: Kind::File { .. },
                ..
            }) => {}
            _ => missing.push(format!("`{name}`")),
        }
    }
    if !missing.is_empty() {
        return Err(StepError::diag(LayoutError::NoBootFiles {
            missing: missing.join(", "),
        }));
    }
    let with_files = apply(
        blobs,
        root,
        &[root_files(blobs, params.epoch).map_err(tree_error)?],
        params.epoch,
    )
    .map_err(tree_error)?;
    let Some((bootfs, rootfs)) = split(blobs, with_files, &mount, cancel).map_err(GraftError::into_step)?
    else {
        return Ok(None);
    };
    Ok(Some((bootfs, rootfs, table)))
}

/// `raspi-layout`: input 0 provides `tree` (a bootstrapped root); outputs `bootfs`,
/// `rootfs` and `table`, as `unpack` does.
pub struct LayoutStep {
    pub store: Arc<AppStore>,
    pub params: LayoutParams,
    /// Where the sizes were given, for diagnostics.
    pub location: Option<String>,
}

impl Step for LayoutStep {
    fn kind(&self) -> &'static str {
        "raspi-layout"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(vec![
            Component::param("boot.size", self.params.boot_size.to_string()).at(self.location.clone()),
            Component::param("root.size", self.params.root_size.to_string()).at(self.location.clone()),
            Component::param("epoch", self.params.epoch.to_string()),
            Component::param("labels", format!("{BOOT_LABEL},{ROOT_LABEL}")),
        ])
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let root = cx.input(0, "tree")?;
        let cancel = || cx.cancel.load(std::sync::atomic::Ordering::Relaxed);
        let (bootfs, rootfs, table) =
            layout(self.store.as_ref(), root.digest, &self.params, &cancel)?.ok_or(StepError::Cancelled)?;
        cx.check_cancel()?;
        let json = serde_json::to_vec(&table)
            .map_err(|e| StepError::msg(format!("cannot serialise the partition table: {e}")))?;
        let table_digest = Blobs::put(self.store.as_ref(), &json).map_err(tree_error)?;
        let tree = |digest| OutputRef { digest, size: 0 };
        let mut out = Outputs::new();
        out.insert("bootfs".into(), tree(bootfs));
        out.insert("rootfs".into(), tree(rootfs));
        out.insert(
            "table".into(),
            OutputRef {
                digest: table_digest,
                size: json.len() as u64,
            },
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{load_dir, load_root, MemBlobs, TreeBuilder};
    use crate::validate::device::PartInfo;
    use crate::validate::fstab;

    fn p(s: &str) -> TreePath {
        TreePath::parse(s).unwrap()
    }

    fn params() -> LayoutParams {
        LayoutParams {
            boot_size: 512 * MIB,
            root_size: 2048 * MIB,
            epoch: 1_700_000_000,
        }
    }

    fn never() -> bool {
        false
    }

    /// A root as `raspi-firmware` leaves it: `/boot/firmware` filled, the rest of a system.
    fn root(blobs: &dyn Blobs, boot_files: &[&str]) -> Digest {
        let file = |text: &str| {
            let d = blobs.put(text.as_bytes()).unwrap();
            Entry::file(d, text.len() as u64, 0o644)
        };
        let mut b = TreeBuilder::new();
        b.insert(p("/etc"), Entry::dir(0o755)).unwrap();
        b.insert(p("/etc/hostname"), file("debian\n")).unwrap();
        b.insert(p("/usr/lib/systemd/system"), Entry::dir(0o755)).unwrap();
        b.insert(p("/boot/firmware"), Entry::dir(0o755)).unwrap();
        b.insert(p("/boot/vmlinuz-6.1.0-1-arm64"), file("kernel"))
            .unwrap();
        for name in boot_files {
            b.insert(p(&format!("/boot/firmware/{name}")), file(name))
                .unwrap();
        }
        b.finish(blobs).unwrap()
    }

    const ALL: &[&str] = &[
        "bootcode.bin",
        "cmdline.txt",
        "config.txt",
        "fixup4.dat",
        "start4.elf",
        "bcm2711-rpi-4-b.dtb",
        "vmlinuz-6.1.0-1-arm64",
    ];

    #[test]
    fn the_table_is_a_raspberry_pi_mbr_with_derived_identities() {
        let blobs = MemBlobs::new();
        let r = root(&blobs, ALL);
        let t = table(&r, &params()).unwrap();
        assert_eq!(t.kind, "mbr");
        assert_eq!(t.partitions[0].start, 8192);
        assert_eq!(t.partitions[0].size, 512 * MIB / 512);
        assert_eq!(t.partitions[0].type_id, "c");
        assert_eq!(t.partitions[1].start, 8192 + 512 * MIB / 512);
        assert_eq!(t.partitions[1].type_id, "83");
        assert_eq!(t.disk_size, (4 + 512 + 2048) * MIB);
        assert_eq!(t.partitions[1].partuuid, Some(format!("{}-02", t.disk_id)));
        let ext4 = t.partitions[1].ext4.as_ref().unwrap();
        assert_eq!(ext4.blocks, 2048 * MIB / 4096);
        assert_eq!(ext4.journal_blocks, Some(16_384));
        assert_eq!(ext4.label, ROOT_LABEL);
        assert_eq!(&ext4.uuid[14..15], "4", "a version-4 UUID: {}", ext4.uuid);
        // The same inputs give the same disk; other contents or sizes another identity.
        assert_eq!(table(&r, &params()).unwrap(), t);
        let other = root(&blobs, &ALL[..6]);
        assert_ne!(table(&other, &params()).unwrap().disk_id, t.disk_id);
        let bigger = LayoutParams {
            root_size: 4096 * MIB,
            ..params()
        };
        let u = table(&r, &bigger).unwrap();
        assert_ne!(u.disk_id, t.disk_id);
        assert_ne!(u.partitions[1].ext4.as_ref().unwrap().uuid, ext4.uuid);
        // A table the downstream steps read back.
        let bytes = serde_json::to_vec(&t).unwrap();
        assert_eq!(TableJson::parse(&bytes).unwrap(), t);
    }

    #[test]
    fn sizes_that_cannot_make_the_partitions_are_errors() {
        let blobs = MemBlobs::new();
        let r = root(&blobs, ALL);
        let small = LayoutParams {
            boot_size: 128 * MIB,
            ..params()
        };
        assert!(matches!(table(&r, &small), Err(LayoutError::BootSize { .. })));
        let odd = LayoutParams {
            root_size: 2048 * MIB + 512,
            ..params()
        };
        assert!(matches!(table(&r, &odd), Err(LayoutError::RootSize { .. })));
    }

    #[test]
    fn the_boot_files_move_to_the_fat_tree_and_the_root_gets_fstab_and_the_grow_unit() {
        let blobs = MemBlobs::new();
        let r = root(&blobs, ALL);
        let (bootfs, rootfs, t) = layout(&blobs, r, &params(), &never).unwrap().unwrap();
        let names: Vec<String> = load_dir(&blobs, &load_root(&blobs, &bootfs).unwrap().dir_digest().unwrap())
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut all: Vec<&str> = ALL.to_vec();
        all.sort_unstable();
        assert_eq!(names, all);
        let firmware = lookup(&blobs, rootfs, &p("/boot/firmware")).unwrap().unwrap();
        assert_eq!(
            firmware.dir_digest(),
            Some(crate::tree::format::empty_dir_digest())
        );
        for path in [
            "/etc/fstab",
            GROW_SCRIPT_PATH,
            GROW_UNIT_PATH,
            GROW_UNIT_LINK,
            "/etc/hostname",
        ] {
            assert!(lookup(&blobs, rootfs, &p(path)).unwrap().is_some(), "{path}");
        }
        let script = lookup(&blobs, rootfs, &p(GROW_SCRIPT_PATH)).unwrap().unwrap();
        assert_eq!(script.mode, 0o755);
        assert_eq!(script.mtime, params().epoch);
        // The fstab names the boot partition the way the validator (and `unpack`) reads it.
        let boot = &t.partitions[0];
        let info = PartInfo {
            index: boot.index,
            partuuid: boot.partuuid.clone(),
            name: String::new(),
            fs: FsKind::Fat,
            fs_label: boot.fat.as_ref().and_then(|f| f.label.clone()),
            fs_uuid: None,
        };
        assert_eq!(
            fstab::mount_point(&fstab(), &info).as_deref(),
            Some(DEFAULT_BOOT_MOUNT)
        );
        // Deterministic.
        let again = layout(&blobs, r, &params(), &never).unwrap().unwrap();
        assert_eq!(again, (bootfs, rootfs, t));
    }

    #[test]
    fn a_root_without_the_firmware_is_a_clear_error() {
        let blobs = MemBlobs::new();
        let r = root(&blobs, &["config.txt"]);
        let e = layout(&blobs, r, &params(), &never).unwrap_err();
        let text = format!("{e:?}");
        assert!(
            text.contains("`cmdline.txt`") && text.contains("`start4.elf`"),
            "{text}"
        );
        assert!(!text.contains("`config.txt`"), "{text}");
    }
}
