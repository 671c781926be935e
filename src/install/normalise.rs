//! From "the root after dpkg ran" to a reproducible changeset.
//!
//! The install's result is the difference between the captured root and the input tree
//! ([`crate::tree::diff`]), turned into [`Op`]s. Along the way the rules below are
//! applied, at the tree level so they can say "as the base had it" exactly: a path a rule
//! covers is **reverted** to the base's state (kept if the base had it, absent if not),
//! whatever dpkg did to it. Then every mtime newer than the epoch is clamped to it.
//!
//! | paths | rule | who writes them |
//! |---|---|---|
//! | `/var/lib/apt/lists/**`, `/var/cache/apt/*.bin` | revert | apt's indexes (an image has none) |
//! | `/var/cache/debconf/*-old`, `/var/lib/dpkg/*-old` | revert | debconf and dpkg backups, with the previous state |
//! | `/var/log/**` | revert | `dpkg.log`, `alternatives.log`, `apt/` carry wall-clock times |
//! | `/var/cache/ldconfig/aux-cache` | revert | libc-bin's trigger: inode numbers and ctimes of the libraries |
//! | `/var/cache/man/**` | revert | man-db's trigger; rebuilt on the device |
//! | `/etc/ssh/ssh_host_*` | revert | openssh-server's postinst generates host keys; the image must carry none (DESIGN §8) |
//! | `/var/lib/dbus/machine-id` | revert | dbus; must be unique per device |
//! | `/etc/machine-id` | revert, but created → empty | systemd's postinst; an empty file makes systemd generate one on first boot, even on a read-only root |
//! | `/usr/sbin/policy-rc.d`, `/var/cache/w4b-debs/**` | revert | the engine's own scaffolding |
//! | `/tmp/**`, `/run/**`, `/dev/**`, `/proc/**`, `/sys/**` | revert | tmpfs and kernel mounts during the session; nothing should reach them, this makes sure |
//! | every other entry | mtime clamped to the epoch | files maintainer scripts write (`/etc/passwd`, `/var/lib/dpkg/status`, …) |
//!
//! What needs no rule, checked by the reproducibility test (the same install twice, in
//! different scratch directories, with another `TZ` and umask): the dpkg database, the
//! `*.list`/`*.md5sums` files, `/etc/shadow` (shadow's tools take the password-change
//! day from `SOURCE_DATE_EPOCH`), debconf's `config.dat`/`templates.dat`. Python's
//! byte-compiled `*.pyc` are deterministic with `SOURCE_DATE_EPOCH` set (they then embed
//! the source's hash, not its mtime); no package of the openssh-server set has any.

use w4b_cache::Digest;

use crate::tree::diff::PathDiff;
use crate::tree::layer::{Changeset, Op};
use crate::tree::{Entry, Kind, TreePath};

