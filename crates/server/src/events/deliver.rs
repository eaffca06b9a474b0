//! The delivery worker of one endpoint: POSTs the outbox's events in the
//! order of their ids, retries with capped exponential backoff, deletes an
//! entry only after a 2xx, drops events past the endpoint's age and count
//! limits (loudly), and with several replicas delivers only while it holds
//! the endpoint's lease.

use super::config::Endpoint;
use super::{LEASE_PREFIX, id_time, outbox, redacted};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::Backend;
use store::backend::KeyPages;
use tokio::sync::{Notify, watch};

/// Outbox entries listed at a time.
const PAGE: usize = 100;
/// Outbox keys counted per listing when checking `max_pending`.
const COUNT_PAGE: usize = 1000;
/// How often a backlog is counted against `max_pending` at most (or every
/// `retry_max_secs`, when that is shorter, but not more often than
/// [`COUNT_MIN`]).
const COUNT_EVERY: Duration = Duration::from_secs(60);
const COUNT_MIN: Duration = Duration::from_secs(2);

/// What the lease object holds.
#[derive(Serialize, Deserialize)]
struct LeaseRecord {
    holder: String,
    /// Unix milliseconds until which the holder may deliver.
    until_ms: u64,
}

/// A delivery attempt's outcome, short of success.
enum Failure {
    Status(u16),
    Error(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(s) => write!(f, "the receiver answered {s}"),
            Failure::Error(e) => write!(f, "{e}"),
        }
    }
}

/// Why a pass over the outbox ended early.
enum Stop {
    /// Shutting down.
    Shutdown,
    /// Another replica holds the lease now.
    LostLease,
    /// The storage failed; try again after a poll interval.
    Storage(io::Error),
}

pub(super) struct Worker {
    backend: Arc<dyn Backend>,
    ep: Arc<Endpoint>,
    wake: Arc<Notify>,
    poll: Duration,
    client: Option<reqwest::Client>,
    lease: Option<Lease>,
    stopped: watch::Receiver<bool>,
    /// When the backlog was last counted against `max_pending`.
    counted: Option<Instant>,
}

impl Worker {
    pub(super) fn new(
        backend: Arc<dyn Backend>,
        ep: Arc<Endpoint>,
        wake: Arc<Notify>,
        poll: Duration,
        lease: Option<Duration>,
        node: String,
        stopped: watch::Receiver<bool>,
    ) -> Worker {
        let client = reqwest::Client::builder()
            .timeout(ep.timeout)
            .connect_timeout(ep.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .build();
        let client = match client {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(endpoint = %ep.name, error = %e, "cannot make the HTTP client of an event webhook: its events stay in the outbox");
                None
            }
        };
        let lease = lease.map(|ttl| Lease {
            key: format!("{LEASE_PREFIX}{}", ep.name),
            node,
            ttl,
            held_until: None,
        });
        Worker {
            backend,
            ep,
            wake,
            poll,
            client,
            lease,
            stopped,
            counted: None,
        }
    }

