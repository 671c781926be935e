//! `w4b lock`'s resolution of one lock entry: repositories read through their signed
//! chain, the base's dpkg database, the resolver, and the entry written down.
//!
//! The chain of trust, per repository (see `docs/security.md`, "Package repositories"):
//!
//! 1. `dists/<suite>/InRelease` is downloaded (it is the only unpinned download) and its
//!    OpenPGP signature checked against the key the package set pins
//!    ([`super::signature`]); a `trusted: true` repository's `Release` is taken unsigned.
//! 2. The verified `Release` lists each index's sha256 and size; the indices are fetch
//!    steps keyed by that sha256 (cached, mirrors apply) and checked again, decompressed,
//!    against it ([`super::release::verify_index`]).
//! 3. Each index paragraph gives a `.deb`'s sha256, which goes into the lock; a build
//!    fetches the `.deb` by it.
//!
//! Resolution itself is [`super::resolve`]; what the base already has comes from its own
//! `/var/lib/dpkg/status`, so it is neither reinstalled nor contradicted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};
use thiserror::Error;

use super::release::{IndexRef, Release};
use super::resolve::{self, Candidate, Installed, Options};
use super::signature::{verify_clearsigned, Fingerprint, Keyring};
use crate::defs::packages::{PackageSet, Repository, Trust};
use crate::defs::Span;
use crate::download::{redact_url, Fetcher};
use crate::lockfile::{Entry, LockedPackage, LockedRepository};

/// The largest `InRelease` w4b reads (Debian's is about 150 KiB).
const MAX_RELEASE: u64 = 16 << 20;
/// The largest index w4b decompresses (Debian bookworm's arm64 `Packages` is about 45 MiB).
pub const MAX_INDEX: u64 = 1 << 30;

/// Where a repository or a request is written, for messages: the package set's label and
/// the span of the value in its file (a printable `file:line:col` and a snippet).
#[derive(Clone, Debug)]
pub struct DefinedAt {
    pub set: String,
    pub span: Span,
}

impl DefinedAt {
    /// `` `//packages:hive` (defs/packages/hive.yaml:3:5) ``
    pub fn text(&self) -> String {
        format!("`{}` ({})", self.set, self.span.location())
    }

    fn src(&self) -> NamedSource<Arc<str>> {
        self.span.named_source()
    }

    fn source_span(&self) -> SourceSpan {
        self.span.source_span()
    }
}

