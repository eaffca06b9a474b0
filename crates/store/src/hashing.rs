//! Digesting a byte stream while it flows.
//!
//! Small bodies are hashed inline. Once a body is big enough for it to pay,
//! hashing moves to a blocking thread fed through a bounded channel, so it
//! overlaps with receiving and writing the bytes (a 1 GiB push then costs
//! max(hash, I/O) instead of their sum). The channel bounds memory.

use bytes::Bytes;
use oci::Digester;
use std::io;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes hashed inline before hashing moves to its own thread.
const OFFLOAD_AFTER: u64 = 1 << 20;
/// Chunks in flight to the hashing thread (each up to one HTTP read buffer;
/// two keep the thread busy, more only hold memory).
const QUEUE: usize = 2;

pub(crate) struct StreamHasher {
    state: State,
}

enum State {
    Inline {
        digester: Box<Digester>,
        seen: u64,
    },
    Offloaded {
        tx: mpsc::Sender<Bytes>,
        task: JoinHandle<Digester>,
    },
    /// Transitional: never observed outside `update`.
    Empty,
}

impl StreamHasher {
    /// `expected` is the body's length if the request announced it: a big
    /// body is hashed on its own thread from the first byte.
    pub(crate) fn new(digester: Digester, expected: Option<u64>) -> StreamHasher {
        let mut h = StreamHasher {
            state: State::Inline {
                digester: Box::new(digester),
                seen: 0,
            },
        };
        if expected.is_some_and(|n| n >= OFFLOAD_AFTER) {
            h.offload();
        }
        h
    }

    /// Move hashing to a blocking thread fed through the bounded channel.
    fn offload(&mut self) {
        self.state = match std::mem::replace(&mut self.state, State::Empty) {
            State::Inline { mut digester, .. } => {
                let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
                let task = tokio::task::spawn_blocking(move || {
                    while let Some(c) = rx.blocking_recv() {
                        digester.update(&c);
                    }
                    *digester
                });
                State::Offloaded { tx, task }
            }
            other => other,
        };
    }

    pub(crate) async fn update(&mut self, chunk: &Bytes) -> io::Result<()> {
        match &mut self.state {
            State::Inline { digester, seen } => {
                digester.update(chunk);
                *seen += chunk.len() as u64;
                if *seen >= OFFLOAD_AFTER {
                    self.offload();
                }
                Ok(())
            }
            State::Offloaded { tx, .. } => tx
                .send(chunk.clone())
                .await
                .map_err(|_| io::Error::other("the hashing thread stopped")),
            State::Empty => Err(io::Error::other("hasher used after a failure")),
        }
    }

    /// The digester after every byte passed to `update`.
    pub(crate) async fn finish(self) -> io::Result<Digester> {
        match self.state {
            State::Inline { digester, .. } => Ok(*digester),
            State::Offloaded { tx, task } => {
                drop(tx);
                task.await.map_err(io::Error::other)
            }
            State::Empty => Err(io::Error::other("hasher used after a failure")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci::{Algorithm, Digest};

    #[tokio::test]
    async fn same_digest_inline_and_offloaded() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for (chunk, announced) in [1usize, 4096, 65536, 1 << 20, 3 << 20]
            .into_iter()
            .flat_map(|c| [(c, false), (c, true)])
        {
            let expected = announced.then_some(if chunk == 1 { 100 } else { data.len() as u64 });
            let mut h = StreamHasher::new(Algorithm::Sha256.digester(), expected);
            for c in data
                .chunks(chunk.max(1))
                .take(if chunk == 1 { 100 } else { usize::MAX })
            {
                h.update(&Bytes::copy_from_slice(c)).await.unwrap();
            }
            let expect = if chunk == 1 { &data[..100] } else { &data[..] };
            assert_eq!(
                h.finish().await.unwrap().finish(),
                Digest::sha256_of(expect),
                "chunk {chunk}, announced {announced}"
            );
        }
    }
}
