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
/// Chunks in flight to the hashing thread.
const QUEUE: usize = 4;

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
    pub(crate) fn new(digester: Digester) -> StreamHasher {
        StreamHasher {
            state: State::Inline {
                digester: Box::new(digester),
                seen: 0,
            },
        }
    }

    pub(crate) async fn update(&mut self, chunk: &Bytes) -> io::Result<()> {
        match &mut self.state {
            State::Inline { digester, seen } => {
                digester.update(chunk);
                *seen += chunk.len() as u64;
                if *seen >= OFFLOAD_AFTER {
                    let State::Inline { mut digester, .. } =
                        std::mem::replace(&mut self.state, State::Empty)
                    else {
                        unreachable!("matched Inline above")
                    };
                    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
                    let task = tokio::task::spawn_blocking(move || {
                        while let Some(c) = rx.blocking_recv() {
                            digester.update(&c);
                        }
                        *digester
                    });
                    self.state = State::Offloaded { tx, task };
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
        for chunk in [1usize, 4096, 65536, 1 << 20, 3 << 20] {
            let mut h = StreamHasher::new(Algorithm::Sha256.digester());
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
                "chunk {chunk}"
            );
        }
    }
}
