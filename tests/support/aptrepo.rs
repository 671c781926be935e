//! A small, signed Debian repository built at test time by the real tools, served on
//! `127.0.0.1` by the test HTTP server (`tests/support/http.rs`).
//!
//! Packages are described in Rust ([`Deb`]) and built with `dpkg-deb --build`; indices
//! come from `apt-ftparchive packages` and `apt-ftparchive release` (with `Suite`,
//! `Codename`, `Architectures` and `Components` set); the `Release` file is signed by a
//! throw-away GnuPG key created in the repository's own `GNUPGHOME` (`gpg --clearsign` for
//! `InRelease`, `--detach-sign` for `Release.gpg`, `--export --armor` for the key file).
//! The layout is Debian's: `dists/<suite>/{InRelease,Release,Release.gpg}`,
//! `dists/<suite>/<component>/binary-<arch>/Packages{,.gz,.xz}` and `pool/<component>/`.
//!
//! Variants produce each failure a client must catch: no signature, a signature by
//! another key, a SHA-1 signature, a `Release` whose `Packages` digest is wrong (signed
//! nonetheless), and a `.deb` whose bytes differ from its `Packages` entry.
//!
//! Everything that can be pinned is: `SOURCE_DATE_EPOCH` and gpg's clock
//! (`--faked-system-time`) are [`EPOCH`], the `Release` `Date` is that time, file names
//! and key user IDs are fixed. Key material is random (gpg offers no seed), so
//! fingerprints differ between runs and tests compare against [`AptRepo::fingerprint`].
//!
//! Tools: `dpkg-deb`, `apt-ftparchive` (package `apt-utils`), `gpg`, `xz`, `gzip`; the
//! builder returns `None` when one is missing, after the oracle policy has spoken
//! (`tests/support/oracle.rs`: a failure under CI, a visible skip elsewhere).

#![allow(dead_code)]
#![allow(clippy::disallowed_methods)] // the fixture runs dpkg-deb, apt-ftparchive and gpg

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::http::TestServer;

/// The fixture's one time: 2024-01-01T00:00:00Z, for `SOURCE_DATE_EPOCH`, gpg's clock
/// and the `Release` file's `Date`.
pub const EPOCH: u64 = 1_704_067_200;
/// `EPOCH` as gpg's `--faked-system-time` wants it (the `!` freezes the clock).
const GPG_TIME: &str = "20240101T000000!";

/// The tools the fixture runs.
pub const TOOLS: [&str; 5] = ["dpkg-deb", "apt-ftparchive", "gpg", "xz", "gzip"];

/// One binary package, built with `dpkg-deb --build`.
#[derive(Clone, Debug)]
pub struct Deb {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub component: String,
    fields: Vec<(String, String)>,
    postinst: Option<String>,
    preinst: Option<String>,
    /// (absolute path inside the package, content, mode, is a conffile)
    files: Vec<(String, Vec<u8>, u32, bool)>,
}

impl Deb {
    pub fn new(name: &str, version: &str, arch: &str) -> Deb {
        Deb {
            name: name.to_owned(),
            version: version.to_owned(),
            arch: arch.to_owned(),
            component: "main".to_owned(),
            fields: Vec::new(),
            postinst: None,
            preinst: None,
            files: Vec::new(),
        }
    }