/// How a rule matches a path.
enum Pattern {
    /// Exactly this path.
    Exact(&'static str),
    /// Anything strictly below this directory.
    Below(&'static str),
    /// A direct child of the directory whose name starts with `prefix` and ends with
    /// `suffix`.
    Child {
        dir: &'static str,
        prefix: &'static str,
        suffix: &'static str,
    },
}

/// The paths reverted to the base's state (see the module doc for who writes them).
const REVERTED: &[Pattern] = &[
    Pattern::Below("/var/lib/apt/lists"),
    Pattern::Child {
        dir: "/var/cache/apt",
        prefix: "",
        suffix: ".bin",
    },
    Pattern::Child {
        dir: "/var/cache/debconf",
        prefix: "",
        suffix: "-old",
    },
    Pattern::Child {
        dir: "/var/lib/dpkg",
        prefix: "",
        suffix: "-old",
    },
    Pattern::Below("/var/log"),
    Pattern::Exact("/var/cache/ldconfig/aux-cache"),
    Pattern::Below("/var/cache/man"),
    Pattern::Child {
        dir: "/etc/ssh",
        prefix: "ssh_host_",
        suffix: "",
    },
    Pattern::Exact("/var/lib/dbus/machine-id"),
    Pattern::Exact(MACHINE_ID),
    Pattern::Exact(super::POLICY_RC_D),
    Pattern::Exact(super::DEB_DIR),
    Pattern::Below(super::DEB_DIR),
    Pattern::Below("/tmp"),
    Pattern::Below("/run"),
    Pattern::Below("/dev"),
    Pattern::Below("/proc"),
    Pattern::Below("/sys"),
];

const MACHINE_ID: &str = "/etc/machine-id";

fn matches(pattern: &Pattern, path: &str) -> bool {
    match pattern {
        Pattern::Exact(p) => path == *p,
        Pattern::Below(dir) => path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/')),
        Pattern::Child { dir, prefix, suffix } => path
            .strip_prefix(dir)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|name| !name.contains('/') && name.starts_with(prefix) && name.ends_with(suffix)),
    }
}

/// Whether the install's effect on `path` is thrown away.
pub fn reverted(path: &TreePath) -> bool {
    let text = path.to_string();
    REVERTED.iter().any(|p| matches(p, &text))
}

/// The changeset that turns the base into the installed root, normalised: `diffs` is
/// `diff(base, captured)`, `root` the two root entries when they differ, `empty_file`
/// the digest of the empty blob (stored by the caller).
pub fn changeset(
    diffs: &[PathDiff],
    root: Option<(&Entry, &Entry)>,
    epoch: i64,
    empty_file: Digest,
) -> Changeset {
    let clamp = |mut e: Entry| {
        e.mtime = e.mtime.min(epoch);
        e
    };
    let mut ops = Vec::new();
    if let Some((old, new)) = root {
        let new = clamp(new.clone());
        if (old.mode, old.uid, old.gid, old.mtime, &old.xattrs)
            != (new.mode, new.uid, new.gid, new.mtime, &new.xattrs)
        {
            ops.push(Op::Put {
                path: TreePath::root(),
                entry: metadata_only(new),
            });
        }
    }
    // The most recently removed path: everything below it is gone with it.
    let mut removed: Option<TreePath> = None;
    for d in diffs {
        if let Some(r) = &removed {
            if d.path.starts_with(r) {
                continue;
            }
        }
        if reverted(&d.path) {
            if d.path.to_string() == MACHINE_ID && d.old.is_none() {
                if let Some(new) = &d.new {
                    // Created by the install: present but empty, so systemd treats the
                    // first boot as one and writes a machine-specific id.
                    let mut e = Entry::file(empty_file, 0, 0o444);
                    e.mtime = new.mtime.min(epoch);
                    ops.push(Op::Put {
                        path: d.path.clone(),
                        entry: e,
                    });
                }
            }
            continue;
        }
        match &d.new {
            None => {
                removed = Some(d.path.clone());
                ops.push(Op::Remove { path: d.path.clone() });
            }
            Some(new) => {
                let new = clamp(new.clone());
                let entry = if new.is_dir() { metadata_only(new) } else { new };
                ops.push(Op::Put {
                    path: d.path.clone(),
                    entry,
                });
            }
        }
    }
    Changeset::new(ops)
}

/// A directory entry carrying only metadata: put onto an existing directory it merges
/// (the children are listed by the diff on their own), put anywhere else it is a new,
/// empty directory.
fn metadata_only(e: Entry) -> Entry {
    match e.kind {
        Kind::Dir { .. } => e.with_kind(Kind::Dir {
            digest: crate::tree::format::empty_dir_digest(),
        }),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::layer::apply;
    use crate::tree::{diff::diff, Blobs, MemBlobs, TreeBuilder};

    fn p(s: &str) -> TreePath {
        s.parse().unwrap()
    }

    #[test]
    fn patterns() {
        for yes in [
            "/var/lib/apt/lists/deb.debian.org_InRelease",
            "/var/lib/apt/lists/partial",
            "/var/cache/apt/pkgcache.bin",
            "/var/lib/dpkg/status-old",
            "/var/cache/debconf/config.dat-old",
            "/var/log/dpkg.log",
            "/var/log/apt/history.log",
            "/etc/ssh/ssh_host_ed25519_key.pub",
            "/etc/machine-id",
            "/usr/sbin/policy-rc.d",
            "/var/cache/w4b-debs",
            "/tmp/x",
        ] {
            assert!(reverted(&p(yes)), "{yes}");
        }
        for no in [
            "/var/lib/apt/lists",
            "/var/log",
            "/var/lib/dpkg/status",
            "/var/lib/dpkg/info/x-old/y",
            "/var/cache/apt/archives/x.bin.deb",
            "/etc/ssh/sshd_config",
            "/etc/ssh/moduli",
            "/etc/machine-id2",
            "/tmp",
            "/var/logs/x",
        ] {
            assert!(!reverted(&p(no)), "{no}");
        }
    }

    /// The changeset overlaid on the base gives the captured tree, minus the rules.
    #[test]
    fn the_changeset_reproduces_the_captured_tree_with_the_rules_applied() {
        let blobs = MemBlobs::new();
        let f = |c: &[u8], mtime: i64| {
            let mut e = Entry::file(blobs.put(c).unwrap(), c.len() as u64, 0o644);
            e.mtime = mtime;
            e
        };
        let build = |entries: Vec<(&str, Entry)>| {
            let mut b = TreeBuilder::new();
            for (path, e) in entries {
                b.insert(p(path), e).unwrap();
            }
            b.finish(&blobs).unwrap()
        };
        let mut log_dir = Entry::dir(0o755);
        log_dir.mtime = 5;
        let base = build(vec![
            ("/etc/passwd", f(b"root", 5)),
            ("/etc/old/file", f(b"gone", 5)),
            ("/var/log", log_dir.clone()),
            ("/var/lib/dpkg/status", f(b"a", 5)),
        ]);
        let now = 2_000_000_000;
        let mut log_now = log_dir.clone();
        log_now.mtime = now;
        let captured = build(vec![
            ("/etc/passwd", f(b"root\nsshd", now)),
            ("/etc/machine-id", f(b"0123456789abcdef\n", now)),
            ("/etc/ssh/ssh_host_rsa_key", f(b"secret", now)),
            ("/etc/ssh/sshd_config", f(b"cfg", 100)),
            ("/var/log", log_now),
            ("/var/log/dpkg.log", f(b"2025-01-01 install", now)),
            ("/var/lib/dpkg/status", f(b"a b", now)),
            ("/var/lib/dpkg/status-old", f(b"a", now)),
        ]);
        let epoch = 1_000;
        let empty = blobs.put(b"").unwrap();
        let cs = changeset(&diff(&blobs, base, captured).unwrap(), None, epoch, empty);
        let result = apply(&blobs, base, std::slice::from_ref(&cs), epoch).unwrap();
        let mut clamped_log = log_dir;
        clamped_log.mtime = epoch;
        let mut machine_id = Entry::file(empty, 0, 0o444);
        machine_id.mtime = epoch;
        let mut ssh = Entry::dir(0o755);
        ssh.mtime = 0;
        let expected = build(vec![
            ("/etc/passwd", f(b"root\nsshd", epoch)),
            ("/etc/machine-id", machine_id),
            ("/etc/ssh", ssh),
            ("/etc/ssh/sshd_config", f(b"cfg", 100)),
            ("/var/log", clamped_log),
            ("/var/lib/dpkg/status", f(b"a b", epoch)),
        ]);
        assert_eq!(result, expected, "{cs:#?}");
        // `/etc/old` is removed once, not once per file below it.
        let removes: Vec<_> = cs.ops.iter().filter(|o| matches!(o, Op::Remove { .. })).collect();
        assert_eq!(removes, [&Op::Remove { path: p("/etc/old") }]);

        // A base that had a machine-id keeps it as it was.
        let with_id = build(vec![("/etc/machine-id", f(b"base-id\n", 3))]);
        let after = build(vec![("/etc/machine-id", f(b"new-id\n", now))]);
        let cs = changeset(&diff(&blobs, with_id, after).unwrap(), None, epoch, empty);
        assert!(cs.ops.is_empty(), "{cs:?}");
    }
}
