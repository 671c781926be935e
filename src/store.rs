//! The application's view of the content-addressed store: `w4b_cache::Store` (a local
//! directory, optionally backed by a shared remote one) adapted to what the engine
//! ([`w4b_graph::Cache`]) and the trees ([`crate::tree::Blobs`]) need, plus the stat cache
//! of input files that lives beside it.
//!
//! It returns data and typed errors; what a person reads of them (the `cache gc` and
//! `cache verify` summaries, the build's warnings) is rendered by the commands.
//!
//! The remote is trusted per record ([`crate::trust`]): a look-up uses a remote record
//! only when it is signed by a trusted key and no trusted signer disagrees, and a result
//! is published only signed. What was ignored, and what could not be published, is
//! collected in [`AppStore::trust_log`] for the build's summary.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use w4b_cache::{
    BlobRefs, CacheError, Digest, GcPolicy, GcReport, Lease, Record, Remote, Stats, Store, StoreDir,
    VerifyReport,
};

/// How long a local GC leaves temp files alone: an interrupted write's leftovers, never
/// a live writer's (no write takes that long between two blocks).
const TMP_GRACE: Duration = Duration::from_secs(15 * 60);
use w4b_graph::{CacheResult, Lookup, MissReason};

use crate::defs::parse_cache::{self, ParseCache};
use crate::inputs::StatCache;
use crate::tree::{Blobs, TreeError};
use crate::trust::{Ignored, RemoteTrust, Vouched};

/// Tree listings and changesets name other blobs: GC and remote upload follow them.
pub struct TreeRefs;

impl BlobRefs for TreeRefs {
    fn magic(&self) -> &[u8] {
        crate::tree::REFS_MAGIC
    }
    fn refs(&self, blob: &[u8]) -> Vec<Digest> {
        crate::tree::blob_refs(blob)
    }
}

pub struct AppStore {
    store: Store,
    pub stats: StatCache,
    /// Parsed definition files, loaded on first use (only commands that load targets).
    parse_cache: std::sync::OnceLock<std::sync::Arc<ParseCache>>,
    /// Problems that did not fail the build (remote publication), for the summary.
    pub warnings: std::sync::Mutex<Vec<PublishFailed>>,
    /// Whom this builder trusts in the remote cache, and the key it signs with.
    trust: RemoteTrust,
    /// Remote records ignored and results left unpublished, for the summary.
    pub trust_log: std::sync::Mutex<TrustLog>,
    /// This command's build lease on the local cache, while it has one.
    lease: std::sync::Mutex<Option<Lease>>,
    /// The records this command's look-ups hit, marked most recently used before a GC.
    hits: std::sync::Mutex<Vec<w4b_cache::RecordHead>>,
}

/// What the size limit did after a build: nothing (under the limit), a GC, or a GC that
/// could not run.
#[derive(Debug)]
pub enum AutoGc {
    Ran {
        report: GcReport,
        limit: u64,
    },
    /// Another GC, or a build of an older w4b, holds the store; the next build tries again.
    Busy {
        estimate: u64,
        limit: u64,
    },
}

/// What the trust rules kept out of (or back from) the remote cache during one command.
#[derive(Debug, Default)]
pub struct TrustLog {
    /// Remote records a look-up did not use: the step, and the record with the reason.
    pub ignored: Vec<(String, Ignored)>,
    /// Steps whose trusted remote records disagree: the step, its key, every such record.
    pub conflicts: Vec<(String, Digest, Vec<Vouched>)>,
    /// Shareable results not published to a writable remote because no signing key is set.
    pub unsigned: Vec<String>,
}

/// The remote cache's records as this builder's trust rules see them: what
/// `cache verify --remote` lists.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TrustReport {
    /// Keys whose trusted records name different outputs, with those records.
    pub conflicts: Vec<(Digest, Vec<Vouched>)>,
    /// Records no build uses: unsigned, or signed by a key not trusted, or tampered with.
    pub untrusted: Vec<(Digest, Ignored)>,
    /// Whether any key is trusted at all.
    pub trusts_anyone: bool,
}

/// Why a store command could not run.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StoreError {
    #[error("no remote cache is configured")]
    #[diagnostic(
        code(w4b::cache::no_remote),
        help("pass `--remote-cache DIR` (or `s3://BUCKET/PREFIX`), set `W4B_REMOTE_CACHE`, or `cache: {{remote: DIR}}` in `w4b.yaml`")
    )]
    NoRemote,

    #[error(transparent)]
    #[diagnostic(transparent)]
    Cache(#[from] CacheError),
}

