//! `w4b hive new` and `w4b hive keys HIVE --rotate …`: a hive file with a new id, the next
//! free VPN address of the fleet and new credentials; and later, new credentials for it.
//!
//! Secrets go to files under `secrets/<hive_id>/` in the workspace — the directory 0700,
//! each file 0600, created so that nobody else can read them even for a moment — and the
//! hive file refers to them with `{file: …}` (docs/hives.md, "Secrets"). Only
//! `--inline-secrets` puts them into the hive file. Nothing secret is printed.
//!
//! On a terminal `hive new` asks (with defaults); `--yes` takes flags and defaults instead.
//! Without a terminal and without `--yes` it stops with an error rather than hang or guess.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use super::App;
use crate::cli::{HiveKeysArgs, HiveNewArgs, RotateWhat};
use crate::defs::yaml::Value;
use crate::defs::{Label, Loader, Pattern};
use crate::hive::create::{self, Admin, Credentials, Hub, NewHive, SecretText};
use crate::hive::credentials::{self, SshKeyPair, WireGuardKeyPair};
use crate::hive::fleet;
use crate::ui::prompt::Prompter;

/// The secret files of a hive, below `secrets/<hive_id>/`.
const SSH_KEY_FILE: &str = "ssh_ed25519";
const WG_KEY_FILE: &str = "wireguard.key";
const DB_PASSWORD_FILE: &str = "db_password";
const ADMIN_PASSWORD_FILE: &str = "admin_password";

/// The administrator a hive gets when nobody says otherwise (an operator edits it later).
const DEFAULT_ADMIN: (&str, &str, &str) = ("W4B Operator", "operator@example.org", "operator");

