//! Storage operations counted: a [`store::Backend`] that passes every call
//! to the real backend and counts it, its failures and its duration by
//! backend (`fs`, `s3`) and operation. The label sets are resolved once,
//! at startup: a call costs two or three atomic adds.
//!
//! An operation fails when the backend returns an error; "not found"
//! answers (`Ok(None)`, `Ok(false)`) are answers. Errors while a reader's
//! or writer's bytes stream are not counted here.

use async_trait::async_trait;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use store::backend::{ObjectReader, UploadWriter};
use store::{Backend, ByteStream, ObjectMeta, UploadStat};

/// Storage latency buckets, seconds: a local file to a slow object store.
const STORAGE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The operations, as labelled (the backend trait's methods).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Ready,
    Head,
    Get,
    Read,
    Put,
    Delete,
    List,
    UploadCreate,
    UploadStat,
    UploadWrite,
    UploadTruncate,
    UploadRead,
    UploadCommit,
    UploadDelete,
    UploadList,
    Presign,
}

const OPS: [Op; 16] = [
    Op::Ready,
    Op::Head,
    Op::Get,
    Op::Read,
    Op::Put,
    Op::Delete,
    Op::List,
    Op::UploadCreate,
    Op::UploadStat,
    Op::UploadWrite,
    Op::UploadTruncate,
    Op::UploadRead,
    Op::UploadCommit,
    Op::UploadDelete,
    Op::UploadList,
    Op::Presign,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Ready => "ready",
            Op::Head => "head",
            Op::Get => "get",
            Op::Read => "read",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::List => "list",
            Op::UploadCreate => "upload_create",
            Op::UploadStat => "upload_stat",
            Op::UploadWrite => "upload_write",
            Op::UploadTruncate => "upload_truncate",
            Op::UploadRead => "upload_read",
            Op::UploadCommit => "upload_commit",
            Op::UploadDelete => "upload_delete",
            Op::UploadList => "upload_list",
            Op::Presign => "presign",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StorageLabels {
    backend: &'static str,
    operation: &'static str,
}

/// One operation's counters, resolved.
#[derive(Clone, Debug)]
struct OpMetrics {
    calls: Counter,
    errors: Counter,
    duration: Histogram,
}

/// The storage metric families and, per operation, its resolved counters.
#[derive(Clone, Debug)]
pub struct StorageMetrics {
    ops: Vec<OpMetrics>,
}

fn storage_histogram() -> Histogram {
    Histogram::new(STORAGE_BUCKETS.iter().copied())
}

impl StorageMetrics {
    pub fn new(registry: &mut Registry, backend: &'static str) -> StorageMetrics {
        let calls = Family::<StorageLabels, Counter>::default();
        let errors = Family::<StorageLabels, Counter>::default();
        let duration = Family::<StorageLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            storage_histogram,
        );
        registry.register(
            "wharf_storage_operations",
            "Storage backend operations, by backend (fs, s3) and operation",
            calls.clone(),
        );
        registry.register(
            "wharf_storage_errors",
            "Storage backend operations that failed (not-found answers are not failures), by backend and operation",
            errors.clone(),
        );
        registry.register(
            "wharf_storage_operation_duration_seconds",
            "Time a storage backend operation took until it answered (a read's bytes streaming afterwards excluded), by backend and operation",
            duration.clone(),
        );
        let ops = OPS
            .iter()
            .map(|op| {
                let l = StorageLabels {
                    backend,
                    operation: op.name(),
                };
                OpMetrics {
                    calls: calls.get_or_create(&l).clone(),
                    errors: errors.get_or_create(&l).clone(),
                    duration: duration.get_or_create(&l).clone(),
                }
            })
            .collect();
        StorageMetrics { ops }
    }
}

/// A backend whose operations are counted.
pub struct Instrumented {
    inner: Arc<dyn Backend>,
    m: StorageMetrics,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Backend>, m: &StorageMetrics) -> Instrumented {
        Instrumented {
            inner,
            m: m.clone(),
        }
    }

    async fn count<T>(&self, op: Op, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        // `OPS` lists every `Op` in declaration order.
        let m = self.m.ops.get(op as usize);
        let start = Instant::now();
        let r = f.await;
        if let Some(m) = m {
            m.calls.inc();
            m.duration.observe(start.elapsed().as_secs_f64());
            if r.is_err() {
                m.errors.inc();
            }
        }
        r
    }
}

#[async_trait]
impl Backend for Instrumented {
    async fn ready(&self) -> io::Result<()> {
        self.count(Op::Ready, self.inner.ready()).await
    }

    async fn head(&self, key: &str) -> io::Result<Option<ObjectMeta>> {
        self.count(Op::Head, self.inner.head(key)).await
    }

    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> io::Result<Option<ObjectReader>> {
        self.count(Op::Get, self.inner.get(key, range)).await
    }

    async fn read(&self, key: &str) -> io::Result<Option<Bytes>> {
        self.count(Op::Read, self.inner.read(key)).await
    }

    async fn put(&self, key: &str, data: Bytes) -> io::Result<()> {
        self.count(Op::Put, self.inner.put(key, data)).await
    }

    async fn delete(&self, key: &str) -> io::Result<bool> {
        self.count(Op::Delete, self.inner.delete(key)).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> io::Result<Vec<String>> {
        self.count(Op::List, self.inner.list(prefix, start_after, limit))
            .await
    }

    async fn upload_create(&self, id: &str, meta: Option<Bytes>) -> io::Result<()> {
        self.count(Op::UploadCreate, self.inner.upload_create(id, meta))
            .await
    }

    async fn upload_stat(&self, id: &str) -> io::Result<Option<UploadStat>> {
        self.count(Op::UploadStat, self.inner.upload_stat(id)).await
    }

    async fn upload_writer(&self, id: &str, offset: u64) -> io::Result<Box<dyn UploadWriter>> {
        self.count(Op::UploadWrite, self.inner.upload_writer(id, offset))
            .await
    }

    async fn upload_truncate(&self, id: &str, len: u64) -> io::Result<()> {
        self.count(Op::UploadTruncate, self.inner.upload_truncate(id, len))
            .await
    }

    async fn upload_read(&self, id: &str) -> io::Result<ByteStream> {
        self.count(Op::UploadRead, self.inner.upload_read(id)).await
    }

    async fn upload_commit(&self, id: &str, key: &str) -> io::Result<()> {
        self.count(Op::UploadCommit, self.inner.upload_commit(id, key))
            .await
    }

    async fn upload_delete(&self, id: &str) -> io::Result<()> {
        self.count(Op::UploadDelete, self.inner.upload_delete(id))
            .await
    }

    async fn upload_list(&self) -> io::Result<Vec<(String, SystemTime)>> {
        self.count(Op::UploadList, self.inner.upload_list()).await
    }

    fn chunk_min_length(&self) -> u64 {
        self.inner.chunk_min_length()
    }

    async fn presigned_get(&self, key: &str) -> io::Result<Option<String>> {
        self.count(Op::Presign, self.inner.presigned_get(key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_its_counters_in_order() {
        let mut r = Registry::default();
        let m = StorageMetrics::new(&mut r, "fs");
        assert_eq!(m.ops.len(), OPS.len());
        for (i, op) in OPS.iter().enumerate() {
            assert_eq!(*op as usize, i, "{op:?}");
        }
    }
}
