//! Tests of the `accounts` step: the text edits of the account files (rename of `pi`,
//! creation when there is no uid 1000, every other line byte for byte, determinism, the
//! refusals) and the tree edit (home moved or made from `/etc/skel`, owners and modes),
//! judged by the hive checklist's `account` rule.

use super::*;
use crate::hive::config::Secret;
use crate::tree::{MemBlobs, TreeBuilder};
use crate::validate::hive::{check, Stage, TreeFiles, ADMIN_RECORD};

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment the tools keep
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
pi:x:1000:1000:,,,:/home/pi:/bin/bash
systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin
";

const GROUP: &str = "\
root:x:0:
adm:x:4:pi
shadow:x:42:
sudo:x:27:pi
audio:x:29:pi,other
gpio:x:997:pi
i2c:x:998:pi
spi:x:999:pi
pi:x:1000:
";

const SHADOW: &str = "\
root:*:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
pi:!:19000:0:99999:7:::
systemd-network:!*:19000::::::
";

const GSHADOW: &str = "\
root:*::
adm:*::pi
shadow:*::
sudo:*::pi
audio:*::pi,other
gpio:!::pi
i2c:!::pi
spi:!::pi
pi:!::
";

const HASH: &str = "$6$rounds=100000$abcdefghijklmnop$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ./01234567890";

fn raspios() -> AccountFiles {
    AccountFiles {
        passwd: PASSWD.into(),
        shadow: Some(SHADOW.into()),
        group: GROUP.into(),
        gshadow: Some(GSHADOW.into()),
        subuid: Some(b"pi:100000:65536\n".to_vec()),
        subgid: Some(b"pi:100000:65536\n".to_vec()),
    }
}

fn want<'a>(user: &'a str, password: &'a str) -> Wanted<'a> {
    Wanted {
        user,
        password,
        last_change: last_change(1_700_000_000),
        groups: &ADMIN_GROUPS,
        at: "defs/hives/x.yaml:9:5",
    }
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap()
}

/// Asserts that `after` has the lines of `before`, byte for byte, except at the indexes
/// named in `changed` (which hold the given lines), plus `added` at the end.
fn lines_kept(before: &str, after: &[u8], changed: &[(usize, &str)], added: &[&str]) {
    let b: Vec<&str> = before.split('\n').collect();
    let a: Vec<&str> = text(after).split('\n').collect();
    let mut expected: Vec<String> = b.iter().map(|l| (*l).to_owned()).collect();
    for (i, l) in changed {
        expected[*i] = (*l).to_owned();
    }
    let last = expected.pop().unwrap_or_default();
    expected.extend(added.iter().map(|l| (*l).to_owned()));
    expected.push(last);
    assert_eq!(a, expected, "{}", text(after));
}

#[test]
fn renaming_pi_changes_only_its_lines() {
    let e = edit(&raspios(), &want("hiveadmin", HASH)).unwrap();
    let f = &e.files;
    lines_kept(
        PASSWD,
        &f.passwd,
        &[(4, "hiveadmin:x:1000:1000:,,,:/home/hiveadmin:/bin/bash")],
        &[],
    );
    lines_kept(
        GROUP,
        &f.group,
        &[
            (1, "adm:x:4:hiveadmin"),
            (3, "sudo:x:27:hiveadmin"),
            (4, "audio:x:29:hiveadmin,other"),
            (5, "gpio:x:997:hiveadmin"),
            (6, "i2c:x:998:hiveadmin"),
            (7, "spi:x:999:hiveadmin"),
            (8, "hiveadmin:x:1000:"),
        ],
        &[],
    );
    lines_kept(
        GSHADOW,
        f.gshadow.as_deref().unwrap(),
        &[
            (1, "adm:*::hiveadmin"),
            (3, "sudo:*::hiveadmin"),
            (4, "audio:*::hiveadmin,other"),
            (5, "gpio:!::hiveadmin"),
            (6, "i2c:!::hiveadmin"),
            (7, "spi:!::hiveadmin"),
            (8, "hiveadmin:!::"),
        ],
        &[],
    );
    let days = 1_700_000_000 / 86_400;
    lines_kept(
        SHADOW,
        f.shadow.as_deref().unwrap(),
        &[(3, &format!("hiveadmin:{HASH}:{days}:0:99999:7:::"))],
        &[],
    );
    assert_eq!(f.subuid.as_deref(), Some(&b"hiveadmin:100000:65536\n"[..]));
    assert_eq!(f.subgid.as_deref(), Some(&b"hiveadmin:100000:65536\n"[..]));
    assert_eq!((e.uid, e.gid), (1000, 1000));
    assert_eq!(e.old_home.as_deref(), Some("/home/pi"));
    assert_eq!(e.renamed_from.as_deref(), Some("pi"));
    assert!(e.created_groups.is_empty());
    assert_eq!(e.shadow_gid, Some(42));
}

