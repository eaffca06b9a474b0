//! The S3 backend: every key is an object in one bucket (under an optional
//! prefix), so any number of `wharf serve` processes can share it.
//!
//! The S3 client is Apache Arrow's `object_store` (request signing, retries
//! with backoff, the usual credential chain, and multipart uploads with
//! explicit ids, which lets an upload session continue in another process).
//! Upload sessions are in [`upload`]; docs/storage.md describes the layout
//! of the bucket and the number of S3 requests per registry operation.

mod upload;

use crate::backend::{
    Backend, ByteStream, ObjectMeta, ObjectReader, UploadStat, UploadWriter, invalid_key,
    unavailable, valid_key,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where the bucket is and how to reach it. Credentials not given here come
/// from the usual `AWS_*` environment (and the rest of the AWS chain).
#[derive(Clone, Debug, Default)]
pub struct S3Config {
    /// `http(s)://host:port` of the S3 API; empty for AWS itself.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Keys are stored under `<prefix>/` (empty: at the bucket's root).
    pub prefix: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// `https://bucket.host/key` instead of `https://host/bucket/key`.
    pub virtual_hosted: bool,
    /// Answer blob GETs with a redirect to a presigned URL.
    pub redirect: bool,
    /// How long a presigned URL stays valid.
    pub redirect_expiry: Duration,
    /// Give up on a request that gets no answer for this long (connecting,
    /// or waiting between bytes); retries included, an operation fails
    /// within a few times this.
    pub timeout: Duration,
}

impl S3Config {
    /// "bucket wharf at http://127.0.0.1:3900" (for messages).
    pub fn describe(&self) -> String {
        let at = if self.endpoint.is_empty() {
            "AWS S3".to_owned()
        } else {
            self.endpoint.clone()
        };
        if self.prefix.is_empty() {
            format!("bucket {:?} at {at}", self.bucket)
        } else {
            format!(
                "bucket {:?} (prefix {:?}) at {at}",
                self.bucket, self.prefix
            )
        }
    }
}

#[derive(Clone)]
pub struct S3Backend {
    inner: Arc<Inner>,
}

struct Inner {
    store: AmazonS3,
    /// `""` or `"<prefix>/"`.
    prefix: String,
    config: S3Config,
}

/// Multipart parts are at least this big (S3's minimum is 5 MiB), and so is
/// the chunk size advertised to clients.
pub const MIN_PART: u64 = 8 << 20;

impl S3Backend {
    /// Connect to the bucket and check that it answers, so that a wrong
    /// endpoint, wrong credentials or a missing bucket stop the server at
    /// startup with a message naming them.
    pub async fn connect(config: S3Config) -> io::Result<S3Backend> {
        let backend = S3Backend::new(config)?;
        if let Err(e) = backend.ready().await {
            let c = &backend.inner.config;
            let from_env = std::env::var_os("AWS_ACCESS_KEY_ID").is_some_and(|v| !v.is_empty());
            if c.access_key_id.is_none() && !from_env {
                // Without a key, the AWS chain ends at the instance metadata
                // service, whose error says nothing about keys.
                return Err(unavailable(format!(
                    "{e} (no access key was given: set storage.s3.access_key_id, WHARF_S3_ACCESS_KEY_ID or AWS_ACCESS_KEY_ID, unless this runs where AWS provides credentials)"
                )));
            }
            return Err(e);
        }
        Ok(backend)
    }

    /// The backend, without contacting the bucket.
    pub fn new(config: S3Config) -> io::Result<S3Backend> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        if config.bucket.is_empty() {
            return Err(bad("no S3 bucket given".into()));
        }
        let prefix = config.prefix.trim_matches('/');
        if !prefix.is_empty() && !valid_key(prefix) {
            return Err(bad(format!(
                "invalid S3 prefix {prefix:?}: use /-separated components of letters, digits, '.', '_', '-'"
            )));
        }
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_virtual_hosted_style_request(config.virtual_hosted)
            .with_client_options(
                // No limit on a whole request: a blob GET streams for as
                // long as the blob takes. What is bounded is connecting and
                // each wait for bytes, so a dead node is noticed.
                ClientOptions::new()
                    .with_connect_timeout(config.timeout)
                    .with_read_timeout(config.timeout)
                    .with_timeout_disabled(),
            )
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: config.timeout.saturating_mul(2),
                ..RetryConfig::default()
            });
        if !config.region.is_empty() {
            b = b.with_region(&config.region);
        }
        if !config.endpoint.is_empty() {
            b = b
                .with_endpoint(&config.endpoint)
                .with_allow_http(config.endpoint.starts_with("http://"));
        }
        if let Some(k) = &config.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &config.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        let store = b
            .build()
            .map_err(|e| bad(format!("S3 {}: {e}", config.describe())))?;
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(S3Backend {
            inner: Arc::new(Inner {
                store,
                prefix,
                config,
            }),
        })
    }

    pub fn config(&self) -> &S3Config {
        &self.inner.config
    }

    /// The object path of a backend key.
    fn path(&self, key: &str) -> io::Result<Path> {
        if !valid_key(key) {
            return Err(invalid_key(key));
        }
        self.raw_path(key)
    }

    /// The object path of an internal key (upload sessions), not checked
    /// against the public key grammar.
    fn raw_path(&self, key: &str) -> io::Result<Path> {
        Path::parse(format!("{}{key}", self.inner.prefix)).map_err(|_| invalid_key(key))
    }

    /// A failed S3 request as an `io::Error`: "not found" stays NotFound,
    /// everything else is the storage being unavailable (503), with the
    /// operation, the key and S3's own message.
    fn error(&self, op: &str, key: &str, e: object_store::Error) -> io::Error {
        match e {
            object_store::Error::NotFound { .. } => {
                io::Error::new(io::ErrorKind::NotFound, format!("S3 {op} {key}: not found"))
            }
            e => unavailable(format!(
                "S3 {op} {key} in {} failed: {e}",
                self.inner.config.describe()
            )),
        }
    }

    async fn get_bytes(&self, key: &str, path: &Path) -> io::Result<Option<(Bytes, ObjectMeta)>> {
        match self.inner.store.get(path).await {
            Ok(r) => {
                let meta = object_meta(&r.meta);
                let body = r.bytes().await.map_err(|e| self.error("GET", key, e))?;
                Ok(Some((body, meta)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("GET", key, e)),
        }
    }

    async fn put_raw(&self, key: &str, path: &Path, data: PutPayload) -> io::Result<()> {
        self.inner
            .store
            .put(path, data)
            .await
            .map(drop)
            .map_err(|e| self.error("PUT", key, e))
    }

    async fn delete_raw(&self, key: &str, path: &Path) -> io::Result<()> {
        match self.inner.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("DELETE", key, e)),
        }
    }

    /// Every key below the internal prefix `dir` (ending with `/`), with
    /// its metadata.
    async fn list_raw(&self, dir: &str) -> io::Result<Vec<(String, ObjectMeta)>> {
        let path = self.raw_path(dir.trim_end_matches('/'))?;
        let full = format!("{}{dir}", self.inner.prefix);
        self.inner
            .store
            .list(Some(&path))
            .map_err(|e| self.error("LIST", dir, e))
            .map_ok(|m| {
                let key = m.location.as_ref().strip_prefix(&full).map(str::to_owned);
                (key, object_meta(&m))
            })
            .try_filter_map(|(k, m)| async move { Ok(k.map(|k| (k, m))) })
            .try_collect()
            .await
    }
}

