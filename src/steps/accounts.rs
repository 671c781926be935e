//! `accounts`: the hive's administrator, made at build time in the image's own account
//! files. It reads `/etc/passwd`, `/etc/shadow`, `/etc/group`, `/etc/gshadow` (and
//! `/etc/subuid`, `/etc/subgid` when present) from the combined tree — the base with every
//! layer and module applied — and returns that tree with the administrator in place, as
//! `usermod -l`/`groupmod -n`/`usermod -aG`/`chpasswd -e`/`useradd -m` would have left it
//! on the device:
//!
//! - **The first user.** The base's uid-1000 account (Raspberry Pi OS's `pi`) is renamed
//!   to the administrator, with home `/home/<user>` and shell `/bin/bash`; its user-private
//!   group (the primary group when it bears the old name) is renamed with it, and so is
//!   every mention of the old name in group member lists and in `/etc/subuid`/`subgid`.
//!   Without a uid-1000 account the administrator is created with uid 1000 and primary
//!   gid 1000 (a group `<user>` is created when no group has gid 1000), plus a
//!   `subuid`/`subgid` range when those files exist. Every line the edit does not concern
//!   is kept byte for byte, comments, order and a missing final newline included.
//! - **The password.** `/etc/shadow` gets the SHA-512 crypt of
//!   `security.local_access.password` ([`sha512_crypt`]: deterministic salt), or `*` when
//!   no password is configured (no password matches, yet sshd does not count the account
//!   as locked, so key logins work with or without PAM). The last-change field is the
//!   build epoch in days — never the clock; an epoch before 1970-01-02 leaves it empty
//!   (aging off), since `0` would force a password change at first login. The file is
//!   `0640 root:shadow` (the `shadow` gid from the image's `/etc/group`), or `0600
//!   root:root` in an image without a `shadow` group.
//! - **Groups.** The administrator joins [`ADMIN_GROUPS`]. A group the base lacks is
//!   **created** (decided so that a Debian base without the Raspberry Pi groups still gets
//!   an administrator who can use `gpio`/`i2c`/`spi` once the packages that use them are
//!   installed): `sudo` and `adm` with Debian's static gids (27, 4) when free, any other
//!   group with the highest free gid in 100–999, as `groupadd --system` chooses; in
//!   `/etc/gshadow` too when the image has one.
//! - **Home.** `/home/<user>`, `0700` (Debian 12's `adduser` default, which Raspberry Pi
//!   OS keeps) owned by the user: the base's old home when it lies below `/home/` (moved,
//!   as `usermod -m`; files a layer already put in the new home win), else a copy of
//!   `/etc/skel` owned by the user (as `useradd -m`). `~/.ssh` is `0700` and
//!   `~/.ssh/authorized_keys` `0600`, both owned by the user, holding the administrators'
//!   keys and the hive's own.
//!
//! The `system` module writes what does not depend on the base (the sudo rule, root's
//! keys, the account record `w4b validate` checks this step's result against); this step
//! owns the account files and the home directory.
//!
//! Keyed: the user name, groups and `authorized_keys` lines, the hive id (the salt's
//! input), the epoch, and the password as a `secret` component (its name and a keyed
//! digest local to the cache, as module steps do — see [`crate::steps::module`]); the
//! input tree is an upstream output. With a password the step is not shareable: neither
//! its tree nor anything built on it reaches the remote cache, and the hash appears in no
//! key, record, log or manifest — only in `/etc/shadow` inside the image.

use std::collections::BTreeSet;
use std::sync::Arc;

use w4b_cache::{Digest, OutputRef};
use w4b_graph::key::ComponentKind;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::epoch::Epoch;
use super::module::secret_digest;
use super::tree_error;
use crate::modules::system::{sha512_crypt, AdminAccount, ADMIN_GROUPS, ADMIN_UID};
use crate::store::AppStore;
use crate::tree::format::empty_dir_digest;
use crate::tree::layer::{apply, Changeset, Op};
use crate::tree::{lookup, store_root, walk, Blobs, Entry, Kind, TreeError, TreePath};

/// The administrator's login shell.
pub const SHELL: &str = "/bin/bash";

/// The mode of the administrator's home (Debian 12 `adduser`'s `DIR_MODE`).
pub const HOME_MODE: u32 = 0o700;

