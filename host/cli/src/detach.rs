//! Detach keys on the client side, as the docker CLI has them: while a container's (or an
//! exec's) terminal is attached, typing the sequence (ctrl-p ctrl-q unless `--detach-keys`
//! names another) ends the session and leaves the process running. The keys are also sent to
//! the engine, which watches for them in the same way; catching them here is what tells this
//! client that it detached rather than that the process ended.
//!
//! Docker's notation: keys separated by commas, each a single character or `ctrl-<c>` with
//! `<c>` one of `a`–`z`, `@`, `[`, `\`, `]`, `^`, `_`. (The engine's `berth_api::detach` reads
//! the same notation; the CLI cannot depend on the engine's crates, which are Linux only.)

use anyhow::{bail, Result};

/// ctrl-p, ctrl-q.
pub const DEFAULT_KEYS: [u8; 2] = [0x10, 0x11];

/// The bytes of a detach-key specification; the default for `None` or an empty one.
pub fn parse_keys(spec: Option<&str>) -> Result<Vec<u8>> {
    let spec = spec.unwrap_or_default();
    if spec.is_empty() {
        return Ok(DEFAULT_KEYS.to_vec());
    }
    let mut keys = Vec::new();
    for key in spec.split(',') {
        let code = match key.as_bytes() {
            [c] => Some(*c),
            _ => key.strip_prefix("ctrl-").and_then(|c| match c.as_bytes() {
                [c @ b'a'..=b'z'] => Some(c - b'a' + 1),
                [b'@'] => Some(0),
                [b'['] => Some(27),
                [b'\\'] => Some(28),
                [b']'] => Some(29),
                [b'^'] => Some(30),
                [b'_'] => Some(31),
                _ => None,
            }),
        };
        match code {
            Some(c) => keys.push(c),
            None => bail!(
                "invalid detach keys {spec:?}: unknown key {key:?} (use a single character or ctrl-<a-z, @, [, \\, ], ^, _>, separated by commas)"
            ),
        }
    }
    Ok(keys)
}

/// Watches typed input for the sequence. Bytes that may begin it are held back until the next
/// byte decides; the sequence itself is not sent.
#[derive(Debug)]
pub struct Scanner {
    keys: Vec<u8>,
    matched: usize,
}

impl Scanner {
    pub fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    /// The bytes to send, and whether the sequence was completed (what follows it is dropped).
    pub fn scan(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut forward = Vec::with_capacity(input.len() + self.matched);
        for &b in input {
            if self.matched > 0 && self.keys.get(self.matched) != Some(&b) {
                forward.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
            }
            if self.keys.get(self.matched) == Some(&b) {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return (forward, true);
                }
            } else {
                forward.push(b);
            }
        }
        (forward, false)
    }

    /// The held bytes, at the end of the input.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = self.keys[..self.matched].to_vec();
        self.matched = 0;
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notation() {
        assert_eq!(parse_keys(None).expect("default"), vec![16, 17]);
        assert_eq!(parse_keys(Some("ctrl-x,a")).expect("keys"), vec![24, b'a']);
        assert_eq!(parse_keys(Some("ctrl-]")).expect("keys"), vec![29]);
        let err = parse_keys(Some("ctrl-p,ctrl-Q")).expect_err("uppercase");
        assert!(err.to_string().contains("\"ctrl-Q\""), "{err}");
        assert!(parse_keys(Some("abc")).is_err());
    }

    #[test]
    fn scanning() {
        let mut s = Scanner::new(vec![16, 17]);
        assert_eq!(s.scan(b"ls\x10"), (b"ls".to_vec(), false));
        assert_eq!(s.scan(b"\x10"), (b"\x10".to_vec(), false));
        assert_eq!(s.scan(b"\x11rest"), (Vec::new(), true));
        let mut s = Scanner::new(vec![16, 17]);
        assert_eq!(s.scan(b"\x10x"), (b"\x10x".to_vec(), false));
        assert_eq!(s.scan(b"\x10"), (Vec::new(), false));
        assert_eq!(s.finish(), vec![16]);
    }
}
