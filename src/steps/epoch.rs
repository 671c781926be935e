//! The epoch — the only time a build sees (every mtime, superblock time and the shadow
//! file's last-change day) — and `base-epoch`, which reads it from a base image's bytes.
//!
//! An image's epoch is known when the graph is planned when the image (or `w4b.yaml`,
//! `W4B_EPOCH`, `--set`) gives one, or when its base declares a release date. A base with
//! neither still has a time of its own: the newest modification time in its root
//! filesystem. `base-epoch` reads it from `unpack`'s root tree and stores it as a small
//! output, and every step that needs the epoch takes that output as an upstream input
//! ([`Epoch::FromBase`]). The graph stays complete at plan time (nothing is downloaded to
//! plan), the value is a pure function of the base's bytes, and `why` names the base when
//! it changes. Never the clock.
//!
//! An epoch must be a time the filesystems written can hold ([`EpochRange`]): ext4's inode
//! times end in 2446 and FAT's directory entries hold 1980 to 2107, and the writers would
//! otherwise wrap (ext4) or clamp (FAT) it without a word. The compiler checks a planned
//! epoch; `base-epoch` checks the one it reads.

#![forbid(unsafe_code)]

use std::sync::Arc;

use w4b_graph::{Component, ComponentKind, Outputs, PlanContext, RunContext, Step, StepError};

use super::tree_error;
use crate::store::AppStore;
use crate::tree::{Blobs, Tree};

/// Where a step's epoch comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Epoch {
    /// Known when the graph is planned; `location` says where it was written (or the
    /// base's release date it was taken from).
    Fixed { seconds: i64, location: Option<String> },
    /// The output `epoch` of upstream `input`, a [`BaseEpochStep`] named `step`.
    FromBase { input: usize, step: String },
}

impl Epoch {
    /// A planned epoch without a recorded location (tests, tools).
    pub fn fixed(seconds: i64) -> Epoch {
        Epoch::Fixed {
            seconds,
            location: None,
        }
    }

    /// The epoch's key component. A base's epoch is keyed through the upstream output
    /// that holds it; the component only says where it is read from.
    pub fn component(&self) -> Component {
        match self {
            Epoch::Fixed { seconds, location } => {
                Component::new(ComponentKind::Epoch, "epoch", seconds.to_string()).at(location.clone())
            }
            Epoch::FromBase { step, .. } => {
                Component::new(ComponentKind::Epoch, "epoch", format!("from {step}"))
            }
        }
    }

    /// The upstream input holding the epoch, if it is read from a base.
    pub fn input(&self) -> Option<usize> {
        match self {
            Epoch::Fixed { .. } => None,
            Epoch::FromBase { input, .. } => Some(*input),
        }
    }

    /// The epoch in seconds, reading a base's from its upstream output.
    pub fn resolve(&self, blobs: &dyn Blobs, cx: &RunContext<'_>) -> Result<i64, StepError> {
        match self {
            Epoch::Fixed { seconds, .. } => Ok(*seconds),
            Epoch::FromBase { input, step } => {
                let out = cx.input(*input, "epoch")?;
                read(blobs, &out).map_err(|e| StepError::context(format_args!("`{step}`"), &e))
            }
        }
    }
}

/// How definitions (node identities) spell the epoch: the seconds, or where they are read.
impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Epoch::Fixed { seconds, .. } => write!(f, "{seconds}"),
            Epoch::FromBase { step, .. } => write!(f, "from {step}"),
        }
    }
}

/// The times an epoch may take: what every filesystem an image is written to can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochRange {
    /// ext4, as w4b writes it (256-byte inodes, so every time has two extra epoch bits):
    /// 1970-01-01T00:00:00Z to 2446-05-10T22:38:55Z. The signed base field reaches back
    /// to 1901, but the superblock's times are unsigned. Every image's epoch is here.
    Ext4,
    /// FAT directory entries: 1980-01-01T00:00:00Z to 2107-12-31T23:59:58Z (fatgen103
    /// "Date and Time Formats"). For a disk image, whose boot partition is FAT, and for
    /// an epoch read from a base, which is such a disk image.
    Fat,
}

impl EpochRange {
    /// The first and last second the range holds.
    pub fn bounds(self) -> (i64, i64) {
        match self {
            // 2^34 - 2^31 - 1: the largest time the base field and two epoch bits encode.
            EpochRange::Ext4 => (0, 15_032_385_535),
            EpochRange::Fat => (315_532_800, 4_354_819_198),
        }
    }

    pub fn contains(self, seconds: i64) -> bool {
        let (first, last) = self.bounds();
        (first..=last).contains(&seconds)
    }

    /// `between 1980-01-01T00:00:00Z and … (315532800..=4354819198), the range of FAT's
    /// timestamps`.
    pub fn describe(self) -> String {
        let (first, last) = self.bounds();
        let (from, to, what) = match self {
            EpochRange::Ext4 => ("1970-01-01T00:00:00Z", "2446-05-10T22:38:55Z", "ext4's"),
            EpochRange::Fat => ("1980-01-01T00:00:00Z", "2107-12-31T23:59:58Z", "FAT's"),
        };
        format!("between {from} and {to} ({first}..={last} seconds), the range of {what} timestamps")
    }
}

