//! Read → write → read is the identity for ext4: an image made by `mke2fs -d` read through
//! our reader, written by our writer and read again gives the same nodes and contents; and
//! writing what was read back gives the same bytes again.

#![allow(clippy::disallowed_methods)]

use std::io::Read;

use w4b::formats::ext4::write::{write_ext4, Ext4Options, Size};
use w4b::formats::ext4::Ext4;
use w4b::formats::fs::{Contents, Node, NodeKind};

/// Nodes with contents replaced by their BLAKE3, for comparing two filesystems.
fn comparable(nodes: &[Node], contents: &dyn Contents) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n.path != "/lost+found")
        .map(|n| {
            let kind = match &n.kind {
                NodeKind::File { size, content } => {
                    let mut bytes = Vec::new();
                    contents.open(content).unwrap().read_to_end(&mut bytes).unwrap();
                    assert_eq!(bytes.len() as u64, *size);
                    format!("file {}", blake3::hash(&bytes).to_hex())
                }
                other => format!("{other:?}"),
            };
            format!(
                "{} {kind} {:o} {}:{} {} {:?}",
                n.path, n.mode, n.uid, n.gid, n.mtime, n.xattrs
            )
        })
        .collect()
}

#[test]
fn ext4_read_write_read_is_the_identity() {
    if !crate::kernel::is_root() {
        crate::oracle::unavailable(
            "ext4_read_write_read_is_the_identity: the source tree has device nodes (root)",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    crate::kernel::rootfs_like_source(&src);
    let img1 = tmp.path().join("mke2fs.img");
    let st = std::process::Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(&src)
        .arg(&img1)
        .arg("32M")
        .status()
        .unwrap();
    assert!(st.success());

    let len1 = std::fs::metadata(&img1).unwrap().len();
    let fs1 = Ext4::open(std::fs::File::open(&img1).unwrap(), 0, len1).unwrap();
    let nodes1 = fs1.nodes().unwrap();
    let opts = Ext4Options::new(Size::Fixed(48 << 20), [1; 16], [2; 16], 1_700_000_000);
    let img2 = tmp.path().join("ours.img");
    write_ext4(&mut std::fs::File::create(&img2).unwrap(), &nodes1, &fs1, &opts).unwrap();

    let len2 = std::fs::metadata(&img2).unwrap().len();
    let fs2 = Ext4::open(std::fs::File::open(&img2).unwrap(), 0, len2).unwrap();
    let nodes2 = fs2.nodes().unwrap();
    assert_eq!(comparable(&nodes2, &fs2), comparable(&nodes1, &fs1));

    // Writing what we read back gives the very same bytes.
    let img3 = tmp.path().join("again.img");
    write_ext4(&mut std::fs::File::create(&img3).unwrap(), &nodes2, &fs2, &opts).unwrap();
    assert!(
        std::fs::read(&img2).unwrap() == std::fs::read(&img3).unwrap(),
        "rewrite differs"
    );
}