/// The field `/etc/shadow` holds for an administrator without a password.
pub const NO_PASSWORD: &str = "*";

/// Gids Debian's `base-passwd` gives these groups; used when the base lacks them.
const DEBIAN_STATIC_GIDS: [(&str, u32); 2] = [("adm", 4), ("sudo", 27)];

/// The range `groupadd --system` allocates from (`SYS_GID_MIN`..=`SYS_GID_MAX`), highest first.
const SYSTEM_GIDS: std::ops::RangeInclusive<u32> = 100..=999;

/// The first subordinate id `useradd` hands out, and the size of each range.
const SUBID_START: u64 = 100_000;
const SUBID_COUNT: u64 = 65_536;

/// Why the account could not be made in this image.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum AccountError {
    #[error("the image has no `/etc/passwd`, so there is no account database to add the administrator `{user}` to")]
    #[diagnostic(
        code(w4b::accounts::no_passwd),
        help("hive images build on a Raspberry Pi OS or Debian base (`base:` of the hive's image), not on `scratch`")
    )]
    NoPasswd { user: String },

    #[error("`{path}` in the image is a {kind}, not a regular file")]
    #[diagnostic(
        code(w4b::accounts::not_a_file),
        help("a layer replaced an account file; account files stay regular files (the `accounts` step edits them)")
    )]
    NotAFile { path: String, kind: &'static str },

    #[error("`{path}` line {line} of the image: {problem}")]
    #[diagnostic(
        code(w4b::accounts::corrupt),
        help("the base image's account files are damaged, or a layer wrote a bad line there; compare with passwd(5), shadow(5), group(5)")
    )]
    Corrupt {
        path: String,
        line: usize,
        problem: String,
    },

    #[error("the image has {count} accounts with uid 1000 in `/etc/passwd` ({names}); the administrator takes over exactly one")]
    #[diagnostic(
        code(w4b::accounts::two_first_users),
        help("remove the duplicate uid-1000 line from the base (or the layer that adds it)")
    )]
    TwoFirstUsers { count: usize, names: String },

    #[error("the administrator `{user}` (at {at}) already exists in the image with uid {uid}, not 1000")]
    #[diagnostic(
        code(w4b::accounts::name_taken),
        help("choose another `security.local_access.username`: the administrator must be the first user (uid 1000) that Raspberry Pi tools expect")
    )]
    NameTaken { user: String, uid: u32, at: String },

    #[error("the group `{user}` already exists in the image with gid {gid}, so the administrator's own group (gid {own}) cannot take that name (at {at})")]
    #[diagnostic(
        code(w4b::accounts::group_taken),
        help("choose another `security.local_access.username`, or remove the clashing group from the base")
    )]
    GroupTaken {
        user: String,
        gid: u32,
        own: u32,
        at: String,
    },

    #[error("`{path}` in the image has {count} lines for `{user}` after the edit")]
    #[diagnostic(
        code(w4b::accounts::duplicate),
        help("the base holds a stale line for this name; remove it from the base, or choose another `security.local_access.username`")
    )]
    Duplicate {
        path: String,
        user: String,
        count: usize,
    },

    #[error("no free gid in 100–999 for the group `{group}` the administrator joins")]
    #[diagnostic(
        code(w4b::accounts::no_free_gid),
        help("the base uses every system gid; add the group `{group}` to the base")
    )]
    NoFreeGid { group: String },
}

/// The account files of an image, as bytes; `None` for a file the image does not have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountFiles {
    pub passwd: Vec<u8>,
    pub shadow: Option<Vec<u8>>,
    pub group: Vec<u8>,
    pub gshadow: Option<Vec<u8>>,
    pub subuid: Option<Vec<u8>>,
    pub subgid: Option<Vec<u8>>,
}

/// What the administrator's lines must say.
#[derive(Clone, Debug)]
pub struct Wanted<'a> {
    pub user: &'a str,
    /// The second field of `/etc/shadow`: a crypt hash, or [`NO_PASSWORD`].
    pub password: &'a str,
    /// The third field of `/etc/shadow` (days since 1970), from the epoch.
    pub last_change: String,
    pub groups: &'a [&'a str],
    /// Where the user name was configured, for errors.
    pub at: &'a str,
}