pub fn new(app: &App, args: &HiveNewArgs) -> miette::Result<i32> {
    let ws = app.workspace()?;
    let interactive = !args.yes;
    if interactive && !std::io::stdin().is_terminal() {
        return Err(miette::miette!(
            code = "w4b::hive::no_terminal",
            help = "pass `--yes` and the values as flags, such as `w4b hive new --yes --name \"Lindenhof Apiary\"` (`w4b hive new --help` lists them)",
            "`w4b hive new` asks its questions on a terminal, and standard input is not one"
        ));
    }
    let defaults = ws.hive_defaults();
    let has_default = |path: &[&str]| defaults.is_some_and(|d| lookup(d, path).is_some());
    let hub = hub(args, &has_default)?;
    // A full subnet fails before any question is asked (taken again under the lock below).
    if interactive {
        allocate(app, &ws, false)?;
    }
    let values = if interactive {
        let stdin = std::io::stdin();
        let mut p = Prompter::new(stdin.lock(), std::io::stderr());
        ask(&mut p, args, has_default(&["administrators"]), &ws)?
    } else {
        from_flags(args, has_default(&["administrators"]), &ws)?
    };

    // One `hive new` at a time per workspace, from reading the fleet to writing the file:
    // two at once would both take the same free address. The lock is the hives
    // directory's own (`flock(2)` on it), so nothing is left behind; prompts come first,
    // so a person answering questions holds nobody up.
    let hives_dir = ws.defs_dir().join("hives");
    std::fs::create_dir_all(&hives_dir).map_err(io_error("create", &hives_dir))?;
    let _fleet_lock = lock_fleet(&hives_dir, app.global.quiet)?;
    let (members, client_ip) = allocate(app, &ws, true)?;

    // A new id, unlike every other (ignoring case: host names are lower case) and with
    // no file of that name yet.
    let hive_id = loop {
        let id = credentials::new_hive_id()?;
        let taken = members.iter().any(|m| m.id().eq_ignore_ascii_case(&id))
            || hives_dir.join(format!("{id}.yaml")).exists()
            || ws.root().join("secrets").join(&id).exists();
        if !taken {
            break id;
        }
    };
    let hive_file = hives_dir.join(format!("{hive_id}.yaml"));
    let secret_dir = ws.root().join("secrets").join(&hive_id);
    // From the hive file's directory back to the workspace root.
    let up = "../".repeat(Path::new(&ws.config().defs).components().count() + 1);
    let reference = |file: &str| format!("{up}secrets/{hive_id}/{file}");

    let ssh = SshKeyPair::generate(&format!("hive-{hive_id}"))?;
    let wg = WireGuardKeyPair::generate()?;
    let db = credentials::database_password()?;
    let admin = credentials::admin_password()?;
    let secrets = [
        (SSH_KEY_FILE, ssh.private.clone()),
        (WG_KEY_FILE, format!("{}\n", wg.private)),
        (DB_PASSWORD_FILE, format!("{db}\n")),
        (ADMIN_PASSWORD_FILE, format!("{admin}\n")),
    ];
    let text = |file: &str, value: &str| match args.inline_secrets {
        true => SecretText::Inline(value.to_owned()),
        false => SecretText::File(reference(file)),
    };
    let creds = Credentials {
        ssh_public: ssh.public.clone(),
        ssh_private: text(SSH_KEY_FILE, &ssh.private),
        wg_public: wg.public.clone(),
        wg_private: text(WG_KEY_FILE, &wg.private),
        db_password: text(DB_PASSWORD_FILE, &db),
        admin_password: text(ADMIN_PASSWORD_FILE, &admin),
    };
    let hive = NewHive {
        hive_id: hive_id.clone(),
        name: values.name,
        address: values.address,
        latitude: values.latitude,
        longitude: values.longitude,
        timezone: values.timezone,
        admin: values.admin,
        image: values.image,
        client_ip,
        hub,
    };
    let yaml = create::render(&hive, &creds);

    if !args.inline_secrets {
        let secrets_root = ws.root().join("secrets");
        if !secrets_root.exists() {
            // A new secrets directory ignores itself in git: secrets committed by accident
            // are hard to take back. Delete the file to commit (encrypted) secrets on purpose.
            create_private_dir(&secrets_root)?;
            write_file(
                &secrets_root.join(".gitignore"),
                "# Written by `w4b hive new`: hive credentials stay out of version control.\n*\n",
                0o644,
                false,
            )?;
        }
        create_private_dir(&secret_dir)?;
        for (file, value) in &secrets {
            write_secret(&secret_dir.join(file), value, false)?;
        }
        // The public half beside the private key, as `ssh-keygen` leaves it.
        write_file(
            &secret_dir.join(format!("{SSH_KEY_FILE}.pub")),
            &format!("{}\n", ssh.public),
            0o644,
            false,
        )?;
    }
    // The hive file holds secrets only with `--inline-secrets`; then it is private too.
    let mode = if args.inline_secrets { 0o600 } else { 0o644 };
    write_file(&hive_file, &yaml, mode, false)?;

    let label = Label {
        package: "hives".into(),
        name: hive_id.clone(),
    };
    // The new hive must be valid as written; if it is not (a bad `hives.defaults`), say so.
    let loader = Loader::new(ws.clone(), app.env.clone(), &app.global.set)?;
    let check = crate::hive::load::resolve(&loader, &label);
    let shown = |p: &Path| app.display_path(p);
    if !app.global.quiet {
        eprintln!("created hive `{hive_id}` at VPN address `{client_ip}`");
        eprintln!("  hive file   {}", shown(&hive_file));
        if !args.inline_secrets {
            eprintln!(
                "  secrets     {}/ (keep them out of version control)",
                shown(&secret_dir)
            );
        }
        eprintln!("  build it    w4b build {label}");
        eprintln!("  on the hub  w4b hive peers {label}");
    }
    println!("{}", shown(&hive_file));
    match check {
        Ok(_) => Ok(0),
        Err(e) => {
            super::show_diagnostic(&miette::Report::new(e));
            eprintln!("the new hive file was written but does not validate: fix it (or `hives.defaults` in `w4b.yaml`), then `w4b hive validate {label}`");
            Ok(1)
        }
    }
}

