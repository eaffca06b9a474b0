//! Content digests (`algorithm:encoded`), restricted to the algorithms Wharf
//! can verify: sha256 and sha512.

use sha2::Digest as _;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use std::fmt;
use std::str::FromStr;

/// A digest algorithm Wharf can compute and verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn digester(self) -> Digester {
        match self {
            Algorithm::Sha256 => Digester::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Digester::Sha512(sha2::Sha512::new()),
        }
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(DigestError::UnsupportedAlgorithm(
                other.chars().take(64).collect(),
            )),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest must have the form algorithm:hex")]
    Malformed,
    #[error("unsupported digest algorithm {0:?} (supported: sha256, sha512)")]
    UnsupportedAlgorithm(String),
    #[error("digest encoding must be {0} lowercase hex characters")]
    BadEncoding(usize),
}

/// A validated digest such as `sha256:e3b0c442...`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex encoded part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Digest of a byte slice.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut d = algorithm.digester();
        d.update(data);
        d.finish()
    }

    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s.split_once(':').ok_or(DigestError::Malformed)?;
        let algorithm: Algorithm = alg.parse()?;
        let ok = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(DigestError::BadEncoding(algorithm.hex_len()));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for one algorithm: digests are computed while bytes flow.
#[derive(Clone)]
pub enum Digester {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Digester {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Digester::Sha256(_) => Algorithm::Sha256,
            Digester::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Sha256(h) => h.update(data),
            Digester::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Digester::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Digester::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

/// Why a saved digest state was refused by [`Digester::restore_state`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestStateError {
    #[error("saved digest state has an unknown format")]
    Format,
    #[error("saved digest state is for {found}, not {expected}")]
    Algorithm {
        expected: Algorithm,
        found: &'static str,
    },
    #[error("saved digest state is corrupt")]
    Corrupt,
}

/// First byte of a saved state: bump it if the layout ever changes, so an
/// old state is refused (and the data re-read) rather than misread.
const STATE_FORMAT: u8 = 1;

impl Digester {
    /// The running hash state as bytes, to resume hashing in another process
    /// (an upload session continued on another replica). Layout: a format
    /// byte, an algorithm tag (1 = sha256, 2 = sha512), then the hash
    /// library's own serialized state (chaining values, block count and the
    /// partial block).
    pub fn save_state(&self) -> Vec<u8> {
        let (tag, state) = match self {
            Digester::Sha256(h) => (1u8, h.serialize().to_vec()),
            Digester::Sha512(h) => (2u8, h.serialize().to_vec()),
        };
        let mut out = Vec::with_capacity(state.len() + 2);
        out.push(STATE_FORMAT);
        out.push(tag);
        out.extend_from_slice(&state);
        out
    }

    /// Resume from [`Digester::save_state`]'s bytes, checking that they are
    /// for `algorithm`. Anything malformed is refused, never guessed at.
    pub fn restore_state(algorithm: Algorithm, bytes: &[u8]) -> Result<Digester, DigestStateError> {
        let [format, tag, state @ ..] = bytes else {
            return Err(DigestStateError::Format);
        };
        if *format != STATE_FORMAT {
            return Err(DigestStateError::Format);
        }
        let found = match tag {
            1 => Algorithm::Sha256,
            2 => Algorithm::Sha512,
            _ => return Err(DigestStateError::Format),
        };
        if found != algorithm {
            return Err(DigestStateError::Algorithm {
                expected: algorithm,
                found: found.as_str(),
            });
        }
        Ok(match algorithm {
            Algorithm::Sha256 => Digester::Sha256(restore::<sha2::Sha256>(state)?),
            Algorithm::Sha512 => Digester::Sha512(restore::<sha2::Sha512>(state)?),
        })
    }
}

fn restore<H: SerializableState>(state: &[u8]) -> Result<H, DigestStateError> {
    let state = SerializedState::<H>::try_from(state).map_err(|_| DigestStateError::Corrupt)?;
    H::deserialize(&state).map_err(|_| DigestStateError::Corrupt)
}

impl fmt::Debug for Digester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digester({})", self.algorithm())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays() {
        let d: Digest = EMPTY256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY256);
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn sha512() {
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(d.hex().len(), 128);
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:xyz",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:../../../../etc/passwd",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Hashing resumed from a saved state at any split point gives the
        /// same digest as hashing in one go, for both algorithms.
        #[test]
        fn resumes_at_any_split(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600), split in 0usize..600, sha512 in proptest::bool::ANY) {
            let algorithm = if sha512 { Algorithm::Sha512 } else { Algorithm::Sha256 };
            let split = split.min(data.len());
            let mut first = algorithm.digester();
            first.update(&data[..split]);
            let saved = first.save_state();
            let mut resumed = Digester::restore_state(algorithm, &saved).unwrap();
            resumed.update(&data[split..]);
            proptest::prop_assert_eq!(resumed.finish(), Digest::of(algorithm, &data));
        }

        /// Arbitrary bytes never panic and never restore into a wrong hasher
        /// silently: they are refused or (for a well-formed state) accepted.
        #[test]
        fn arbitrary_state_does_not_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = Digester::restore_state(Algorithm::Sha256, &bytes);
            let _ = Digester::restore_state(Algorithm::Sha512, &bytes);
        }
    }

    #[test]
    fn bad_states_are_refused() {
        let mut d = Algorithm::Sha256.digester();
        d.update(b"abc");
        let saved = d.save_state();
        assert_eq!(
            Digester::restore_state(Algorithm::Sha512, &saved).unwrap_err(),
            DigestStateError::Algorithm {
                expected: Algorithm::Sha512,
                found: "sha256"
            }
        );
        assert_eq!(
            Digester::restore_state(Algorithm::Sha256, &[]).unwrap_err(),
            DigestStateError::Format
        );
        let mut other_format = saved.clone();
        other_format[0] = 9;
        assert_eq!(
            Digester::restore_state(Algorithm::Sha256, &other_format).unwrap_err(),
            DigestStateError::Format
        );
        let truncated = &saved[..saved.len() - 1];
        assert_eq!(
            Digester::restore_state(Algorithm::Sha256, truncated).unwrap_err(),
            DigestStateError::Corrupt
        );
        let mut longer = saved.clone();
        longer.push(0);
        assert_eq!(
            Digester::restore_state(Algorithm::Sha256, &longer).unwrap_err(),
            DigestStateError::Corrupt
        );
    }

    #[test]
    fn incremental_equals_oneshot() {
        let mut d = Algorithm::Sha256.digester();
        d.update(b"hello ");
        d.update(b"world");
        assert_eq!(d.finish(), Digest::sha256_of(b"hello world"));
    }
}