/// The edited files and what the tree edit needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edited {
    /// Every file of [`AccountFiles`] after the edit (a file the image lacks stays `None`,
    /// except `/etc/shadow`, which is always written).
    pub files: AccountFiles,
    pub uid: u32,
    /// The administrator's primary gid.
    pub gid: u32,
    /// `/home/<user>`.
    pub home: String,
    /// The home field of the uid-1000 account before the edit, when there was one.
    pub old_home: Option<String>,
    /// The uid-1000 account's old name, when it was renamed.
    pub renamed_from: Option<String>,
    /// Groups created because the base lacked them, with their gids.
    pub created_groups: Vec<(String, u32)>,
    /// The gid of `shadow` in the edited `/etc/group`.
    pub shadow_gid: Option<u32>,
}

/// `/etc/shadow`'s last-change field for `epoch`: days since 1970, empty before day 1.
pub fn last_change(epoch: i64) -> String {
    match epoch.div_euclid(86_400) {
        d if d > 0 => d.to_string(),
        _ => String::new(),
    }
}

/// A file as lines split on `\n`; a final empty element stands for the final newline, so
/// joining gives back the exact bytes.
struct Lines {
    path: &'static str,
    lines: Vec<Vec<u8>>,
}

impl Lines {
    fn parse(path: &'static str, bytes: &[u8]) -> Lines {
        Lines {
            path,
            lines: bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        self.lines.join(&b'\n')
    }

    /// Appends a line, ending the file with a newline.
    fn push(&mut self, line: Vec<u8>) {
        match self.lines.last() {
            Some(last) if last.is_empty() => {
                let at = self.lines.len() - 1;
                self.lines.insert(at, line);
            }
            _ => {
                self.lines.push(line);
                self.lines.push(Vec::new());
            }
        }
    }

    /// Indexes of the lines that are records: not empty, not a comment, not a NIS
    /// `+`/`-` inclusion.
    fn records(&self) -> Vec<usize> {
        (0..self.lines.len())
            .filter(|&i| {
                let l = &self.lines[i];
                !l.is_empty() && !matches!(l[0], b'#' | b'+' | b'-')
            })
            .collect()
    }

    fn fields(&self, i: usize) -> Vec<Vec<u8>> {
        self.lines[i].split(|b| *b == b':').map(<[u8]>::to_vec).collect()
    }

    fn set(&mut self, i: usize, fields: &[Vec<u8>]) {
        self.lines[i] = fields.join(&b':');
    }

    /// The record whose first field is `name`, with its fields.
    fn find(&self, name: &str) -> Option<(usize, Vec<Vec<u8>>)> {
        self.records().into_iter().find_map(|i| {
            let f = self.fields(i);
            (f[0] == name.as_bytes()).then_some((i, f))
        })
    }

    fn count(&self, name: &str) -> usize {
        self.records()
            .into_iter()
            .filter(|&i| self.fields(i)[0] == name.as_bytes())
            .count()
    }

    fn corrupt(&self, i: usize, problem: impl Into<String>) -> AccountError {
        AccountError::Corrupt {
            path: self.path.to_owned(),
            line: i + 1,
            problem: problem.into(),
        }
    }

    /// Field `n` of record `i` as a number.
    fn number(&self, i: usize, f: &[Vec<u8>], n: usize, what: &str) -> Result<u32, AccountError> {
        std::str::from_utf8(&f[n])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                self.corrupt(
                    i,
                    format!("the {what} `{}` is not a number", String::from_utf8_lossy(&f[n])),
                )
            })
    }

    /// Checks that every record has `n` fields.
    fn expect_fields(&self, n: usize) -> Result<(), AccountError> {
        for i in self.records() {
            let got = self.fields(i).len();
            if got != n {
                return Err(self.corrupt(i, format!("{got} fields, not {n}")));
            }
        }
        Ok(())
    }
}

