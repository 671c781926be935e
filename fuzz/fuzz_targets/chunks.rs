//! The chunk index decoder (`w4b_cache::ChunkIndex`): indexes come from a shared remote
//! directory, so their bytes are untrusted. Errors are fine, panics are bugs, and whatever
//! decodes must re-encode to exactly the input (the format is canonical: one output, one
//! index name) and answer `locate` consistently with its entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use w4b_cache::ChunkIndex;

fuzz_target!(|data: &[u8]| {
    let idx = match ChunkIndex::decode(data) {
        Ok(idx) => idx,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(idx.encode(), data, "a decoded index re-encodes to its bytes");
    let total = idx.total_len();
    let starts = idx.starts();
    for probe in [0, total / 3, total / 2, total.saturating_sub(1), total] {
        match idx.locate(probe) {
            Some((i, within)) => {
                assert!(probe < total);
                assert_eq!(starts[i] + within, probe);
                assert!(within < u64::from(idx.chunks[i].len));
            }
            None => assert!(probe >= total),
        }
    }
    let _ = idx.name();
});
