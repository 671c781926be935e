//! The partition table as the `table` output of `unpack` holds it: the JSON the disk
//! pipeline's writers read to rebuild a disk with the base's identity. `unpack` writes it;
//! `graft` and `split` read the boot mount point from it, `mkfs-fat` and `mkfs-ext4` the
//! partition sizes and filesystem identities, `disk` the table itself.
//!
//! It is a cached output, so its bytes are a format: fields are declared in alphabetical
//! order (here and in the nested types), which makes serde's compact serialisation
//! canonical (sorted keys, no whitespace) without a second pass, and a test pins the
//! bytes of a sample table. Schema [`TABLE_SCHEMA`]; readers reject any other, and a change
//! of shape bumps both the schema and `unpack`'s version.
//!
//! Here are the types, parsing ([`TableJson::parse`], [`load_table`] from the store), the
//! conversion from a partition table read by [`crate::formats::partition`]
//! ([`TableJson::from_table`]) and the UUID spellings the identities use.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use w4b_cache::OutputRef;
use w4b_graph::StepError;

use super::tree_error;
use crate::formats::partition::{PartitionTable, TableKind};
use crate::image::{FsKind, FsView};
use crate::store::AppStore;
use crate::tree::Blobs;

/// Version of the `table` JSON; bump it (and the step version) when its shape changes.
pub const TABLE_SCHEMA: u32 = 2;

/// The partition table as the `table` output holds it, with what the writers need to
/// rebuild the disk with the base's identity (IDs, labels, sizes, geometry) and where the
/// boot partition is mounted. Fields are declared in alphabetical order (here and in the
/// nested types) so the compact serialisation is canonical (sorted keys, no whitespace)
/// without a second pass. Schema [`TABLE_SCHEMA`]; downstream steps reject other schemas.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableJson {
    /// Bytes 0..440 of LBA 0 (MBR boot code) as hex, only when not all zeros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_code: Option<String>,
    /// Where the root filesystem mounts the FAT partition, from the `/etc/fstab` line
    /// whose device names it (`/boot/firmware` on bookworm, `/boot` on bullseye);
    /// `/boot/firmware` when no line does. See [`crate::validate::fstab::mount_point`].
    pub boot_mount: String,
    /// The MBR disk signature as 8 lowercase hex digits, or the GPT disk GUID.
    pub disk_id: String,
    /// Bytes of the whole (decompressed) image.
    pub disk_size: u64,
    /// GPT header fields; absent for MBR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpt: Option<GptJson>,
    /// `mbr` or `gpt`.
    pub kind: String,
    pub partitions: Vec<PartitionJson>,
    pub schema: u32,
    pub sector_size: u32,
}

/// The GPT header fields a rebuilt table keeps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GptJson {
    pub entry_count: u32,
    pub first_usable_lba: u64,
    /// Absent when it is the standard value for the disk size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_usable_lba: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionJson {
    /// GPT attributes other than bit 2 (that is `bootable`); absent when 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<u64>,
    pub bootable: bool,
    /// The ext4 filesystem's identity, when the partition holds the root filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext4: Option<Ext4Json>,
    /// The FAT filesystem's identity, when the partition holds the boot filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fat: Option<FatJson>,
    /// What the partition holds, by its magic: `ext4`, `fat`, `unknown`.
    pub filesystem: FsKind,
    pub index: u32,
    /// GPT partition name; absent for MBR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What Linux calls `PARTUUID` (`1a2b3c4d-02`, or the GPT partition GUID).
    pub partuuid: Option<String>,
    /// Sectors of [`TableJson::sector_size`] bytes.
    pub size: u64,
    /// First sector.
    pub start: u64,
    /// MBR type byte in hex (`c`, `83`) or GPT type GUID, as `sfdisk` spells them.
    #[serde(rename = "type")]
    pub type_id: String,
}