#[test]
fn a_base_without_uid_1000_gets_a_new_user_with_its_own_group() {
    let passwd =
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    let group = "root:x:0:\nshadow:x:42:\nsudo:x:27:\nspi:x:999:\nnogroup:x:65534:\n";
    let files = AccountFiles {
        passwd: passwd.into(),
        shadow: Some(b"root:*:19000:0:99999:7:::\n".to_vec()),
        group: group.into(),
        gshadow: Some(b"root:*::\nshadow:*::\nsudo:*::\nspi:!::\nnogroup:*::\n".to_vec()),
        subuid: Some(b"someone:100000:65536\nother:231072:65536\n".to_vec()),
        subgid: None,
    };
    let e = edit(&files, &want("beekeeper", NO_PASSWORD)).unwrap();
    let f = &e.files;
    lines_kept(
        passwd,
        &f.passwd,
        &[],
        &["beekeeper:x:1000:1000::/home/beekeeper:/bin/bash"],
    );
    // `adm` takes Debian's gid 4; gpio and i2c the highest free system gids (999 is spi's).
    lines_kept(
        group,
        &f.group,
        &[(2, "sudo:x:27:beekeeper"), (3, "spi:x:999:beekeeper")],
        &[
            "beekeeper:x:1000:",
            "adm:x:4:beekeeper",
            "gpio:x:998:beekeeper",
            "i2c:x:997:beekeeper",
        ],
    );
    assert_eq!(
        e.created_groups,
        [
            ("adm".to_owned(), 4),
            ("gpio".to_owned(), 998),
            ("i2c".to_owned(), 997)
        ]
    );
    assert_eq!(
        text(f.gshadow.as_deref().unwrap()),
        "root:*::\nshadow:*::\nsudo:*::beekeeper\nspi:!::beekeeper\nnogroup:*::\nbeekeeper:!::\nadm:!::beekeeper\ngpio:!::beekeeper\ni2c:!::beekeeper\n"
    );
    let days = 1_700_000_000 / 86_400;
    assert_eq!(
        text(f.shadow.as_deref().unwrap()),
        format!("root:*:19000:0:99999:7:::\nbeekeeper:*:{days}:0:99999:7:::\n")
    );
    // A new range after the highest one in use, as useradd allocates.
    assert_eq!(
        text(f.subuid.as_deref().unwrap()),
        "someone:100000:65536\nother:231072:65536\nbeekeeper:296608:65536\n"
    );
    assert_eq!(f.subgid, None, "a file the base lacks is not created");
    assert_eq!((e.uid, e.gid, e.old_home.as_deref()), (1000, 1000, None));
}

#[test]
fn a_gid_1000_group_of_another_name_becomes_the_new_users_primary_group() {
    let files = AccountFiles {
        passwd: b"root:x:0:0:root:/root:/bin/bash\n".to_vec(),
        shadow: None,
        group: b"root:x:0:\nusers1k:x:1000:\n".to_vec(),
        ..AccountFiles::default()
    };
    let e = edit(&files, &want("hiveadmin", HASH)).unwrap();
    let group = text(&e.files.group);
    assert!(group.starts_with("root:x:0:\nusers1k:x:1000:\n"), "{group}");
    assert!(!group.contains("hiveadmin:x:1000"), "{group}");
    // No shadow in the base: one is made, and with no `shadow` group it is root's alone.
    assert!(text(e.files.shadow.as_deref().unwrap()).starts_with(&format!("hiveadmin:{HASH}:")));
    assert_eq!(e.shadow_gid, None);
}