#[derive(Debug, Error, Diagnostic)]
pub enum LockError {
    #[error("cannot read the release file of repository `{repo}` (`{url}`), defined in {defined_in}")]
    #[diagnostic(
        code(w4b::lock::release_unavailable),
        help("check the repository's `url` and `suite`; `{url}` must exist")
    )]
    ReleaseUnavailable {
        repo: String,
        url: String,
        defined_in: String,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[label("this repository")]
        span: SourceSpan,
        #[source]
        #[diagnostic_source]
        source: Box<dyn Diagnostic + Send + Sync>,
    },

    #[error("repository `{repo}` (`{url}`) is not signed, but {defined_in} pins a key for it")]
    #[diagnostic(
        code(w4b::lock::unsigned),
        help("the repository publishes a `Release` file without `InRelease` or `Release.gpg`, so nothing vouches for its packages; if you trust it by other means (a repository of your own on a network you control), replace `key:` by `trusted: true`; otherwise it is not the repository you expect")
    )]
    Unsigned {
        repo: String,
        url: String,
        defined_in: String,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[label("pins a key")]
        span: SourceSpan,
    },

    #[error("repository `{repo}` (`{url}`) is signed only by a detached `Release.gpg`, which w4b does not read (defined in {defined_in})")]
    #[diagnostic(
        code(w4b::lock::detached_signature),
        help("w4b verifies the inline-signed `InRelease` that every current Debian archive publishes; ask the archive to publish `InRelease` (`apt-ftparchive release` and `gpg --clearsign`), or use a mirror that does")
    )]
    DetachedSignature {
        repo: String,
        url: String,
        defined_in: String,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[label("this repository")]
        span: SourceSpan,
    },

    #[error("the signature of repository `{repo}` (`{url}`) does not verify against the key pinned in {defined_in}")]
    #[diagnostic(
        code(w4b::lock::bad_signature),
        help("the repository's `InRelease` must be signed by the pinned key; if the archive rotated its key, pin the new one after checking its fingerprint out of band")
    )]
    BadSignature {
        repo: String,
        url: String,
        defined_in: String,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[label("pins the key")]
        span: SourceSpan,
        #[source]
        #[diagnostic_source]
        source: Box<dyn Diagnostic + Send + Sync>,
    },

    #[error("cannot read the pinned key `{path}` of repository `{repo}`, defined in {defined_in}")]
    #[diagnostic(
        code(w4b::lock::bad_key),
        help("`key:` names an OpenPGP public key or keyring file (armored `.asc` or binary `.gpg`) inside the workspace")
    )]
    BadKey {
        repo: String,
        path: String,
        defined_in: String,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[label("pins this key")]
        span: SourceSpan,
        #[source]
        #[diagnostic_source]
        source: Box<dyn Diagnostic + Send + Sync>,
    },

    #[error("the release file of repository `{repo}` (`{url}`) is not usable (defined in {defined_in})")]
    #[diagnostic(code(w4b::lock::bad_release))]
    BadRelease {
        repo: String,
        url: String,
        defined_in: String,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[label("this repository")]
        span: SourceSpan,
        #[source]
        #[diagnostic_source]
        source: Box<dyn Diagnostic + Send + Sync>,
    },

    #[error("the index `{path}` of repository `{repo}` does not match its signed release file")]
    #[diagnostic(
        code(w4b::lock::bad_index),
        help("a mirror served an index that differs from the one `InRelease` lists (a mirror in the middle of an update, or tampering); run `w4b lock` again later, or use another mirror")
    )]
    BadIndex {
        repo: String,
        path: String,
        #[source]
        #[diagnostic_source]
        source: Box<dyn Diagnostic + Send + Sync>,
    },

    #[error("the index `{path}` of repository `{repo}` is malformed")]
    #[diagnostic(code(w4b::lock::bad_index))]
    MalformedIndex {
        repo: String,
        path: String,
        #[source]
        #[diagnostic_source]
        source: Box<dyn Diagnostic + Send + Sync>,
    },

    #[error("the base `{base}` has no dpkg database (`/var/lib/dpkg/status`)")]
    #[diagnostic(
        code(w4b::lock::base_without_dpkg),
        help("package sets are installed with the base's own dpkg: use a Debian-based base such as Raspberry Pi OS")
    )]
    BaseWithoutDpkg { base: String },

    #[error("the dpkg database of the base `{base}` is malformed")]
    #[diagnostic(code(w4b::lock::bad_status))]
    BadStatus {
        base: String,
        #[source]
        #[diagnostic_source]
        source: Box<dyn Diagnostic + Send + Sync>,
    },

    #[error("`{entry}` cannot be resolved against {repositories} (for `{target}`, at {at})")]
    #[diagnostic(code(w4b::lock::unresolvable))]
    Unresolvable {
        entry: String,
        /// The repositories searched, backticked.
        repositories: String,
        target: String,
        at: String,
        /// "did you mean …?" for an unknown name.
        #[help]
        help: Option<String>,
        /// The request the failure goes back to, in its set.
        #[source_code]
        src: Option<NamedSource<Arc<str>>>,
        #[label("requested here")]
        span: Option<SourceSpan>,
        #[source]
        #[diagnostic_source]
        source: Box<dyn Diagnostic + Send + Sync>,
    },
}

/// A repository's verified release, read for one architecture.
pub struct RepoRelease {
    pub repo: Repository,
    /// Where the package set that defines it is (for messages).
    pub defined_in: DefinedAt,
    pub release: Release,
    pub locked: LockedRepository,
    /// The indices to fetch: `(path below dists/<suite>/, what it must be)`.
    pub indices: Vec<IndexRef>,
}

impl RepoRelease {
    /// The URL of an index, by hash when the repository offers it (immune to a mirror
    /// updating between the release file and the index).
    pub fn index_url(&self, index: &IndexRef) -> String {
        let path = if self.release.acquire_by_hash {
            index.by_hash_path()
        } else {
            index.path.clone()
        };
        format!("{}/dists/{}/{path}", self.repo.url, self.repo.suite)
    }

