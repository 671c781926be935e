//! The Raspberry-Pi-OS-like test base (`tests/support/make-test-base.sh`), built once per
//! test process with the standard tools, raw and compressed (xz, zstd).

#![allow(clippy::disallowed_methods)] // Tests run the image tools and read `CI`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Images {
    pub raw: PathBuf,
    pub xz: PathBuf,
    pub zst: PathBuf,
}

/// Runs `sh -c cmd` and asserts success.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The test base, built once per test process into Cargo's per-target temp directory, or
/// `None` when the tools are missing (the oracle policy: a failure under CI, a visible
/// skip elsewhere).
pub fn images() -> Option<&'static Images> {
    crate::env::normal_umask();
    static IMAGES: OnceLock<Option<Images>> = OnceLock::new();
    IMAGES
        .get_or_init(|| {
            let tools = ["sfdisk", "mkfs.vfat", "mcopy", "mke2fs", "debugfs", "xz", "zstd"];
            if !crate::oracle::have_all(&tools) {
                return None;
            }
            let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
            // One directory per test process; those of finished runs are removed.
            for old in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
                let name = old.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("test-base-") {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(old.path());
                    }
                }
            }
            let dir = tmp.join(format!("test-base-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let raw = dir.join("base.img");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/make-test-base.sh");
            let st = Command::new("bash").arg(&script).arg(&raw).status().unwrap();
            assert!(st.success(), "make-test-base.sh failed");
            let xz = dir.join("base.img.xz");
            let zst = dir.join("base.img.zst");
            sh(&format!("xz -T1 -1 -c '{}' > '{}'", raw.display(), xz.display()));
            sh(&format!("zstd -q -f -o '{}' '{}'", zst.display(), raw.display()));
            Some(Images { raw, xz, zst })
        })
        .as_ref()
}

/// A workspace holding the repository's boards and `//bases:test`: the test base served by
/// `server` over HTTP, pinned by its sha256 like a real base. `None` when the tools are
/// missing (outside CI).
pub fn workspace_with_served_base(server: &crate::http::TestServer) -> Option<crate::env::TestEnv> {
    use sha2::{Digest as _, Sha256};
    let imgs = images()?;
    let bytes = std::fs::read(&imgs.xz).unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));
    server.serve("/base.img.xz", bytes);
    let env = crate::env::TestEnv::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate::env::copy_dir(&repo.join("defs/boards"), &env.ws.join("defs/boards"));
    env.write(
        "defs/bases/test.yaml",
        &format!(
            "kind: base\nurl: {}\nsha256: {sha}\narch: arm64\nrelease: bookworm\ndate: 2023-11-14\n",
            server.url("/base.img.xz")
        ),
    );
    Some(env)
}

/// For hive images on the Pi-OS-like test base, which has no dpkg: the W4B modules'
/// package sets asking for nothing (so no lock and no install), and a layer
/// `//layers:packaged-units` standing in for the unit files those packages ship, which the
/// hive checklist requires. The modules' real sets are installed by
/// `image_build::the_embedded_north_hive_*` on a Debian base.
pub fn stand_in_module_packages(env: &crate::env::TestEnv) {
    for (path, body) in crate::module_stand_ins::files() {
        env.write(&path, &body);
    }
}

/// The host's apt mirror for a Debian suite: the first `deb` source listing it in the
/// host's apt configuration (`w4b::apt::sources::read_host`, both formats), never a
/// hard-coded host.
pub fn host_mirror(suite: &str) -> Option<String> {
    w4b::apt::sources::read_host(Path::new("/"))
        .ok()?
        .into_iter()
        .find(|s| s.suites.iter().any(|x| x == suite))
        .map(|s| s.uri)
}
