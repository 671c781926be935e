//! Stable placement (`formats::placement`): bins of free runs and items built from the
//! input, placed twice (as given and in reverse order).
//!
//! Errors are fine; what must hold otherwise: the same placements for both orders, every
//! item inside a free run of its bin, no two items overlapping, each whole-bin item alone in
//! its bin when it was placed, and for unit-size items `NoSpace` exactly when there are
//! more items than free units.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use w4b::formats::placement::{place, Bins, Item, PlaceError, Placement, Run};

/// Few enough bins and items that one input places in well under a millisecond.
const MAX_BINS: usize = 64;
const MAX_ITEMS: usize = 512;

#[derive(Debug)]
struct Input {
    bins: Bins,
    items: Vec<Item>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        // Runs laid out in one address space: a gap (fixed metadata), then a run, per step.
        let nbins = u.int_in_range(0..=MAX_BINS)?;
        let mut at = 0u64;
        let mut runs = Vec::with_capacity(nbins);
        for _ in 0..nbins {
            let count = u.int_in_range(0..=3)?;
            let mut bin = Vec::with_capacity(count);
            for _ in 0..count {
                at += u64::from(u.int_in_range(0u8..=8)?);
                let len = u64::from(u.int_in_range(0u16..=300)?);
                bin.push(Run { start: at, len });
                at += len;
            }
            runs.push(bin);
        }
        // Unit-size items only, one input in four: the exact `NoSpace` rule applies.
        let unit = u.ratio(1u8, 4u8)?;
        let nitems = u.int_in_range(0..=MAX_ITEMS)?;
        let mut items = Vec::with_capacity(nitems);
        for i in 0..nitems {
            let whole_bin = !unit && u.ratio(1u8, 16u8)?;
            let units = match (unit, whole_bin) {
                (true, _) => 1,
                (false, true) => u64::from(u.int_in_range(1u16..=300)?),
                (false, false) => u64::from(u.int_in_range(1u8..=u8::MAX)?),
            };
            // A few duplicate keys and empty items reach the error paths.
            let key = if u.ratio(1u8, 64u8)? {
                b"dup".to_vec()
            } else {
                format!("f{i}").into_bytes()
            };
            let units = if u.ratio(1u8, 128u8)? { 0 } else { units };
            items.push(Item {
                key,
                home: u.arbitrary()?,
                units,
                whole_bin,
            });
        }
        Ok(Input {
            bins: Bins { runs },
            items,
        })
    }
}

fuzz_target!(|input: Input| {
    let Input { bins, items } = input;
    let first = place(&bins, &items);
    let reversed: Vec<Item> = items.iter().rev().cloned().collect();
    let second = place(&bins, &reversed);
    let placed = match (first, second) {
        (Ok(a), Ok(b)) => {
            let by_key = |items: &[Item], p: &[Placement]| -> BTreeMap<Vec<u8>, Placement> {
                items.iter().map(|i| i.key.clone()).zip(p.iter().copied()).collect()
            };
            assert_eq!(by_key(&items, &a), by_key(&reversed, &b), "order changed the result");
            a
        }
        (Err(a), Err(b)) => {
            let _ = a.to_string();
            if let PlaceError::NoSpace { .. } = a {
                assert!(matches!(b, PlaceError::NoSpace { .. }), "{a:?} vs {b:?}");
            }
            if items.iter().all(|i| i.units == 1) && matches!(a, PlaceError::NoSpace { .. }) {
                assert!(items.len() as u64 > bins.free(), "unit items fit but: {a}");
            }
            return;
        }
        (a, b) => panic!("one order placed, the other did not: {a:?} vs {b:?}"),
    };
    if items.iter().all(|i| i.units == 1) {
        assert!(items.len() as u64 <= bins.free());
    }
    let mut spans = Vec::with_capacity(items.len());
    for (item, p) in items.iter().zip(&placed) {
        let end = p.start + item.units;
        assert!(
            bins.runs[p.bin]
                .iter()
                .any(|r| r.start <= p.start && end <= r.start + r.len),
            "{item:?} at {p:?} is outside the free runs of its bin"
        );
        spans.push((p.start, end, p.bin, item.whole_bin));
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "{:?} overlaps {:?}", w[0], w[1]);
    }
    // Whole-bin items are placed before all others, so "first in its bin" means that no
    // other whole-bin item shares it.
    let mut wholes: BTreeMap<usize, usize> = BTreeMap::new();
    for (item, p) in items.iter().zip(&placed) {
        if item.whole_bin {
            *wholes.entry(p.bin).or_default() += 1;
        }
    }
    assert!(wholes.values().all(|&n| n == 1), "two whole-bin items share a bin");
});