    /// The mirrors to fetch an index with: the workspace's, and — when the index is fetched
    /// by hash — its plain path after them (apt's fallback: some mirrors do not keep every
    /// `by-hash` file; the sha256 decides either way).
    pub fn index_mirrors(
        &self,
        index: &IndexRef,
        mirrors: &[(String, Vec<String>)],
    ) -> Vec<(String, Vec<String>)> {
        let mut out = mirrors.to_vec();
        if self.release.acquire_by_hash {
            let by_hash = self.index_url(index);
            let plain = format!("{}/dists/{}/{}", self.repo.url, self.repo.suite, index.path);
            let mut tried = crate::download::sources(&by_hash, mirrors);
            tried.extend(crate::download::sources(&plain, mirrors));
            out.push((by_hash, tried));
        }
        out
    }
}

/// Downloads and verifies `repo`'s release file; `key_bytes` is the pinned key file's
/// content (`None` for `trusted: true`).
pub fn read_release(
    fetcher: &Fetcher,
    mirrors: &[(String, Vec<String>)],
    repo: &Repository,
    key_bytes: Option<&[u8]>,
    arch: &str,
    defined_in: &DefinedAt,
) -> Result<RepoRelease, Box<LockError>> {
    let dists = format!("{}/dists/{}", repo.url, repo.suite);
    let (file, signed) = match &repo.trust {
        Trust::Key { .. } => ("InRelease", true),
        Trust::Unsigned => ("Release", false),
    };
    let url = format!("{dists}/{file}");
    let shown = redact_url(&url).into_owned();
    let at = defined_in.text();
    let bytes = match fetcher.get_unpinned(&url, mirrors, MAX_RELEASE) {
        Ok(bytes) => bytes,
        Err(source) => {
            // No `InRelease` where a key is pinned: say whether the repository is unsigned
            // (a trust decision for the user) or signed in a form w4b does not read, rather
            // than only that a download failed.
            if signed {
                let exists = |name: &str| {
                    fetcher
                        .get_unpinned(&format!("{dists}/{name}"), mirrors, MAX_RELEASE)
                        .is_ok()
                };
                if exists("Release") {
                    let repo_url = redact_url(&repo.url).into_owned();
                    return Err(Box::new(if exists("Release.gpg") {
                        LockError::DetachedSignature {
                            repo: repo.name.clone(),
                            url: repo_url,
                            defined_in: at,
                            src: defined_in.src(),
                            span: defined_in.source_span(),
                        }
                    } else {
                        LockError::Unsigned {
                            repo: repo.name.clone(),
                            url: repo_url,
                            defined_in: at,
                            src: defined_in.src(),
                            span: defined_in.source_span(),
                        }
                    }));
                }
            }
            return Err(Box::new(LockError::ReleaseUnavailable {
                repo: repo.name.clone(),
                url: shown,
                defined_in: at,
                src: defined_in.src(),
                span: defined_in.source_span(),
                source: Box::new(source),
            }));
        }
    };
    let (payload, signed_by): (Vec<u8>, Option<Fingerprint>) = match (&repo.trust, signed) {
        (
            Trust::Key {
                file, fingerprints, ..
            },
            true,
        ) => {
            let key_bytes = key_bytes.unwrap_or_default();
            let bad_key = |e: super::signature::SignatureError| LockError::BadKey {
                repo: repo.name.clone(),
                path: file.to_string(),
                defined_in: at.clone(),
                src: defined_in.src(),
                span: defined_in.source_span(),
                source: Box::new(e),
            };
            let mut keys = Keyring::from_bytes(key_bytes).map_err(bad_key)?;
            if !fingerprints.is_empty() {
                let wanted = fingerprints
                    .iter()
                    .map(|f| f.parse::<Fingerprint>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad_key)?;
                keys = keys.select_all(&wanted).map_err(bad_key)?;
            }
            let verified = verify_clearsigned(&bytes, &keys).map_err(|source| LockError::BadSignature {
                repo: repo.name.clone(),
                url: shown.clone(),
                defined_in: at.clone(),
                src: defined_in.src(),
                span: defined_in.source_span(),
                source: Box::new(source),
            })?;
            let signer = verified.signer().primary.clone();
            (verified.payload, Some(signer))
        }
        _ => (bytes.clone(), None),
    };
    let bad_release = |source: super::release::ReleaseError| LockError::BadRelease {
        repo: repo.name.clone(),
        url: shown.clone(),
        defined_in: at.clone(),
        src: defined_in.src(),
        span: defined_in.source_span(),
        source: Box::new(source),
    };
    let release = Release::parse_for_suite(&payload, &repo.suite).map_err(bad_release)?;
    let mut indices = Vec::new();
    for component in &repo.components {
        let index = release
            .index(&format!("{component}/binary-{arch}/Packages"))
            .map_err(bad_release)?;
        indices.push(index);
        // Archives that keep `Architecture: all` packages apart list them separately;
        // Debian's put them in every architecture's index too and say so.
        // apt reads `binary-all` only when `Architectures` lists `all` (or is absent).
        let lists_all = release.architectures.is_empty() || release.architectures.iter().any(|a| a == "all");
        if lists_all && !release.all_in_arch_indices {
            if let Ok(all) = release.index(&format!("{component}/binary-all/Packages")) {
                indices.push(all);
            }
        }
    }
    use sha2::Digest as _;
    let locked = LockedRepository {
        name: repo.name.clone(),
        url: redact_url(&repo.url).into_owned(),
        suite: repo.suite.clone(),
        signed_by: signed_by.map(|f| f.as_str().to_owned()),
        date: release.date.as_ref().map(|(text, _)| text.clone()),
        release_sha256: hex::encode(sha2::Sha256::digest(&bytes)),
    };
    Ok(RepoRelease {
        repo: repo.clone(),
        defined_in: defined_in.clone(),
        release,
        locked,
        indices,
    })
}