#[test]
fn a_missing_final_newline_is_kept_and_lines_are_appended_after_one() {
    let mut files = raspios();
    files.passwd = PASSWD.trim_end().into();
    let e = edit(&files, &want("hiveadmin", HASH)).unwrap();
    let passwd = text(&e.files.passwd);
    assert!(!passwd.ends_with('\n'), "untouched ending kept");
    assert_eq!(
        passwd,
        PASSWD.trim_end().replace(
            "pi:x:1000:1000:,,,:/home/pi",
            "hiveadmin:x:1000:1000:,,,:/home/hiveadmin"
        )
    );

    let files = AccountFiles {
        passwd: b"root:x:0:0:root:/root:/bin/bash".to_vec(),
        group: b"root:x:0:".to_vec(),
        ..AccountFiles::default()
    };
    let e = edit(&files, &want("hiveadmin", HASH)).unwrap();
    assert_eq!(
        text(&e.files.passwd),
        "root:x:0:0:root:/root:/bin/bash\nhiveadmin:x:1000:1000::/home/hiveadmin:/bin/bash\n"
    );
}

#[test]
fn the_administrator_named_like_the_first_user_is_kept_and_fixed() {
    let mut files = raspios();
    files.passwd = PASSWD
        .replace("/home/pi:/bin/bash", "/home/pi:/usr/sbin/nologin")
        .into();
    let e = edit(&files, &want("pi", HASH)).unwrap();
    assert!(text(&e.files.passwd).contains("\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n"));
    assert_eq!(e.renamed_from, None);
    assert_eq!(text(&e.files.group), GROUP, "already in every group");
}

#[test]
fn the_edit_is_deterministic() {
    let a = edit(&raspios(), &want("hiveadmin", HASH)).unwrap();
    let b = edit(&raspios(), &want("hiveadmin", HASH)).unwrap();
    assert_eq!(a, b);
    assert_eq!(last_change(0), "");
    assert_eq!(last_change(86_399), "");
    assert_eq!(last_change(86_400), "1");
    assert_eq!(last_change(-5), "");
}

#[test]
fn clashes_and_damage_are_refused_with_their_own_codes() {
    use miette::Diagnostic as _;
    let code = |files: AccountFiles| -> String {
        let err = edit(&files, &want("hiveadmin", HASH)).expect_err("refused");
        err.code().map(|c| c.to_string()).unwrap_or_default()
    };
    let mut f = raspios();
    f.passwd = format!("{PASSWD}hiveadmin:x:1001:1001::/home/hiveadmin:/bin/bash\n").into();
    assert_eq!(code(f), "w4b::accounts::name_taken");

    let mut f = raspios();
    f.passwd = format!("{PASSWD}other:x:1000:1000::/home/other:/bin/bash\n").into();
    assert_eq!(code(f), "w4b::accounts::two_first_users");

    let mut f = raspios();
    f.group = format!("{GROUP}hiveadmin:x:1001:\n").into();
    assert_eq!(code(f), "w4b::accounts::group_taken");

    let mut f = raspios();
    f.passwd = PASSWD.replace("daemon:x:1:1:", "daemon:x:one:1:").into();
    let err = edit(&f, &want("hiveadmin", HASH)).expect_err("corrupt");
    assert_eq!(
        err.to_string(),
        "`/etc/passwd` line 2 of the image: the uid `one` is not a number"
    );

    let mut f = raspios();
    f.group = format!("{GROUP}broken:x\n").into();
    assert_eq!(code(f), "w4b::accounts::corrupt");

    let mut f = raspios();
    f.shadow = Some(format!("{SHADOW}hiveadmin:!:1::::::\n").into());
    assert_eq!(code(f), "w4b::accounts::duplicate");

    // Every system gid taken: `gpio` cannot be created.
    let mut group = String::from("root:x:0:\nsudo:x:27:\nadm:x:4:\n");
    for gid in 100..=999 {
        group.push_str(&format!("g{gid}:x:{gid}:\n"));
    }
    let f = AccountFiles {
        passwd: PASSWD.into(),
        group: group.into(),
        ..AccountFiles::default()
    };
    let err = edit(&f, &want("hiveadmin", HASH)).expect_err("no gid");
    assert!(err.to_string().contains("`gpio`"), "{err}");
}