/// A comma-separated member list with `old` renamed to `new` and, when `add`, `new` added.
fn members(field: &[u8], old: Option<&str>, new: &str, add: bool) -> Vec<u8> {
    let mut names: Vec<Vec<u8>> = field
        .split(|b| *b == b',')
        .filter(|n| !n.is_empty())
        .map(|n| match old {
            Some(o) if n == o.as_bytes() => new.as_bytes().to_vec(),
            _ => n.to_vec(),
        })
        .collect();
    let mut seen = BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    if add && !names.iter().any(|n| n == new.as_bytes()) {
        names.push(new.as_bytes().to_vec());
    }
    names.join(&b',')
}

/// Renames `old` to `new` in the member fields (`cols`) of every record of a group file.
fn rename_members(file: &mut Lines, cols: &[usize], old: &str, new: &str) {
    for i in file.records() {
        let mut f = file.fields(i);
        let mut changed = false;
        for &c in cols {
            if let Some(field) = f.get(c) {
                if field.split(|b| *b == b',').any(|n| n == old.as_bytes()) {
                    f[c] = members(field, Some(old), new, false);
                    changed = true;
                }
            }
        }
        if changed {
            file.set(i, &f);
        }
    }
}

fn line(fields: &[&str]) -> Vec<u8> {
    fields.join(":").into_bytes()
}