    fn stopping(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Wait `d`, or less when woken by a new event (`wakeable`) or shutdown.
    /// Returns false on shutdown.
    async fn pause(&mut self, d: Duration, wakeable: bool) -> bool {
        if self.stopping() {
            return false;
        }
        let wake = self.wake.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = wake.notified(), if wakeable => true,
            _ = self.stopped.changed() => false,
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            if self.stopping() {
                break;
            }
            if self.client.is_none() {
                // Nothing can be sent; the events wait for a restart.
                if !self.pause(Duration::from_secs(3600), false).await {
                    break;
                }
                continue;
            }
            if let Some(lease) = &mut self.lease {
                match lease.hold(self.backend.as_ref()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let wait = lease.retry_in().min(self.poll.max(Duration::from_secs(1)));
                        if !self.pause(wait, false).await {
                            break;
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(endpoint = %self.ep.name, error = %e, "event webhook: cannot read or write its lease; trying again");
                        if !self.pause(self.poll, false).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            match self.pass().await {
                Ok(true) => {}
                Ok(false) => {
                    // The outbox was empty.
                    let wait = match &self.lease {
                        // Renew the lease before it runs low.
                        Some(l) => self.poll.min(l.ttl / 3),
                        None => self.poll,
                    };
                    if !self.pause(wait, true).await {
                        break;
                    }
                }
                Err(Stop::Shutdown) => break,
                Err(Stop::LostLease) => {}
                Err(Stop::Storage(e)) => {
                    tracing::warn!(endpoint = %self.ep.name, error = %e, "event webhook: cannot read the outbox; trying again");
                    if !self.pause(self.poll, false).await {
                        break;
                    }
                }
            }
        }
        if let Some(lease) = &self.lease {
            lease.release(self.backend.as_ref()).await;
        }
    }

    /// One walk over the outbox, delivering each event in order. Returns
    /// whether it found any.
    async fn pass(&mut self) -> Result<bool, Stop> {
        let prefix = outbox(&self.ep.name);
        let mut after: Option<String> = None;
        let mut found = false;
        loop {
            let page = self
                .backend
                .list(&prefix, after.as_deref(), PAGE)
                .await
                .map_err(Stop::Storage)?;
            if page.is_empty() {
                return Ok(found);
            }
            found = true;
            if page.len() == PAGE || page.len() as u64 > self.ep.max_pending {
                self.limit_backlog(&prefix).await.map_err(Stop::Storage)?;
            }
            for id in &page {
                self.deliver(&prefix, id).await?;
                after = Some(id.clone());
            }
            if page.len() < PAGE {
                return Ok(found);
            }
        }
    }

    /// Drop the oldest events past `max_pending` (counted once a minute at
    /// most, a page of keys in memory at a time).
    async fn limit_backlog(&mut self, prefix: &str) -> io::Result<()> {
        let every = COUNT_EVERY.min(self.ep.retry_max).max(COUNT_MIN);
        if self.counted.is_some_and(|t| t.elapsed() < every) {
            return Ok(());
        }
        self.counted = Some(Instant::now());
        let b = self.backend.as_ref();
        let mut count: u64 = 0;
        let mut pages = KeyPages::new(b, prefix, COUNT_PAGE);
        while let Some(page) = pages.next().await? {
            count = count.saturating_add(page.len() as u64);
        }
        let Some(excess) = count.checked_sub(self.ep.max_pending).filter(|n| *n > 0) else {
            return Ok(());
        };
        tracing::error!(
            endpoint = %self.ep.name,
            pending = count,
            max_pending = self.ep.max_pending,
            dropped = excess,
            "event webhook: the outbox holds more undelivered events than max_pending; DROPPING the oldest, which will never be delivered"
        );
        let mut left = excess;
        let mut pages = KeyPages::new(b, prefix, COUNT_PAGE);
        'walk: while let Some(page) = pages.next().await? {
            for id in page {
                if left == 0 {
                    break 'walk;
                }
                b.delete(&format!("{prefix}{id}")).await?;
                left -= 1;
            }
        }
        Ok(())
    }

    /// Deliver the event `id` until the receiver takes it, it is too old,
    /// or it is gone (delivered by another replica, dropped).
    async fn deliver(&mut self, prefix: &str, id: &str) -> Result<(), Stop> {
        let key = format!("{prefix}{id}");
        let mut attempt: u32 = 0;
        loop {
            if self.stopping() {
                return Err(Stop::Shutdown);
            }
            if let Some(lease) = &mut self.lease {
                match lease.hold(self.backend.as_ref()).await {
                    Ok(true) => {}
                    Ok(false) => return Err(Stop::LostLease),
                    Err(e) => return Err(Stop::Storage(e)),
                }
            }
            let made = id_time(id);
            let age = made
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            if made.is_none() || age > self.ep.max_age {
                self.backend.delete(&key).await.map_err(Stop::Storage)?;
                tracing::error!(
                    endpoint = %self.ep.name,
                    id,
                    age_secs = age.as_secs(),
                    max_age_secs = self.ep.max_age.as_secs(),
                    attempts = attempt,
                    "event webhook: DROPPED an event not delivered within max_age (or with a malformed id); it will never be delivered"
                );
                return Ok(());
            }
            let Some(body) = self.backend.read(&key).await.map_err(Stop::Storage)? else {
                return Ok(());
            };
            attempt = attempt.saturating_add(1);
            match self.try_once(id, &body, attempt).await? {
                Ok(()) => {
                    if let Err(e) = self.backend.delete(&key).await {
                        // Delivered; it is sent again later (at least once).
                        tracing::warn!(endpoint = %self.ep.name, id, error = %e, "event webhook: delivered, but removing the event from the outbox failed: it will be delivered again");
                    }
                    tracing::debug!(endpoint = %self.ep.name, id, attempt, "event delivered");
                    return Ok(());
                }
                Err(failure) => {
                    // While this event holds up the others, they pile up.
                    self.limit_backlog(prefix).await.map_err(Stop::Storage)?;
                    let wait = backoff(self.ep.retry_min, self.ep.retry_max, attempt);
                    tracing::warn!(
                        endpoint = %self.ep.name,
                        url = %redacted(&self.ep.url),
                        id,
                        attempt,
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        error = %failure,
                        "event webhook: delivery failed; retrying"
                    );
                    if !self.pause(wait, false).await {
                        return Err(Stop::Shutdown);
                    }
                }
            }
        }
    }

    /// One try: the POST, while the lease (if any) is kept renewed and
    /// shutdown is watched for (either abandons the try).
    async fn try_once(
        &mut self,
        id: &str,
        body: &Bytes,
        attempt: u32,
    ) -> Result<Result<(), Failure>, Stop> {
        let Some(client) = &self.client else {
            return Ok(Err(Failure::Error("no HTTP client".into())));
        };
        let send = post(client, &self.ep, id, body, attempt);
        tokio::pin!(send);
        let renew_every = self
            .lease
            .as_ref()
            .map_or(Duration::from_secs(3600), |l| l.ttl / 4);
        loop {
            tokio::select! {
                r = &mut send => return Ok(r),
                _ = self.stopped.changed() => return Err(Stop::Shutdown),
                _ = tokio::time::sleep(renew_every), if self.lease.is_some() => {
                    if let Some(lease) = &mut self.lease {
                        match lease.hold(self.backend.as_ref()).await {
                            Ok(true) => {}
                            Ok(false) => return Err(Stop::LostLease),
                            Err(e) => return Err(Stop::Storage(e)),
                        }
                    }
                }
            }
        }
    }
}

/// One POST of the event.
async fn post(
    client: &reqwest::Client,
    ep: &Endpoint,
    id: &str,
    body: &Bytes,
    attempt: u32,
) -> Result<(), Failure> {
    let mut req = client
        .post(ep.url.clone())
        .header(http::header::CONTENT_TYPE, "application/cloudevents+json")
        .header("x-wharf-event-id", id)
        .header("x-wharf-delivery-attempt", attempt.to_string());
    if let Some(secret) = &ep.secret {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        req = req
            .header("x-wharf-timestamp", &t)
            .header("x-wharf-signature", signature(secret, &t, body));
    }
    let resp = req
        .body(body.clone())
        .send()
        .await
        .map_err(|e| Failure::Error(describe(&e)))?;
    let status = resp.status();
    // The answer's body is not read (nor the connection reused).
    drop(resp);
    if status.is_success() {
        Ok(())
    } else {
        Err(Failure::Status(status.as_u16()))
    }
}

/// The error with its causes ("error sending request: connection refused").
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex::encode(ctx.sign().as_ref()))
}