/// A step's result that reached the local cache but not the remote one: the build goes
/// on, and reports these at the end.
#[derive(Debug, thiserror::Error)]
#[error("publishing `{step}` to the remote cache failed: {}", causes(source))]
pub struct PublishFailed {
    pub step: String,
    pub source: CacheError,
}

/// `e` and every cause below it, joined with `: ` — printed on one line, so the OS
/// error under a `could not import …` (a full disk) is not lost.
fn causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

const STATCACHE: &str = "statcache";

fn open_dir_remote(root: &Path, read_only: bool) -> Result<Arc<dyn Remote>, CacheError> {
    Ok(Arc::new(match read_only {
        true => StoreDir::open_shared_read_only(root)?,
        false => StoreDir::open_shared(root)?,
    }))
}

/// Opens the remote cache at `location`: an `s3://bucket/prefix` URL (reached as
/// `cache.s3` says, with the credentials of the standard `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` in `env`; `AWS_ENDPOINT_URL` and
/// `AWS_REGION`/`AWS_DEFAULT_REGION` and `AWS_ALLOW_HTTP=true` when `cache.s3` gives
/// none) or a shared directory.
pub fn open_remote(
    location: &str,
    read_only: bool,
    s3: &crate::defs::S3Config,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<Arc<dyn Remote>, CacheError> {
    if !location.starts_with("s3://") {
        return open_dir_remote(Path::new(location), read_only);
    }
    Ok(Arc::new(w4b_cache::S3Remote::open(&s3_options(
        location, read_only, s3, env,
    ))?))
}

/// How to reach `s3://…`: `cache.s3` of `w4b.yaml`, else the standard `AWS_*` variables
/// (see [`open_remote`]); `w4b publish` reaches its bucket the same way.
pub fn s3_options(
    location: &str,
    read_only: bool,
    s3: &crate::defs::S3Config,
    env: &std::collections::BTreeMap<String, String>,
) -> w4b_cache::S3Options {
    let var = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    w4b_cache::S3Options {
        url: location.to_owned(),
        endpoint: s3.endpoint.clone().or_else(|| var("AWS_ENDPOINT_URL")),
        region: s3
            .region
            .clone()
            .or_else(|| var("AWS_REGION"))
            .or_else(|| var("AWS_DEFAULT_REGION")),
        allow_http: s3.allow_http || var("AWS_ALLOW_HTTP").is_some_and(|v| v == "true"),
        virtual_hosted: s3.virtual_hosted,
        access_key_id: var("AWS_ACCESS_KEY_ID"),
        secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
        session_token: var("AWS_SESSION_TOKEN"),
        read_only,
    }
}

impl AppStore {
    pub fn open(local: &Path, remote: Option<&Path>, remote_read_only: bool) -> Result<AppStore, CacheError> {
        let remote = match remote {
            None => None,
            Some(r) => Some(open_dir_remote(r, remote_read_only)?),
        };
        AppStore::open_with(local, remote)
    }

    /// The local cache at `local` over any remote ([`open_remote`]).
    pub fn open_with(local: &Path, remote: Option<Arc<dyn Remote>>) -> Result<AppStore, CacheError> {
        let local = StoreDir::open(local)?;
        let stats = StatCache::from_bytes(local.read_meta(STATCACHE)?);
        Ok(AppStore {
            store: Store::with_remote(local, remote),
            stats,
            parse_cache: Default::default(),
            warnings: Default::default(),
            trust: RemoteTrust::default(),
            trust_log: Default::default(),
            lease: Default::default(),
            hits: Default::default(),
        })
    }

    /// Sets whom the store trusts in the remote cache and the key it signs with. Without
    /// this, no remote record is used and nothing is published.
    pub fn with_trust(mut self, trust: RemoteTrust) -> AppStore {
        self.trust = trust;
        self
    }

    pub fn trust(&self) -> &RemoteTrust {
        &self.trust
    }

    /// Every remote key's records judged by the trust rules: conflicts between trusted
    /// signers, and records no build would use.
    pub fn remote_trust(&self) -> Result<TrustReport, StoreError> {
        let remote = self.remote()?;
        let mut rep = TrustReport {
            trusts_anyone: self.trust.trusts_anyone(),
            ..Default::default()
        };
        for key in remote.record_keys()? {
            let verdict = self.trust.judge(remote.records(&key)?);
            if !verdict.conflict.is_empty() {
                rep.conflicts.push((key, verdict.conflict));
            }
            rep.untrusted
                .extend(verdict.ignored.into_iter().map(|i| (key, i)));
        }
        Ok(rep)
    }

    pub fn inner(&self) -> &Store {
        &self.store
    }

    pub fn local(&self) -> &StoreDir {
        self.store.local()
    }

    /// Entries the local and the remote directory moved to `v1/corrupt/` since the last
    /// call (local first), for the build to say what it quarantined and why.
    pub fn take_quarantined(&self) -> Vec<w4b_cache::Quarantined> {
        let mut q = self.store.local().take_quarantined();
        if let Some(r) = self.store.remote() {
            q.extend(r.take_quarantined());
        }
        q
    }

    /// Begins this command's lease on the local cache: from here until
    /// [`end_lease`](Self::end_lease) (or the store is dropped), what it looks up and
    /// writes is pinned, so a GC beside it keeps that.
    pub fn begin_lease(&self) -> Result<(), CacheError> {
        let lease = self.store.local().lease()?;
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
        Ok(())
    }

    /// Ends the lease, adding what this command published to the usage counters.
    pub fn end_lease(&self) -> Result<(), CacheError> {
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        lease.map_or(Ok(()), Lease::finish)
    }

    /// Enforces the size limit after a build (`docs/cache-format.md`, "Usage"): when
    /// the usage estimate is above `limit`, a GC evicts least recently used records down
    /// to 90 % of it. Cheap otherwise: the estimate is read from the counters (a store
    /// without any is counted once).
    pub fn enforce_limit(&self, limit: u64) -> Result<Option<AutoGc>, CacheError> {
        let local = self.store.local();
        let estimate = match local.usage()?.estimate() {
            Some(e) => e,
            None => local.count_usage()?,
        };
        if estimate <= limit {
            return Ok(None);
        }
        let mut policy = local_policy();
        let hits = std::mem::take(&mut *self.hits.lock().unwrap_or_else(|e| e.into_inner()));
        for h in &hits {
            local.mark_used(h, policy.now)?;
        }
        // ccache's cleanup threshold: room for a few builds before the next GC.
        policy.max_bytes = Some(limit / 10 * 9);
        match local.gc(&policy, &TreeRefs) {
            Ok(report) => Ok(Some(AutoGc::Ran { report, limit })),
            Err(CacheError::Busy { .. }) => Ok(Some(AutoGc::Busy { estimate, limit })),
            Err(e) => Err(e),
        }
    }

    /// A scratch path in the store's own filesystem (for downloads being resumed).
    pub fn scratch_path(&self, name: &str) -> PathBuf {
        self.store.local().root().join("v1").join("tmp").join(name)
    }

    /// Persists the stat cache when this build hashed anything. "Now" is read from the
    /// filesystem (the ctime of the file just written), never from the wall clock, and
    /// only to judge racy entries.
    pub fn save_statcache(&self) {
        if !self.stats.is_dirty() {
            return;
        }
        let Some(now_ns) = self.fs_now_ns("statcache") else {
            return;
        };
        let _ = self
            .store
            .local()
            .write_meta_unsynced(STATCACHE, &self.stats.to_bytes(now_ns));
    }

    /// "Now" by the filesystem's clock: the ctime of a file written for the purpose.
    fn fs_now_ns(&self, what: &str) -> Option<i64> {
        let probe = self.scratch_path(&format!("{what}-clock-{}", std::process::id()));
        std::fs::write(&probe, b"").ok()?;
        let now_ns = std::fs::metadata(&probe)
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ctime()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(m.ctime_nsec())
            })
            .unwrap_or(0);
        let _ = std::fs::remove_file(&probe);
        Some(now_ns)
    }

    /// The cache of parsed definition files, read from the store on first use. It is
    /// private to this binary: another build of w4b starts from an empty one.
    pub fn parse_cache(&self) -> std::sync::Arc<ParseCache> {
        self.parse_cache
            .get_or_init(|| {
                let bytes = self
                    .store
                    .local()
                    .read_meta(parse_cache::META_NAME)
                    .ok()
                    .flatten();
                std::sync::Arc::new(ParseCache::from_bytes(ParseCache::binary_identity(), bytes))
            })
            .clone()
    }

    /// Persists the parse cache when this process parsed a file it did not know.
    pub fn save_parse_cache(&self) {
        let Some(cache) = self.parse_cache.get().filter(|c| c.is_dirty()) else {
            return;
        };
        let Some(now_ns) = self.fs_now_ns("defs") else {
            return;
        };
        let _ = self
            .store
            .local()
            .write_meta_unsynced(parse_cache::META_NAME, &cache.to_bytes(now_ns));
    }

    /// Copies an output into place atomically, verifying it on the way. Skips the copy
    /// when `dest` already holds exactly these bytes.
    pub fn export(&self, digest: &Digest, dest: &Path) -> Result<(), CacheError> {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|source| CacheError::Io {
                action: "create the output directory",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        // Through the stat cache: an untouched output is recognised without reading it.
        // The file holds the flat bytes, so it is compared with their BLAKE3 (a chunked
        // output's name is its index's, not the file's).
        let flat = self.store.flat_digests(digest)?.blake3.map(Digest);
        if dest.exists() && flat.is_some_and(|f| self.stats.file(dest).is_ok_and(|d| d == f)) {
            return Ok(());
        }
        self.store.copy_to(digest, dest)
    }

    /// The BLAKE3 of output `d`'s flat bytes, the digest the manifest names a file by: its
    /// name for a plain blob, the digest its index carries for a chunked output, or (an
    /// index without one) hashed by reading the output, verified.
    pub fn flat_blake3(&self, d: &Digest) -> Result<Digest, CacheError> {
        if let Some(b) = self.store.flat_digests(d)?.blake3 {
            return Ok(Digest(b));
        }
        let mut r = self.store.open_output(d)?;
        let mut h = blake3::Hasher::new();
        std::io::copy(&mut r, &mut h).map_err(|e| {
            w4b_cache::OutputReader::cache_error(e).unwrap_or_else(|source| CacheError::Io {
                action: "read",
                path: self.store.local().root().to_path_buf(),
                source,
            })
        })?;
        Ok(h.finalize().into())
    }

    /// The statistics of the local cache and of the remote one, if any: which, where,
    /// and what it holds.
    pub fn stats(&self) -> Result<Vec<(&'static str, String, Stats)>, StoreError> {
        let local = self.store.local();
        let mut v = vec![("local", local.root().display().to_string(), local.stats()?)];
        if let Some(r) = self.store.remote() {
            v.push(("remote", r.describe(), r.stats()?));
        }
        Ok(v)
    }

    fn remote(&self) -> Result<&dyn Remote, StoreError> {
        self.store.remote().map(|r| &**r).ok_or(StoreError::NoRemote)
    }

    /// Collects garbage in the local cache, or the remote one with `remote`, keeping
    /// entries within `max_bytes` and younger than `max_age`.
    pub fn gc(
        &self,
        remote: bool,
        max_bytes: Option<u64>,
        max_age: Option<Duration>,
    ) -> Result<GcReport, StoreError> {
        if remote {
            #[allow(clippy::disallowed_methods)] // GC ages entries; no output depends on it.
            let mut policy = GcPolicy::new(SystemTime::now());
            policy.max_bytes = max_bytes;
            policy.max_age = max_age;
            return Ok(self.remote()?.gc(&policy, &TreeRefs)?);
        }
        let mut policy = local_policy();
        policy.max_bytes = max_bytes;
        policy.max_age = max_age;
        Ok(self.store.local().gc(&policy, &TreeRefs)?)
    }

    /// Reads every blob and record of the local cache, or the remote one with `remote`,
    /// quarantining what is damaged.
    pub fn verify(&self, remote: bool) -> Result<VerifyReport, StoreError> {
        if remote {
            return Ok(self.remote()?.verify(&TreeRefs)?);
        }
        Ok(self.store.local().verify(&TreeRefs)?)
    }

    fn present(&self, d: &Digest) -> bool {
        // A remote that cannot be asked counts as not having it: a miss, rebuilt.
        self.store.contains_output(d).unwrap_or(false)
    }
}