/// The hub's values the new file must carry itself: those `hives.defaults` lacks. Both
/// missing from there and from the flags is an error before anything is asked or written.
fn hub(args: &HiveNewArgs, has_default: &dyn Fn(&[&str]) -> bool) -> miette::Result<Option<Hub>> {
    let need_key = !has_default(&["security", "wireguard", "peer_public_key"]);
    let need_endpoint = !has_default(&["security", "wireguard", "endpoint"]);
    let mut missing = Vec::new();
    if need_key && args.hub_public_key.is_none() {
        missing.push("peer_public_key");
    }
    if need_endpoint && args.hub_endpoint.is_none() {
        missing.push("endpoint");
    }
    if !missing.is_empty() {
        return Err(miette::miette!(
            code = "w4b::hive::no_hub",
            help = "give the hub's values once for every hive in `w4b.yaml`:\n  hives:\n    defaults:\n      security:\n        wireguard: {peer_public_key: \"<the hub's `wg pubkey`>\", endpoint: \"hub.example.org:51820\"}\nor for this hive with `--hub-public-key` and `--hub-endpoint`",
            "a new hive needs the VPN hub's {}, and `hives.defaults` of `w4b.yaml` has no `security.wireguard.{}`",
            missing.join(" and "),
            missing.join("` or `")
        ));
    }
    let hub = Hub {
        public_key: args.hub_public_key.clone().filter(|_| need_key),
        endpoint: args.hub_endpoint.clone().filter(|_| need_endpoint),
    };
    Ok((hub.public_key.is_some() || hub.endpoint.is_some()).then_some(hub))
}

/// The value at `path` of a YAML map.
fn lookup<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    let mut v = v;
    for key in path {
        v = &v.get(key)?.value;
    }
    (!v.is_null()).then_some(v)
}

/// The operator's answers.
struct Values {
    name: String,
    address: Option<String>,
    latitude: f64,
    longitude: f64,
    timezone: Option<String>,
    admin: Option<Admin>,
    /// `image:`, when not `hives.image`.
    image: Option<String>,
}

/// An image the hive may build on: a label of an existing `kind: image` file. `None` when
/// it is the workspace's `hives.image` (then the file names none).
fn check_image(ws: &crate::defs::Workspace) -> impl Fn(&str) -> Result<Option<String>, String> + '_ {
    move |a| {
        let default = ws.config().hive_image.as_ref().map(|l| l.value.clone());
        let a = a.trim();
        if a.is_empty() {
            return match default {
                Some(_) => Ok(None),
                None => Err("name the image to build on, such as `//images:w4b-edge` (`w4b ls //images/...` lists them), or set `hives.image` in `w4b.yaml`".into()),
            };
        }
        let label =
            Label::parse(a, Some("images")).map_err(|e| format!("`{a}` is not a label: {}", e.reason))?;
        if Some(&label) == default.as_ref() {
            return Ok(None);
        }
        if !ws.root().join(ws.target_file(&label)).is_file() {
            return Err(format!(
                "there is no target `{label}` (`w4b ls //images/...` lists the images)"
            ));
        }
        Ok(Some(label.to_string()))
    }
}

fn check_name(a: &str) -> Result<String, String> {
    match a.trim() {
        "" => Err("the hive needs a name, such as `Lindenhof Apiary`".into()),
        n => Ok(n.to_owned()),
    }
}

