//! Packages built by `dpkg-deb --build` with every compression it offers are read back
//! and compared with what `dpkg-deb -f` (control fields) and `dpkg-deb -c` (data listing)
//! say; hand-made `ar` archives cover the corrupt and unsupported cases. A missing
//! `dpkg-deb` fails under `CI` and skips with a message otherwise.

#![allow(clippy::disallowed_methods)] // spawns the oracle tools

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Read};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use super::archive::{Compression, Deb, DebError, CONTROL_LIMIT};
use super::control::{self, Syntax};
use crate::oracle::have;

const CONTROL: &str = "Package: w4b-test
Version: 1:2.0~rc1-3+deb12u1
Architecture: arm64
Maintainer: W4B <dev@w4b.example>
Installed-Size: 12
Multi-Arch: foreign
Depends: libc6 (>= 2.36), default-mta | mail-transport-agent
Description: a package for the reader's tests
 It has a long description.
 .
 And a second paragraph.
";

const POSTINST: &str = "#!/bin/sh\nset -e\necho configured\n";

/// A package tree: `DEBIAN/{control,postinst,conffiles}` and a few data files.
fn package_tree(root: &Path) {
    let w = |p: &str, data: &[u8], mode: u32| {
        let path = root.join(p);
        // 0755 whatever the umask: dpkg-deb checks the control directory's mode.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path.parent().unwrap())
            .unwrap();
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(root)) {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
            dir = d.parent();
        }
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    w("DEBIAN/control", CONTROL.as_bytes(), 0o644);
    w("DEBIAN/postinst", POSTINST.as_bytes(), 0o755);
    w("DEBIAN/conffiles", b"/etc/w4b-test.conf\n", 0o644);
    w(
        "DEBIAN/md5sums",
        b"0123456789abcdef0123456789abcdef  usr/bin/w4b-test\n",
        0o644,
    );
    w("etc/w4b-test.conf", b"key = value\n", 0o644);
    w("usr/bin/w4b-test", b"#!/bin/sh\nexit 0\n", 0o755);
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    w("usr/share/w4b-test/data.bin", &big, 0o644);
    std::os::unix::fs::symlink("w4b-test", root.join("usr/bin/w4b-link")).unwrap();
}

fn dpkg_deb(args: &[&str]) -> Vec<u8> {
    let out = Command::new("dpkg-deb")
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| panic!("running dpkg-deb: {e}"));
    assert!(
        out.status.success(),
        "dpkg-deb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `(path, size)` of each regular file in a tar listing, paths without `./`.
fn files_in_tar(reader: impl Read) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(reader);
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        if e.header().entry_type().is_file() {
            let p = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            out.insert(p, e.header().size().unwrap());
        }
    }
    out
}

