//! The readers of user-supplied tar archives, on the same input:
//!
//! - the `extract` step (a fetched source tarball, `.tar` or compressed `.tar.gz`,
//!   `.tar.xz`, `.tar.zst` by magic), run whole against a store on a temporary
//!   directory: members, top-directory stripping, paths under the destination, the
//!   changeset and the tree of members; the changeset is then applied to an empty tree
//!   and walked, as an overlay does;
//! - `tree::import::import_tar` (ustar, pax with xattrs and ids, GNU long names, links,
//!   devices) into an in-memory store, and a walk of the tree it built.
#![no_main]

use std::cell::RefCell;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use w4b::steps::epoch::Epoch;
use w4b::steps::extract::ExtractStep;
use w4b::store::AppStore;
use w4b::tree::layer::{apply, Changeset};
use w4b::tree::{import::import_tar, walk, Blobs, MemBlobs, TreeBuilder};
use w4b_cache::OutputRef;
use w4b_graph::{InputTrees, Outputs, RunContext, Step};

/// Executions between fresh stores, so the temporary store stays small.
const STORE_ROUNDS: u32 = 20_000;
/// Tree entries walked after an import or an overlay.
const WALK: usize = 10_000;

struct Scratch {
    _dir: tempfile::TempDir,
    store: Arc<AppStore>,
    rounds: u32,
}

fn scratch() -> Scratch {
    // tmpfs when there is one: every blob put is written and synced.
    let dir = tempfile::Builder::new()
        .prefix("w4b-fuzz-tar")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary directory");
    let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).expect("a store"));
    Scratch {
        _dir: dir,
        store,
        rounds: 0,
    }
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

fn extract(store: &Arc<AppStore>, data: &[u8]) {
    let blobs: &dyn Blobs = store.as_ref();
    let digest = blobs.put(data).expect("the archive is stored");
    let mut fetched = Outputs::new();
    fetched.insert(
        "file".into(),
        OutputRef {
            digest,
            size: data.len() as u64,
        },
    );
    let step = ExtractStep {
        store: store.clone(),
        dest: "/opt/w4b/sensor-manager".into(),
        epoch: Epoch::fixed(1_700_000_000),
        source: "https://example.org/sm-1.0.tar.gz".into(),
    };
    let cancel = AtomicBool::new(false);
    let progress = |_: u64, _: Option<u64>| {};
    let trees = InputTrees::default();
    let inputs = [fetched];
    let cx = RunContext {
        name: "//fuzz:extract",
        inputs: &inputs,
        cache: store.as_ref(),
        cancel: &cancel,
        progress: &progress,
        trees: &trees,
        note: &|_| {},
    };
    let out = match step.run(&cx) {
        Ok(out) => out,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let changeset = Changeset::load(blobs, &out["changeset"].digest).expect("the changeset reads back");
    let empty = TreeBuilder::new().finish(blobs).expect("an empty tree");
    if let Ok(root) = apply(blobs, empty, &[changeset], 1_700_000_000) {
        for item in walk(blobs, root).take(WALK) {
            if item.is_err() {
                break;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    SCRATCH.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|s| s.rounds >= STORE_ROUNDS) {
            *slot = None;
            *slot = Some(scratch());
        }
        let s = slot.as_mut().expect("just set");
        s.rounds += 1;
        extract(&s.store, data);
    });

    let blobs = MemBlobs::new();
    match import_tar(&blobs, data) {
        Ok(root) => {
            for item in walk(&blobs, root).take(WALK) {
                if let Err(e) = item {
                    panic!("a tree import_tar built does not walk: {e}");
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