fn check_degrees(limit: f64) -> impl Fn(&str) -> Result<f64, String> {
    move |a| match a.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (-limit..=limit).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{a}` is not a number of degrees from -{limit} to {limit}"
        )),
    }
}

fn check_timezone(a: &str) -> Result<Option<String>, String> {
    match a.trim() {
        "" => Ok(None),
        tz if crate::defs::timezones::is_known(tz) => Ok(Some(tz.to_owned())),
        tz => Err(format!(
            "`{tz}` is not an IANA time zone; {}",
            crate::defs::timezones::help(tz)
        )),
    }
}

fn check_email(a: &str) -> Result<String, String> {
    match crate::hive::convert::is_email(a.trim()) {
        true => Ok(a.trim().to_owned()),
        false => Err(format!("`{a}` is not an e-mail address")),
    }
}

fn check_username(a: &str) -> Result<String, String> {
    match crate::hive::convert::is_username(a.trim()) && a.trim() != "root" {
        true => Ok(a.trim().to_owned()),
        false => Err(format!(
            "`{a}` is not a login name: a lower-case letter or `_`, then up to 31 of `a-z 0-9 _ -` (not `root`)"
        )),
    }
}

fn check_ssh_key(a: &str) -> Result<Option<String>, String> {
    let a = a.trim();
    let mut parts = a.split_whitespace();
    match (parts.next(), parts.next()) {
        (None, _) => Ok(None),
        (Some(kind), Some(_))
            if kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-") =>
        {
            Ok(Some(a.to_owned()))
        }
        _ => Err("not an OpenSSH public key (`ssh-ed25519 AAAA… name`); leave it empty for none".into()),
    }
}

/// Asks on the terminal, with the flags' values as defaults.
fn ask<R: std::io::BufRead, W: std::io::Write>(
    p: &mut Prompter<R, W>,
    args: &HiveNewArgs,
    admins_from_defaults: bool,
    ws: &crate::defs::Workspace,
) -> miette::Result<Values> {
    let deg = |v: Option<f64>| v.unwrap_or(0.0).to_string();
    let name = p.ask("Hive name", args.name.as_deref(), check_name)?;
    let address = p.ask("Location (address)", args.location.as_deref(), |a| {
        Ok::<_, String>(Some(a.trim().to_owned()).filter(|a| !a.is_empty()))
    })?;
    let latitude = p.ask("Latitude", Some(&deg(args.latitude)), check_degrees(90.0))?;
    let longitude = p.ask("Longitude", Some(&deg(args.longitude)), check_degrees(180.0))?;
    let timezone = p.ask(
        "Time zone (empty: the image's)",
        args.timezone.as_deref(),
        check_timezone,
    )?;
    let default_image = args
        .image
        .clone()
        .or_else(|| ws.config().hive_image.as_ref().map(|l| l.value.to_string()));
    let image = p.ask("Image to build on", default_image.as_deref(), check_image(ws))?;
    let admin = if admins_from_defaults {
        None
    } else {
        let (n, e, u) = DEFAULT_ADMIN;
        let name = p.ask(
            "Administrator's name",
            Some(args.admin_name.as_deref().unwrap_or(n)),
            check_name,
        )?;
        let email = p.ask(
            "Administrator's e-mail",
            Some(args.admin_email.as_deref().unwrap_or(e)),
            check_email,
        )?;
        let username = p.ask(
            "Administrator's login",
            Some(args.admin_username.as_deref().unwrap_or(u)),
            check_username,
        )?;
        let mut ssh_keys = args.admin_ssh_keys.clone();
        if ssh_keys.is_empty() {
            ssh_keys.extend(p.ask(
                "Administrator's SSH public key (empty: none)",
                None,
                check_ssh_key,
            )?);
        }
        Some(Admin {
            name,
            email,
            username,
            ssh_keys,
        })
    };
    Ok(Values {
        name,
        address,
        latitude,
        longitude,
        timezone,
        admin,
        image,
    })
}

/// `--yes`: the flags, checked as the questions check answers, and defaults.
fn from_flags(
    args: &HiveNewArgs,
    admins_from_defaults: bool,
    ws: &crate::defs::Workspace,
) -> miette::Result<Values> {
    let bad = |flag: &str, why: String| {
        miette::miette!(
            code = "w4b::hive::new_flag",
            help = "correct the flag, or run `w4b hive new` on a terminal to be asked",
            "`--{flag}`: {why}"
        )
    };
    let Some(name) = &args.name else {
        return Err(miette::miette!(
            code = "w4b::hive::new_flag",
            help = "name the hive: `w4b hive new --yes --name \"Lindenhof Apiary\"`",
            "`--yes` needs `--name`"
        ));
    };
    let name = check_name(name).map_err(|w| bad("name", w))?;
    let latitude =
        check_degrees(90.0)(&args.latitude.unwrap_or(0.0).to_string()).map_err(|w| bad("latitude", w))?;
    let longitude =
        check_degrees(180.0)(&args.longitude.unwrap_or(0.0).to_string()).map_err(|w| bad("longitude", w))?;
    let timezone = check_timezone(args.timezone.as_deref().unwrap_or("")).map_err(|w| bad("timezone", w))?;
    let admin_flags = args.admin_name.is_some()
        || args.admin_email.is_some()
        || args.admin_username.is_some()
        || !args.admin_ssh_keys.is_empty();
    let admin = if admins_from_defaults && !admin_flags {
        None
    } else {
        let (n, e, u) = DEFAULT_ADMIN;
        let mut ssh_keys = Vec::new();
        for k in &args.admin_ssh_keys {
            ssh_keys.extend(check_ssh_key(k).map_err(|w| bad("admin-ssh-key", w))?);
        }
        Some(Admin {
            name: check_name(args.admin_name.as_deref().unwrap_or(n)).map_err(|w| bad("admin-name", w))?,
            email: check_email(args.admin_email.as_deref().unwrap_or(e))
                .map_err(|w| bad("admin-email", w))?,
            username: check_username(args.admin_username.as_deref().unwrap_or(u))
                .map_err(|w| bad("admin-username", w))?,
            ssh_keys,
        })
    };
    let image = check_image(ws)(args.image.as_deref().unwrap_or("")).map_err(|w| bad("image", w))?;
    Ok(Values {
        image,
        name,
        address: args.location.clone().filter(|a| !a.trim().is_empty()),
        latitude,
        longitude,
        timezone,
        admin,
    })
}