/// The epoch stored in a `base-epoch` step's output `out`.
pub fn read(blobs: &dyn Blobs, out: &w4b_cache::OutputRef) -> Result<i64, StepError> {
    let bytes = blobs.get(&out.digest).map_err(tree_error)?;
    parse(&bytes).ok_or_else(|| StepError::Failed {
        message: format!("the output holds no epoch: {:?}", String::from_utf8_lossy(&bytes)),
        help: Some(
            "the blob is intact but is not an epoch: this is a bug in w4b; `w4b cache gc` removes it".into(),
        ),
    })
}

/// The output's bytes: decimal seconds and a newline.
fn encode(seconds: i64) -> Vec<u8> {
    format!("{seconds}\n").into_bytes()
}

fn parse(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?.parse().ok()
}

/// Why a base's epoch could not be read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum BaseEpochError {
    #[error("`{base}` has no modification time after 1970 in its root filesystem, so it implies no epoch")]
    #[diagnostic(
        code(w4b::epoch::base_has_none),
        help("give the image an `epoch:` (seconds since 1970), or the base its release `date:`")
    )]
    NoTime { base: String },

    #[error("`{base}`'s newest modification time, {seconds}, is out of range: an epoch must lie {range}")]
    #[diagnostic(
        code(w4b::epoch::base_out_of_range),
        help("a file in the base has a time its filesystems cannot hold, so the base implies no epoch: give the image an `epoch:` (seconds since 1970), or the base its release `date:`")
    )]
    OutOfRange {
        base: String,
        seconds: i64,
        range: String,
    },
}

/// `base-epoch`: the newest modification time in a base image's root filesystem.
/// Input 0 is `unpack` (its `rootfs` tree); keyed by nothing else.
pub struct BaseEpochStep {
    pub store: Arc<AppStore>,
    /// The base's label, for messages.
    pub base: String,
}

impl Step for BaseEpochStep {
    fn kind(&self) -> &'static str {
        "base-epoch"
    }
    /// 2: the epoch read is range-checked, so an out-of-range one recorded by version 1
    /// is not reused.
    fn version(&self) -> u32 {
        2
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(vec![Component::param("read", "newest mtime in rootfs")])
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let rootfs = cx.input(0, "rootfs")?;
        let blobs: &dyn Blobs = self.store.as_ref();
        let newest = newest_mtime(blobs, rootfs.digest, cx)?;
        let seconds = newest.filter(|s| *s > 0).ok_or_else(|| {
            StepError::diag(BaseEpochError::NoTime {
                base: self.base.clone(),
            })
        })?;
        // A base is a disk image with a FAT boot partition, so its times must fit FAT
        // (which also keeps them inside ext4's range).
        if !EpochRange::Fat.contains(seconds) {
            return Err(StepError::diag(BaseEpochError::OutOfRange {
                base: self.base.clone(),
                seconds,
                range: EpochRange::Fat.describe(),
            }));
        }
        let bytes = encode(seconds);
        let digest = blobs.put(&bytes).map_err(tree_error)?;
        let mut outputs = Outputs::new();
        outputs.insert(
            "epoch".into(),
            w4b_cache::OutputRef {
                digest,
                size: bytes.len() as u64,
            },
        );
        Ok(outputs)
    }
}