    /// Any control field (`Depends`, `Pre-Depends`, `Provides`, `Conflicts`, …), in order.
    pub fn field(mut self, name: &str, value: &str) -> Deb {
        self.fields.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn depends(self, value: &str) -> Deb {
        self.field("Depends", value)
    }

    pub fn pre_depends(self, value: &str) -> Deb {
        self.field("Pre-Depends", value)
    }

    pub fn provides(self, value: &str) -> Deb {
        self.field("Provides", value)
    }

    pub fn component(mut self, component: &str) -> Deb {
        self.component = component.to_owned();
        self
    }

    /// The `postinst` maintainer script (a `#!/bin/sh` line is added when missing).
    pub fn postinst(mut self, script: &str) -> Deb {
        self.postinst = Some(script.to_owned());
        self
    }

    pub fn preinst(mut self, script: &str) -> Deb {
        self.preinst = Some(script.to_owned());
        self
    }

    /// A regular file, mode 0644.
    pub fn file(mut self, path: &str, content: &[u8]) -> Deb {
        self.files.push((path.to_owned(), content.to_vec(), 0o644, false));
        self
    }

    /// An executable, mode 0755.
    pub fn executable(mut self, path: &str, content: &[u8]) -> Deb {
        self.files.push((path.to_owned(), content.to_vec(), 0o755, false));
        self
    }

    /// A configuration file, listed in `DEBIAN/conffiles` (path under `/etc`).
    pub fn conffile(mut self, path: &str, content: &[u8]) -> Deb {
        self.files.push((path.to_owned(), content.to_vec(), 0o644, true));
        self
    }

    /// The pool file name, as `dpkg-name` would give it.
    pub fn file_name(&self) -> String {
        // Epochs are not part of file names (Debian Policy §5.6.12).
        let version = self.version.split_once(':').map_or(&*self.version, |(_, v)| v);
        format!("{}_{}_{}.deb", self.name, version, self.arch)
    }

    /// `pool/<component>/<first letter>/<name>/<file>`, Debian's pool layout.
    pub fn pool_path(&self) -> String {
        let letter = if self.name.starts_with("lib") && self.name.len() > 3 {
            self.name.get(..4).unwrap_or(&self.name)
        } else {
            self.name.get(..1).unwrap_or(&self.name)
        };
        format!(
            "pool/{}/{letter}/{}/{}",
            self.component,
            self.name,
            self.file_name()
        )
    }

    fn control(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "Package: {}", self.name);
        let _ = writeln!(c, "Version: {}", self.version);
        let _ = writeln!(c, "Architecture: {}", self.arch);
        let _ = writeln!(c, "Maintainer: W4B Tests <tests@example.invalid>");
        let installed: usize = self.files.iter().map(|f| f.1.len()).sum();
        let _ = writeln!(c, "Installed-Size: {}", installed.div_ceil(1024).max(1));
        for (name, value) in &self.fields {
            let _ = writeln!(c, "{name}: {value}");
        }
        let _ = writeln!(c, "Section: misc");
        let _ = writeln!(c, "Priority: optional");
        let _ = writeln!(c, "Description: {} for the w4b tests", self.name);
        let _ = writeln!(c, " Built by tests/support/aptrepo.rs.");
        c
    }

    /// Builds the `.deb` into `out` with `dpkg-deb`.
    fn build(&self, scratch: &Path, out: &Path) {
        let root = scratch.join(format!("{}-{}-{}", self.name, self.version, self.arch));
        let debian = root.join("DEBIAN");
        std::fs::create_dir_all(&debian).expect("mkdir DEBIAN");
        write_mode(&debian.join("control"), self.control().as_bytes(), 0o644);
        for (name, script) in [("postinst", &self.postinst), ("preinst", &self.preinst)] {
            if let Some(script) = script {
                let body = if script.starts_with("#!") {
                    script.clone()
                } else {
                    format!("#!/bin/sh\nset -e\n{script}\n")
                };
                write_mode(&debian.join(name), body.as_bytes(), 0o755);
            }
        }
        let mut conffiles = String::new();
        for (path, content, mode, conf) in &self.files {
            let rel = path.trim_start_matches('/');
            let dest = root.join(rel);
            std::fs::create_dir_all(dest.parent().expect("a file has a parent")).expect("mkdir");
            write_mode(&dest, content, *mode);
            if *conf {
                let _ = writeln!(conffiles, "/{rel}");
            }
        }
        if !conffiles.is_empty() {
            write_mode(&debian.join("conffiles"), conffiles.as_bytes(), 0o644);
        }
        // The tree's directories go into the package with their modes, and
        // dpkg-deb refuses a control directory that is not 0755: set them
        // whatever the umask (CI runs with 077).
        chmod_dirs(&root);
        std::fs::create_dir_all(out.parent().expect("pool dir")).expect("mkdir pool");
        run(Command::new("dpkg-deb")
            .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&root)
            .arg(out));
    }
}