/// What `mkfs-fat` keeps of the base's boot filesystem (fatgen103 field names).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FatJson {
    /// Bytes per cluster (`BPB_BytsPerSec` × `BPB_SecPerClus`).
    pub cluster_size: u32,
    /// `FAT12`, `FAT16` or `FAT32` (w4b writes FAT32 and keeps the cluster size only
    /// from a FAT32 base).
    pub fat_type: String,
    /// `BPB_HiddSec`.
    pub hidden_sectors: u32,
    /// The volume label, trailing spaces removed; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `BS_OEMName`, trailing spaces removed.
    pub oem_name: String,
    /// `BS_VolID` as 8 lowercase hex digits; absent when the boot sector has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
}

/// What `mkfs-ext4` keeps of the base's root filesystem (kernel field names).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ext4Json {
    pub block_size: u64,
    /// `s_blocks_count`.
    pub blocks: u64,
    /// `s_hash_seed` as a UUID (`mke2fs -E hash_seed=`).
    pub hash_seed: String,
    /// `s_inodes_count`.
    pub inode_count: u64,
    /// Bytes of filesystem per inode (`mke2fs -i`): the size divided by the inode count,
    /// rounded down, so that the same size gives at least as many inodes.
    pub inode_ratio: u32,
    /// The journal's size in blocks; absent without `has_journal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_blocks: Option<u32>,
    /// `s_volume_name`.
    pub label: String,
    /// `s_r_blocks_count`.
    pub reserved_blocks: u64,
    /// `s_r_blocks_count` as the nearest whole percentage of `s_blocks_count`.
    pub reserved_percent: u8,
    /// `s_uuid` (`8-4-4-4-12`).
    pub uuid: String,
}

impl TableJson {
    /// Parses a `table` blob, rejecting other schemas.
    pub fn parse(bytes: &[u8]) -> Result<TableJson, String> {
        let t: TableJson =
            serde_json::from_slice(bytes).map_err(|e| format!("it is not a partition table: {e}"))?;
        if t.schema != TABLE_SCHEMA {
            return Err(format!(
                "its schema is {}, this w4b reads schema {TABLE_SCHEMA}",
                t.schema
            ));
        }
        Ok(t)
    }

    /// The one partition holding `kind`.
    pub fn partition_of(&self, kind: FsKind) -> Option<&PartitionJson> {
        self.partitions.iter().find(|p| p.filesystem == kind)
    }
}

/// Why a `table` blob could not be used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("the partition table `{digest}` from `unpack` cannot be read: {reason}")]
#[diagnostic(
    code(w4b::unpack::table),
    help("the table was written by another w4b version; run the build again so `unpack` rewrites it")
)]
pub struct TableError {
    pub digest: w4b_cache::Digest,
    pub reason: String,
}

/// Reads and parses the `table` output of `unpack`.
pub fn load_table(store: &AppStore, table: OutputRef) -> Result<TableJson, StepError> {
    let bytes = Blobs::get(store, &table.digest).map_err(tree_error)?;
    TableJson::parse(&bytes).map_err(|reason| {
        StepError::diag(TableError {
            digest: table.digest,
            reason,
        })
    })
}

/// 16 bytes as a UUID, `8-4-4-4-12` lowercase hex.
pub fn uuid_text(b: &[u8; 16]) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        hex::encode(&b[..4]),
        hex::encode(&b[4..6]),
        hex::encode(&b[6..8]),
        hex::encode(&b[8..10]),
        hex::encode(&b[10..])
    )
}

/// The 16 bytes of a UUID written as by [`uuid_text`] (dashes optional).
pub fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let v = hex::decode(hex).ok()?;
    v.try_into().ok()
}

/// Where Raspberry Pi OS (bookworm and later) mounts its boot partition.
pub const DEFAULT_BOOT_MOUNT: &str = "/boot/firmware";