// ---- the tree edit ----

fn file(b: &mut TreeBuilder, blobs: &MemBlobs, p: &str, text: &str, mode: u32, owner: (u32, u32)) {
    let d = blobs.put(text.as_bytes()).unwrap();
    let mut e = Entry::file(d, text.len() as u64, mode);
    (e.uid, e.gid) = owner;
    b.insert(TreePath::parse(p).unwrap(), e).unwrap();
}

fn dir(b: &mut TreeBuilder, p: &str, mode: u32, owner: (u32, u32)) {
    let mut e = Entry::dir(mode);
    (e.uid, e.gid) = owner;
    b.insert(TreePath::parse(p).unwrap(), e).unwrap();
}

/// A Raspberry-Pi-OS-like root: the account files, `/home/pi` with a skeleton file and a
/// hard link inside it, `/etc/skel`.
fn raspios_tree(blobs: &MemBlobs, with_pi: bool) -> Digest {
    let mut b = TreeBuilder::new();
    dir(&mut b, "/etc", 0o755, (0, 0));
    if with_pi {
        file(&mut b, blobs, "/etc/passwd", PASSWD, 0o644, (0, 0));
        file(&mut b, blobs, "/etc/group", GROUP, 0o644, (0, 0));
        file(&mut b, blobs, "/etc/gshadow", GSHADOW, 0o640, (0, 42));
        dir(&mut b, "/home", 0o755, (0, 0));
        dir(&mut b, "/home/pi", 0o700, (1000, 1000));
        file(
            &mut b,
            blobs,
            "/home/pi/.bashrc",
            "# pi's bashrc\n",
            0o644,
            (1000, 1000),
        );
        let mut link = Entry::new(
            Kind::HardLink {
                target: TreePath::parse("/home/pi/.bashrc").unwrap(),
            },
            0o644,
        );
        (link.uid, link.gid) = (1000, 1000);
        b.insert(TreePath::parse("/home/pi/.bashrc.link").unwrap(), link)
            .unwrap();
    } else {
        file(
            &mut b,
            blobs,
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\n",
            0o644,
            (0, 0),
        );
        file(
            &mut b,
            blobs,
            "/etc/group",
            "root:x:0:\nshadow:x:42:\n",
            0o644,
            (0, 0),
        );
    }
    file(&mut b, blobs, "/etc/shadow", SHADOW, 0o640, (0, 42));
    dir(&mut b, "/etc/skel", 0o755, (0, 0));
    file(
        &mut b,
        blobs,
        "/etc/skel/.profile",
        "# skel profile\n",
        0o644,
        (0, 0),
    );
    b.finish(blobs).unwrap()
}

fn account(password: Option<&str>) -> AdminAccount {
    AdminAccount {
        user: "hiveadmin".into(),
        password: password.map(|p| Secret::new("security.local_access.password", p)),
        hive_id: "hive_AbCd1234".into(),
        keys: vec![
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJo jo@example.com".into(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHive hive".into(),
        ],
    }
}

fn entry(blobs: &MemBlobs, root: Digest, p: &str) -> Option<Entry> {
    lookup(blobs, root, &TreePath::parse(p).unwrap()).unwrap()
}

fn owner_mode(blobs: &MemBlobs, root: Digest, p: &str) -> (u32, u32, u32) {
    let e = entry(blobs, root, p).unwrap_or_else(|| panic!("{p} missing"));
    (e.mode, e.uid, e.gid)
}