/// Sets every directory at and under `dir` to 0755.
fn chmod_dirs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("dir entry");
        if entry.file_type().expect("file type").is_dir() {
            chmod_dirs(&entry.path());
        }
    }
}

fn write_mode(path: &Path, content: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, content).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// How the `Release` file is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signing {
    /// `InRelease` and `Release.gpg` by the repository's key, SHA-512.
    Good,
    /// No `InRelease`, no `Release.gpg`.
    Unsigned,
    /// Signed by a second key; [`AptRepo::key`] still exports the repository's own key.
    OtherKey,
    /// Signed by the repository's key with `--digest-algo SHA1` (an RSA key: gpg refuses
    /// SHA-1 with EdDSA).
    Sha1,
}

/// A deliberate inconsistency in an otherwise good repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// The signed `Release` lists a wrong sha256 for `Packages.xz` of the first
    /// architecture (same size).
    PackagesHash,
    /// The named package's `.deb` in the pool has one byte changed after indexing.
    DebBytes(String),
}

pub struct AptRepoBuilder {
    suite: String,
    codename: String,
    origin: String,
    components: Vec<String>,
    architectures: Vec<String>,
    packages: Vec<Deb>,
    signing: Signing,
    tampers: Vec<Tamper>,
    rsa: bool,
    serve: bool,
    expire: String,
    revoked: bool,
}

impl AptRepoBuilder {
    pub fn suite(mut self, suite: &str) -> Self {
        self.suite = suite.to_owned();
        self
    }

    pub fn codename(mut self, codename: &str) -> Self {
        self.codename = codename.to_owned();
        self
    }

