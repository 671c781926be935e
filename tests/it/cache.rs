//! `w4b cache stats|gc|verify` on a real cache.

use crate::fixture::demo;

#[test]
fn stats_gc_verify() {
    let env = demo();
    assert!(env.build(&["//images:demo"]).ok());
    let stats = env.run(&["cache", "stats"]);
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(text.contains("records"), "{text}");
    let verify = env.run(&["cache", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // GC with generous limits keeps what the last build needs: the rebuild is all cached.
    let gc = env.run(&["cache", "gc", "--max-age", "30d"]);
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    let b = env.build(&["//images:demo"]);
    assert_eq!(b.ran(), Vec::<String>::new());
}

#[test]
fn verify_reports_corruption() {
    let env = demo();
    assert!(env.build(&["//images:demo"]).ok());
    let good = env.read("out/demo.tar.zst");
    let digest = blake3::hash(&good).to_hex().to_string();
    let blob = env.cache.join("v1/blobs").join(&digest[..2]).join(&digest);
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let verify = env.run(&["cache", "verify"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("corrupt"));
}