fn content(blobs: &MemBlobs, root: Digest, p: &str) -> String {
    match entry(blobs, root, p).map(|e| e.kind) {
        Some(Kind::File { digest, .. }) => String::from_utf8(blobs.get(&digest).unwrap()).unwrap(),
        other => panic!("{p}: {other:?}"),
    }
}

/// The tree with the account record the `system` module would have written.
fn with_record(blobs: &MemBlobs, root: Digest, a: &AdminAccount) -> Digest {
    let text = a.record().render();
    let d = blobs.put(text.as_bytes()).unwrap();
    let op = Op::Put {
        path: TreePath::parse(ADMIN_RECORD).unwrap(),
        entry: Entry::file(d, text.len() as u64, 0o644),
    };
    apply(blobs, root, &[Changeset::new(vec![op])], 0).unwrap()
}

fn account_failures(blobs: &MemBlobs, root: Digest) -> Vec<String> {
    let r = check(&TreeFiles::new(blobs, root), Stage::Image).expect("the tree reads");
    assert!(r.named("account").next().is_some(), "the account rule ran");
    r.named("account")
        .filter(|c| c.status == crate::validate::Status::Fail)
        .map(|c| format!("{}: {}", c.file.clone().unwrap_or_default(), c.detail))
        .collect()
}

#[test]
fn the_tree_edit_moves_pi_home_and_passes_the_account_rule() {
    let blobs = MemBlobs::default();
    let a = account(Some("SECRET-admin-pw-16"));
    let base = with_record(&blobs, raspios_tree(&blobs, true), &a);
    let hash = sha512_crypt(&a.hive_id, &a.user, a.password.as_ref().unwrap()).unwrap();
    let root = make_account(&blobs, base, &a, &hash, 1_700_000_000, "here").unwrap();

    assert!(entry(&blobs, root, "/home/pi").is_none(), "the old home is moved");
    assert_eq!(owner_mode(&blobs, root, "/home/hiveadmin"), (0o700, 1000, 1000));
    assert_eq!(
        owner_mode(&blobs, root, "/home/hiveadmin/.bashrc"),
        (0o644, 1000, 1000)
    );
    assert_eq!(
        content(&blobs, root, "/home/hiveadmin/.bashrc"),
        "# pi's bashrc\n"
    );
    assert_eq!(
        entry(&blobs, root, "/home/hiveadmin/.bashrc.link").map(|e| e.kind),
        Some(Kind::HardLink {
            target: TreePath::parse("/home/hiveadmin/.bashrc").unwrap()
        })
    );
    assert!(
        entry(&blobs, root, "/home/hiveadmin/.profile").is_none(),
        "no skel over a moved home"
    );
    assert_eq!(
        owner_mode(&blobs, root, "/home/hiveadmin/.ssh"),
        (0o700, 1000, 1000)
    );
    assert_eq!(
        owner_mode(&blobs, root, "/home/hiveadmin/.ssh/authorized_keys"),
        (0o600, 1000, 1000)
    );
    assert_eq!(
        content(&blobs, root, "/home/hiveadmin/.ssh/authorized_keys"),
        a.authorized_keys()
    );
    assert_eq!(owner_mode(&blobs, root, "/etc/shadow"), (0o640, 0, 42));
    assert_eq!(owner_mode(&blobs, root, "/etc/gshadow"), (0o640, 0, 42));
    let shadow = content(&blobs, root, "/etc/shadow");
    assert!(
        shadow.contains(&format!("\nhiveadmin:{hash}:19675:0:99999:7:::\n")),
        "{shadow}"
    );
    assert!(hash.starts_with("$6$"));
    assert!(!shadow.contains("SECRET"));
    assert_eq!(account_failures(&blobs, root), Vec::<String>::new());
    // The same inputs, the same tree.
    assert_eq!(
        make_account(&blobs, base, &a, &hash, 1_700_000_000, "here").unwrap(),
        root
    );
}