    /// The architectures with a `binary-<arch>` index (`all` packages go into each).
    pub fn architectures(mut self, archs: &[&str]) -> Self {
        self.architectures = archs.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    pub fn components(mut self, components: &[&str]) -> Self {
        self.components = components.iter().map(|c| (*c).to_owned()).collect();
        self
    }

    pub fn package(mut self, deb: Deb) -> Self {
        self.packages.push(deb);
        self
    }

    pub fn signing(mut self, signing: Signing) -> Self {
        self.signing = signing;
        self
    }

    pub fn tamper(mut self, tamper: Tamper) -> Self {
        self.tampers.push(tamper);
        self
    }

    /// Sign with an RSA 3072 key instead of Ed25519.
    pub fn rsa(mut self) -> Self {
        self.rsa = true;
        self
    }

    /// The repository key's lifetime as `gpg --quick-gen-key` takes it (`1d`, `2y`);
    /// `never` unless changed. The key is created at [`EPOCH`].
    pub fn key_expires(mut self, expire: &str) -> Self {
        self.expire = expire.to_owned();
        self
    }

    /// After signing, revoke the repository key (gpg's stored revocation certificate,
    /// reason "no reason specified") and export the revoked key as [`AptRepo::key`].
    pub fn revoked(mut self) -> Self {
        self.revoked = true;
        self
    }

    /// Do not start the HTTP server (tests that read files directly).
    pub fn offline(mut self) -> Self {
        self.serve = false;
        self
    }

    /// Writes the indices of what the pool holds, the `Release` file, and signs it.
    fn index_and_sign(&self, root: &Path, gpg: &Gpg, fingerprint: &str, other: Option<&str>) {
        let dists = root.join("dists").join(&self.suite);
        for component in &self.components {
            for arch in &self.architectures {
                let dir = dists.join(component).join(format!("binary-{arch}"));
                std::fs::create_dir_all(&dir).expect("mkdir binary-ARCH");
                let pool = format!("pool/{component}");
                let packages = if root.join(&pool).is_dir() {
                    output(
                        Command::new("apt-ftparchive")
                            .current_dir(root)
                            .args(["--arch", arch, "packages", &pool]),
                    )
                } else {
                    Vec::new()
                };
                std::fs::write(dir.join("Packages"), &packages).expect("Packages");
                run(Command::new("xz")
                    .args(["-k", "-6", "-T1", "-f"])
                    .arg(dir.join("Packages")));
                run(Command::new("gzip")
                    .args(["-k", "-n", "-9", "-f"])
                    .arg(dir.join("Packages")));
            }
        }

        // The Release file, outside `dists/<suite>` so it does not list itself.
        let option = |name: &str, value: &str| format!("APT::FTPArchive::Release::{name}={value}");
        let release_text = output(
            Command::new("apt-ftparchive")
                .current_dir(&dists)
                .args(["-o", &option("Origin", &self.origin)])
                .args(["-o", &option("Label", &self.origin)])
                .args(["-o", &option("Suite", &self.suite)])
                .args(["-o", &option("Codename", &self.codename)])
                .args(["-o", &option("Architectures", &self.architectures.join(" "))])
                .args(["-o", &option("Components", &self.components.join(" "))])
                .args(["-o", &option("Acquire-By-Hash", "no")])
                .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
                .args(["release", "."]),
        );
        let mut release = String::from_utf8(release_text).expect("Release is text");
        // Pin `Date` whatever apt-ftparchive's version does with SOURCE_DATE_EPOCH.
        release = release
            .lines()
            .map(|l| {
                if l.starts_with("Date:") {
                    "Date: Mon, 01 Jan 2024 00:00:00 UTC".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        release.push('\n');
        if self.tampers.contains(&Tamper::PackagesHash) {
            let arch = self.architectures.first().expect("an architecture");
            let target = format!("{}/binary-{arch}/Packages.xz", self.components[0]);
            release = tamper_sha256(&release, &target);
        }
        std::fs::write(dists.join("Release"), &release).expect("Release");

        match self.signing {
            Signing::Unsigned => {}
            Signing::Good | Signing::OtherKey | Signing::Sha1 => {
                let signer = other.unwrap_or(fingerprint);
                let digest = if self.signing == Signing::Sha1 {
                    "SHA1"
                } else {
                    "SHA512"
                };
                gpg.sign(
                    signer,
                    digest,
                    &dists.join("Release"),
                    &dists.join("InRelease"),
                    true,
                );
                gpg.sign(
                    signer,
                    digest,
                    &dists.join("Release"),
                    &dists.join("Release.gpg"),
                    false,
                );
            }
        }
    }

    /// Builds the repository, or `None` when a tool is missing (see the module doc).
    pub fn build(self) -> Option<AptRepo> {
        if !crate::oracle::have_all(&TOOLS) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("repo");
        let scratch = dir.path().join("scratch");
        let gnupg = dir.path().join("gnupg");
        std::fs::create_dir_all(&root).expect("mkdir repo");
        std::fs::create_dir_all(&scratch).expect("mkdir scratch");
        {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&gnupg)
                .expect("GNUPGHOME");
        }
        let gpg = Gpg { home: gnupg };

        // Keys: the repository's, and a stranger's when the variant needs one.
        let rsa = self.rsa || self.signing == Signing::Sha1;
        let fingerprint = gpg.generate("W4B Test Repository <repo@example.invalid>", rsa, &self.expire);
        let other = (self.signing == Signing::OtherKey)
            .then(|| gpg.generate("Somebody Else <else@example.invalid>", false, "never"));

        // Packages, then one index per component and architecture.
        for deb in &self.packages {
            deb.build(&scratch, &root.join(deb.pool_path()));
        }
        self.index_and_sign(&root, &gpg, &fingerprint, other.as_deref());
        if self.revoked {
            gpg.revoke(&fingerprint);
        }
        let key = output(gpg.cmd().args(["--armor", "--export", &fingerprint]));
        let other_key = other
            .as_ref()
            .map(|fp| output(gpg.cmd().args(["--armor", "--export", fp])));

        for tamper in &self.tampers {
            if let Tamper::DebBytes(name) = tamper {
                let deb = self
                    .packages
                    .iter()
                    .find(|d| &d.name == name)
                    .expect("tampered package is in the repository");
                let path = root.join(deb.pool_path());
                let mut bytes = std::fs::read(&path).expect("read .deb");
                // The last byte is inside data.tar.xz; flipping it keeps the size.
                if let Some(last) = bytes.last_mut() {
                    *last ^= 0x55;
                }
                std::fs::write(&path, bytes).expect("write .deb");
            }
        }

        let server = self.serve.then(|| {
            let server = TestServer::start();
            for (rel, _) in walk(&root) {
                let bytes = std::fs::read(root.join(&rel)).expect("read repo file");
                server.serve(&format!("/debian/{rel}"), bytes);
            }
            server
        });
        gpg.stop_agent();
        Some(AptRepo {
            _dir: dir,
            root,
            scratch,
            gpg,
            suite: self.suite.clone(),
            codename: self.codename.clone(),
            fingerprint,
            other_fingerprint: other,
            key,
            other_key,
            packages: self.packages.clone(),
            server,
            spec: self,
        })
    }
}

/// A built repository. Dropping it stops the server and deletes the files.
pub struct AptRepo {
    _dir: tempfile::TempDir,
    root: PathBuf,
    pub suite: String,
    pub codename: String,
    /// The repository key's primary fingerprint (upper-case hex).
    pub fingerprint: String,
    /// The stranger's fingerprint, for [`Signing::OtherKey`].
    pub other_fingerprint: Option<String>,
    /// The repository key, `gpg --export --armor`.
    pub key: Vec<u8>,
    /// The stranger's key, for [`Signing::OtherKey`].
    pub other_key: Option<Vec<u8>>,
    pub packages: Vec<Deb>,
    server: Option<TestServer>,
    scratch: PathBuf,
    gpg: Gpg,
    /// What it was built from, to publish again.
    spec: AptRepoBuilder,
}

impl AptRepo {
    pub fn builder() -> AptRepoBuilder {
        AptRepoBuilder {
            suite: "w4b-test".to_owned(),
            codename: "hive".to_owned(),
            origin: "W4B".to_owned(),
            components: vec!["main".to_owned()],
            architectures: vec!["arm64".to_owned(), "armhf".to_owned()],
            packages: Vec::new(),
            signing: Signing::Good,
            tampers: Vec::new(),
            rsa: false,
            serve: true,
            expire: "never".to_owned(),
            revoked: false,
        }
    }

    /// The repository's root directory (holding `dists/` and `pool/`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The base URL apt would be given (`http://127.0.0.1:PORT/debian`); panics for an
    /// [`AptRepoBuilder::offline`] repository.
    pub fn url(&self) -> String {
        self.server
            .as_ref()
            .expect("the repository is served")
            .url("/debian")
    }

    pub fn server(&self) -> &TestServer {
        self.server.as_ref().expect("the repository is served")
    }

    /// A file by its path below the root, e.g. `dists/w4b-test/InRelease`.
    pub fn file(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn has_file(&self, rel: &str) -> bool {
        self.root.join(rel).is_file()
    }

    /// `dists/<suite>/<name>`.
    pub fn dist_file(&self, name: &str) -> Vec<u8> {
        self.file(&format!("dists/{}/{name}", self.suite))
    }

    /// Uploads `deb` in place of the package of its name and architecture, as an archive
    /// publishes a new version: the old `.deb` leaves the pool and the indices, the
    /// indices and `Release` are written again and signed by the same key, and the server
    /// serves the new files. Only for a good repository (no tampering, not revoked).
    pub fn replace(&mut self, deb: Deb) {
        assert!(
            self.spec.tampers.is_empty() && !self.spec.revoked,
            "only a good repository is published again"
        );
        for old in self
            .packages
            .iter()
            .filter(|d| d.name == deb.name && d.arch == deb.arch)
        {
            std::fs::remove_file(self.root.join(old.pool_path())).expect("remove the old .deb");
        }
        self.packages
            .retain(|d| !(d.name == deb.name && d.arch == deb.arch));
        deb.build(&self.scratch, &self.root.join(deb.pool_path()));
        self.packages.push(deb);
        self.spec.packages = self.packages.clone();
        self.spec.index_and_sign(
            &self.root,
            &self.gpg,
            &self.fingerprint,
            self.other_fingerprint.as_deref(),
        );
        self.gpg.stop_agent();
        if let Some(server) = &self.server {
            for (rel, _) in walk(&self.root) {
                let bytes = std::fs::read(self.root.join(&rel)).expect("read repo file");
                server.serve(&format!("/debian/{rel}"), bytes);
            }
        }
    }
}

/// Flips the first hex digit of `path`'s line in the `SHA256:` section.
fn tamper_sha256(release: &str, path: &str) -> String {
    let mut in_sha256 = false;
    let mut done = false;
    let mut out = String::new();
    for line in release.lines() {
        if !line.starts_with(' ') {
            in_sha256 = line.starts_with("SHA256:");
        }
        let mut line = line.to_owned();
        if in_sha256 && !done && line.split_whitespace().nth(2) == Some(path) {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            let first = trimmed.chars().next().expect("a digest");
            let flipped = if first == '0' { '1' } else { '0' };
            line.replace_range(indent..indent + 1, &flipped.to_string());
            done = true;
        }
        out.push_str(&line);
        out.push('\n');
    }
    assert!(done, "`{path}` is not in the Release file");
    out
}

/// Every regular file below `root`, as (relative path, absolute path), sorted.
fn walk(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .expect("below root")
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, path));
            }
        }
    }
    out.sort();
    out
}

