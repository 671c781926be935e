//! How `cmdline.txt` (`root=`) and `/etc/fstab` name a partition, and which partition of
//! the disk being validated such a name means.
//!
//! Linux accepts `PARTUUID=`, `PARTLABEL=`, `LABEL=` and `UUID=` tags (the last two name
//! the filesystem, not the partition), their `/dev/disk/by-*/` spellings, and kernel
//! device names (`/dev/mmcblk0p2`, `/dev/sda2`, `/dev/nvme0n1p2`). A Raspberry Pi boots
//! from one medium, so a kernel device name is read as "partition N of this disk".

use crate::image::FsKind;

/// A partition as named by the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceRef {
    PartUuid(String),
    PartLabel(String),
    /// A filesystem label.
    Label(String),
    /// A filesystem UUID (ext4: `xxxxxxxx-...`, FAT: `XXXX-XXXX`).
    Uuid(String),
    /// A kernel device name, with the partition number it ends in (if any).
    Node {
        path: String,
        index: Option<u32>,
    },
    /// Anything else: `proc`, `tmpfs`, a network share.
    Other(String),
}

impl DeviceRef {
    /// Parses a device spelling. Tag values may be quoted (`LABEL="my disk"`), as
    /// libmount allows in fstab.
    pub fn parse(spec: &str) -> DeviceRef {
        let tag = |prefix: &str| {
            let (head, rest) = spec.split_at_checked(prefix.len())?;
            head.eq_ignore_ascii_case(prefix)
                .then(|| unquote(rest).to_string())
        };
        if let Some(v) = tag("PARTUUID=") {
            return DeviceRef::PartUuid(v);
        }
        if let Some(v) = tag("PARTLABEL=") {
            return DeviceRef::PartLabel(v);
        }
        if let Some(v) = tag("LABEL=") {
            return DeviceRef::Label(v);
        }
        if let Some(v) = tag("UUID=") {
            return DeviceRef::Uuid(v);
        }
        for (dir, make) in [
            (
                "/dev/disk/by-partuuid/",
                DeviceRef::PartUuid as fn(String) -> DeviceRef,
            ),
            ("/dev/disk/by-partlabel/", DeviceRef::PartLabel),
            ("/dev/disk/by-label/", DeviceRef::Label),
            ("/dev/disk/by-uuid/", DeviceRef::Uuid),
        ] {
            if let Some(v) = spec.strip_prefix(dir) {
                return make(v.to_string());
            }
        }
        if spec.starts_with("/dev/") {
            return DeviceRef::Node {
                path: spec.to_string(),
                index: node_partition(spec),
            };
        }
        DeviceRef::Other(spec.to_string())
    }

    /// Whether this names a block device (and so should be on this disk).
    pub fn is_block_device(&self) -> bool {
        !matches!(self, DeviceRef::Other(_))
    }
}

/// `"x"` or `'x'` → `x`.
fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// The partition number of a kernel device name: `mmcblk0p2`/`nvme0n1p2`/`loop0p2` → 2
/// (the digits after the last `p` that follows a digit), `sda2`/`vda2` → 2.
fn node_partition(path: &str) -> Option<u32> {
    let name = path.rsplit('/').next()?;
    let digits_at = name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, digits) = name.split_at(digits_at);
    if digits.is_empty() {
        return None;
    }
    let partitioned = if let Some(before) = stem.strip_suffix('p') {
        before.ends_with(|c: char| c.is_ascii_digit())
    } else {
        // sdX, vdX, hdX, xvdX: letters only before the number.
        ["sd", "vd", "hd", "xvd"].iter().any(|p| {
            stem.strip_prefix(p)
                .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_lowercase()))
        })
    };
    if partitioned {
        digits.parse().ok()
    } else {
        None
    }
}

/// What the validator knows about one partition of the disk, to resolve names against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartInfo {
    pub index: u32,
    pub partuuid: Option<String>,
    /// GPT partition name.
    pub name: String,
    pub fs: FsKind,
    pub fs_label: Option<String>,
    pub fs_uuid: Option<String>,
}

/// Where a device name leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Partition `index` of this disk.
    Partition(u32),
    /// Not a partition of this disk: the name cannot be found here.
    Missing,
    /// Not a block device at all (`proc`, `tmpfs`).
    NotADevice,
}

impl DeviceRef {
    /// Whether this name means partition `part` — the one rule by which `cmdline.txt`'s
    /// `root=`, the validator's fstab check and `unpack`'s boot mount point match a
    /// device to a partition. UUIDs compare ignoring case (Linux lowercases PARTUUIDs, FAT
    /// volume IDs are shown in upper case); labels compare exactly, as udev's `by-label`
    /// links and libmount do; a kernel device name matches by its partition number.
    pub fn names(&self, part: &PartInfo) -> bool {
        let same_uuid = |want: &str, have: Option<&str>| have.is_some_and(|h| h.eq_ignore_ascii_case(want));
        match self {
            DeviceRef::PartUuid(u) => same_uuid(u, part.partuuid.as_deref()),
            DeviceRef::PartLabel(l) => !part.name.is_empty() && part.name == *l,
            DeviceRef::Label(l) => part.fs_label.as_deref() == Some(l.as_str()),
            DeviceRef::Uuid(u) => same_uuid(u, part.fs_uuid.as_deref()),
            DeviceRef::Node { index, .. } => *index == Some(part.index),
            DeviceRef::Other(_) => false,
        }
    }
}

