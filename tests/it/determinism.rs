//! Bit-for-bit reproducibility: the same definitions built under different conditions
//! (cache, absolute path, working directory, TZ, locale, umask, thread count, host file
//! permissions and mtimes) give identical bytes, and the bytes are pinned.

#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::PermissionsExt;

use crate::env::TestEnv;
use crate::fixture::demo;

/// The demo archive's BLAKE3. A change here is a change of the output format: make it
/// on purpose, and say so in the commit.
const DEMO_TAR_ZST_BLAKE3: &str = "78d71fa0713a4ca704b54c56b2d328bb24ebd2ba1abd1016f99ef9d2d90c8a68";

#[test]
fn builds_are_identical_under_different_conditions() {
    let a = demo();
    let b1 = a.build(&["//images:demo", "-j", "1"]);
    assert!(b1.ok(), "{}", b1.stderr());
    let first = a.read("out/demo.tar.zst");

    // Another absolute path, another cache, stricter host permissions, other mtimes.
    let mut b = TestEnv::new();
    let moved = b.root.path().join("some/other/place");
    crate::env::copy_dir(&a.ws.join("defs"), &moved.join("defs"));
    std::fs::write(moved.join("w4b.yaml"), "").unwrap();
    b.ws = moved;
    for f in ["defs/layers/files/app/README", "defs/layers/files/app.conf.j2"] {
        std::fs::set_permissions(b.path(f), std::fs::Permissions::from_mode(0o600)).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(123_456_789);
        std::fs::File::options()
            .write(true)
            .open(b.path(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    std::fs::set_permissions(
        b.path("defs/layers/files/app/bin/app"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    b.extra_env.insert("TZ".into(), "Pacific/Chatham".into());
    b.extra_env.insert("LC_ALL".into(), "de_DE.UTF-8".into());
    let out = b
        .command()
        .current_dir(b.path("defs/layers"))
        .env("TZ", "Pacific/Chatham")
        .args(["build", "--message-format", "json", "//images:demo", "-j", "4"])
        .pre_exec_umask(0o077)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let second = b.read("out/demo.tar.zst");
    assert!(first == second, "the archive differs between the two builds");
    assert_eq!(blake3::hash(&first).to_hex().as_str(), DEMO_TAR_ZST_BLAKE3);
}

#[test]
fn forced_rebuild_reproduces_every_step() {
    let env = demo();
    let first = env.build(&["//images:demo"]);
    assert!(first.ok());
    let again = env.build(&["//images:demo", "--force"]);
    assert!(again.ok(), "{}", again.stderr());
    assert_eq!(again.ran().len(), 5);
    // Every step produced the same outputs as before: no key has divergent records.
    let stats = env.run(&["cache", "verify"]);
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stdout)
    );
}

trait Umask {
    fn pre_exec_umask(&mut self, mask: u32) -> &mut Self;
}

impl Umask for std::process::Command {
    fn pre_exec_umask(&mut self, mask: u32) -> &mut Self {
        // `sh -c 'umask …; exec w4b …'` without unsafe pre_exec hooks.
        let program = self.get_program().to_owned();
        let args: Vec<_> = self.get_args().map(|a| a.to_owned()).collect();
        let mut script = format!("umask {mask:03o}; exec \"$0\"");
        for i in 0..args.len() {
            script.push_str(&format!(" \"${}\"", i + 1));
        }
        let mut sh = std::process::Command::new("sh");
        sh.arg("-c").arg(script).arg(program).args(args);
        if let Some(dir) = self.get_current_dir() {
            sh.current_dir(dir);
        }
        sh.env_clear();
        for (k, v) in self.get_envs() {
            if let Some(v) = v {
                sh.env(k, v);
            }
        }
        *self = sh;
        self
    }
}
