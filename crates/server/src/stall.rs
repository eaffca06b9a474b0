//! The request body every handler sees.
//!
//! - It fails when the client stops sending: an upload whose body delivers
//!   nothing for the body timeout is aborted, so a stalled client cannot hold
//!   an upload session's lock and a half-written chunk.
//! - It is drained when dropped unread (HTTP/1.1): a handler that answers an
//!   error before reading the body (a 416 chunk, a 413 manifest, a 401...)
//!   just drops it, and the rest of the body is read and discarded in the
//!   background while the answer goes out. Otherwise the server would close
//!   the connection with the client's bytes unread, the kernel would reset
//!   it, and the client would see a broken pipe instead of the answer. Only
//!   bodies of at most [`DRAIN_MAX`] bytes are drained, with the body timeout
//!   still applying; a body that announced `Expect: 100-continue` and was
//!   never read is not drained either: hyper sends `100 Continue` only when a
//!   body is first read, so that client has not sent it, gets the error
//!   instead, and the connection closes after the answer.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The error a stalled body ends with.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body sent nothing for {0:?}")]
    Stalled(Duration),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// The most of an unread request body that is read and discarded so that
/// the client gets the answer (see the module documentation); larger ones
/// are not, and their connection is closed after the answer.
pub const DRAIN_MAX: u64 = 16 << 20;

pub struct StallBody {
    /// `None` only once dropped.
    inner: Option<Incoming>,
    timeout: Option<Duration>,
    /// Created the first time the body has to wait (most bodies never do).
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer runs for the current wait.
    armed: bool,
    /// Drain the rest when dropped unread (HTTP/1.1 only: HTTP/2 resets
    /// just the stream).
    drain: bool,
    /// The request carries `Expect: 100-continue`.
    expects_continue: bool,
    /// The body has been read from (so `100 Continue` has been sent).
    polled: bool,
    /// The body ended with an error (a stall, a broken connection).
    failed: bool,
}

impl StallBody {
    /// `drain`: drain the body if it is dropped unread (HTTP/1.1);
    /// `expects_continue`: the request has `Expect: 100-continue`.
    pub fn new(
        inner: Incoming,
        timeout: Option<Duration>,
        drain: bool,
        expects_continue: bool,
    ) -> StallBody {
        StallBody {
            inner: Some(inner),
            timeout,
            timer: None,
            armed: false,
            drain,
            expects_continue,
            polled: false,
            failed: false,
        }
    }
}

impl Drop for StallBody {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if !self.drain
            || self.failed
            || inner.is_end_stream()
            || (self.expects_continue && !self.polled)
            || inner.size_hint().upper().is_some_and(|n| n > DRAIN_MAX)
        {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(drain(inner, self.timeout));
        }
    }
}

/// Read and drop the rest of a body: at most [`DRAIN_MAX`] bytes (a body
/// without a length may be longer), each frame within `timeout`.
async fn drain(mut body: Incoming, timeout: Option<Duration>) {
    let mut left = DRAIN_MAX;
    loop {
        let frame = match timeout {
            Some(t) => match tokio::time::timeout(t, body.frame()).await {
                Ok(f) => f,
                Err(_) => return,
            },
            None => body.frame().await,
        };
        let Some(Ok(frame)) = frame else {
            return;
        };
        if let Some(data) = frame.data_ref() {
            match u64::try_from(data.len())
                .ok()
                .and_then(|n| left.checked_sub(n))
            {
                Some(l) => left = l,
                None => return,
            }
        }
    }
}

impl Body for StallBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        this.polled = true;
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                if matches!(frame, Some(Err(_))) {
                    this.failed = true;
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
            Poll::Pending => {
                let Some(limit) = this.timeout else {
                    return Poll::Pending;
                };
                if !this.armed {
                    let deadline = Instant::now() + limit;
                    match &mut this.timer {
                        Some(t) => t.as_mut().reset(deadline),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    this.armed = true;
                }
                let Some(timer) = this.timer.as_mut() else {
                    return Poll::Pending;
                };
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.failed = true;
                        Poll::Ready(Some(Err(BodyError::Stalled(limit))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