/// `w4b hive keys LABEL --rotate …`: new credentials of the kinds asked for, written where
/// the old ones were — the secret file a `{file: …}` names, or the hive file's own text
/// for an inline secret — and the public keys in the hive file. Every other byte of the
/// hive file stays as it was.
pub fn keys(app: &App, args: &HiveKeysArgs) -> miette::Result<i32> {
    let ws = app.workspace()?;
    let label = app.resolve_one(&ws, &args.label)?;
    let rel = ws.target_file(&label);
    let path = ws.root().join(&rel);
    let original = std::fs::read_to_string(&path).map_err(io_error("read", &path))?;
    let file =
        crate::defs::SourceFile::new(crate::defs::Origin::File { path: rel.clone() }, original.clone());
    let doc = crate::defs::yaml::parse(&file)?;
    let Some(hive_id) = lookup(&doc, &["hive_id"])
        .and_then(|v| v.as_scalar())
        .map(|s| s.text.clone())
    else {
        return Err(miette::miette!(
            code = "w4b::hive::not_a_hive",
            help = "name a hive target, such as `//hives:hive_AbCd1234`",
            "`{rel}` has no `hive_id`: not a hive file"
        ));
    };
    let mut what = args.rotate.clone();
    what.sort();
    what.dedup();
    // (key path, new value, is it secret)
    let mut changes: Vec<(&[&str], String, bool)> = Vec::new();
    for w in &what {
        match w {
            RotateWhat::Ssh => {
                let pair = SshKeyPair::generate(&format!("hive-{hive_id}"))?;
                changes.push((&["security", "ssh", "public_key"], pair.public, false));
                changes.push((&["security", "ssh", "private_key"], pair.private, true));
            }
            RotateWhat::Wireguard => {
                let pair = WireGuardKeyPair::generate()?;
                changes.push((&["security", "wireguard", "public_key"], pair.public, false));
                changes.push((&["security", "wireguard", "private_key"], pair.private, true));
            }
            RotateWhat::Passwords => {
                changes.push((
                    &["security", "database", "password"],
                    credentials::database_password()?,
                    true,
                ));
                changes.push((
                    &["security", "local_access", "password"],
                    credentials::admin_password()?,
                    true,
                ));
            }
        }
    }
    // Plan every change before making any: a hive that cannot take one changes not at all.
    let dir = Path::new(&rel)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let mut pub_files: Vec<(PathBuf, String)> = Vec::new();
    // Whether a new secret goes into the hive file itself.
    let mut inline_secret = false;
    for (key, value, secret) in &changes {
        let dotted = key.join(".");
        let Some(v) = lookup(&doc, key) else {
            return Err(not_here(&rel, &dotted));
        };
        match (&v.node, secret) {
            (crate::defs::yaml::Node::Map(entries), true)
                if entries.len() == 1 && entries[0].key.name == "file" =>
            {
                let Some(p) = entries[0].value.as_scalar() else {
                    return Err(not_here(&rel, &dotted));
                };
                let Some(target) = crate::defs::WsPath::join(&dir.to_string_lossy(), &p.text) else {
                    return Err(miette::miette!(
                        code = "w4b::hive::rotate",
                        help = "keep secret files inside the workspace",
                        "`{dotted}` of `{rel}` names a file outside the workspace"
                    ));
                };
                let text = if value.ends_with('\n') {
                    value.clone()
                } else {
                    format!("{value}\n")
                };
                let abs = ws.root().join(target.as_str());
                // The SSH public half beside the private key (as `hive new` and
                // `ssh-keygen` leave it) follows it.
                if *key == ["security", "ssh", "private_key"] {
                    let mut name = abs.file_name().unwrap_or_default().to_owned();
                    name.push(".pub");
                    let public = abs.with_file_name(name);
                    let new_public = changes.iter().find(|c| *c.0 == ["security", "ssh", "public_key"]);
                    if let (true, Some((_, p, _))) = (public.is_file(), new_public) {
                        pub_files.push((public, format!("{p}\n")));
                    }
                }
                files.push((abs, text));
            }
            (crate::defs::yaml::Node::Scalar(s), _) if s.text.starts_with("${env:") => {
                return Err(miette::miette!(
                    code = "w4b::hive::rotate",
                    help = "w4b cannot change an environment variable: write the secret to a file (`{{file: …}}`) and rotate again, or make a new secret yourself",
                    "`{dotted}` of `{rel}` comes from `{}`",
                    s.text
                ));
            }
            (crate::defs::yaml::Node::Scalar(_), secret) => {
                inline_secret |= *secret;
                edits.push(inline_edit(&original, &v.span, value));
            }
            _ => return Err(not_here(&rel, &dotted)),
        }
    }
    // Every new file is written and synced beside its final name first; only then are
    // they renamed into place, secret files before the hive file. A failure while writing
    // (a full disk, a permission) leaves every old file as it was, so the public keys in
    // the hive file never disagree with the private keys beside it.
    let mut staged = Vec::new();
    for (p, text) in &files {
        if let Some(parent) = p.parent() {
            create_private_dir(parent)?;
        }
        staged.push(stage_file(p, text, 0o600)?);
    }
    for (p, text) in &pub_files {
        staged.push(stage_file(p, text, 0o644)?);
    }
    let mut mode_change = None;
    if !edits.is_empty() {
        edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
        let mut text = original.clone();
        for (range, new) in edits {
            text.replace_range(range, &new);
        }
        let was = std::fs::metadata(&path).map_or(0o644, |m| {
            use std::os::unix::fs::PermissionsExt as _;
            m.permissions().mode() & 0o777
        });
        // A new secret is not written where others can read it: a hive file that holds
        // its secrets inline loses the group's and others' bits (git keeps no such bits).
        let mode = if inline_secret { was & 0o700 } else { was };
        staged.push(stage_file(&path, &text, mode)?);
        mode_change = (mode != was).then_some((was, mode));
    }
    for s in staged {
        s.commit(true)?;
    }
    if let (Some((was, mode)), false) = (mode_change, app.global.quiet) {
        eprintln!(
            "`{rel}` holds secrets: its mode is now {mode:04o} (was {was:04o}); keep secrets in files with `{{file: …}}` to share the hive file"
        );
    }
    if !app.global.quiet {
        for w in &what {
            let done = match w {
                RotateWhat::Ssh => "new SSH key pair",
                RotateWhat::Wireguard => "new WireGuard key pair (update the hub: `w4b hive peers`)",
                RotateWhat::Passwords => "new database and local-admin passwords",
            };
            eprintln!("`{hive_id}`: {done}");
        }
        eprintln!("rebuild the image to use them: `w4b build {label}`");
    }
    Ok(0)
}