/// A throw-away GnuPG home.
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &self.home)
            .env("LC_ALL", "C")
            .args(["--batch", "--quiet", "--no-tty", "--faked-system-time", GPG_TIME])
            .args(["--pinentry-mode", "loopback", "--passphrase", ""]);
        c
    }

    /// Creates a signing-only primary key without passphrase; returns its fingerprint.
    fn generate(&self, uid: &str, rsa: bool, expire: &str) -> String {
        let algo = if rsa { "rsa3072" } else { "ed25519" };
        run(self.cmd().args(["--quick-gen-key", uid, algo, "sign", expire]));
        let listing = output(
            self.cmd()
                .args(["--with-colons", "--fingerprint", "--list-keys", uid]),
        );
        let text = String::from_utf8(listing).expect("gpg output is text");
        text.lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|rest| rest.split(':').find(|f| !f.is_empty()))
            .expect("gpg lists the new key's fingerprint")
            .to_owned()
    }

    fn sign(&self, fingerprint: &str, digest: &str, input: &Path, out: &Path, clear: bool) {
        let mut c = self.cmd();
        c.args(["--yes", "--local-user", fingerprint, "--digest-algo", digest]);
        if clear {
            c.arg("--clearsign");
        } else {
            c.args(["--armor", "--detach-sign"]);
        }
        run(c.arg("--output").arg(out).arg(input));
    }

    /// Imports the revocation certificate gpg stored when it created the key. gpg
    /// prefixes its armor line with `:` against accidental import; remove that.
    fn revoke(&self, fingerprint: &str) {
        let path = self
            .home
            .join("openpgp-revocs.d")
            .join(format!("{fingerprint}.rev"));
        let text = std::fs::read_to_string(&path).expect("gpg stored a revocation certificate");
        let cert = text.replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        );
        let file = self.home.join("revoke.asc");
        std::fs::write(&file, cert).expect("write revocation");
        run(self.cmd().arg("--import").arg(&file));
    }

    /// Stops the agent gpg started for this home, so no process outlives the test.
    fn stop_agent(&self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "gpg-agent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[track_caller]
fn run(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[track_caller]
fn output(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