/// GC of the local cache: running builds are protected by their leases and pins, not by
/// age, so nothing needs a grace period but temp files.
fn local_policy() -> GcPolicy {
    #[allow(clippy::disallowed_methods)] // GC ages entries; no output depends on it.
    let mut policy = GcPolicy::new(SystemTime::now());
    policy.grace = Duration::ZERO;
    policy.tmp_grace = TMP_GRACE;
    policy
}

fn boxed(e: CacheError) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

impl w4b_graph::Cache for AppStore {
    fn lookup(&self, step: &str, key: &Digest) -> CacheResult<Lookup> {
        let mut untrusted = None;
        let records = self
            .store
            .lookup(key, |candidates| {
                let verdict = self.trust.judge(candidates);
                untrusted = verdict.reason();
                if let Ok(mut log) = self.trust_log.lock() {
                    for i in verdict.ignored {
                        log.ignored.push((step.to_owned(), i));
                    }
                    if !verdict.conflict.is_empty() {
                        log.conflicts.push((step.to_owned(), *key, verdict.conflict));
                    }
                }
                verdict.accepted
            })
            .map_err(boxed)?;
        let mut reason = match untrusted {
            Some(why) => MissReason::RemoteUntrusted { why },
            None => MissReason::NoRecord,
        };
        for r in records {
            // Pin, then check: a GC beside this build either sees the pin and keeps the
            // record and its outputs, or has already removed them and this is a miss.
            let mut pins = vec![*key];
            pins.extend(r.outputs.values().map(|o| o.digest));
            let missing = self
                .store
                .local()
                .pinned(&pins, || {
                    r.outputs
                        .iter()
                        .find(|(_, o)| !self.present(&o.digest))
                        .map(|(n, o)| (n.clone(), o.digest))
                })
                .map_err(boxed)?;
            match missing {
                None => {
                    #[allow(clippy::disallowed_methods)] // LRU stamp for GC only.
                    let _ = self.store.touch_record(&r, SystemTime::now());
                    if let Ok(mut hits) = self.hits.lock() {
                        hits.push(r.clone());
                    }
                    return Ok(Lookup::Hit(r.outputs));
                }
                Some((output, digest)) => reason = MissReason::OutputMissing { output, digest },
            }
        }
        Ok(Lookup::Miss(reason))
    }