/// The edit that writes `value` over the scalar at `span` in the same style: a block
/// scalar (`|`) keeps its indicator and indentation, a single-quoted one its quotes when
/// the value allows, anything else becomes a double-quoted string (a plain one stays plain
/// for a one-line value).
fn inline_edit(original: &str, span: &crate::defs::Span, value: &str) -> (std::ops::Range<usize>, String) {
    let written = original.get(span.start..span.end).unwrap_or("");
    let before = original.get(..span.start).unwrap_or("");
    let header = before.trim_end().rsplit('\n').next().unwrap_or("");
    let block = header
        .rsplit_once(':')
        .is_some_and(|(_, rest)| rest.trim().starts_with(['|', '>']));
    let single_line = !value.trim_end().contains('\n');
    if block {
        // The span runs from the first content line's text to the next key's indentation:
        // keep the whitespace after the last line, and indent every new line as the first.
        let indent: String = before.rsplit('\n').next().unwrap_or("").to_owned();
        let end = span.start + written.trim_end().len();
        let lines: Vec<&str> = value.trim_end_matches('\n').lines().collect();
        return (span.start..end, lines.join(&format!("\n{indent}")));
    }
    let new = if written.starts_with('\'') && single_line && !value.contains('\'') {
        format!("'{value}'")
    } else if written.starts_with('"') || !single_line {
        create::quote(value)
    } else {
        value.to_owned()
    };
    (span.start..span.end, new)
}