/// Checks a downloaded index against its release entry and reads its packages, marked
/// as coming from repository number `position`.
pub fn read_index(
    repo: &RepoRelease,
    index: &IndexRef,
    bytes: &[u8],
    position: usize,
) -> Result<Vec<Candidate>, Box<LockError>> {
    let text =
        super::release::verify_index(bytes, index, MAX_INDEX).map_err(|source| LockError::BadIndex {
            repo: repo.repo.name.clone(),
            path: index.path.clone(),
            source: Box::new(source),
        })?;
    let text = String::from_utf8_lossy(&text);
    Candidate::read_index(&text, position).map_err(|source| {
        Box::new(LockError::MalformedIndex {
            repo: repo.repo.name.clone(),
            path: index.path.clone(),
            source: Box::new(source),
        })
    })
}

/// Reads a base's `/var/lib/dpkg/status` (its text, or `None` when absent).
pub fn read_base(base: &str, status: Option<&[u8]>) -> Result<Vec<Installed>, Box<LockError>> {
    let Some(status) = status else {
        return Err(Box::new(LockError::BaseWithoutDpkg {
            base: base.to_owned(),
        }));
    };
    let text = String::from_utf8_lossy(status);
    resolve::read_status(&text).map_err(|source| {
        Box::new(LockError::BadStatus {
            base: base.to_owned(),
            source: Box::new(source),
        })
    })
}

/// What one entry is resolved from.
pub struct EntryInputs<'a> {
    /// The entry's name, the target that asked and where, for messages.
    pub entry: &'a str,
    pub target: &'a str,
    pub at: &'a str,
    pub inputs: &'a str,
    pub arch: &'a str,
    pub sets: &'a [(crate::defs::Label, PackageSet)],
    /// The entry's repositories in order, each with its candidates.
    pub repositories: &'a [(&'a RepoRelease, &'a [Candidate])],
    pub base: &'a [Installed],
    /// Versions to keep when they still satisfy everything (from the previous lock).
    pub prefer: &'a BTreeMap<String, String>,
    /// Set for an entry that bootstraps a base: what it requests besides the sets.
    pub bootstrap: Option<crate::compile::BootstrapLock>,
}

/// What a bootstrap requests before its sets' packages, by name, from the universe for
/// `arch`: `usr-is-merged` when offered (so `usrmerge | usr-is-merged` is met by the
/// package that only checks the merged `/usr` the bootstrap lays out, as mmdebstrap's
/// `merged-usr` hook arranges), every `Essential: yes` package (with `essential`), and
/// every package of `priority` or higher; each group sorted by name.
pub fn bootstrap_requests(
    universe: &[Candidate],
    arch: &str,
    bootstrap: crate::compile::BootstrapLock,
) -> Vec<String> {
    use crate::defs::BootstrapPriority as P;
    use resolve::Priority;
    let for_arch = |c: &&Candidate| c.architecture == arch || c.architecture == "all";
    let mut out: Vec<String> = Vec::new();
    if universe
        .iter()
        .filter(for_arch)
        .any(|c| c.name == "usr-is-merged")
    {
        out.push("usr-is-merged".to_owned());
    }
    let mut group = |keep: &dyn Fn(&Candidate) -> bool| {
        let names: BTreeSet<&str> = universe
            .iter()
            .filter(for_arch)
            .filter(|c| keep(c))
            .map(|c| c.name.as_str())
            .collect();
        for n in names {
            if !out.iter().any(|o| o == n) {
                out.push(n.to_owned());
            }
        }
    };
    if bootstrap.essential {
        group(&|c| c.essential);
    }
    if let Some(p) = bootstrap.priority {
        let highest = match p {
            P::Required => Priority::Required,
            P::Important => Priority::Important,
            P::Standard => Priority::Standard,
        };
        group(&|c| c.priority <= highest);
    }
    out
}