    fn publish(&self, record: &Record, shareable: bool) -> CacheResult<()> {
        self.store.local().put_record(record).map_err(boxed)?;
        if shareable && self.store.remote().is_some_and(|r| !r.is_read_only()) {
            // Unsigned records are not published at all: no reader uses them, and an
            // older w4b would use them without any check.
            let Some(signed) = self.trust.sign(record) else {
                if let Ok(mut log) = self.trust_log.lock() {
                    log.unsigned.push(record.step.clone());
                }
                return Ok(());
            };
            // The step succeeded and is cached locally; a flaky shared mount must not
            // fail the build. The build reports these at the end.
            if let Err(source) = self.store.publish(&signed, &TreeRefs) {
                if let Ok(mut w) = self.warnings.lock() {
                    w.push(PublishFailed {
                        step: record.step.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn records(&self, key: &Digest) -> CacheResult<Vec<Record>> {
        self.store.local().records(key).map_err(boxed)
    }

    fn put(&self, bytes: &[u8]) -> CacheResult<Digest> {
        self.store.local().put_bytes(bytes).map_err(boxed)
    }

    fn get(&self, digest: &Digest) -> CacheResult<Vec<u8>> {
        self.store.read(digest).map_err(boxed)
    }

    fn read_meta(&self, name: &str) -> CacheResult<Option<Vec<u8>>> {
        self.store.local().read_meta(name).map_err(boxed)
    }

    fn write_meta(&self, name: &str, bytes: &[u8]) -> CacheResult<()> {
        // Build history: a convenience for `why`, rewritten by every build.
        self.store.local().write_meta_unsynced(name, bytes).map_err(boxed)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn tree_err(e: CacheError) -> TreeError {
    match e {
        CacheError::Missing { digest, .. } => TreeError::BlobMissing { digest },
        CacheError::Corrupt { expected, .. } => TreeError::BlobCorrupt { digest: expected },
        other => TreeError::Store(Box::new(other)),
    }
}

impl Blobs for AppStore {
    fn put(&self, bytes: &[u8]) -> Result<Digest, TreeError> {
        self.store.local().put_bytes(bytes).map_err(tree_err)
    }

    fn put_file(&self, path: &Path) -> Result<(Digest, u64), TreeError> {
        self.store.local().put_file(path).map_err(tree_err)
    }

    fn get(&self, d: &Digest) -> Result<Vec<u8>, TreeError> {
        self.store.read(d).map_err(tree_err)
    }

    fn open(&self, d: &Digest) -> Result<Box<dyn Read + '_>, TreeError> {
        Ok(Box::new(self.store.reader(d).map_err(tree_err)?))
    }

    /// Asked by writers that skip what is stored: a present blob is pinned first.
    fn contains(&self, d: &Digest) -> bool {
        let local = self.store.local();
        local.contains(d) && local.pinned(&[*d], || local.contains(d)).unwrap_or(false)
    }

    fn put_reader(&self, reader: &mut dyn Read) -> Result<(Digest, u64), TreeError> {
        let mut w = self.store.local().writer().map_err(tree_err)?;
        std::io::copy(reader, &mut w).map_err(|source| TreeError::Io {
            what: "cannot copy into the store from",
            path: "<stream>".into(),
            source,
        })?;
        w.commit().map_err(tree_err)
    }
}

/// A [`Blobs`] over the store that packs every blob of up to
/// [`PACK_MEMBER_MAX`](w4b_cache::PACK_MEMBER_MAX) bytes (file contents and directory
/// listings) into one pack ([`StoreDir::pack_writer`]) instead of a file each; larger
/// contents are plain blobs. For steps that store tens of thousands of small files
/// (unpacking an image): [`finish`](Self::finish) makes the packed ones readable, and
/// until then they are not (a tree is only read once it is finished).
pub struct PackingBlobs<'a> {
    store: &'a AppStore,
    pack: std::sync::Mutex<w4b_cache::PackWriter>,
}

impl AppStore {
    pub fn packing(&self) -> Result<PackingBlobs<'_>, TreeError> {
        Ok(PackingBlobs {
            store: self,
            pack: std::sync::Mutex::new(self.local().pack_writer().map_err(tree_err)?),
        })
    }
}

impl PackingBlobs<'_> {
    /// Stores the pack (stream, table, marker); returns how many blobs it holds.
    pub fn finish(self) -> Result<usize, TreeError> {
        let pack = self.pack.into_inner().unwrap_or_else(|e| e.into_inner());
        let n = pack.len();
        pack.finish().map_err(tree_err)?;
        Ok(n)
    }
}

impl Blobs for PackingBlobs<'_> {
    fn put(&self, bytes: &[u8]) -> Result<Digest, TreeError> {
        if bytes.len() as u64 > w4b_cache::PACK_MEMBER_MAX {
            return self.store.put(bytes);
        }
        let mut pack = self.pack.lock().unwrap_or_else(|e| e.into_inner());
        pack.add(bytes).map_err(tree_err)
    }

    fn put_file(&self, path: &Path) -> Result<(Digest, u64), TreeError> {
        self.store.put_file(path)
    }

    fn get(&self, d: &Digest) -> Result<Vec<u8>, TreeError> {
        self.store.get(d)
    }

    fn open(&self, d: &Digest) -> Result<Box<dyn Read + '_>, TreeError> {
        self.store.open(d)
    }

    fn contains(&self, d: &Digest) -> bool {
        self.store.contains(d)
    }

    fn put_reader(&self, reader: &mut dyn Read) -> Result<(Digest, u64), TreeError> {
        let io = |source| TreeError::Io {
            what: "cannot copy into the store from",
            path: "<stream>".into(),
            source,
        };
        let max = w4b_cache::PACK_MEMBER_MAX;
        let mut head = Vec::new();
        reader.take(max + 1).read_to_end(&mut head).map_err(io)?;
        if head.len() as u64 <= max {
            let mut pack = self.pack.lock().unwrap_or_else(|e| e.into_inner());
            let d = pack.add(&head).map_err(tree_err)?;
            return Ok((d, head.len() as u64));
        }
        let mut w = self.store.local().writer().map_err(tree_err)?;
        std::io::Write::write_all(&mut w, &head).map_err(io)?;
        std::io::copy(reader, &mut w).map_err(io)?;
        w.commit().map_err(tree_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_failure_shows_the_os_error_under_it() {
        let e = PublishFailed {
            step: "//images:x#disk".into(),
            source: CacheError::Io {
                action: "import",
                path: "/remote/v1/tmp/x".into(),
                source: std::io::Error::from_raw_os_error(28),
            },
        };
        let text = e.to_string();
        assert!(
            text.starts_with("publishing `//images:x#disk` to the remote cache failed: could not import `/remote/v1/tmp/x`: No space left on device"),
            "{text}"
        );
    }
}