/// Edits the account files for `want` (see the module doc for every rule).
pub fn edit(files: &AccountFiles, want: &Wanted<'_>) -> Result<Edited, AccountError> {
    let user = want.user;
    let home = format!("/home/{user}");
    let mut passwd = Lines::parse("/etc/passwd", &files.passwd);
    let mut group = Lines::parse("/etc/group", &files.group);
    let mut shadow = Lines::parse("/etc/shadow", files.shadow.as_deref().unwrap_or_default());
    let mut gshadow = files.gshadow.as_deref().map(|b| Lines::parse("/etc/gshadow", b));
    passwd.expect_fields(7)?;
    group.expect_fields(4)?;

    // The uid-1000 account, and any account already called `user`.
    let mut first = Vec::new();
    for i in passwd.records() {
        let f = passwd.fields(i);
        let uid = passwd.number(i, &f, 2, "uid")?;
        if uid == ADMIN_UID {
            first.push((i, f.clone()));
        }
        if f[0] == user.as_bytes() && uid != ADMIN_UID {
            return Err(AccountError::NameTaken {
                user: user.to_owned(),
                uid,
                at: want.at.to_owned(),
            });
        }
    }
    if first.len() > 1 {
        let names: Vec<String> = first
            .iter()
            .map(|(_, f)| format!("`{}`", String::from_utf8_lossy(&f[0])))
            .collect();
        return Err(AccountError::TwoFirstUsers {
            count: first.len(),
            names: names.join(", "),
        });
    }

    let (gid, old_name, old_home) = match first.pop() {
        Some((i, mut f)) => {
            let gid = passwd.number(i, &f, 3, "gid")?;
            let old = String::from_utf8_lossy(&f[0]).into_owned();
            let old_home = String::from_utf8_lossy(&f[5]).into_owned();
            f[0] = user.as_bytes().to_vec();
            f[1] = b"x".to_vec();
            f[5] = home.as_bytes().to_vec();
            f[6] = SHELL.as_bytes().to_vec();
            passwd.set(i, &f);
            (gid, (old != user).then_some(old), Some(old_home))
        }
        None => {
            let id = ADMIN_UID.to_string();
            passwd.push(line(&[user, "x", &id, &id, "", &home, SHELL]));
            (ADMIN_UID, None, None)
        }
    };
    let created_user = old_home.is_none();

    // The primary group: renamed when it is the old user's private group, created when no
    // group has the gid.
    let mut primary = None;
    for i in group.records() {
        let f = group.fields(i);
        if group.number(i, &f, 2, "gid")? == gid {
            primary = Some((i, f));
            break;
        }
    }
    match primary {
        Some((i, mut f)) => {
            let name = String::from_utf8_lossy(&f[0]).into_owned();
            if old_name.as_deref() == Some(name.as_str()) {
                if let Some((j, other)) = group.find(user) {
                    return Err(AccountError::GroupTaken {
                        user: user.to_owned(),
                        gid: group.number(j, &other, 2, "gid")?,
                        own: gid,
                        at: want.at.to_owned(),
                    });
                }
                f[0] = user.as_bytes().to_vec();
                group.set(i, &f);
                if let Some(gs) = gshadow.as_mut() {
                    if let Some((j, mut g)) = gs.find(&name) {
                        g[0] = user.as_bytes().to_vec();
                        gs.set(j, &g);
                    }
                }
            }
        }
        None => {
            if let Some((j, other)) = group.find(user) {
                return Err(AccountError::GroupTaken {
                    user: user.to_owned(),
                    gid: group.number(j, &other, 2, "gid")?,
                    own: gid,
                    at: want.at.to_owned(),
                });
            }
            group.push(line(&[user, "x", &gid.to_string(), ""]));
            if let Some(gs) = gshadow.as_mut() {
                gs.push(line(&[user, "!", "", ""]));
            }
        }
    }
    if let Some(old) = &old_name {
        rename_members(&mut group, &[3], old, user);
        if let Some(gs) = gshadow.as_mut() {
            rename_members(gs, &[2, 3], old, user);
        }
    }

    // Supplementary groups.
    let mut created_groups = Vec::new();
    for &g in want.groups {
        match group.find(g) {
            Some((i, mut f)) => {
                let joined = members(&f[3], None, user, true);
                if joined != f[3] {
                    f[3] = joined;
                    group.set(i, &f);
                }
            }
            None => {
                let mut used = BTreeSet::new();
                for i in group.records() {
                    used.insert(group.number(i, &group.fields(i), 2, "gid")?);
                }
                let gid = DEBIAN_STATIC_GIDS
                    .iter()
                    .find(|(n, id)| *n == g && !used.contains(id))
                    .map(|(_, id)| *id)
                    .or_else(|| SYSTEM_GIDS.rev().find(|id| !used.contains(id)))
                    .ok_or_else(|| AccountError::NoFreeGid { group: g.to_owned() })?;
                group.push(line(&[g, "x", &gid.to_string(), user]));
                created_groups.push((g.to_owned(), gid));
            }
        }
        if let Some(gs) = gshadow.as_mut() {
            match gs.find(g) {
                Some((i, mut f)) if f.len() >= 4 => {
                    let joined = members(&f[3], None, user, true);
                    if joined != f[3] {
                        f[3] = joined;
                        gs.set(i, &f);
                    }
                }
                Some((i, f)) => return Err(gs.corrupt(i, format!("{} fields, not 4", f.len()))),
                None if created_groups.iter().any(|(n, _)| n == g) => {
                    gs.push(line(&[g, "!", "", user]));
                }
                None => {}
            }
        }
    }

    // The password.
    let lookup_name = old_name.as_deref().unwrap_or(user);
    match shadow.find(lookup_name) {
        Some((i, mut f)) => {
            if f.len() < 3 {
                return Err(shadow.corrupt(i, format!("{} fields, not 9", f.len())));
            }
            f.resize(9.max(f.len()), Vec::new());
            f[0] = user.as_bytes().to_vec();
            f[1] = want.password.as_bytes().to_vec();
            f[2] = want.last_change.as_bytes().to_vec();
            shadow.set(i, &f);
        }
        None => shadow.push(line(&[
            user,
            want.password,
            &want.last_change,
            "0",
            "99999",
            "7",
            "",
            "",
            "",
        ])),
    }
    for file in [&passwd, &shadow] {
        let count = file.count(user);
        if count != 1 {
            return Err(AccountError::Duplicate {
                path: file.path.to_owned(),
                user: user.to_owned(),
                count,
            });
        }
    }

    let subids = |bytes: &Option<Vec<u8>>, path: &'static str| -> Result<Option<Vec<u8>>, AccountError> {
        let Some(b) = bytes else { return Ok(None) };
        let mut f = Lines::parse(path, b);
        if let Some(old) = &old_name {
            for i in f.records() {
                let mut fields = f.fields(i);
                if fields[0] == old.as_bytes() {
                    fields[0] = user.as_bytes().to_vec();
                    f.set(i, &fields);
                }
            }
        }
        if created_user && f.find(user).is_none() {
            let mut next = SUBID_START;
            for i in f.records() {
                let fields = f.fields(i);
                if fields.len() != 3 {
                    return Err(f.corrupt(i, format!("{} fields, not 3", fields.len())));
                }
                let num = |n: usize| {
                    std::str::from_utf8(&fields[n])
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| f.corrupt(i, "a range that is not two numbers"))
                };
                next = next.max(num(1)?.saturating_add(num(2)?));
            }
            f.push(line(&[user, &next.to_string(), &SUBID_COUNT.to_string()]));
        }
        Ok(Some(f.bytes()))
    };
    let subuid = subids(&files.subuid, "/etc/subuid")?;
    let subgid = subids(&files.subgid, "/etc/subgid")?;

    let mut shadow_gid = None;
    for i in group.records() {
        let f = group.fields(i);
        if f[0] == b"shadow" {
            shadow_gid = Some(group.number(i, &f, 2, "gid")?);
        }
    }
    Ok(Edited {
        files: AccountFiles {
            passwd: passwd.bytes(),
            shadow: Some(shadow.bytes()),
            group: group.bytes(),
            gshadow: gshadow.map(|g| g.bytes()),
            subuid,
            subgid,
        },
        uid: ADMIN_UID,
        gid,
        home,
        old_home,
        renamed_from: old_name,
        created_groups,
        shadow_gid,
    })
}

