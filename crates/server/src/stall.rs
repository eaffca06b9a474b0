//! A request body that fails when the client stops sending: an upload whose
//! body delivers nothing for the body timeout is aborted, so a stalled
//! client cannot hold an upload session's lock and a half-written chunk.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
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

pub struct StallBody {
    inner: Incoming,
    timeout: Option<Duration>,
    /// Created the first time the body has to wait (most bodies never do).
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer runs for the current wait.
    armed: bool,
}

impl StallBody {
    pub fn new(inner: Incoming, timeout: Option<Duration>) -> StallBody {
        StallBody {
            inner,
            timeout,
            timer: None,
            armed: false,
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
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
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Stalled(limit)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