/// The packages of a bootstrapped base's lock entry as the resolver sees installed ones,
/// each found (same name, version, architecture and sha256) among `universe`, the
/// candidates of the base's repositories. `Err(spec)` names a package no repository
/// offers any more.
pub fn installed_from_entry(universe: &[Candidate], entry: &Entry) -> Result<Vec<Installed>, String> {
    let mut by_key: BTreeMap<(&str, String, &str), &Candidate> = BTreeMap::new();
    for c in universe {
        by_key.insert((c.name.as_str(), c.version.to_string(), c.sha256.as_str()), c);
    }
    entry
        .packages
        .iter()
        .map(|p| {
            let c = by_key
                .get(&(p.name.as_str(), p.version.clone(), p.sha256.as_str()))
                .ok_or_else(|| p.spec())?;
            Ok(Installed {
                name: c.name.clone(),
                version: c.version.clone(),
                source: c.source.clone(),
                source_version: c.source_version.clone(),
                architecture: c.architecture.clone(),
                multi_arch: c.multi_arch,
                relations: c.relations.clone(),
            })
        })
        .collect()
}

/// Resolves one entry.
pub fn resolve_entry(e: &EntryInputs<'_>) -> Result<Entry, Box<LockError>> {
    let mut universe: Vec<Candidate> = Vec::new();
    for (_, candidates) in e.repositories {
        universe.extend(candidates.iter().cloned());
    }
    // A preferred version is kept by dropping the other versions of that name, when the
    // preferred one is still offered; the resolver then picks it as the only candidate.
    if !e.prefer.is_empty() {
        let offered: BTreeSet<(&str, String)> = universe
            .iter()
            .map(|c| (c.name.as_str(), c.version.to_string()))
            .collect();
        let keep: BTreeMap<&str, &str> = e
            .prefer
            .iter()
            .filter(|(n, v)| offered.contains(&(n.as_str(), (*v).clone())))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        universe.retain(|c| match keep.get(c.name.as_str()) {
            Some(v) => c.version.to_string() == *v,
            None => true,
        });
    }
    let mut requests = Vec::new();
    let mut options = Options::new(e.arch);
    if let Some(b) = e.bootstrap {
        for name in bootstrap_requests(&universe, e.arch, b) {
            requests.push(resolve::Request {
                name,
                constraint: None,
            });
        }
    }
    for (_, set) in e.sets {
        for p in &set.packages {
            let r = resolve::Request::parse(&p.value.to_string())
                .map_err(|source| unresolvable(e, &universe, source))?;
            if !requests.iter().any(|q: &resolve::Request| q.name == r.name) {
                requests.push(r);
            }
        }
        options
            .exclude
            .extend(set.exclude.iter().map(|x| x.value.clone()));
        options.recommends |= set.recommends;
    }
    let resolution = resolve::resolve(&universe, e.base, &requests, &options)
        .map_err(|source| unresolvable(e, &universe, source))?;
    let mut packages: Vec<LockedPackage> = resolution
        .install
        .iter()
        .map(|c| {
            let cand = c.candidate;
            LockedPackage {
                name: cand.name.clone(),
                version: cand.version.to_string(),
                architecture: cand.architecture.clone(),
                size: cand.size,
                sha256: cand.sha256.clone(),
                repository: e
                    .repositories
                    .get(cand.repository)
                    .map(|(r, _)| r.repo.name.clone())
                    .unwrap_or_default(),
                filename: cand.filename.clone(),
            }
        })
        .collect();
    packages.sort();
    let mut base_packages: Vec<String> = resolution
        .from_base
        .iter()
        .map(|b| format!("{}={}", b.name, b.version))
        .collect();
    base_packages.sort();
    base_packages.dedup();
    Ok(Entry {
        inputs: e.inputs.to_owned(),
        architecture: e.arch.to_owned(),
        repositories: e.repositories.iter().map(|(r, _)| r.locked.clone()).collect(),
        base_packages,
        packages,
    })
}

