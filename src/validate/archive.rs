//! A tar archive of a root filesystem's files, held in memory, as the hive checklist's
//! [`Files`]: what a booted guest sends back to `w4b test` (`hive_checklist` in
//! `src/vmtest/guest.sh`) so the host runs the same rules on the running system as the
//! `hive-check` step ran on the built tree.
//!
//! The archive is the guest's own GNU `tar -c` of the paths the rules read, each parent
//! directory archived too (without its other children) so that every path the rules ask
//! about has its own entry: type, mode, owner and group as the running system has them,
//! a symlink's target as written. Nothing is resolved: a path under a symlinked directory
//! (`/lib` → `usr/lib` on a merged-`/usr` system) is absent here as it is in an ext4
//! image, and the rules look in `/usr/lib` as they do there.
//!
//! The bytes come from a guest the test does not trust: the archive is bounded
//! ([`MAX_ARCHIVE`], the guest refuses to send more and so does the host), names are
//! normalised and any with a `..` component refused, a hard link takes its target's bytes
//! only when the target came before it, and a malformed archive is an error, never a
//! partial view.

use std::collections::BTreeMap;
use std::io::Read as _;

use super::hive::{Files, FilesError, Meta};

/// The largest archive the host takes in (and the guest sends): 64 MiB, about 170 times
/// what a hive sends — the north hive on the Debian base, booted, 0.4 MiB (242 unit files
/// under `/usr/lib/systemd/system` and the few files of `/etc` the rules read).
pub const MAX_ARCHIVE: usize = 64 << 20;

/// Why an archive from the guest could not be read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ArchiveError {
    #[error("the guest's archive of the hive's files is {size} bytes, above the bound of {max} bytes")]
    #[diagnostic(
        code(w4b::test::hive_archive_size),
        help("the checklist reads /etc, the unit directories and the administrator's `~/.ssh`; a file that large among them is not the hive's")
    )]
    TooLarge { size: usize, max: usize },
    #[error("the guest's archive of the hive's files is not a tar archive")]
    #[diagnostic(
        code(w4b::test::hive_archive),
        help(
            "the guest's `tar` failed or the archive was cut short; its error output is in the check's log"
        )
    )]
    Malformed {
        #[source]
        source: std::io::Error,
    },
    #[error("the guest's archive names `{name}`, which leaves the root")]
    #[diagnostic(
        code(w4b::test::hive_archive_path),
        help("the guest archives absolute paths under `/` only; an entry with `..` is refused")
    )]
    Escapes { name: String },
}

/// The archive's entries by absolute path (`/etc/hostname`), each with its bytes (files
/// only).
#[derive(Debug, Default)]
pub struct ArchiveFiles {
    entries: BTreeMap<String, (Meta, Vec<u8>)>,
}

/// `name` as an absolute, normalised path (`./etc/ssh/` → `/etc/ssh`); `None` for one
/// that leaves the root.
fn normalise(name: &str) -> Option<String> {
    let mut out = String::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => {
                out.push('/');
                out.push_str(p);
            }
        }
    }
    Some(if out.is_empty() { "/".to_owned() } else { out })
}

