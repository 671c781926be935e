//! The checks the `mbr` and `gpt` targets share: read the table, then use everything the
//! reader returned the way `unpack`, `inspect` and `disk` do.

use std::io::{Cursor, Read};

use w4b::formats::partition::PartitionTable;

use crate::drain;

/// Reads the table of the disk `disk` (its length is the disk size) and exercises the
/// result: messages, validation, PARTUUIDs, a window onto every partition, and a write of
/// the table that must read back as the same table.
pub fn exercise(disk: &[u8]) {
    let size = disk.len() as u64;
    let read = match PartitionTable::read(&mut Cursor::new(disk), size) {
        Ok(read) => read,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for w in &read.warnings {
        let _ = w.to_string();
    }
    let table = read.table;
    for p in &table.partitions {
        let _ = table.partuuid(p.index);
        let _ = (
            p.end_lba(),
            p.byte_range(),
            p.is_extended(),
            p.partition_type.to_string(),
        );
        if let Ok(mut io) = table.open(Cursor::new(disk), p.index) {
            let _ = drain(&mut io as &mut dyn Read, 4096);
        }
    }
    if table.validate(size).is_err() {
        return;
    }
    // A table the writer accepts must survive a write and a read unchanged.
    let mut out = Cursor::new(vec![0u8; disk.len()]);
    if let Err(e) = table.write(&mut out, size) {
        panic!("a validated table could not be written: {e}");
    }
    let again = PartitionTable::read(&mut Cursor::new(out.get_ref().as_slice()), size)
        .unwrap_or_else(|e| panic!("a written table does not read back: {e}"));
    assert_eq!(again.table, table, "the table changed through a write and a read");
}