/// The same from `dpkg-deb -c` (tar -tv format: mode owner size date time path).
fn files_in_listing(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let path = cols[5..].join(" ");
            (path.trim_start_matches("./").to_owned(), cols[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn reads_packages_dpkg_deb_builds_with_every_compression() {
    if !have("dpkg-deb") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    package_tree(&root);
    for (z, want) in [
        ("xz", Compression::Xz),
        ("gzip", Compression::Gzip),
        ("zstd", Compression::Zstd),
        ("none", Compression::None),
    ] {
        let deb = dir.path().join(format!("{z}.deb"));
        dpkg_deb(&[
            "--root-owner-group",
            &format!("-Z{z}"),
            "--build",
            root.to_str().unwrap(),
            deb.to_str().unwrap(),
        ]);
        let pkg = Deb::open(fs::File::open(&deb).unwrap()).unwrap();
        assert_eq!(pkg.data_member(), format!("data.tar{}", want.suffix()), "{z}");

        // Control fields: the same names and values as `dpkg-deb -f` prints.
        let ctl = pkg.control();
        let theirs_text = String::from_utf8(dpkg_deb(&["-f", deb.to_str().unwrap()])).unwrap();
        let theirs = control::parse_single(&theirs_text, Syntax::Strict)
            .unwrap()
            .unwrap();
        let ours = ctl.paragraph();
        let fields = |p: &control::Paragraph<'_>| {
            p.fields()
                .iter()
                .map(|f| (f.name().to_owned(), f.value().to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(&ours), fields(&theirs), "{z}");
        assert_eq!(ours.get("version"), Some("1:2.0~rc1-3+deb12u1"));

        // Control files by name.
        assert_eq!(ctl.maintainer_script("postinst"), Some(POSTINST.as_bytes()));
        assert_eq!(ctl.maintainer_script("preinst"), None);
        assert_eq!(ctl.conffiles().unwrap(), ["/etc/w4b-test.conf"]);
        let sums = ctl.md5sums().unwrap();
        assert_eq!(sums.len(), 1);
        assert_eq!(sums[0].path, "usr/bin/w4b-test");
        assert_eq!(hex::encode(sums[0].md5), "0123456789abcdef0123456789abcdef");
        assert_eq!(
            ctl.names().collect::<Vec<_>>(),
            ["conffiles", "control", "md5sums", "postinst"]
        );

        // Data: the decompressed tar lists what `dpkg-deb -c` lists, and the contents are
        // the files that went in.
        let listing = String::from_utf8(dpkg_deb(&["-c", deb.to_str().unwrap()])).unwrap();
        let data = pkg.into_data();
        assert_eq!(data.compression(), want);
        let mut archive = tar::Archive::new(data);
        let mut ours = BTreeMap::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            if e.header().entry_type().is_file() {
                let p = e
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_owned();
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                assert_eq!(content, fs::read(root.join(&p)).unwrap(), "{z}: {p}");
                ours.insert(p, content.len() as u64);
            }
        }
        assert_eq!(ours, files_in_listing(&listing), "{z}");
        assert_eq!(ours.len(), 3, "{z}");
    }
}

/// A plain `ar` archive of `members`, as `ar rc` writes it (padding included).
fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        out.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                format!("{name}/"),
                0,
                0,
                0,
                100644,
                data.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// A control tar holding `control` with `text`.
fn control_tar(text: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "./control", text.as_bytes()).unwrap();
    b.into_inner().unwrap()
}

fn data_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "./etc/x", &b"hello"[..]).unwrap();
    b.into_inner().unwrap()
}

fn open(bytes: Vec<u8>) -> Result<Deb<Cursor<Vec<u8>>>, DebError> {
    Deb::open(Cursor::new(bytes))
}

#[test]
fn hand_made_package_with_optional_members_and_uncompressed_tars() {
    let ctl = control_tar("Package: x1\nVersion: 1\n");
    let data = data_tar();
    let bytes = ar(&[
        ("debian-binary", b"2.0\n"),
        ("_gpgorigin", b"sig"),
        ("control.tar", &ctl),
        ("data.tar", &data),
        ("trailing", b"ignored"),
    ]);
    let pkg = open(bytes).unwrap();
    assert_eq!(pkg.control().paragraph().get("Package"), Some("x1"));
    assert_eq!(
        files_in_tar(pkg.into_data()),
        BTreeMap::from([("etc/x".to_owned(), 5)])
    );
}