#[test]
fn the_tree_edit_makes_a_home_from_skel_for_a_new_user_and_locks_a_passwordless_one() {
    let blobs = MemBlobs::default();
    let a = account(None);
    let base = with_record(&blobs, raspios_tree(&blobs, false), &a);
    let root = make_account(&blobs, base, &a, NO_PASSWORD, 1_700_000_000, "here").unwrap();
    assert_eq!(owner_mode(&blobs, root, "/home/hiveadmin"), (0o700, 1000, 1000));
    assert_eq!(
        owner_mode(&blobs, root, "/home/hiveadmin/.profile"),
        (0o644, 1000, 1000)
    );
    assert_eq!(
        content(&blobs, root, "/home/hiveadmin/.profile"),
        "# skel profile\n"
    );
    assert!(content(&blobs, root, "/etc/shadow").contains("\nhiveadmin:*:19675:"));
    assert!(content(&blobs, root, "/etc/group").contains("\nhiveadmin:x:1000:\n"));
    assert!(entry(&blobs, root, "/etc/gshadow").is_none());
    assert_eq!(account_failures(&blobs, root), Vec::<String>::new());
}

#[test]
fn files_a_layer_put_in_the_new_home_win_over_the_moved_ones() {
    let blobs = MemBlobs::default();
    let a = account(None);
    let base = raspios_tree(&blobs, true);
    let d = blobs.put(b"# the layer's bashrc\n").unwrap();
    let op = Op::Put {
        path: TreePath::parse("/home/hiveadmin/.bashrc").unwrap(),
        entry: Entry::file(d, 21, 0o644),
    };
    let base = apply(&blobs, base, &[Changeset::new(vec![op])], 0).unwrap();
    let root = make_account(&blobs, base, &a, NO_PASSWORD, 1_700_000_000, "here").unwrap();
    assert_eq!(
        content(&blobs, root, "/home/hiveadmin/.bashrc"),
        "# the layer's bashrc\n"
    );
    assert!(entry(&blobs, root, "/home/hiveadmin/.bashrc.link").is_some());
    assert!(entry(&blobs, root, "/home/pi").is_none());
}

#[test]
fn an_account_file_that_is_not_a_regular_file_is_refused() {
    let blobs = MemBlobs::default();
    let mut b = TreeBuilder::new();
    b.insert(
        TreePath::parse("/etc/passwd").unwrap(),
        Entry::symlink("/elsewhere"),
    )
    .unwrap();
    let root = b.finish(&blobs).unwrap();
    let err = make_account(&blobs, root, &account(None), NO_PASSWORD, 0, "here").expect_err("refused");
    assert!(err.to_string().contains("symlink"), "{err}");
    let empty = TreeBuilder::new().finish(&blobs).unwrap();
    let err = make_account(&blobs, empty, &account(None), NO_PASSWORD, 0, "here").expect_err("refused");
    assert!(err.to_string().contains("no `/etc/passwd`"), "{err}");
}

#[test]
fn the_key_holds_the_password_only_as_a_keyed_digest_and_a_password_makes_it_unshareable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
    let step = |password: Option<&str>| AccountsStep {
        store: store.clone(),
        account: account(password),
        epoch: crate::steps::epoch::Epoch::fixed(1_700_000_000),
        secret_key: [7; 32],
        location: Some("defs/hives/x.yaml:40:5".into()),
    };
    let with = step(Some("SECRET-admin-pw-16"));
    let cx = PlanContext { name: "t" };
    let shown = format!("{:?} {}", with.components(&cx).unwrap(), with.definition());
    assert!(!shown.contains("SECRET-admin-pw-16"), "{shown}");
    assert!(shown.contains("security.local_access.password"), "{shown}");
    assert!(!with.shareable());
    let other = step(Some("SECRET-admin-pw-17"));
    assert_ne!(
        with.definition(),
        other.definition(),
        "the password is in the identity"
    );
    let without = step(None);
    assert!(without.shareable());
    assert!(without.definition().contains("password=none"));
}
