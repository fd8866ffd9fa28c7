//! Content digests (`sha256:<64 hex>`) and an incremental [`Hasher`].
//!
//! Only sha256 is produced; sha512 (`sha512:<128 hex>`) is parsed and can be
//! verified (see [`Hasher::for_digest`]). The hex part must be lowercase, as
//! the OCI image spec requires for the registered algorithms.

use std::str::FromStr;

use sha2::Digest as _;

/// A content digest. Only sha256 is produced; sha512 is parsed and verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: String,
    hex: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// Not of the form `<algorithm>:<hex>` at all.
    #[error(
        "invalid digest {0:?}: expected <algorithm>:<hex>, e.g. sha256:<64 lowercase hex digits>"
    )]
    Invalid(String),
    /// The algorithm is well formed but not one we can verify.
    #[error("invalid digest {digest:?}: unsupported algorithm {algorithm:?} (supported: sha256, sha512)")]
    UnsupportedAlgorithm { digest: String, algorithm: String },
    /// Wrong number of hex digits for the algorithm.
    #[error("invalid digest {digest:?}: {algorithm} needs {expected} hex digits, found {actual}")]
    BadLength {
        digest: String,
        algorithm: String,
        expected: usize,
        actual: usize,
    },
    /// A character that is not a lowercase hex digit.
    #[error("invalid digest {digest:?}: the hex part must be lowercase hex digits (0-9, a-f)")]
    BadHex { digest: String },
}

/// Hex length of each supported algorithm.
fn hex_len(algorithm: &str) -> Option<usize> {
    match algorithm {
        "sha256" => Some(64),
        "sha512" => Some(128),
        _ => None,
    }
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>` (or sha512 with 128).
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError::Invalid(s.to_string()));
        };
        if algorithm.is_empty() || hex.is_empty() {
            return Err(DigestError::Invalid(s.to_string()));
        }
        let Some(expected) = hex_len(algorithm) else {
            return Err(DigestError::UnsupportedAlgorithm {
                digest: s.to_string(),
                algorithm: algorithm.to_string(),
            });
        };
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::BadHex {
                digest: s.to_string(),
            });
        }
        if hex.len() != expected {
            return Err(DigestError::BadLength {
                digest: s.to_string(),
                algorithm: algorithm.to_string(),
                expected,
                actual: hex.len(),
            });
        }
        Ok(Self {
            algorithm: algorithm.to_string(),
            hex: hex.to_string(),
        })
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        let mut h = Hasher::new();
        h.update(bytes);
        h.finish()
    }

    /// The digest of `bytes` computed with this digest's algorithm; compare
    /// with `self` to verify.
    pub fn compute_same(&self, bytes: &[u8]) -> Self {
        let mut h = Hasher::for_digest(self);
        h.update(bytes);
        h.finish()
    }

    /// True if `bytes` hash to this digest.
    pub fn verify(&self, bytes: &[u8]) -> bool {
        self.compute_same(bytes) == *self
    }

    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }
    pub fn hex(&self) -> &str {
        &self.hex
    }
    /// The first 12 hex digits, as `docker images` shows IDs.
    pub fn short(&self) -> &str {
        self.hex.get(..12).unwrap_or(&self.hex)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
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
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone)]
enum State {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// Incremental hashing: sha256 by default, or the algorithm of an expected
/// digest ([`Hasher::for_digest`]). Also an [`std::io::Write`] sink, so
/// `std::io::copy(&mut reader, &mut hasher)` works.
#[derive(Clone)]
pub struct Hasher {
    state: State,
    bytes: u64,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alg = match self.state {
            State::Sha256(_) => "sha256",
            State::Sha512(_) => "sha512",
        };
        f.debug_struct("Hasher")
            .field("algorithm", &alg)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    /// A sha256 hasher.
    pub fn new() -> Self {
        Self {
            state: State::Sha256(sha2::Sha256::new()),
            bytes: 0,
        }
    }
    /// A hasher using the algorithm of `expected` (sha256 or sha512), so its
    /// result can be compared with `expected`.
    pub fn for_digest(expected: &Digest) -> Self {
        let state = match expected.algorithm() {
            "sha512" => State::Sha512(sha2::Sha512::new()),
            // `Digest` only holds sha256 or sha512.
            _ => State::Sha256(sha2::Sha256::new()),
        };
        Self { state, bytes: 0 }
    }
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Sha256(h) => h.update(data),
            State::Sha512(h) => h.update(data),
        }
        self.bytes += data.len() as u64;
    }
    /// Number of bytes hashed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// The digest of everything hashed so far (without consuming).
    pub fn current(&self) -> Digest {
        self.clone().finish()
    }
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self.state {
            State::Sha256(h) => ("sha256", hex::encode(h.finalize())),
            State::Sha512(h) => ("sha512", hex::encode(h.finalize())),
        };
        Digest {
            algorithm: algorithm.to_string(),
            hex,
        }
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_of_known_values() {
        assert_eq!(Digest::sha256_of(b"").to_string(), EMPTY);
        assert_eq!(
            Digest::sha256_of(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hasher_incremental_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Hasher::new();
        for chunk in data.chunks(777) {
            h.update(chunk);
        }
        assert_eq!(h.bytes(), data.len() as u64);
        assert_eq!(h.current(), Digest::sha256_of(&data));
        assert_eq!(h.finish(), Digest::sha256_of(&data));
    }

    #[test]
    fn sha512_verify() {
        let d = Digest::parse(
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        )
        .unwrap();
        assert!(d.verify(b"abc"));
        assert!(!d.verify(b"abd"));
        assert_eq!(Hasher::for_digest(&d).finish().algorithm(), "sha512");
    }

    #[test]
    fn parse_table() {
        let hex64 = "a".repeat(64);
        let hex128 = "0".repeat(128);
        let ok = [
            format!("sha256:{hex64}"),
            format!("sha512:{hex128}"),
            EMPTY.to_string(),
        ];
        for s in &ok {
            let d = Digest::parse(s).unwrap();
            assert_eq!(&d.to_string(), s);
            assert_eq!(s.parse::<Digest>().unwrap(), d);
        }
        let bad: &[(String, &str)] = &[
            (String::new(), "expected <algorithm>:<hex>"),
            ("sha256".into(), "expected <algorithm>:<hex>"),
            ("sha256:".into(), "expected <algorithm>:<hex>"),
            (format!(":{hex64}"), "expected <algorithm>:<hex>"),
            (format!("md5:{hex64}"), "unsupported algorithm \"md5\""),
            (
                format!("SHA256:{hex64}"),
                "unsupported algorithm \"SHA256\"",
            ),
            (
                format!("sha256:{}", "A".repeat(64)),
                "must be lowercase hex",
            ),
            (
                format!("sha256:{}", "g".repeat(64)),
                "must be lowercase hex",
            ),
            (
                format!("sha256:{}", "a".repeat(63)),
                "sha256 needs 64 hex digits, found 63",
            ),
            (
                format!("sha256:{}", "a".repeat(65)),
                "sha256 needs 64 hex digits, found 65",
            ),
            (
                format!("sha512:{hex64}"),
                "sha512 needs 128 hex digits, found 64",
            ),
            (format!("sha256:{hex64}:"), "must be lowercase hex"),
        ];
        for (s, msg) in bad {
            let err = Digest::parse(s).unwrap_err().to_string();
            assert!(err.contains(msg), "{s:?}: {err}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let d = Digest::sha256_of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:ABC\"").is_err());
    }

    #[test]
    fn short_id() {
        assert_eq!(Digest::parse(EMPTY).unwrap().short(), "e3b0c44298fc");
    }
}