/// `accounts`: input 0 is the combined tree (`tree`); the output is that tree with the
/// administrator made (`tree`).
pub struct AccountsStep {
    pub store: Arc<AppStore>,
    pub account: AdminAccount,
    pub epoch: Epoch,
    /// [`crate::steps::module::secret_key`] of the local cache.
    pub secret_key: [u8; 32],
    /// Where the account was configured (`security.local_access`), for `why` and errors.
    pub location: Option<String>,
}

impl AccountsStep {
    /// The node identity's text: the account's parameters, the password only as a keyed
    /// digest.
    pub fn definition(&self) -> String {
        let password = match &self.account.password {
            Some(p) => format!("{}={}", p.name, secret_digest(&self.secret_key, p.expose())),
            None => "none".to_owned(),
        };
        format!(
            "accounts v{} user={} groups={} keys={:?} hive={} password={password} epoch={}",
            self.version(),
            self.account.user,
            ADMIN_GROUPS.join(","),
            self.account.keys,
            self.account.hive_id,
            self.epoch
        )
    }
}

/// Reads a regular file of the tree; `None` when absent.
fn read(blobs: &dyn Blobs, root: Digest, path: &str) -> Result<Option<(Entry, Vec<u8>)>, StepError> {
    let p = TreePath::parse(path).map_err(|e| StepError::msg(e.to_string()))?;
    let Some(entry) = lookup(blobs, root, &p).map_err(tree_error)? else {
        return Ok(None);
    };
    match entry.kind {
        Kind::File { digest, .. } => {
            let bytes = blobs.get(&digest).map_err(tree_error)?;
            Ok(Some((entry, bytes)))
        }
        ref k => Err(StepError::diag(AccountError::NotAFile {
            path: path.to_owned(),
            kind: k.name(),
        })),
    }
}

fn path(p: &str) -> Result<TreePath, StepError> {
    TreePath::parse(p).map_err(|e| StepError::msg(format!("`{p}`: {e}")))
}

/// `to` followed by the components of `p` after `from`.
fn rebase(p: &TreePath, from: &TreePath, to: &TreePath) -> Result<TreePath, TreeError> {
    let mut out = to.clone();
    for c in &p.components()[from.components().len()..] {
        out = out.join(c)?;
    }
    Ok(out)
}