/// The wait before retry number `attempt` (from 1): `min`, doubled each
/// time, capped at `max`, less up to a tenth at random (so replicas and
/// endpoints do not retry in step).
fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(30);
    let full = min.saturating_mul(1u32 << doublings).min(max);
    let jitter = full.mul_f64(rand::random::<f64>() * 0.1);
    full.saturating_sub(jitter)
}

/// Which replica delivers an endpoint's events. Without compare-and-swap
/// (Garage ignores conditional writes): a replica whose lease expired or
/// who finds none writes its own, waits a moment and reads it back; the
/// last writer wins. Two replicas may both deliver for a moment (events
/// are delivered at least once anyway); they do not all hammer the
/// receiver.
struct Lease {
    key: String,
    node: String,
    ttl: Duration,
    /// Until when this process holds the lease, by its own clock.
    held_until: Option<Instant>,
}

impl Lease {
    /// How long to wait before looking at someone else's lease again.
    fn retry_in(&self) -> Duration {
        self.ttl / 3
    }

    /// Hold the lease: true when this process may deliver now.
    async fn hold(&mut self, b: &dyn Backend) -> io::Result<bool> {
        let now = Instant::now();
        if self
            .held_until
            .is_some_and(|t| t > now + self.ttl.mul_f64(0.5))
        {
            return Ok(true);
        }
        let now_ms = super::unix_ms(SystemTime::now());
        let current: Option<LeaseRecord> = b
            .read(&self.key)
            .await?
            .and_then(|raw| serde_json::from_slice(&raw).ok());
        let ours = match &current {
            Some(r) if r.holder == self.node => true,
            Some(r) if r.until_ms > now_ms => {
                self.held_until = None;
                return Ok(false);
            }
            _ => false,
        };
        self.write(b, now).await?;
        if !ours {
            // Let a replica that wrote at the same moment write too; the
            // record read back names the one that holds it.
            tokio::time::sleep(self.settle()).await;
            let back: Option<LeaseRecord> = b
                .read(&self.key)
                .await?
                .and_then(|raw| serde_json::from_slice(&raw).ok());
            if back.is_none_or(|r| r.holder != self.node) {
                self.held_until = None;
                return Ok(false);
            }
            tracing::info!(key = %self.key, "event webhook: this replica delivers the endpoint's events");
        }
        Ok(true)
    }