fn not_here(rel: &str, dotted: &str) -> miette::Report {
    miette::miette!(
        code = "w4b::hive::rotate",
        help = "only credentials written in the hive file itself (text or `{{file: …}}`) can be rotated; a hive made by `w4b hive new` has them all",
        "`{rel}` has no `{dotted}` of its own"
    )
}

/// Creates `dir` (and parents) with mode 0700 for the directories it makes.
/// The fleet as its files are written, and the next free VPN address in it. Read as
/// written: a `--set` of `client_ip` or a `W4B_HIVE_ID` in the environment would give
/// every hive the same address or id and hide the real ones. With `warn`, a file that
/// does not parse is named (it may hold an address the allocation cannot see).
fn allocate(
    app: &App,
    ws: &crate::defs::Workspace,
    warn: bool,
) -> miette::Result<(Vec<fleet::Member>, std::net::Ipv4Addr)> {
    let loader = super::hive_fleet::as_written(app, ws)?;
    let all =
        ws.expand(&Pattern::parse("//...", None).map_err(|e| miette::Report::new(e.into_defs(None)))?)?;
    let (members, unreadable) = fleet::scan(&loader, &all);
    for e in unreadable.iter().filter(|_| warn) {
        eprintln!(
            "warning: {} (its VPN address, if any, is not known to the allocation)",
            e.to_string()
                .lines()
                .next()
                .unwrap_or("a definition file cannot be read")
        );
    }
    let vpn = ws.config().vpn;
    let Some(client_ip) = fleet::next_free_address(&members, &vpn) else {
        return Err(miette::miette!(
            code = "w4b::hive::vpn_full",
            help = "widen `hives.vpn.subnet` in `w4b.yaml` (a /23 holds 508 hives), or remove hives that are gone",
            "every hive address of the VPN subnet `{}` is taken ({} hives)",
            vpn.cidr(),
            members.len()
        ));
    };
    Ok((members, client_ip))
}

/// Takes the exclusive lock on `hives_dir` that serialises `hive new`s in one workspace,
/// waiting (and saying so) while another holds it; released when the file is dropped.
fn lock_fleet(hives_dir: &Path, quiet: bool) -> miette::Result<std::fs::File> {
    use rustix::fs::{flock, FlockOperation};
    let dir = std::fs::File::open(hives_dir).map_err(io_error("open", hives_dir))?;
    let locked = |op| flock(&dir, op).map_err(|e| io_error("lock", hives_dir)(e.into()));
    if locked(FlockOperation::NonBlockingLockExclusive).is_err() {
        if !quiet {
            eprintln!("waiting for another `w4b hive new` in this workspace to finish");
        }
        locked(FlockOperation::LockExclusive)?;
    }
    Ok(dir)
}

fn create_private_dir(dir: &Path) -> miette::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create", dir))?;
    Ok(())
}

/// A secret file: mode 0600 from its creation on.
fn write_secret(path: &Path, text: &str, replace: bool) -> miette::Result<()> {
    write_file(path, text, 0o600, replace)
}

/// Writes `text` to `path` with `mode`. The text goes to a temporary file beside `path`,
/// private (0600) from its creation, is synced, gets its mode and only then takes its
/// name: renamed over the old file when `replace`, else linked to the new name, which
/// fails if something has it. A crash or a full disk leaves the old file or none, never
/// half a hive file or a truncated key (the temporary file is removed on an error).
fn write_file(path: &Path, text: &str, mode: u32, replace: bool) -> miette::Result<()> {
    stage_file(path, text, mode)?.commit(replace)
}

