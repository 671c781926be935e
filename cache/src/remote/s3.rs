//! The remote cache on an S3-compatible object store (AWS S3, MinIO, Ceph RGW, Garage,
//! Cloudflare R2), through `object_store`.
//!
//! Same keys as a directory, under the URL's prefix (`docs/cache-format.md`):
//! `v1/blobs/<2>/<64>`, `v1/indexes/<2>/<64>`, `v1/records/<2>/<key>/<outputs>[.<keyid>].json`,
//! plus `…/<outputs>.used` (the LRU stamp: S3 has no mtime to touch), `v1/corrupt/`
//! (quarantined objects) and `v1/probe/` (the conditional-write probe).
//!
//! - **Publication is create-if-absent**: every content object is written with
//!   `PutMode::Create` (`If-None-Match: *`). "Already exists" is success: a blob's name is
//!   its content and a record's name is its outputs and signer, so whoever won the race
//!   wrote an equivalent object. AWS answers concurrent creates of one key with `409
//!   ConditionalRequestConflict`, which `object_store` also reports as "already exists";
//!   a HEAD tells the two apart, and a create whose rival did not land is retried.
//! - **The probe**: before its first write, a writable client creates one fresh key twice.
//!   A store that accepts the second write ignores conditional writes, and writable use
//!   is refused ([`CacheError::S3NoConditionalPut`]); read-only use stays possible.
//! - **Reads verify** in the local store they land in. A corrupt object is copied to
//!   `v1/corrupt/` and deleted by a writable client (so the next create-if-absent
//!   publication repairs it) and only reported by a read-only one.
//! - **Read-only** clients never PUT or DELETE, not even the probe or the `.used` stamps.
//! - Blobs above [`MULTIPART_OVER`] (a fetched base image; chunked outputs never reach
//!   it) go up in parts after a HEAD: multipart uploads have no create-if-absent, and the
//!   race is benign (same name, same bytes, verified reads).
//!
//! The store is async; this module owns a two-worker tokio runtime and blocks on it, so
//! the rest of w4b stays synchronous. Batches (presence, listings, GC, verify) run 32
//! requests at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::chunks::{name_of, ChunkIndex};
use crate::dir::{Quarantined, StoreDir};
use crate::error::CacheError;
use crate::gc::{foreign_roots, GcPolicy, GcReport};
use crate::record::{Parsed, Record, RecordName};
use crate::refs::BlobRefs;
use crate::remote::Remote;
use crate::verify::{Stats, VerifyReport};
use crate::Digest;

/// Requests in flight in a batch.
const IN_FLIGHT: usize = 32;

/// Blobs larger than this are uploaded in parts (S3 takes at most 5 GiB in one PUT).
pub const MULTIPART_OVER: u64 = 64 << 20;

/// The part size of a multipart upload.
const PART: usize = 16 << 20;

/// A `.used` stamp younger than this is not rewritten: at most one PUT per record a day.
const USED_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// Where and how to reach the bucket. The application fills it in (credentials from the
/// standard `AWS_*` variables, the rest from `cache.s3`); this crate reads no environment.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// `http(s)://host:port` of an S3-compatible server; AWS when `None`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (a test server, a MinIO on a private network).
    pub allow_http: bool,
    /// `https://bucket.host/key` instead of `https://host/bucket/key`.
    pub virtual_hosted: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Never write (`--remote-read-only`).
    pub read_only: bool,
}

