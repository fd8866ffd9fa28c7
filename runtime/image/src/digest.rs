//! Content digests (`sha256:<64 hex>`).
//!
//! OWNER: image-store helper. Keep these signatures.

/// A content digest. Only sha256 is produced; sha512 is parsed and verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: String,
    hex: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("invalid digest {0:?}")]
    Invalid(String),
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>` (or sha512 with 128).
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let _ = s;
        Err(DigestError::Invalid(s.to_string()))
    }
    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        let _ = bytes;
        unimplemented!()
    }
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}
// Also to provide: FromStr, serde Serialize/Deserialize as the string form,
// and `Hasher` (incremental sha256 with `update`, `finish() -> Digest`, and
// `bytes()`), which `content::Ingest` and the registry client use.

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