/// The home directory's operations: the old home moved (or `/etc/skel` copied) into the
/// new one without replacing what is there, then the home, `~/.ssh` and
/// `authorized_keys` with their owner and modes.
fn home_ops(
    blobs: &dyn Blobs,
    root: Digest,
    edited: &Edited,
    authorized_keys: &[u8],
    epoch: i64,
    ops: &mut Vec<Op>,
) -> Result<(), StepError> {
    let (uid, gid) = (edited.uid, edited.gid);
    let home = path(&edited.home)?;
    let home_exists = lookup(blobs, root, &home).map_err(tree_error)?.is_some();
    let owned = |mut e: Entry| {
        e.uid = uid;
        e.gid = gid;
        e.mtime = epoch;
        e
    };
    // Only a home below /home/ is moved: a first user whose home is `/` or `/var/lib/x`
    // keeps it.
    let old = edited
        .old_home
        .as_deref()
        .and_then(|h| TreePath::parse(h).ok())
        .filter(|p| p != &home && p.components().len() == 2 && p.components()[0] == "home");
    let mut source = None;
    if let Some(old) = old {
        if let Some(e) = lookup(blobs, root, &old)
            .map_err(tree_error)?
            .filter(Entry::is_dir)
        {
            source = Some((old, e, true));
        }
    }
    if source.is_none() && !home_exists {
        let skel = path("/etc/skel")?;
        if let Some(e) = lookup(blobs, root, &skel)
            .map_err(tree_error)?
            .filter(Entry::is_dir)
        {
            source = Some((skel, e, false));
        }
    }
    let mut home_entry = owned(Entry::dir(HOME_MODE));
    if let Some((_, e, true)) = &source {
        home_entry.xattrs = e.xattrs.clone();
    }
    ops.push(Op::Put {
        path: home.clone(),
        entry: home_entry,
    });
    if let Some((src, entry, moved)) = source {
        let sub = store_root(blobs, &entry).map_err(tree_error)?;
        for item in walk(blobs, sub).skip(1) {
            let (rel, mut e) = item.map_err(tree_error)?;
            let dest = rebase(&rel, &TreePath::root(), &home).map_err(tree_error)?;
            if home_exists && lookup(blobs, root, &dest).map_err(tree_error)?.is_some() {
                continue;
            }
            if e.is_dir() {
                e.kind = Kind::Dir {
                    digest: empty_dir_digest(),
                };
            }
            if let Kind::HardLink { target } = &e.kind {
                if target.starts_with(&src) {
                    e.kind = Kind::HardLink {
                        target: rebase(target, &src, &home).map_err(tree_error)?,
                    };
                }
            }
            if !moved {
                e.uid = uid;
                e.gid = gid;
                e.mtime = epoch;
            }
            ops.push(Op::Put { path: dest, entry: e });
        }
        if moved {
            ops.push(Op::Remove { path: src });
        }
    }
    ops.push(Op::Put {
        path: home.join(".ssh").map_err(tree_error)?,
        entry: owned(Entry::dir(0o700)),
    });
    let d = blobs.put(authorized_keys).map_err(tree_error)?;
    ops.push(Op::Put {
        path: home
            .join(".ssh")
            .and_then(|p| p.join("authorized_keys"))
            .map_err(tree_error)?,
        entry: owned(Entry::file(d, authorized_keys.len() as u64, 0o600)),
    });
    Ok(())
}