#[test]
fn corrupt_and_unsupported_packages_are_told_apart() {
    let ctl = control_tar("Package: x1\nVersion: 1\n");
    let data = data_tar();
    let good = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &ctl),
        ("data.tar", &data),
    ]);
    assert!(open(good.clone()).is_ok());

    assert!(matches!(
        open(b"PK\x03\x04 not a deb".to_vec()),
        Err(DebError::NotAr)
    ));
    assert!(matches!(
        open(b"!<ar".to_vec()),
        Err(DebError::Truncated { offset: 4, .. })
    ));
    assert!(matches!(
        open(ar(&[("debian-binary", b"3.0\n"), ("control.tar", &ctl), ("data.tar", &data)])),
        Err(DebError::UnsupportedFormat { version }) if version == "3.0"
    ));
    assert!(matches!(
        open(ar(&[("control.tar", &ctl), ("debian-binary", b"2.0\n")])),
        Err(DebError::UnexpectedMember {
            offset: 8,
            expected: "debian-binary",
            ..
        })
    ));
    assert!(matches!(
        open(ar(&[
            ("debian-binary", b"2.0\n"),
            ("data.tar", &data),
            ("control.tar", &ctl)
        ])),
        Err(DebError::UnexpectedMember {
            expected: "control.tar",
            ..
        })
    ));
    assert!(matches!(
        open(ar(&[("debian-binary", b"2.0\n"), ("control.tar", &ctl)])),
        Err(DebError::MissingMember { expected: "data.tar" })
    ));
    for unsupported in ["data.tar.bz2", "data.tar.lzma"] {
        let err = open(ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", &ctl),
            (unsupported, &data),
        ]))
        .unwrap_err();
        assert!(
            matches!(&err, DebError::UnsupportedCompression { member } if member == unsupported),
            "{err:?}"
        );
    }
    assert!(matches!(
        open(ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.bz2", &ctl),
            ("data.tar", &data)
        ])),
        Err(DebError::UnsupportedCompression { .. })
    ));
    // A control member claiming more than the limit is refused before it is read.
    let mut huge = ar(&[("debian-binary", b"2.0\n")]);
    huge.extend_from_slice(
        format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            "control.tar/",
            0,
            0,
            0,
            100644,
            CONTROL_LIMIT + 1
        )
        .as_bytes(),
    );
    assert!(matches!(open(huge), Err(DebError::ControlTooLarge { .. })));
    // Header damage names the field and the offset.
    let mut bad_size = good.clone();
    bad_size[8 + 48] = b'x';
    assert!(matches!(
        open(bad_size),
        Err(DebError::BadMemberHeader {
            offset: 8,
            field: "ar_size",
            ..
        })
    ));
    let mut bad_fmag = good.clone();
    bad_fmag[8 + 58] = b'!';
    assert!(matches!(
        open(bad_fmag),
        Err(DebError::BadMemberHeader { field: "ar_fmag", .. })
    ));
    // A control member that is not a tar, or lacks `control`, or holds two paragraphs.
    assert!(matches!(
        open(ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", b"nonsense"),
            ("data.tar", &data)
        ])),
        Err(DebError::BadControlTar { .. })
    ));
    assert!(matches!(
        open(ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", &data),
            ("data.tar", &data)
        ])),
        Err(DebError::NoControlFile)
    ));
    assert!(matches!(
        open(ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", &control_tar("A: 1\n\nB: 2\n")),
            ("data.tar", &data)
        ])),
        Err(DebError::ControlParagraphs)
    ));
    assert!(matches!(
        open(ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", &control_tar("A 1\n")),
            ("data.tar", &data)
        ])),
        Err(DebError::Control(_))
    ));
}

#[test]
fn a_truncated_data_member_is_an_error_not_a_short_archive() {
    let ctl = control_tar("Package: x1\nVersion: 1\n");
    let data = data_tar();
    let good = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &ctl),
        ("data.tar", &data),
    ]);
    let cut = good[..good.len() - 700].to_vec();
    let mut reader = open(cut).unwrap().into_data();
    let mut sink = Vec::new();
    let err = reader.read_to_end(&mut sink).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(err.to_string().contains("inside its data member"), "{err}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]

    /// Errors are fine, panics are bugs: any damage to a valid package gives an error or
    /// a package, and reading its data never panics.
    #[test]
    fn damaged_packages_never_panic(at in 0usize..4096, byte in proptest::prelude::any::<u8>(), cut in 0usize..4096) {
        let ctl = control_tar("Package: x1\nVersion: 1\n");
        let data = data_tar();
        let mut bytes = ar(&[("debian-binary", b"2.0\n"), ("control.tar", &ctl), ("data.tar", &data)]);
        let len = bytes.len();
        bytes[at % len] = byte;
        bytes.truncate(len - cut % len);
        if let Ok(pkg) = open(bytes) {
            let _ = pkg.control().conffiles();
            let _ = pkg.control().md5sums();
            let mut sink = Vec::new();
            let _ = pkg.into_data().read_to_end(&mut sink);
        }
    }
}