    fn settle(&self) -> Duration {
        (self.ttl / 10).min(Duration::from_secs(1))
    }

    async fn write(&mut self, b: &dyn Backend, now: Instant) -> io::Result<()> {
        let until = SystemTime::now() + self.ttl;
        let record = LeaseRecord {
            holder: self.node.clone(),
            until_ms: super::unix_ms(until),
        };
        let raw = serde_json::to_vec(&record).map_err(io::Error::other)?;
        b.put(&self.key, Bytes::from(raw)).await?;
        self.held_until = Some(now + self.ttl);
        Ok(())
    }

    /// Give the lease up (shutdown), so another replica or the next run
    /// takes over at once.
    async fn release(&self, b: &dyn Backend) {
        if self.held_until.is_none() {
            return;
        }
        let mine = match b.read(&self.key).await {
            Ok(Some(raw)) => {
                serde_json::from_slice::<LeaseRecord>(&raw).is_ok_and(|r| r.holder == self.node)
            }
            _ => false,
        };
        if mine && b.delete(&self.key).await.is_ok() {
            tracing::info!(key = %self.key, "event webhook: gave the lease up");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = Duration::from_secs;
        for (attempt, full) in [
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 8),
            (9, 256),
            (10, 300),
            (200, 300),
        ] {
            let b = backoff(s(1), s(300), attempt);
            assert!(
                b <= s(full) && b >= s(full).mul_f64(0.9),
                "{attempt}: {b:?}"
            );
        }
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Python: hmac.new(b"Jefe", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"Jefe", "1700000000", br#"{"a":1}"#),
            "sha256=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
    }
}