/// Runs the whole edit on the tree `root`; returns the new tree.
pub fn make_account(
    blobs: &dyn Blobs,
    root: Digest,
    account: &AdminAccount,
    password_field: &str,
    epoch: i64,
    at: &str,
) -> Result<Digest, StepError> {
    let passwd = read(blobs, root, "/etc/passwd")?.ok_or_else(|| {
        StepError::diag(AccountError::NoPasswd {
            user: account.user.clone(),
        })
    })?;
    let group = read(blobs, root, "/etc/group")?;
    let shadow = read(blobs, root, "/etc/shadow")?;
    let gshadow = read(blobs, root, "/etc/gshadow")?;
    let subuid = read(blobs, root, "/etc/subuid")?;
    let subgid = read(blobs, root, "/etc/subgid")?;
    let files = AccountFiles {
        passwd: passwd.1.clone(),
        shadow: shadow.as_ref().map(|s| s.1.clone()),
        group: group.as_ref().map(|g| g.1.clone()).unwrap_or_default(),
        gshadow: gshadow.as_ref().map(|g| g.1.clone()),
        subuid: subuid.as_ref().map(|s| s.1.clone()),
        subgid: subgid.as_ref().map(|s| s.1.clone()),
    };
    let groups: Vec<&str> = ADMIN_GROUPS.to_vec();
    let want = Wanted {
        user: &account.user,
        password: password_field,
        last_change: last_change(epoch),
        groups: &groups,
        at,
    };
    let edited = edit(&files, &want).map_err(StepError::diag)?;

    let mut ops = Vec::new();
    // Each file keeps its metadata when it changed (a new one gets the usual mode);
    // `/etc/shadow` is always written, `0640 root:shadow`.
    let mut put =
        |p: &str, old: Option<&(Entry, Vec<u8>)>, bytes: &[u8], fresh: (u32, u32)| -> Result<(), StepError> {
            if old.is_some_and(|(_, b)| b == bytes) && p != "/etc/shadow" {
                return Ok(());
            }
            let d = blobs.put(bytes).map_err(tree_error)?;
            let mut e = Entry::file(d, bytes.len() as u64, fresh.0);
            e.gid = fresh.1;
            if let Some((o, _)) = old {
                e.mode = o.mode;
                e.uid = o.uid;
                e.gid = o.gid;
                e.xattrs = o.xattrs.clone();
            }
            e.mtime = epoch;
            ops.push(Op::Put {
                path: path(p)?,
                entry: e,
            });
            Ok(())
        };
    let shadow_group = edited.shadow_gid;
    put("/etc/passwd", Some(&passwd), &edited.files.passwd, (0o644, 0))?;
    put("/etc/group", group.as_ref(), &edited.files.group, (0o644, 0))?;
    if let Some(g) = &edited.files.gshadow {
        put(
            "/etc/gshadow",
            gshadow.as_ref(),
            g,
            (0o640, shadow_group.unwrap_or(0)),
        )?;
    }
    if let Some(s) = &edited.files.subuid {
        put("/etc/subuid", subuid.as_ref(), s, (0o644, 0))?;
    }
    if let Some(s) = &edited.files.subgid {
        put("/etc/subgid", subgid.as_ref(), s, (0o644, 0))?;
    }
    let shadow_bytes = edited.files.shadow.clone().unwrap_or_default();
    let d = blobs.put(&shadow_bytes).map_err(tree_error)?;
    let mut e = Entry::file(d, shadow_bytes.len() as u64, 0o640);
    match shadow_group {
        Some(g) => e.gid = g,
        None => e.mode = 0o600,
    }
    if let Some((o, _)) = &shadow {
        e.xattrs = o.xattrs.clone();
    }
    e.mtime = epoch;
    ops.push(Op::Put {
        path: path("/etc/shadow")?,
        entry: e,
    });

    home_ops(
        blobs,
        root,
        &edited,
        account.authorized_keys().as_bytes(),
        epoch,
        &mut ops,
    )?;
    apply(blobs, root, &[Changeset::new(ops)], epoch).map_err(tree_error)
}

impl Step for AccountsStep {
    fn kind(&self) -> &'static str {
        "accounts"
    }

    fn version(&self) -> u32 {
        1
    }

    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        let a = &self.account;
        let mut c = vec![
            Component::param("user", &a.user).at(self.location.clone()),
            Component::param("uid", ADMIN_UID.to_string()),
            Component::param("groups", ADMIN_GROUPS.join(",")),
            Component::param("authorized_keys", a.keys.join("\n")).at(self.location.clone()),
            Component::param("hive_id", &a.hive_id).at(self.location.clone()),
            self.epoch.component(),
        ];
        match &a.password {
            Some(p) => c.push(
                Component::new(
                    ComponentKind::Secret,
                    p.name.clone(),
                    secret_digest(&self.secret_key, p.expose()),
                )
                .at(self.location.clone()),
            ),
            None => c.push(Component::param("password", "none").at(self.location.clone())),
        }
        Ok(c)
    }

    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let tree = cx.input(0, "tree")?;
        let a = &self.account;
        let field = match &a.password {
            Some(p) => sha512_crypt(&a.hive_id, &a.user, p).map_err(StepError::diag)?,
            None => NO_PASSWORD.to_owned(),
        };
        cx.check_cancel()?;
        let at = self
            .location
            .clone()
            .unwrap_or_else(|| "the hive file".to_owned());
        let epoch = self.epoch.resolve(self.store.as_ref(), cx)?;
        let root = make_account(self.store.as_ref(), tree.digest, a, &field, epoch, &at)?;
        let mut out = Outputs::new();
        out.insert(
            "tree".into(),
            OutputRef {
                digest: root,
                size: 0,
            },
        );
        Ok(out)
    }

    fn shareable(&self) -> bool {
        self.account.password.is_none()
    }
}

#[cfg(test)]
#[path = "accounts_tests.rs"]
mod tests;