impl TableJson {
    /// The canonical JSON of `table`, with the filesystem each partition was found to hold.
    /// Identities and the boot mount point are filled in by the step; here they are empty
    /// and `/boot/firmware`.
    pub fn from_table(table: &PartitionTable, filesystems: &[FsView]) -> TableJson {
        let (kind, disk_id, gpt) = match &table.kind {
            TableKind::Mbr { disk_signature } => ("mbr", format!("{disk_signature:08x}"), None),
            TableKind::Gpt {
                disk_guid,
                entry_count,
                first_usable_lba,
                last_usable_lba,
            } => (
                "gpt",
                disk_guid.to_string(),
                Some(GptJson {
                    entry_count: *entry_count,
                    first_usable_lba: *first_usable_lba,
                    last_usable_lba: *last_usable_lba,
                }),
            ),
        };
        let partitions = table
            .partitions
            .iter()
            .map(|p| PartitionJson {
                attributes: (p.attributes != 0).then_some(p.attributes),
                bootable: p.bootable,
                ext4: None,
                fat: None,
                filesystem: filesystems
                    .iter()
                    .find(|f| f.partition == Some(p.index))
                    .map_or(FsKind::Unknown, |f| f.kind),
                index: p.index,
                name: matches!(table.kind, TableKind::Gpt { .. }).then(|| p.name.clone()),
                partuuid: table.partuuid(p.index),
                size: p.size_lba,
                start: p.start_lba,
                type_id: p.partition_type.to_string(),
            })
            .collect();
        TableJson {
            boot_code: table
                .boot_code
                .iter()
                .any(|b| *b != 0)
                .then(|| hex::encode(table.boot_code)),
            boot_mount: DEFAULT_BOOT_MOUNT.to_owned(),
            disk_id,
            disk_size: 0,
            gpt,
            kind: kind.to_owned(),
            partitions,
            schema: TABLE_SCHEMA,
            sector_size: table.sector_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::gpt::{Guid, LINUX_FILESYSTEM};
    use crate::formats::partition::Partition;

    /// A table with every optional field present somewhere: a GPT header, boot code,
    /// attributes, names, both filesystem identities.
    fn sample() -> TableJson {
        TableJson {
            boot_code: Some("fa31c0".into()),
            boot_mount: DEFAULT_BOOT_MOUNT.into(),
            disk_id: "00000000-0000-0000-0000-00000000feed".into(),
            disk_size: 83_886_080,
            gpt: Some(GptJson {
                entry_count: 128,
                first_usable_lba: 34,
                last_usable_lba: Some(163_806),
            }),
            kind: "gpt".into(),
            partitions: vec![
                PartitionJson {
                    attributes: None,
                    bootable: true,
                    ext4: None,
                    fat: Some(FatJson {
                        cluster_size: 512,
                        fat_type: "FAT32".into(),
                        hidden_sectors: 8192,
                        label: Some("bootfs".into()),
                        oem_name: "MSWIN4.1".into(),
                        volume_id: Some("1234abcd".into()),
                    }),
                    filesystem: FsKind::Fat,
                    index: 1,
                    name: Some("boot".into()),
                    partuuid: Some("00000000-0000-0000-0000-00000000beef".into()),
                    size: 69_632,
                    start: 8192,
                    type_id: "c12a7328-f81f-11d2-ba4b-00a0c93ec93b".into(),
                },
                PartitionJson {
                    attributes: Some(1 << 60),
                    bootable: false,
                    ext4: Some(Ext4Json {
                        block_size: 4096,
                        blocks: 10_240,
                        hash_seed: uuid_text(&[9; 16]),
                        inode_count: 2560,
                        inode_ratio: 16_384,
                        journal_blocks: Some(1024),
                        label: "rootfs".into(),
                        reserved_blocks: 512,
                        reserved_percent: 5,
                        uuid: uuid_text(&[7; 16]),
                    }),
                    fat: None,
                    filesystem: FsKind::Ext4,
                    index: 2,
                    name: Some("root".into()),
                    partuuid: None,
                    size: 81_920,
                    start: 77_824,
                    type_id: "0fc63daf-8483-4772-8e79-3d69d8477de4".into(),
                },
            ],
            schema: TABLE_SCHEMA,
            sector_size: 512,
        }
    }

    /// The `table` output is cached: these bytes may change only with a new schema (and
    /// `unpack` version). Sorted keys, no whitespace, absent options left out.
    #[test]
    fn the_serialised_table_is_pinned() {
        const PINNED: &str = concat!(
            r#"{"boot_code":"fa31c0","boot_mount":"/boot/firmware","#,
            r#""disk_id":"00000000-0000-0000-0000-00000000feed","disk_size":83886080,"#,
            r#""gpt":{"entry_count":128,"first_usable_lba":34,"last_usable_lba":163806},"#,
            r#""kind":"gpt","partitions":["#,
            r#"{"bootable":true,"fat":{"cluster_size":512,"fat_type":"FAT32","hidden_sectors":8192,"#,
            r#""label":"bootfs","oem_name":"MSWIN4.1","volume_id":"1234abcd"},"filesystem":"fat","#,
            r#""index":1,"name":"boot","partuuid":"00000000-0000-0000-0000-00000000beef","#,
            r#""size":69632,"start":8192,"type":"c12a7328-f81f-11d2-ba4b-00a0c93ec93b"},"#,
            r#"{"attributes":1152921504606846976,"bootable":false,"ext4":{"block_size":4096,"#,
            r#""blocks":10240,"hash_seed":"09090909-0909-0909-0909-090909090909","inode_count":2560,"#,
            r#""inode_ratio":16384,"journal_blocks":1024,"label":"rootfs","reserved_blocks":512,"#,
            r#""reserved_percent":5,"uuid":"07070707-0707-0707-0707-070707070707"},"#,
            r#""filesystem":"ext4","index":2,"name":"root","partuuid":null,"size":81920,"#,
            r#""start":77824,"type":"0fc63daf-8483-4772-8e79-3d69d8477de4"}],"#,
            r#""schema":2,"sector_size":512}"#
        );
        let bytes = serde_json::to_vec(&sample()).unwrap();
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), PINNED);
        // Canonical: `Value` sorts keys, so re-serialising changes nothing.
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(serde_json::to_vec(&v).unwrap(), bytes);
        assert_eq!(TableJson::parse(&bytes).unwrap(), sample());
    }

