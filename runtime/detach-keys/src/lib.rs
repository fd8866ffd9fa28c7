//! Detach keys: the key sequence that ends an attach (or exec) session with a terminal while the
//! process keeps running. As with Docker, both ends look for it in what a TTY client types: the
//! engine (`detachKeys` on attach, `DetachKeys` at exec create) and the CLI. The default is
//! ctrl-p ctrl-q; Docker's notation is keys separated by commas, each a single character or
//! `ctrl-<c>` with `<c>` one of `a`–`z`, `@`, `[`, `\`, `]`, `^`, `_`.

/// ctrl-p, ctrl-q.
pub const DEFAULT_KEYS: [u8; 2] = [0x10, 0x11];

/// A key of a specification that is not in Docker's notation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key {0:?} (use a single character or ctrl-<a-z, @, [, \\, ], ^, _>, separated by commas)")]
pub struct UnknownKey(pub String);

/// The bytes of a detach-key specification; the default for an empty one.
pub fn parse_keys(spec: &str) -> Result<Vec<u8>, UnknownKey> {
    if spec.is_empty() {
        return Ok(DEFAULT_KEYS.to_vec());
    }
    spec.split(',')
        .map(|key| {
            if key.len() == 1 {
                return Ok(key.as_bytes()[0]);
            }
            let code = key
                .strip_prefix("ctrl-")
                .filter(|c| c.len() == 1)
                .map(|c| c.as_bytes()[0])
                .and_then(|c| match c {
                    b'a'..=b'z' => Some(c - b'a' + 1),
                    b'@' => Some(0),
                    b'[' => Some(27),
                    b'\\' => Some(28),
                    b']' => Some(29),
                    b'^' => Some(30),
                    b'_' => Some(31),
                    _ => None,
                });
            code.ok_or_else(|| UnknownKey(key.to_string()))
        })
        .collect()
}

/// Watches a client's input for the detach sequence. Bytes that might begin it are held back
/// until the next byte decides; the sequence itself never reaches the process.
#[derive(Debug)]
pub struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

/// What to do with a chunk of input.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes for the process.
    pub forward: Vec<u8>,
    /// The whole sequence was typed: detach (anything typed after it is dropped).
    pub detach: bool,
}

impl DetachScanner {
    pub fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    pub fn scan(&mut self, input: &[u8]) -> Scanned {
        let mut forward = Vec::with_capacity(input.len() + self.matched);
        for &b in input {
            if self.keys.get(self.matched) != Some(&b) && self.matched > 0 {
                // Not the sequence after all: what was held goes through, and this byte may
                // start it afresh.
                forward.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
            }
            if self.keys.get(self.matched) == Some(&b) {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return Scanned {
                        forward,
                        detach: true,
                    };
                }
            } else {
                forward.push(b);
            }
        }
        Scanned {
            forward,
            detach: false,
        }
    }

    /// At the end of the input: the held bytes, which turned out not to be the sequence.
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
    fn parses_dockers_notation() {
        assert_eq!(parse_keys(""), Ok(vec![16, 17]));
        assert_eq!(parse_keys("ctrl-p,ctrl-q"), Ok(vec![16, 17]));
        assert_eq!(parse_keys("ctrl-x"), Ok(vec![24]));
        assert_eq!(
            parse_keys("a,ctrl-@,ctrl-\\,ctrl-_"),
            Ok(vec![b'a', 0, 28, 31])
        );
        assert_eq!(parse_keys("X"), Ok(vec![b'X']));
        assert_eq!(parse_keys("ctrl-Q"), Err(UnknownKey("ctrl-Q".into())));
        assert!(parse_keys("ctrl-").is_err());
        assert!(parse_keys("ctrl-P").is_err());
        assert!(parse_keys("ab").is_err());
        assert!(parse_keys("ctrl-p,").is_err());
    }

    #[test]
    fn holds_a_prefix_and_detaches_on_the_whole_sequence() {
        let mut s = DetachScanner::new(vec![16, 17]);
        assert_eq!(
            s.scan(b"ab\x10"),
            Scanned {
                forward: b"ab".to_vec(),
                detach: false
            }
        );
        // The held ctrl-p was not the sequence: it goes through with what follows.
        assert_eq!(
            s.scan(b"c"),
            Scanned {
                forward: b"\x10c".to_vec(),
                detach: false
            }
        );
        // Split across chunks, and after a false start.
        assert_eq!(s.scan(b"x\x10").forward, b"x");
        assert_eq!(
            s.scan(b"\x10\x11tail"),
            Scanned {
                forward: b"\x10".to_vec(),
                detach: true
            }
        );
        let mut s = DetachScanner::new(vec![24]);
        assert!(s.scan(b"\x18").detach);
        let mut s = DetachScanner::new(vec![16, 17]);
        assert_eq!(s.scan(b"z\x10").forward, b"z");
        assert_eq!(s.finish(), b"\x10");
    }
}