/// The lock error for a resolver failure: the repositories searched, the request the
/// failure goes back to (its line in its set) and, for an unknown name, a close one.
fn unresolvable(e: &EntryInputs<'_>, universe: &[Candidate], source: resolve::ResolveError) -> LockError {
    use resolve::ResolveError as R;
    // Every chain starts at the requested package: `request → dependency → …`.
    let chain = match &source {
        R::BadRequest { request, .. } => request.as_str(),
        R::Unknown { chain, .. }
        | R::NoCandidate { chain, .. }
        | R::Excluded { chain, .. }
        | R::VersionClash { chain, .. }
        | R::BrokenBase { chain, .. } => chain.as_str(),
        R::Conflict(c) => c.a_chain.as_str(),
    };
    let root = chain.split_whitespace().next().unwrap_or_default();
    let requested = e.sets.iter().find_map(|(label, set)| {
        set.packages
            .iter()
            .find(|p| p.value.name == root)
            .map(|p| DefinedAt {
                set: label.to_string(),
                span: p.span.clone(),
            })
    });
    let help = match &source {
        R::Unknown { name, .. } => {
            let names: BTreeSet<&str> = universe.iter().map(|c| c.name.as_str()).collect();
            crate::defs::suggest::did_you_mean(name, names.iter().copied())
                .map(|near| format!("did you mean `{near}`?"))
        }
        _ => None,
    };
    let repositories = e
        .repositories
        .iter()
        .map(|(r, _)| format!("`{}`", r.repo.name))
        .collect::<Vec<_>>()
        .join(", ");
    LockError::Unresolvable {
        entry: e.entry.to_owned(),
        repositories: if repositories.is_empty() {
            "no repository".to_owned()
        } else {
            format!("repositories {repositories}")
        },
        target: e.target.to_owned(),
        at: e.at.to_owned(),
        help,
        src: requested.as_ref().map(DefinedAt::src),
        span: requested.as_ref().map(DefinedAt::source_span),
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::span::{Origin, SourceFile};

    fn release(by_hash: bool) -> RepoRelease {
        let text = format!(
            "Suite: bookworm\nAcquire-By-Hash: {}\nSHA256:\n e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 main/binary-arm64/Packages.xz\n",
            if by_hash { "yes" } else { "no" }
        );
        let release = Release::parse(text.as_bytes()).expect("a release");
        let index = release.index("main/binary-arm64/Packages").expect("an index");
        let file = SourceFile::new(Origin::Cli { arg: "x".into() }, "x");
        RepoRelease {
            repo: Repository {
                name: "debian".into(),
                url: "http://deb.debian.org/debian".into(),
                suite: "bookworm".into(),
                components: vec!["main".into()],
                trust: Trust::Unsigned,
                apt_source: false,
            },
            defined_in: DefinedAt {
                set: "//packages:x".into(),
                span: crate::defs::span::Span::start_of(&file),
            },
            release,
            locked: LockedRepository {
                name: "debian".into(),
                url: "http://deb.debian.org/debian".into(),
                suite: "bookworm".into(),
                signed_by: None,
                date: None,
                release_sha256: String::new(),
            },
            indices: vec![index],
        }
    }

    #[test]
    fn an_index_by_hash_falls_back_to_its_path_through_the_mirrors() {
        let mirrors = vec![(
            "http://deb.debian.org/debian/".to_owned(),
            vec!["http://mirror.example/debian/".to_owned()],
        )];
        let r = release(true);
        let index = &r.indices[0];
        let url = r.index_url(index);
        let hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            url,
            format!("http://deb.debian.org/debian/dists/bookworm/main/binary-arm64/by-hash/SHA256/{hash}")
        );
        let m = r.index_mirrors(index, &mirrors);
        assert_eq!(
            crate::download::sources(&url, &m),
            [
                format!(
                    "http://mirror.example/debian/dists/bookworm/main/binary-arm64/by-hash/SHA256/{hash}"
                ),
                url.clone(),
                "http://mirror.example/debian/dists/bookworm/main/binary-arm64/Packages.xz".to_owned(),
                "http://deb.debian.org/debian/dists/bookworm/main/binary-arm64/Packages.xz".to_owned(),
            ]
        );
        // Without by-hash, the workspace's mirrors as they are.
        let r = release(false);
        assert_eq!(r.index_mirrors(&r.indices[0], &mirrors), mirrors);
    }
}