impl ArchiveFiles {
    /// Reads a whole tar archive (GNU or POSIX format) into memory.
    pub fn parse(bytes: &[u8]) -> Result<ArchiveFiles, ArchiveError> {
        if bytes.len() > MAX_ARCHIVE {
            return Err(ArchiveError::TooLarge {
                size: bytes.len(),
                max: MAX_ARCHIVE,
            });
        }
        let malformed = |source| ArchiveError::Malformed { source };
        let mut archive = tar::Archive::new(bytes);
        let mut entries: BTreeMap<String, (Meta, Vec<u8>)> = BTreeMap::new();
        for entry in archive.entries().map_err(malformed)? {
            let mut entry = entry.map_err(malformed)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = normalise(&raw).ok_or(ArchiveError::Escapes { name: raw })?;
            let header = entry.header();
            let mode = header.mode().map_err(malformed)? & 0o7777;
            let uid = u32::try_from(header.uid().map_err(malformed)?).unwrap_or(u32::MAX);
            let gid = u32::try_from(header.gid().map_err(malformed)?).unwrap_or(u32::MAX);
            let kind = header.entry_type();
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned());
            let mut meta = Meta {
                is_dir: false,
                is_file: false,
                symlink: None,
                mode,
                uid,
                gid,
            };
            let mut data = Vec::new();
            match kind {
                tar::EntryType::Directory => meta.is_dir = true,
                tar::EntryType::Symlink => meta.symlink = Some(link.unwrap_or_default()),
                tar::EntryType::Link => {
                    // A hard link shares its target's bytes; GNU tar archives the target
                    // first, so one that is not there yet names nothing.
                    let target = link.as_deref().and_then(normalise);
                    match target.and_then(|t| entries.get(&t)).filter(|(m, _)| m.is_file) {
                        Some((_, bytes)) => {
                            meta.is_file = true;
                            data = bytes.clone();
                        }
                        None => continue,
                    }
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    meta.is_file = true;
                    entry.read_to_end(&mut data).map_err(malformed)?;
                }
                // Devices, FIFOs and the like: there, but neither file nor directory.
                _ => {}
            }
            entries.insert(path, (meta, data));
        }
        Ok(ArchiveFiles { entries })
    }

    /// How many paths the archive holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Files for ArchiveFiles {
    fn meta(&self, path: &str) -> Option<Meta> {
        self.entries.get(path).map(|(m, _)| m.clone())
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.entries
            .get(path)
            .filter(|(m, _)| m.is_file)
            .map(|(_, b)| b.clone())
    }

    fn list(&self, dir: &str) -> Vec<String> {
        super::hive::children(&self.entries, dir)
    }

    /// Everything was read when the archive was: nothing can fail later.
    fn take_error(&self) -> Option<FilesError> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar archive as GNU tar writes one: `(name, type, mode, uid, gid, bytes or link)`.
    fn archive(entries: &[(&str, tar::EntryType, u32, u64, u64, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, mode, uid, gid, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_uid(*uid);
            h.set_gid(*gid);
            h.set_mtime(0);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, name, data).unwrap();
                }
                _ => {
                    let bytes = if *kind == tar::EntryType::Regular {
                        data.as_bytes()
                    } else {
                        b""
                    };
                    h.set_size(bytes.len() as u64);
                    b.append_data(&mut h, name, bytes).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as L};

    #[test]
    fn modes_owners_dirs_and_symlinks_are_kept_as_archived() {
        let bytes = archive(&[
            ("etc/", D, 0o755, 0, 0, ""),
            ("etc/shadow", F, 0o640, 0, 42, "root:*:1::::::\n"),
            ("home/hiveadmin/", D, 0o700, 1000, 1000, ""),
            ("home/hiveadmin/.ssh/", D, 0o700, 1000, 1000, ""),
            ("lib", L, 0o777, 0, 0, "usr/lib"),
            (
                "etc/systemd/system/multi-user.target.wants/ssh.service",
                L,
                0o777,
                0,
                0,
                "/lib/systemd/system/ssh.service",
            ),
            ("etc/setuid", F, 0o4755, 0, 0, "x"),
        ]);
        let fs = ArchiveFiles::parse(&bytes).unwrap();
        let shadow = fs.meta("/etc/shadow").unwrap();
        assert!(shadow.is_file && !shadow.is_dir);
        assert_eq!((shadow.mode, shadow.uid, shadow.gid), (0o640, 0, 42));
        assert_eq!(fs.read("/etc/shadow").unwrap(), b"root:*:1::::::\n");
        let home = fs.meta("/home/hiveadmin/.ssh").unwrap();
        assert!(home.is_dir);
        assert_eq!((home.mode, home.uid, home.gid), (0o700, 1000, 1000));
        assert_eq!(fs.meta("/etc/setuid").unwrap().mode, 0o4755);
        // Symlinks are not followed: `/lib` is a link, and nothing is beneath it.
        assert_eq!(fs.meta("/lib").unwrap().symlink.as_deref(), Some("usr/lib"));
        assert!(fs.meta("/lib/systemd/system/ssh.service").is_none());
        let wants = "/etc/systemd/system/multi-user.target.wants/ssh.service";
        assert_eq!(
            fs.meta(wants).unwrap().symlink.as_deref(),
            Some("/lib/systemd/system/ssh.service")
        );
        assert_eq!(fs.read(wants), None, "a link has no bytes of its own");
        assert_eq!(fs.read("/etc"), None, "nor has a directory");
        // Listings hold the entries directly below: the guest archives each parent
        // directory, and one it did not is not there (as in an ext4 image).
        assert_eq!(fs.list("/etc"), ["setuid", "shadow"]);
        assert_eq!(fs.list("/home/hiveadmin"), [".ssh"]);
        assert_eq!(fs.list("/"), ["etc", "lib"]);
        assert!(fs.meta("/etc/systemd").is_none());
        assert!(fs.list("/etc/systemd/system").is_empty());
    }

    #[test]
    fn missing_paths_are_absent_not_errors() {
        let fs = ArchiveFiles::parse(&archive(&[("etc/hostname", F, 0o644, 0, 0, "w4b-x\n")])).unwrap();
        assert!(fs.meta("/etc/hosts").is_none());
        assert!(fs.read("/etc/hosts").is_none());
        assert!(fs.list("/etc/wireguard").is_empty());
        assert!(fs.list("/etc/hostname").is_empty(), "a file lists nothing");
        assert!(fs.take_error().is_none());
        // An empty archive (two zero blocks) is an empty filesystem.
        let empty = ArchiveFiles::parse(&[0; 1024]).unwrap();
        assert!(empty.is_empty());
        assert!(ArchiveFiles::parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn hard_links_share_their_targets_bytes() {
        let fs = ArchiveFiles::parse(&archive(&[
            (
                "usr/lib/systemd/system/a.service",
                F,
                0o644,
                0,
                0,
                "[Install]\nWantedBy=multi-user.target\n",
            ),
            (
                "usr/lib/systemd/system/b.service",
                H,
                0o644,
                0,
                0,
                "usr/lib/systemd/system/a.service",
            ),
            ("etc/orphan", H, 0o644, 0, 0, "etc/nothing"),
        ]))
        .unwrap();
        assert_eq!(
            fs.read("/usr/lib/systemd/system/b.service"),
            fs.read("/usr/lib/systemd/system/a.service")
        );
        assert!(fs.meta("/etc/orphan").is_none());
    }

    #[test]
    fn names_are_normalised_and_escapes_refused() {
        assert_eq!(normalise("./etc/ssh/").as_deref(), Some("/etc/ssh"));
        assert_eq!(normalise("/etc//hosts").as_deref(), Some("/etc/hosts"));
        assert_eq!(normalise("./").as_deref(), Some("/"));
        assert_eq!(normalise("etc/../../x"), None);
        // The tar crate refuses to write `..`; a hand-made header carries it.
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_entry_type(F);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&[0; 1024]);
        assert!(matches!(
            ArchiveFiles::parse(&bytes),
            Err(ArchiveError::Escapes { .. })
        ));
    }

    #[test]
    fn a_bad_or_oversized_archive_is_an_error() {
        let mut bytes = archive(&[("etc/hostname", F, 0o644, 0, 0, "w4b-x\n")]);
        // A corrupt header checksum.
        bytes[148] ^= 0x55;
        assert!(matches!(
            ArchiveFiles::parse(&bytes),
            Err(ArchiveError::Malformed { .. })
        ));
        // Cut short inside the file's data.
        let cut = archive(&[("etc/big", F, 0o644, 0, 0, &"x".repeat(4096))]);
        assert!(ArchiveFiles::parse(&cut[..1024]).is_err());
        assert!(matches!(
            ArchiveFiles::parse(&vec![0; MAX_ARCHIVE + 1]),
            Err(ArchiveError::TooLarge { .. })
        ));
    }

    proptest::proptest! {
        /// Bytes from the guest are untrusted: errors are fine, panics are bugs.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let _ = ArchiveFiles::parse(&bytes);
        }

        #[test]
        fn a_damaged_archive_never_panics(flip in 0usize..3072, byte in proptest::prelude::any::<u8>()) {
            let mut bytes = archive(&[
                ("etc/", D, 0o755, 0, 0, ""),
                ("etc/hostname", F, 0o644, 0, 0, "w4b-x\n"),
                ("lib", L, 0o777, 0, 0, "usr/lib"),
            ]);
            if let Some(b) = bytes.get_mut(flip) {
                *b = byte;
            }
            let _ = ArchiveFiles::parse(&bytes);
        }
    }
}