fn object_meta(m: &object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        size: m.size,
        modified: Some(SystemTime::from(m.last_modified)),
    }
}

#[async_trait]
impl Backend for S3Backend {
    async fn ready(&self) -> io::Result<()> {
        // One listing of a prefix that holds nothing: fails for a wrong
        // endpoint, wrong credentials or a missing bucket, and costs S3
        // next to nothing.
        let probe = self.raw_path("_ready")?;
        match self.inner.store.list_with_delimiter(Some(&probe)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(unavailable(format!(
                "S3 {}: {e}",
                self.inner.config.describe()
            ))),
        }
    }

    async fn head(&self, key: &str) -> io::Result<Option<ObjectMeta>> {
        let path = self.path(key)?;
        match self.inner.store.head(&path).await {
            Ok(m) => Ok(Some(object_meta(&m))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("HEAD", key, e)),
        }
    }

    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> io::Result<Option<ObjectReader>> {
        let path = self.path(key)?;
        let options = GetOptions {
            range: range.map(|(start, end)| GetRange::Bounded(start..end)),
            ..GetOptions::default()
        };
        let r = match self.inner.store.get_opts(&path, options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("GET", key, e)),
        };
        let meta = object_meta(&r.meta);
        let this = self.clone();
        let key = key.to_owned();
        let body: ByteStream = Box::pin(
            r.into_stream()
                .map_err(move |e| this.error("GET (reading)", &key, e)),
        );
        Ok(Some(ObjectReader { meta, body }))
    }

    async fn read(&self, key: &str) -> io::Result<Option<Bytes>> {
        let path = self.path(key)?;
        Ok(self.get_bytes(key, &path).await?.map(|(b, _)| b))
    }

    async fn put(&self, key: &str, data: Bytes) -> io::Result<()> {
        let path = self.path(key)?;
        self.put_raw(key, &path, data.into()).await
    }

    async fn delete(&self, key: &str) -> io::Result<bool> {
        // S3 answers a DELETE the same whether or not the key existed.
        let Some(_) = self.head(key).await? else {
            return Ok(false);
        };
        let path = self.path(key)?;
        self.delete_raw(key, &path).await?;
        Ok(true)
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> io::Result<Vec<String>> {
        let dir = match prefix.strip_suffix('/') {
            Some(p) if valid_key(p) => p,
            _ => return Err(invalid_key(prefix)),
        };
        let path = self.path(dir)?;
        let full = format!("{}{prefix}", self.inner.prefix);
        // One ListObjectsV2 with start-after per page of 1000 keys: a page
        // of tags costs the same whatever the repository holds.
        let stream = match start_after {
            Some(after) => {
                let offset = Path::parse(format!("{full}{after}"))
                    .map_err(|_| invalid_key(&format!("{prefix}{after}")))?;
                self.inner.store.list_with_offset(Some(&path), &offset)
            }
            None => self.inner.store.list(Some(&path)),
        };
        let mut stream = stream.take(limit);
        let mut out = Vec::new();
        while let Some(m) = stream.next().await {
            let m = m.map_err(|e| self.error("LIST", prefix, e))?;
            if let Some(k) = m.location.as_ref().strip_prefix(&full) {
                out.push(k.to_owned());
            }
        }
        Ok(out)
    }

    async fn upload_create(&self, id: &str, meta: Option<Bytes>) -> io::Result<()> {
        upload::create(self, id, meta).await
    }

    async fn upload_stat(&self, id: &str) -> io::Result<Option<UploadStat>> {
        upload::stat(self, id).await
    }

    async fn upload_writer(&self, id: &str, offset: u64) -> io::Result<Box<dyn UploadWriter>> {
        upload::writer(self, id, offset).await
    }

    async fn upload_truncate(&self, id: &str, len: u64) -> io::Result<()> {
        upload::truncate(self, id, len).await
    }

    async fn upload_read(&self, id: &str) -> io::Result<ByteStream> {
        upload::read(self, id).await
    }

    async fn upload_commit(&self, id: &str, key: &str) -> io::Result<()> {
        let dest = self.path(key)?;
        upload::commit(self, id, key, &dest).await
    }

    async fn upload_delete(&self, id: &str) -> io::Result<()> {
        upload::delete(self, id).await
    }

    async fn upload_list(&self) -> io::Result<Vec<(String, SystemTime)>> {
        upload::list(self).await
    }

    fn chunk_min_length(&self) -> u64 {
        MIN_PART
    }

    async fn presigned_get(&self, key: &str) -> io::Result<Option<String>> {
        if !self.inner.config.redirect {
            return Ok(None);
        }
        use object_store::signer::Signer;
        let path = self.path(key)?;
        let url = self
            .inner
            .store
            .signed_url(http::Method::GET, &path, self.inner.config.redirect_expiry)
            .await
            .map_err(|e| self.error("presign GET", key, e))?;
        Ok(Some(url.to_string()))
    }
}