/// `(bucket, prefix)` of an `s3://bucket[/prefix]` URL; the prefix has no leading or
/// trailing `/`.
pub fn parse_url(url: &str) -> Result<(String, String), CacheError> {
    let bad = |problem: &str| CacheError::RemoteUrl {
        url: url.to_owned(),
        problem: problem.to_owned(),
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("it does not start with `s3://`"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return Err(bad(
            "the bucket name must be 3 to 63 characters of `a-z`, `0-9`, `-` and `.`",
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
        return Err(bad("the prefix must not contain `.`, `..` or empty segments"));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

pub struct S3Remote {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket/prefix`, for messages.
    url: String,
    /// The key prefix, empty or without slashes at either end.
    prefix: String,
    read_only: bool,
    /// The outcome of the conditional-write probe, run before the first write.
    probe: OnceLock<Result<(), String>>,
    quarantined: Mutex<Vec<Quarantined>>,
}

fn other(action: &'static str, url: &str, e: object_store::Error) -> CacheError {
    CacheError::RemoteIo {
        action,
        url: url.to_owned(),
        source: Box::new(e),
    }
}

/// Sends `from` through the started multipart upload `up` in [`PART`]-sized parts and
/// completes it; a read or upload error aborts it (`read_err` says what a read error
/// means). Returns the bytes sent.
async fn upload_parts(
    up: &mut dyn object_store::MultipartUpload,
    from: &mut dyn Read,
    url: &str,
    read_err: impl Fn(std::io::Error) -> CacheError,
) -> Result<u64, CacheError> {
    let mut sent = 0u64;
    loop {
        let mut part = Vec::with_capacity(PART);
        if let Err(e) = (&mut *from).take(PART as u64).read_to_end(&mut part) {
            let _ = up.abort().await;
            return Err(read_err(e));
        }
        if part.is_empty() {
            break;
        }
        sent += part.len() as u64;
        if let Err(e) = up.put_part(PutPayload::from(part)).await {
            let _ = up.abort().await;
            return Err(other("upload", url, e));
        }
    }
    up.complete()
        .await
        .map_err(|e| other("finish uploading", url, e))?;
    Ok(sent)
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// The connection every S3 client here shares: the runtime, the store, the `s3://` URL
/// (for messages) and the key prefix.
struct Connection {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
    url: String,
    prefix: String,
}

fn connect(o: &S3Options) -> Result<Connection, CacheError> {
    let (bucket, prefix) = parse_url(&o.url)?;
    // reqwest 0.13 is built without a bundled TLS provider: ring is the one the rest of
    // w4b already links. Installing fails harmlessly when one is already set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_allow_http(o.allow_http)
        .with_virtual_hosted_style_request(o.virtual_hosted)
        .with_region(o.region.clone().unwrap_or_else(|| "us-east-1".to_owned()));
    if let Some(e) = &o.endpoint {
        b = b.with_endpoint(e);
    }
    match (&o.access_key_id, &o.secret_access_key) {
        (Some(id), Some(secret)) => {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = &o.session_token {
                b = b.with_token(t);
            }
        }
        // No credentials: anonymous requests (a public, read-only bucket).
        _ => b = b.with_skip_signature(true),
    }
    let url = match prefix.as_str() {
        "" => format!("s3://{bucket}"),
        p => format!("s3://{bucket}/{p}"),
    };
    let store = b.build().map_err(|e| CacheError::RemoteUrl {
        url: url.clone(),
        problem: e.to_string(),
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("w4b-s3")
        .enable_all()
        .build()
        .map_err(|source| CacheError::Io {
            action: "start the S3 client's runtime for",
            path: PathBuf::from(&url),
            source,
        })?;
    Ok(Connection {
        rt,
        store: Arc::new(store),
        url,
        prefix,
    })
}

impl S3Remote {
    pub fn open(o: &S3Options) -> Result<S3Remote, CacheError> {
        let Connection {
            rt,
            store,
            url,
            prefix,
        } = connect(o)?;
        Ok(S3Remote {
            rt,
            store,
            url,
            prefix,
            read_only: o.read_only,
            probe: OnceLock::new(),
            quarantined: Mutex::new(Vec::new()),
        })
    }

    fn key(&self, rel: &str) -> Key {
        match self.prefix.as_str() {
            "" => Key::from(rel),
            p => Key::from(format!("{p}/{rel}")),
        }
    }

    /// `rel` below the prefix for a key listed from the store.
    fn rel<'a>(&self, key: &'a Key) -> &'a str {
        let s = key.as_ref();
        match self.prefix.as_str() {
            "" => s,
            p => s.strip_prefix(p).and_then(|r| r.strip_prefix('/')).unwrap_or(s),
        }
    }

    fn url_of(&self, key: &Key) -> String {
        let bucket_url = self.url.split('/').take(3).collect::<Vec<_>>().join("/");
        format!("{bucket_url}/{key}")
    }

    fn blob_key(&self, d: &Digest) -> Key {
        let h = d.to_hex();
        self.key(&format!("v1/blobs/{}/{h}", &h[..2]))
    }

    fn index_key(&self, d: &Digest) -> Key {
        let h = d.to_hex();
        self.key(&format!("v1/indexes/{}/{h}", &h[..2]))
    }

    fn record_dir(&self, key: &Digest) -> String {
        let h = key.to_hex();
        format!("v1/records/{}/{h}", &h[..2])
    }

    fn used_key(&self, key: &Digest, outputs: &Digest) -> Key {
        self.key(&format!("{}/{outputs}.used", self.record_dir(key)))
    }

    fn missing(&self, d: &Digest) -> CacheError {
        CacheError::Missing {
            digest: *d,
            root: PathBuf::from(&self.url),
            chunk: None,
        }
    }

    async fn head(&self, key: &Key) -> Result<Option<ObjectMeta>, CacheError> {
        match self.store.head(key).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(other("look up", &self.url_of(key), e)),
        }
    }

    /// The object's bytes; `None` if absent.
    async fn get(&self, key: &Key) -> Result<Option<bytes::Bytes>, CacheError> {
        let got = match self.store.get(key).await {
            Ok(g) => g,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(other("read", &self.url_of(key), e)),
        };
        match got.bytes().await {
            Ok(b) => Ok(Some(b)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(other("read", &self.url_of(key), e)),
        }
    }

    /// Every object under `rel` (a directory-like prefix), in key order.
    async fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>, CacheError> {
        let prefix = self.key(rel);
        let mut all: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| other("list", &self.url_of(&prefix), e))?;
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(all)
    }

    /// Creates `key` with `bytes` unless it exists. `Ok(true)` when this call created
    /// it, `Ok(false)` when an object was there (then it is left alone).
    async fn create(&self, key: &Key, bytes: bytes::Bytes) -> Result<bool, CacheError> {
        let payload = PutPayload::from(bytes);
        let mut conflicts = 0;
        loop {
            let opts = PutOptions::from(PutMode::Create);
            match self.store.put_opts(key, payload.clone(), opts).await {
                Ok(_) => return Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    // 412 (it exists) or 409 (a concurrent create of the same key): only a
                    // HEAD says whether an object landed.
                    if self.head(key).await?.is_some() {
                        return Ok(false);
                    }
                    conflicts += 1;
                    if conflicts > 5 {
                        return Err(CacheError::RemoteIo {
                            action: "create",
                            url: self.url_of(key),
                            source: "the store kept answering 409 Conflict without the object appearing"
                                .into(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(50 << conflicts)).await;
                }
                Err(e) => return Err(other("write", &self.url_of(key), e)),
            }
        }
    }

    /// Refuses writes in read-only mode, and to a store that failed the probe.
    fn writable(&self) -> Result<(), CacheError> {
        if self.read_only {
            return Err(CacheError::ReadOnly {
                root: PathBuf::from(&self.url),
            });
        }
        let outcome = self.probe.get_or_init(|| self.rt.block_on(self.run_probe()));
        match outcome {
            Ok(()) => Ok(()),
            Err(probe) if probe.starts_with("v1/probe/") => Err(CacheError::S3NoConditionalPut {
                url: self.url.clone(),
                probe: probe.clone(),
            }),
            Err(why) => Err(CacheError::RemoteIo {
                action: "probe conditional writes in",
                url: self.url.clone(),
                source: why.clone().into(),
            }),
        }
    }

    /// Creates a fresh key twice with `If-None-Match: *`; the second must be refused.
    /// `Err(key)` when it was not, `Err(message)` when the store could not be asked.
    async fn run_probe(&self) -> Result<(), String> {
        use std::hash::{BuildHasher, Hasher};
        // Unique per process and call; no wall clock and no RNG crate needed.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let rel = format!("v1/probe/{:016x}-{}", h.finish(), std::process::id());
        let key = self.key(&rel);
        let put = |body: &'static [u8]| {
            self.store.put_opts(
                &key,
                PutPayload::from_static(body),
                PutOptions::from(PutMode::Create),
            )
        };
        put(b"first").await.map_err(|e| e.to_string())?;
        let second = put(b"second").await;
        let _ = self.store.delete(&key).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Ok(_) => Err(rel),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Moves a bad object to `v1/corrupt/<evidence>` (copy, then delete) unless read-only;
    /// returns where the evidence is.
    async fn quarantine(&self, key: &Key, evidence: &str, reason: String) -> PathBuf {
        let dest = self.key(&format!("v1/corrupt/{evidence}"));
        if self.read_only {
            return PathBuf::from(self.url_of(key));
        }
        if self.store.copy(key, &dest).await.is_ok() && self.store.delete(key).await.is_ok() {
            self.quarantined
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Quarantined {
                    path: PathBuf::from(self.url_of(key)),
                    reason,
                    evidence: PathBuf::from(self.url_of(&dest)),
                });
        }
        PathBuf::from(self.url_of(&dest))
    }

    async fn has(&self, d: Digest) -> Result<bool, CacheError> {
        if self.head(&self.blob_key(&d)).await?.is_some() {
            return Ok(true);
        }
        Ok(self.head(&self.index_key(&d)).await?.is_some())
    }

    /// Index `d` as [`Remote::index`] gives it, and its bytes.
    async fn index_async(&self, d: &Digest) -> Result<Option<(ChunkIndex, usize)>, CacheError> {
        let key = self.index_key(d);
        let Some(bytes) = self.get(&key).await? else {
            return Ok(None);
        };
        let actual = name_of(&bytes);
        if actual != *d {
            let reason = format!("chunk index `{d}` is corrupt: its bytes name `{actual}`");
            let evidence = self
                .quarantine(&key, &format!("{d}.{actual}.index"), reason)
                .await;
            return Err(CacheError::Corrupt {
                expected: *d,
                actual,
                evidence,
                chunk: None,
            });
        }
        match ChunkIndex::decode(&bytes) {
            Ok(idx) => Ok(Some((idx, bytes.len()))),
            Err(e @ CacheError::IndexUnsupported { .. }) => Err(e),
            Err(e) => {
                let reason = format!("chunk index `{d}` is malformed: {e}");
                self.quarantine(&key, &format!("{d}.malformed.index"), reason)
                    .await;
                Err(e)
            }
        }
    }

    /// The parsed records under `key` (valid and foreign, with each object's key and
    /// bytes); invalid ones are quarantined when writable.
    async fn load_records(&self, key: &Digest) -> Result<Vec<(Key, Parsed, Vec<u8>)>, CacheError> {
        let listed = self.list(&self.record_dir(key)).await?;
        let names: Vec<(Key, RecordName)> = listed
            .into_iter()
            .filter_map(|m| {
                let file = m.location.filename()?.to_owned();
                if file.ends_with(".used") {
                    return None;
                }
                let name = RecordName::parse(&file);
                Some((m.location, name?))
            })
            .collect();
        let got: Vec<Option<bytes::Bytes>> = stream::iter(names.iter())
            .map(|(k, _)| self.get(k))
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        let mut out = Vec::new();
        for ((k, name), bytes) in names.into_iter().zip(got) {
            let Some(bytes) = bytes else { continue };
            let parsed = Record::parse(&bytes, key, &name);
            if let Parsed::Invalid = parsed {
                let file = k.filename().unwrap_or_default().to_owned();
                let reason = format!("record for key `{key}` is not a valid record of that key and outputs");
                self.quarantine(&k, &format!("{key}-{file}.{}", Digest::of(&bytes)), reason)
                    .await;
            }
            out.push((k, parsed, bytes.to_vec()));
        }
        Ok(out)
    }

    /// Everything under `v1/`, sorted into the store's kinds.
    async fn inventory(&self) -> Result<Inventory, CacheError> {
        let mut inv = Inventory::default();
        for m in self.list("v1").await? {
            let rel = self.rel(&m.location).to_owned();
            let parts: Vec<&str> = rel.split('/').collect();
            match parts.as_slice() {
                ["v1", "blobs", _, hex] => {
                    if let Ok(d) = hex.parse::<Digest>() {
                        inv.blobs.insert(d, m);
                    }
                }
                ["v1", "indexes", _, hex] => {
                    if let Ok(d) = hex.parse::<Digest>() {
                        inv.indexes.insert(d, m);
                    }
                }
                ["v1", "records", _, key, file] => {
                    let Ok(key) = key.parse::<Digest>() else { continue };
                    if let Some(outputs) = file.strip_suffix(".used") {
                        if let Ok(o) = outputs.parse::<Digest>() {
                            inv.used.insert((key, o), m);
                        }
                    } else if let Some(name) = RecordName::parse(file) {
                        inv.records.push((key, name, m));
                    }
                }
                ["v1", "corrupt", ..] => inv.corrupt += 1,
                ["v1", "probe", ..] => inv.probes.push(m),
                _ => {}
            }
        }
        Ok(inv)
    }

    /// The children of `d`: an index's chunks, a listing's references.
    async fn children(
        &self,
        d: &Digest,
        inv: &Inventory,
        refs: &dyn BlobRefs,
    ) -> Result<Vec<Digest>, CacheError> {
        if inv.indexes.contains_key(d) {
            return Ok(match self.index_async(d).await {
                Ok(Some((idx, _))) => idx
                    .chunks
                    .iter()
                    .filter(|c| !c.is_zero())
                    .map(|c| c.digest)
                    .collect(),
                _ => Vec::new(),
            });
        }
        let magic = refs.magic();
        let Some(meta) = inv.blobs.get(d) else {
            return Ok(Vec::new());
        };
        if magic.is_empty() || meta.size < magic.len() as u64 {
            return Ok(Vec::new());
        }
        let key = self.blob_key(d);
        let head = match self.store.get_range(&key, 0..magic.len() as u64).await {
            Ok(h) => h,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(other("read", &self.url_of(&key), e)),
        };
        if head.as_ref() != magic {
            return Ok(Vec::new());
        }
        match self.get(&key).await? {
            Some(b) if Digest::of(&b) == *d => Ok(refs.refs(&b)),
            _ => Ok(Vec::new()),
        }
    }

    /// Deletes `keys` (in batches of up to 1,000 per request); one already gone is fine.
    async fn delete_all(&self, keys: Vec<Key>) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut results = self
            .store
            .delete_stream(stream::iter(keys.into_iter().map(Ok)).boxed());
        while let Some(r) = results.next().await {
            match r {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(other("delete objects in", &self.url, e)),
            }
        }
        Ok(())
    }
}

/// A blob `verify` read back: its name and, unless it vanished meanwhile, what its bytes
/// hash to, its length and the blobs it lists.
type Rehashed = (Digest, Option<(Digest, u64, Vec<Digest>)>);

#[derive(Default)]
struct Inventory {
    blobs: BTreeMap<Digest, ObjectMeta>,
    indexes: BTreeMap<Digest, ObjectMeta>,
    records: Vec<(Digest, RecordName, ObjectMeta)>,
    used: BTreeMap<(Digest, Digest), ObjectMeta>,
    probes: Vec<ObjectMeta>,
    corrupt: u64,
}

/// Plain objects under an `s3://bucket/prefix`, on the same connection settings as the
/// remote cache, for files the caller names (the application publishes releases with it).
/// Unlike the cache's content-addressed objects, such files may be replaced (an index, a
/// pointer to the newest), so writes overwrite; callers compare before they write.
pub struct S3Bucket {
    c: Connection,
}

impl S3Bucket {
    pub fn open(o: &S3Options) -> Result<S3Bucket, CacheError> {
        Ok(S3Bucket { c: connect(o)? })
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> &str {
        &self.c.url
    }

    fn key(&self, rel: &str) -> Key {
        match self.c.prefix.as_str() {
            "" => Key::from(rel),
            p => Key::from(format!("{p}/{rel}")),
        }
    }

    fn url_of(&self, key: &Key) -> String {
        let bucket_url = self.c.url.split('/').take(3).collect::<Vec<_>>().join("/");
        format!("{bucket_url}/{key}")
    }

    /// The size of the object `rel` (below the prefix); `None` when there is none.
    pub fn size(&self, rel: &str) -> Result<Option<u64>, CacheError> {
        let key = self.key(rel);
        match self.c.rt.block_on(self.c.store.head(&key)) {
            Ok(m) => Ok(Some(m.size)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(other("look up", &self.url_of(&key), e)),
        }
    }

    /// The bytes of the object `rel`; `None` when there is none.
    pub fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let key = self.key(rel);
        let url = self.url_of(&key);
        self.c.rt.block_on(async {
            let got = match self.c.store.get(&key).await {
                Ok(g) => g,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(other("read", &url, e)),
            };
            match got.bytes().await {
                Ok(b) => Ok(Some(b.to_vec())),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(other("read", &url, e)),
            }
        })
    }

    /// Writes `len` bytes from `from` as `rel`, replacing any object there; above
    /// [`MULTIPART_OVER`] in parts. Returns the bytes sent.
    pub fn put(&self, rel: &str, from: &mut dyn Read, len: u64) -> Result<u64, CacheError> {
        let key = self.key(rel);
        let url = self.url_of(&key);
        let read_err = |source| CacheError::Io {
            action: "read for upload",
            path: PathBuf::from(rel),
            source,
        };
        if len <= MULTIPART_OVER {
            let mut bytes = Vec::with_capacity(len as usize);
            from.read_to_end(&mut bytes).map_err(read_err)?;
            let n = bytes.len() as u64;
            self.c
                .rt
                .block_on(self.c.store.put(&key, PutPayload::from(bytes)))
                .map_err(|e| other("write", &url, e))?;
            return Ok(n);
        }
        self.c.rt.block_on(async {
            let mut up = self
                .c
                .store
                .put_multipart(&key)
                .await
                .map_err(|e| other("start uploading", &url, e))?;
            upload_parts(up.as_mut(), from, &url, read_err).await
        })
    }
}

fn mtime(m: &ObjectMeta) -> SystemTime {
    let secs = m.last_modified.timestamp();
    match u64::try_from(secs) {
        Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        // Before 1970: as ancient as the directory's unreadable mtimes.
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

fn age(policy: &GcPolicy, t: SystemTime) -> Duration {
    policy.now.duration_since(t).unwrap_or(Duration::ZERO)
}

impl Remote for S3Remote {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn has_many(&self, digests: &[Digest]) -> Result<Vec<bool>, CacheError> {
        self.rt.block_on(
            stream::iter(digests.iter().copied())
                .map(|d| self.has(d))
                .buffered(IN_FLIGHT)
                .try_collect(),
        )
    }

    fn fetch_blob(&self, d: &Digest, local: &StoreDir) -> Result<u64, CacheError> {
        if let Ok(m) = std::fs::metadata(local.blob_path(d)) {
            return Ok(m.len());
        }
        let key = self.blob_key(d);
        let mut w = local.writer()?;
        let url = self.url_of(&key);
        let fetched = self.rt.block_on(async {
            let got = match self.store.get(&key).await {
                Ok(g) => g,
                Err(e) if is_not_found(&e) => return Ok(false),
                Err(e) => return Err(other("read", &url, e)),
            };
            let mut body = got.into_stream();
            while let Some(part) = body.next().await {
                let part = part.map_err(|e| other("read", &url, e))?;
                w.write_all(&part).map_err(|source| CacheError::Io {
                    action: "import",
                    path: local.blob_path(d),
                    source,
                })?;
            }
            Ok(true)
        })?;
        if !fetched {
            return Err(self.missing(d));
        }
        match w.commit_expecting(Some(d)) {
            Err(CacheError::Mismatch { actual, .. }) => {
                let reason = format!("blob `{d}` is corrupt: its bytes hash to `{actual}`");
                let evidence = self
                    .rt
                    .block_on(self.quarantine(&key, &format!("{d}.{actual}"), reason));
                Err(CacheError::Corrupt {
                    expected: *d,
                    actual,
                    evidence,
                    chunk: None,
                })
            }
            other => other.map(|(_, len)| len),
        }
    }

    fn put_blob(&self, d: &Digest, from: &mut dyn Read, len: u64) -> Result<u64, CacheError> {
        self.writable()?;
        let key = self.blob_key(d);
        let read_err = |source| CacheError::Io {
            action: "read for upload",
            path: PathBuf::from(d.to_hex()),
            source,
        };
        if len <= MULTIPART_OVER {
            let mut bytes = Vec::with_capacity(len as usize);
            // A local copy that does not match its name fails here, before anything is sent.
            if let Err(e) = from.read_to_end(&mut bytes) {
                return Err(crate::blob::unwrap_corrupt(e).unwrap_or_else(read_err));
            }
            let n = bytes.len() as u64;
            let created = self.rt.block_on(self.create(&key, bytes.into()))?;
            return Ok(if created { n } else { 0 });
        }
        self.rt.block_on(async {
            if self.head(&key).await?.is_some() {
                return Ok(0);
            }
            let url = self.url_of(&key);
            let mut up = self
                .store
                .put_multipart(&key)
                .await
                .map_err(|e| other("start uploading", &url, e))?;
            upload_parts(up.as_mut(), from, &url, |e| {
                crate::blob::unwrap_corrupt(e).unwrap_or_else(read_err)
            })
            .await
        })
    }

    fn index(&self, d: &Digest) -> Result<Option<ChunkIndex>, CacheError> {
        Ok(self.rt.block_on(self.index_async(d))?.map(|(idx, _)| idx))
    }

    fn put_index(&self, name: &Digest, bytes: &[u8]) -> Result<u64, CacheError> {
        self.writable()?;
        let created = self
            .rt
            .block_on(self.create(&self.index_key(name), bytes.to_vec().into()))?;
        Ok(if created { bytes.len() as u64 } else { 0 })
    }

    fn records(&self, key: &Digest) -> Result<Vec<Record>, CacheError> {
        let loaded = self.rt.block_on(self.load_records(key))?;
        Ok(loaded
            .into_iter()
            .filter_map(|(_, p, _)| match p {
                Parsed::Valid(r) => Some(*r),
                _ => None,
            })
            .collect())
    }

    fn record_keys(&self) -> Result<Vec<Digest>, CacheError> {
        let inv = self.rt.block_on(self.inventory())?;
        let keys: BTreeSet<Digest> = inv.records.iter().map(|(k, _, _)| *k).collect();
        Ok(keys.into_iter().collect())
    }

    fn put_record(&self, r: &Record) -> Result<(), CacheError> {
        self.writable()?;
        let outputs: Vec<(&String, Digest)> = r.outputs.iter().map(|(n, o)| (n, o.digest)).collect();
        let digests: Vec<Digest> = outputs.iter().map(|(_, d)| *d).collect();
        for ((name, d), there) in outputs.iter().zip(self.has_many(&digests)?) {
            if !there {
                return Err(CacheError::IncompleteRecord {
                    key: r.key,
                    output: (*name).clone(),
                    digest: *d,
                });
            }
        }
        let key = self.key(&format!("{}/{}", self.record_dir(&r.key), r.name().file_name()));
        self.rt.block_on(self.create(&key, r.to_json().into()))?;
        Ok(())
    }

    fn touch_outputs(&self, key: &Digest, outputs: &Digest, now: SystemTime) -> Result<(), CacheError> {
        if self.read_only {
            return Ok(());
        }
        self.writable()?;
        let used = self.used_key(key, outputs);
        self.rt.block_on(async {
            if let Some(m) = self.head(&used).await? {
                if now.duration_since(mtime(&m)).unwrap_or(Duration::ZERO) < USED_EVERY {
                    return Ok(());
                }
            }
            // Advisory metadata, not content: a plain overwrite.
            self.store
                .put(&used, PutPayload::new())
                .await
                .map(drop)
                .map_err(|e| other("mark used", &self.url_of(&used), e))
        })
    }

    fn take_quarantined(&self) -> Vec<Quarantined> {
        std::mem::take(&mut *self.quarantined.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn gc(&self, policy: &GcPolicy, refs: &dyn BlobRefs) -> Result<GcReport, CacheError> {
        self.writable()?;
        self.rt.block_on(async {
            let inv = self.inventory().await?;
            let mut rep = GcReport::default();
            // Records, most recently used first: the upload or the `.used` stamp.
            let mut recs: Vec<(SystemTime, &Digest, &RecordName, &ObjectMeta)> = inv
                .records
                .iter()
                .map(|(k, n, m)| {
                    let used = inv.used.get(&(*k, n.outputs)).map(mtime);
                    (mtime(m).max(used.unwrap_or(SystemTime::UNIX_EPOCH)), k, n, m)
                })
                .collect();
            recs.sort_by(|a, b| b.0.cmp(&a.0).then(a.3.location.cmp(&b.3.location)));
            let size_of = |d: &Digest| {
                inv.blobs
                    .get(d)
                    .or_else(|| inv.indexes.get(d))
                    .map_or(0, |m| m.size)
            };
            let mut live: BTreeSet<Digest> = BTreeSet::new();
            let mut kids: BTreeMap<Digest, Vec<Digest>> = BTreeMap::new();
            let mut kept_bytes = 0u64;
            let mut doomed: Vec<Key> = Vec::new();
            let mut kept_records: BTreeSet<(Digest, Digest)> = BTreeSet::new();
            for (used, key, name, meta) in recs {
                let young = age(policy, used) < policy.grace;
                let too_old = policy.max_age.is_some_and(|a| age(policy, used) > a);
                if too_old && !young {
                    doomed.push(meta.location.clone());
                    rep.records_removed += 1;
                    continue;
                }
                let Some(bytes) = self.get(&meta.location).await? else {
                    continue;
                };
                let roots = match Record::parse(&bytes, key, name) {
                    Parsed::Valid(r) => r.roots(),
                    Parsed::Foreign => foreign_roots(&bytes),
                    // Left for `verify`, which quarantines it.
                    Parsed::Invalid => Vec::new(),
                };
                // Its closure, beyond what newer records already keep.
                let mut fresh = Vec::new();
                let mut stack = roots;
                let mut seen = BTreeSet::new();
                while let Some(d) = stack.pop() {
                    if live.contains(&d) || !seen.insert(d) {
                        continue;
                    }
                    fresh.push(d);
                    let children = match kids.get(&d) {
                        Some(c) => c.clone(),
                        None => {
                            let c = self.children(&d, &inv, refs).await?;
                            kids.insert(d, c.clone());
                            c
                        }
                    };
                    stack.extend(children);
                }
                let add: u64 = fresh.iter().map(size_of).sum::<u64>() + meta.size;
                if policy.max_bytes.is_some_and(|m| kept_bytes + add > m) && !young {
                    doomed.push(meta.location.clone());
                    rep.records_removed += 1;
                    continue;
                }
                kept_bytes += add;
                live.extend(fresh);
                kept_records.insert((*key, name.outputs));
                rep.records_kept += 1;
            }
            for (d, m) in &inv.blobs {
                if live.contains(d) || age(policy, mtime(m)) < policy.grace {
                    rep.blobs_kept += 1;
                    rep.bytes_kept += m.size;
                } else {
                    doomed.push(m.location.clone());
                    rep.blobs_removed += 1;
                    rep.bytes_freed += m.size;
                }
            }
            for (d, m) in &inv.indexes {
                if live.contains(d) || age(policy, mtime(m)) < policy.grace {
                    rep.indexes_kept += 1;
                    rep.bytes_kept += m.size;
                } else {
                    doomed.push(m.location.clone());
                    rep.indexes_removed += 1;
                    rep.bytes_freed += m.size;
                }
            }
            for (k, m) in &inv.used {
                if !kept_records.contains(k) && age(policy, mtime(m)) >= policy.grace {
                    doomed.push(m.location.clone());
                }
            }
            for m in &inv.probes {
                if age(policy, mtime(m)) >= policy.grace {
                    doomed.push(m.location.clone());
                }
            }
            self.delete_all(doomed).await?;
            Ok(rep)
        })
    }

    fn verify(&self, refs: &dyn BlobRefs) -> Result<VerifyReport, CacheError> {
        self.rt.block_on(async {
            let inv = self.inventory().await?;
            let mut rep = VerifyReport::default();
            // Blobs: re-hash each.
            let checked: Vec<Rehashed> = stream::iter(inv.blobs.keys())
                .map(|d| async move {
                    let key = self.blob_key(d);
                    let Some(bytes) = self.get(&key).await? else {
                        return Ok::<_, CacheError>((*d, None));
                    };
                    let actual = Digest::of(&bytes);
                    let kids = match refs.magic() {
                        m if !m.is_empty() && actual == *d && bytes.starts_with(m) => refs.refs(&bytes),
                        _ => Vec::new(),
                    };
                    Ok((*d, Some((actual, bytes.len() as u64, kids))))
                })
                .buffered(IN_FLIGHT / 4)
                .try_collect()
                .await?;
            let mut present: BTreeSet<Digest> = BTreeSet::new();
            let mut listings = Vec::new();
            for (d, got) in checked {
                let Some((actual, len, kids)) = got else { continue };
                rep.blobs_checked += 1;
                rep.bytes_checked += len;
                if actual != d {
                    let reason = format!("blob `{d}` is corrupt: its bytes hash to `{actual}`");
                    self.quarantine(&self.blob_key(&d), &format!("{d}.{actual}"), reason)
                        .await;
                    rep.corrupt_blobs.push(d);
                    continue;
                }
                present.insert(d);
                if !kids.is_empty() {
                    listings.push((d, kids));
                }
            }
            for (d, kids) in listings {
                if kids
                    .iter()
                    .any(|k| !present.contains(k) && !inv.indexes.contains_key(k))
                {
                    let reason = format!("listing `{d}` names a blob the store does not have");
                    self.quarantine(&self.blob_key(&d), &format!("{d}.incomplete"), reason)
                        .await;
                    present.remove(&d);
                    rep.incomplete_listings.push(d);
                }
            }
            // Indexes: the keyed name, the format, every chunk.
            let mut complete: BTreeSet<Digest> = BTreeSet::new();
            for d in inv.indexes.keys() {
                rep.indexes_checked += 1;
                match self.index_async(d).await {
                    Ok(Some((idx, _))) => {
                        let gone = idx
                            .chunks
                            .iter()
                            .any(|c| !c.is_zero() && !present.contains(&c.digest));
                        if gone {
                            let reason = format!("chunk index `{d}` names a chunk the store does not have");
                            self.quarantine(&self.index_key(d), &format!("{d}.incomplete.index"), reason)
                                .await;
                            rep.incomplete_indexes.push(*d);
                        } else {
                            complete.insert(*d);
                        }
                    }
                    Ok(None) => {}
                    Err(CacheError::IndexUnsupported { .. }) => {
                        complete.insert(*d);
                    }
                    Err(_) => rep.corrupt_indexes.push(*d),
                }
            }
            // Records: valid, complete, and one outputs per key.
            let keys: BTreeSet<Digest> = inv.records.iter().map(|(k, _, _)| *k).collect();
            for key in keys {
                let mut outputs_seen = BTreeSet::new();
                for (k, parsed, _) in self.load_records(&key).await? {
                    rep.records_checked += 1;
                    match parsed {
                        Parsed::Valid(r) => {
                            outputs_seen.insert(r.outputs_digest());
                            let whole = r
                                .outputs
                                .values()
                                .all(|o| present.contains(&o.digest) || complete.contains(&o.digest));
                            if !whole {
                                rep.dangling_records.push((key, r.outputs_digest()));
                            }
                        }
                        Parsed::Foreign => {}
                        Parsed::Invalid => rep.invalid_records.push(PathBuf::from(self.url_of(&k))),
                    }
                }
                if outputs_seen.len() > 1 {
                    rep.divergent_keys.push(key);
                }
            }
            Ok(rep)
        })
    }

    fn stats(&self) -> Result<Stats, CacheError> {
        self.rt.block_on(async {
            let inv = self.inventory().await?;
            let mut s = Stats {
                blobs: inv.blobs.len() as u64,
                blob_bytes: inv.blobs.values().map(|m| m.size).sum(),
                indexes: inv.indexes.len() as u64,
                index_bytes: inv.indexes.values().map(|m| m.size).sum(),
                records: inv.records.len() as u64,
                corrupt_entries: inv.corrupt,
                ..Stats::default()
            };
            let mut chunks = BTreeSet::new();
            for d in inv.indexes.keys() {
                if let Ok(Some((idx, len))) = self.index_async(d).await {
                    s.logical_bytes += idx.total_len();
                    s.physical_bytes += len as u64;
                    chunks.extend(idx.chunks.iter().filter(|c| !c.is_zero()).map(|c| c.digest));
                }
            }
            s.physical_bytes += chunks
                .iter()
                .filter_map(|c| inv.blobs.get(c))
                .map(|m| m.size)
                .sum::<u64>();
            // A record's name gives its outputs: divergence without reading any record.
            let mut by_key: BTreeMap<Digest, BTreeSet<Digest>> = BTreeMap::new();
            for (k, n, _) in &inv.records {
                by_key.entry(*k).or_default().insert(n.outputs);
            }
            s.keys = by_key.len() as u64;
            s.divergent_keys = by_key
                .into_iter()
                .filter(|(_, o)| o.len() > 1)
                .map(|(k, _)| k)
                .collect();
            Ok(s)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_clean_prefix() {
        assert_eq!(
            parse_url("s3://ci-cache").unwrap(),
            ("ci-cache".into(), String::new())
        );
        assert_eq!(
            parse_url("s3://ci-cache/main/").unwrap(),
            ("ci-cache".into(), "main".into())
        );
        assert_eq!(
            parse_url("s3://ci.cache/a/b").unwrap(),
            ("ci.cache".into(), "a/b".into())
        );
        for bad in [
            "/mnt/cache",
            "s3://",
            "s3://Upper",
            "s3://ab",
            "s3://b-b/../x",
            "s3://bbb/a//b",
        ] {
            assert!(
                matches!(parse_url(bad), Err(CacheError::RemoteUrl { .. })),
                "{bad}"
            );
        }
    }
}