/// A file written and synced under a temporary name beside its final one, not yet
/// renamed: dropped, it is deleted.
struct Staged {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

/// Writes `text` with `mode` to a new temporary file in `path`'s directory and syncs it.
fn stage_file(path: &Path, text: &str, mode: u32) -> miette::Result<Staged> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let write = || -> std::io::Result<tempfile::NamedTempFile> {
        let mut tmp = tempfile::Builder::new().prefix(".w4b-new").tempfile_in(dir)?;
        tmp.write_all(text.as_bytes())?;
        if mode != 0o600 {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        tmp.as_file().sync_all()?;
        Ok(tmp)
    };
    let tmp = write().map_err(io_error("write", path))?;
    Ok(Staged {
        tmp,
        path: path.to_owned(),
    })
}

impl Staged {
    /// Renames the file into place: over an existing one with `replace`, else only where
    /// nothing is.
    fn commit(self, replace: bool) -> miette::Result<()> {
        let Staged { tmp, path } = self;
        let done = match replace {
            true => tmp.persist(&path).map(drop),
            false => tmp.persist_noclobber(&path).map(drop),
        };
        done.map_err(|e| io_error("write", &path)(e.error))?;
        Ok(())
    }
}

/// A file or directory of the workspace that `hive new` or `hive keys` cannot read or
/// write.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("cannot {action} `{path}`")]
#[diagnostic(
    code(w4b::hive::io),
    help("check that its directory exists and that you may write there (`ls -ld` it); files already written stay, and a hive file is never left half-written")
)]
struct IoError {
    action: &'static str,
    path: String,
    #[source]
    source: std::io::Error,
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IoError {
    let path = path.display().to_string();
    move |source| IoError { action, path, source }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Only the files written, never a temporary one left beside them.
    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn hive_files_and_secrets_are_written_whole_under_their_name_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("db_password");
        write_secret(&secret, "s3cret\n", false).unwrap();
        assert_eq!(mode(&secret), 0o600);
        let hive = d.path().join("hive.yaml");
        write_file(&hive, "hive_id: x\n", 0o644, false).unwrap();
        assert_eq!(mode(&hive), 0o644);

        // A new file never replaces one of the same name, and leaves nothing behind.
        let err = write_file(&hive, "other\n", 0o644, false).unwrap_err();
        assert_eq!(std::fs::read_to_string(&hive).unwrap(), "hive_id: x\n");
        assert_eq!(
            err.code().map(|c| c.to_string()).as_deref(),
            Some("w4b::hive::io")
        );
        assert!(err.help().is_some());
        assert_eq!(names(d.path()), ["db_password", "hive.yaml"]);

        // A replaced one is swapped whole and keeps the mode asked for.
        write_secret(&secret, "n3w\n", true).unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "n3w\n");
        assert_eq!(mode(&secret), 0o600);
        assert_eq!(names(d.path()), ["db_password", "hive.yaml"]);

        // A directory that cannot be made is an error with a code, not a panic.
        let blocked = hive.join("secrets");
        let err = create_private_dir(&blocked).unwrap_err();
        assert_eq!(
            err.code().map(|c| c.to_string()).as_deref(),
            Some("w4b::hive::io")
        );
        let err = write_secret(&blocked.join("key"), "k\n", false).unwrap_err();
        assert!(err.to_string().starts_with("cannot write"), "{err}");
    }

    /// `hive keys` stages every file before it renames any: a file that cannot be written
    /// leaves the others as they were (no new private key beside an old hive file).
    #[test]
    fn staged_files_take_their_names_only_together() {
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("wireguard.key");
        write_secret(&secret, "old key\n", false).unwrap();
        let staged = stage_file(&secret, "new key\n", 0o600).unwrap();
        let blocked = d.path().join("wireguard.key").join("hive.yaml");
        assert!(stage_file(&blocked, "public: new\n", 0o644).is_err());
        drop(staged);
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "old key\n");
        assert_eq!(names(d.path()), ["wireguard.key"], "a staged file left behind");

        let staged = stage_file(&secret, "new key\n", 0o600).unwrap();
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "old key\n",
            "renamed early"
        );
        staged.commit(true).unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "new key\n");
        assert_eq!(mode(&secret), 0o600);
    }
}