/// Resolves `dev` against the partitions of the disk (by [`DeviceRef::names`]).
pub fn resolve(dev: &DeviceRef, parts: &[PartInfo]) -> Resolved {
    if !dev.is_block_device() {
        return Resolved::NotADevice;
    }
    match parts.iter().find(|p| dev.names(p)) {
        Some(p) => Resolved::Partition(p.index),
        None => Resolved::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> Vec<PartInfo> {
        vec![
            PartInfo {
                index: 1,
                partuuid: Some("1a2b3c4d-01".into()),
                name: String::new(),
                fs: FsKind::Fat,
                fs_label: Some("bootfs".into()),
                fs_uuid: Some("1A2B-3C4D".into()),
            },
            PartInfo {
                index: 2,
                partuuid: Some("1a2b3c4d-02".into()),
                name: "root".into(),
                fs: FsKind::Ext4,
                fs_label: Some("rootfs".into()),
                fs_uuid: Some("0b0e0e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f".into()),
            },
        ]
    }

    #[test]
    fn spellings_parse() {
        assert_eq!(
            DeviceRef::parse("PARTUUID=1a2b3c4d-02"),
            DeviceRef::PartUuid("1a2b3c4d-02".into())
        );
        assert_eq!(DeviceRef::parse("partuuid=x"), DeviceRef::PartUuid("x".into()));
        assert_eq!(
            DeviceRef::parse("LABEL=\"my root\""),
            DeviceRef::Label("my root".into())
        );
        assert_eq!(
            DeviceRef::parse("UUID='1A2B-3C4D'"),
            DeviceRef::Uuid("1A2B-3C4D".into())
        );
        assert_eq!(
            DeviceRef::parse("PARTLABEL=root"),
            DeviceRef::PartLabel("root".into())
        );
        assert_eq!(
            DeviceRef::parse("/dev/disk/by-label/rootfs"),
            DeviceRef::Label("rootfs".into())
        );
        assert_eq!(
            DeviceRef::parse("/dev/disk/by-partuuid/1a2b3c4d-01"),
            DeviceRef::PartUuid("1a2b3c4d-01".into())
        );
        assert_eq!(DeviceRef::parse("proc"), DeviceRef::Other("proc".into()));
        assert!(!DeviceRef::parse("tmpfs").is_block_device());
    }

    #[test]
    fn kernel_device_names_give_partition_numbers() {
        for (path, want) in [
            ("/dev/mmcblk0p2", Some(2)),
            ("/dev/mmcblk0p12", Some(12)),
            ("/dev/nvme0n1p1", Some(1)),
            ("/dev/sda2", Some(2)),
            ("/dev/vdb1", Some(1)),
            ("/dev/mmcblk0", None),
            ("/dev/nvme0n1", None),
            ("/dev/loop0", None),
            ("/dev/sda", None),
        ] {
            assert_eq!(node_partition(path), want, "{path}");
        }
    }

    #[test]
    fn names_resolve_against_the_disk() {
        let p = parts();
        let r = |s: &str| resolve(&DeviceRef::parse(s), &p);
        assert_eq!(r("PARTUUID=1A2B3C4D-02"), Resolved::Partition(2));
        assert_eq!(r("PARTUUID=1a2b3c4d-03"), Resolved::Missing);
        assert_eq!(r("LABEL=bootfs"), Resolved::Partition(1));
        assert_eq!(r("LABEL=BOOTFS"), Resolved::Missing);
        assert_eq!(r("UUID=1a2b-3c4d"), Resolved::Partition(1));
        assert_eq!(
            r("UUID=0B0E0E0F-1A2B-4C3D-8E4F-5A6B7C8D9E0F"),
            Resolved::Partition(2)
        );
        assert_eq!(r("PARTLABEL=root"), Resolved::Partition(2));
        assert_eq!(r("/dev/mmcblk0p2"), Resolved::Partition(2));
        assert_eq!(r("/dev/mmcblk0p3"), Resolved::Missing);
        assert_eq!(r("proc"), Resolved::NotADevice);
    }

    #[test]
    fn a_name_means_one_partition_by_one_rule() {
        let [boot, root] = <[PartInfo; 2]>::try_from(parts()).unwrap();
        let names = |s: &str, p: &PartInfo| DeviceRef::parse(s).names(p);
        assert!(names("PARTUUID=1A2B3C4D-01", &boot));
        assert!(!names("PARTUUID=1a2b3c4d-01", &root));
        assert!(names("/dev/disk/by-uuid/1a2b-3c4d", &boot));
        assert!(names("LABEL=\"rootfs\"", &root));
        assert!(!names("LABEL=ROOTFS", &root));
        assert!(names("/dev/sda2", &root));
        assert!(!names("/dev/mmcblk0", &boot));
        // A partition without a GPT name is never named by `PARTLABEL=`.
        assert!(!names("PARTLABEL=", &boot));
        assert!(!names("tmpfs", &boot));
    }
}
