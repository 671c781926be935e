//! The readers of what a repository serves, on the same input:
//!
//! - `Release::parse` (the signed payload of `InRelease`: fields, the `SHA256:` list,
//!   paths, sizes, `Valid-Until`), then the index lookup for a Packages index and the
//!   suite and validity checks;
//! - `verify_index` of the input as a `Packages` index, plain, xz and gzip, with the
//!   input's own size and sha256 (so the hash chain passes and the decoders and limits
//!   are what is tested), and the result read as a `Packages` index and as a dpkg
//!   `status`;
//! - the resolver over what was read: the first few package names requested, with the
//!   installed packages as the base. Resolution may fail; it must not panic, and what it
//!   picks must come from the universe, each name once.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};
use w4b::apt::release::{verify_index, Compression, IndexRef, Release};
use w4b::apt::resolve::{read_status, resolve, Candidate, Options, Request};

/// The most bytes an index may decompress to.
const INDEX_LIMIT: u64 = 64 << 20;
/// Packages requested from one input.
const REQUESTS: usize = 8;

fn release(data: &[u8]) {
    let Ok(r) = Release::parse(data) else {
        return;
    };
    let _ = r.index("main/binary-arm64/Packages").map(|i| i.by_hash_path());
    let _ = r.check_suite("bookworm");
    let _ = r.check_valid_at(1_700_000_000);
}

fn index(data: &[u8]) {
    let sha256: [u8; 32] = Sha256::digest(data).into();
    for compression in [Compression::None, Compression::Xz, Compression::Gzip] {
        let r = IndexRef {
            path: format!("main/binary-arm64/Packages{}", compression.suffix()),
            size: data.len() as u64,
            sha256,
            compression,
            uncompressed: None,
        };
        let Ok(bytes) = verify_index(data, &r, INDEX_LIMIT) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let universe = Candidate::read_index(&text, 0).unwrap_or_default();
        let base = read_status(&text).unwrap_or_default();
        let requests: Vec<Request> = universe
            .iter()
            .take(REQUESTS)
            .filter_map(|c| Request::parse(&c.name).ok())
            .collect();
        let options = Options::new("arm64");
        if let Ok(res) = resolve(&universe, &base, &requests, &options) {
            let mut names = BTreeSet::new();
            for chosen in &res.install {
                assert!(
                    names.insert(chosen.candidate.name.as_str()),
                    "`{}` chosen twice",
                    chosen.candidate.name
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    release(data);
    index(data);
});