    #[test]
    fn other_schemas_are_rejected() {
        let mut t = sample();
        t.schema = 1;
        let e = TableJson::parse(&serde_json::to_vec(&t).unwrap()).unwrap_err();
        assert_eq!(e, "its schema is 1, this w4b reads schema 2");
        assert!(TableJson::parse(b"[]")
            .unwrap_err()
            .starts_with("it is not a partition table"));
    }

    #[test]
    fn uuids_round_trip_through_their_text() {
        let b: [u8; 16] = *b"\x0b\x0e\x0e\x0f\x1a\x2b\x4c\x3d\x8e\x4f\x5a\x6b\x7c\x8d\x9e\x0f";
        let text = uuid_text(&b);
        assert_eq!(text, "0b0e0e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f");
        assert_eq!(uuid_bytes(&text), Some(b));
        assert_eq!(uuid_bytes("0b0e0e0f1a2b4c3d8e4f5a6b7c8d9e0f"), Some(b));
        assert_eq!(uuid_bytes("0b0e"), None);
    }

    #[test]
    fn gpt_tables_carry_guids_and_names() {
        let mut t = PartitionTable::new_gpt(Guid::from_u128(0xfeed));
        t.partitions.push(Partition::gpt(
            1,
            2048,
            4096,
            LINUX_FILESYSTEM,
            Guid::from_u128(0xbeef),
            "root",
        ));
        let json = serde_json::to_value(TableJson::from_table(&t, &[])).unwrap();
        assert_eq!(json["kind"], "gpt");
        assert_eq!(json["disk_id"], "00000000-0000-0000-0000-00000000feed");
        let p = &json["partitions"][0];
        assert_eq!(p["name"], "root");
        assert_eq!(p["partuuid"], "00000000-0000-0000-0000-00000000beef");
        assert_eq!(p["filesystem"], "unknown");
    }
}