/// The largest mtime of any entry of the tree `root`.
fn newest_mtime(
    blobs: &dyn Blobs,
    root: w4b_cache::Digest,
    cx: &RunContext<'_>,
) -> Result<Option<i64>, StepError> {
    let mut newest = None;
    for (n, item) in Tree::open(blobs, root).walk().enumerate() {
        if n % 4096 == 0 {
            cx.check_cancel()?;
        }
        let (_, entry) = item.map_err(tree_error)?;
        newest = newest.max(Some(entry.mtime));
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;

    use w4b_graph::InputTrees;

    use super::*;
    use crate::tree::layer::{apply, Changeset, Op};
    use crate::tree::{Entry, TreePath};

    fn run(store: &Arc<AppStore>, inputs: &[Outputs]) -> Result<Outputs, StepError> {
        let cancel = AtomicBool::new(false);
        let trees = InputTrees::default();
        let cx = RunContext {
            name: "//bases:b#epoch",
            inputs,
            cache: store.as_ref(),
            cancel: &cancel,
            progress: &|_, _| {},
            trees: &trees,
            note: &|_| {},
        };
        BaseEpochStep {
            store: store.clone(),
            base: "//bases:b".into(),
        }
        .run(&cx)
    }

    fn tree_with(store: &AppStore, mtimes: &[(&str, i64)]) -> w4b_cache::Digest {
        let blobs: &dyn Blobs = store;
        let empty = Tree::empty(blobs).unwrap().root();
        let ops = mtimes
            .iter()
            .map(|(p, t)| {
                let mut e = Entry::default_dir();
                e.mtime = *t;
                Op::Put {
                    path: TreePath::parse(p).unwrap(),
                    entry: e,
                }
            })
            .collect();
        apply(blobs, empty, &[Changeset::new(ops)], 0).unwrap()
    }

    /// `unpack`'s outputs as far as `base-epoch` reads them.
    fn unpacked(rootfs: w4b_cache::Digest) -> Outputs {
        let mut out = Outputs::new();
        out.insert(
            "rootfs".into(),
            w4b_cache::OutputRef {
                digest: rootfs,
                size: 0,
            },
        );
        out
    }

    #[test]
    fn reads_the_newest_mtime_and_a_step_resolves_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
        let root = tree_with(
            &store,
            &[("/etc", 1_700_000_000), ("/usr", 1_731_974_399), ("/var", 5)],
        );
        let out = run(&store, &[unpacked(root)]).unwrap();
        let bytes = Blobs::get(store.as_ref(), &out["epoch"].digest).unwrap();
        assert_eq!(bytes, b"1731974399\n");

        let cancel = AtomicBool::new(false);
        let trees = InputTrees::default();
        let inputs = [BTreeMap::new(), out];
        let cx = RunContext {
            name: "//images:e#rootfs",
            inputs: &inputs,
            cache: store.as_ref(),
            cancel: &cancel,
            progress: &|_, _| {},
            trees: &trees,
            note: &|_| {},
        };
        let e = Epoch::FromBase {
            input: 1,
            step: "//bases:b#epoch".into(),
        };
        assert_eq!(e.resolve(store.as_ref(), &cx).unwrap(), 1_731_974_399);
        assert_eq!(e.input(), Some(1));
        assert_eq!(e.component().value, "from //bases:b#epoch");
        assert_eq!(Epoch::fixed(7).resolve(store.as_ref(), &cx).unwrap(), 7);
        assert_eq!(Epoch::fixed(7).component().value, "7");
    }

    #[test]
    fn a_base_without_times_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
        let root = tree_with(&store, &[("/etc", 0)]);
        let err = run(&store, &[unpacked(root)]).unwrap_err();
        assert!(
            err.to_string().contains("`//bases:b` has no modification time"),
            "{err}"
        );
    }

    #[test]
    fn a_base_time_past_fats_range_is_an_error_naming_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
        let mut unpack = Outputs::new();
        // 2200-01-01: ext4 holds it, FAT does not; the last FAT time is fine.
        for (newest, ok) in [
            (7_258_118_400, false),
            (4_354_819_198, true),
            (4_354_819_199, false),
        ] {
            let root = tree_with(&store, &[("/etc", 1_700_000_000), ("/usr", newest)]);
            unpack.insert(
                "rootfs".into(),
                w4b_cache::OutputRef {
                    digest: root,
                    size: 0,
                },
            );
            let result = run(&store, std::slice::from_ref(&unpack));
            if ok {
                assert!(result.is_ok(), "{newest}: {:?}", result.err());
                continue;
            }
            let err = result.unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "`//bases:b`'s newest modification time, {newest}, is out of range: an epoch must lie \
                     between 1980-01-01T00:00:00Z and 2107-12-31T23:59:58Z (315532800..=4354819198 seconds), \
                     the range of FAT's timestamps"
                )
            );
        }
    }

    #[test]
    fn the_ranges_are_the_filesystems_limits() {
        // ext4: the largest time whose two epoch bits and signed base field encode it.
        let (_, ext4_last) = EpochRange::Ext4.bounds();
        assert_eq!(ext4_last, (1 << 34) - (1 << 31) - 1);
        assert_eq!(
            crate::formats::ext4::inode::Timestamp {
                secs: ext4_last,
                nanos: 0
            }
            .encode()
            .1 & 3,
            3
        );
        // FAT: years 1980 to 2107 (7 bits), even seconds; the dates are those days' starts.
        let (fat_first, fat_last) = EpochRange::Fat.bounds();
        assert_eq!(
            fat_first,
            crate::defs::Date {
                year: 1980,
                month: 1,
                day: 1
            }
            .epoch()
        );
        assert_eq!(
            fat_last,
            crate::defs::Date {
                year: 2108,
                month: 1,
                day: 1
            }
            .epoch()
                - 2
        );
        assert!(EpochRange::Ext4.contains(0) && !EpochRange::Ext4.contains(ext4_last + 1));
        assert!(!EpochRange::Fat.contains(fat_first - 1) && EpochRange::Fat.contains(fat_last));
    }

    #[test]
    fn the_output_format_round_trips() {
        for s in [1, 1_731_974_400, i64::MAX] {
            assert_eq!(parse(&encode(s)), Some(s));
        }
        assert_eq!(parse(b"12"), None);
        assert_eq!(parse(b"x\n"), None);
    }
}
