//! A minimal, deterministic ustar writer: just what the `hello` layer needs (directories and
//! regular files, owned by root, mtime 0).

const BLOCK: usize = 512;

/// One entry of the layer.
pub(crate) enum Entry<'a> {
    /// A directory; its name is written with a trailing `/`.
    Dir { name: &'a str, mode: u32 },
    /// A regular file.
    File {
        name: &'a str,
        mode: u32,
        data: &'a [u8],
    },
}

impl Entry<'_> {
    fn name(&self) -> &str {
        match self {
            Entry::Dir { name, .. } | Entry::File { name, .. } => name,
        }
    }
}

/// Builds a tar archive of `entries`, sorted by name, every entry owned by uid/gid 0 with mtime
/// 0, ended by the two zero blocks. The same entries always give the same bytes.
///
/// Names must be relative, ASCII, and short enough for the ustar name field (under 100 bytes);
/// the entries are this crate's own constants, so a violation is a bug and panics.
pub(crate) fn build(mut entries: Vec<Entry<'_>>) -> Vec<u8> {
    entries.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    for entry in &entries {
        let (name, mode, data, typeflag) = match entry {
            Entry::Dir { name, mode } => (format!("{name}/"), *mode, &[][..], b'5'),
            Entry::File { name, mode, data } => (name.to_string(), *mode, *data, b'0'),
        };
        assert!(
            name.is_ascii() && name.len() < 100 && !name.starts_with('/'),
            "bad tar entry name {name:?}"
        );
        let mut header = [0u8; BLOCK];
        header[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut header[100..108], u64::from(mode));
        octal(&mut header[108..116], 0); // uid
        octal(&mut header[116..124], 0); // gid
        octal(&mut header[124..136], data.len() as u64);
        octal(&mut header[136..148], 0); // mtime
        header[156] = typeflag;
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[265..269].copy_from_slice(b"root"); // uname
        header[297..301].copy_from_slice(b"root"); // gname
        octal(&mut header[329..337], 0); // devmajor
        octal(&mut header[337..345], 0); // devminor
                                         // The checksum is the byte sum with the checksum field itself read as spaces, written
                                         // as six octal digits, a NUL and a space.
        header[148..156].fill(b' ');
        let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
        octal(&mut header[148..155], sum);
        header[155] = b' ';
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

/// Writes `value` as zero-padded octal filling `field` except its last byte, which is NUL.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert!(
        text.len() == digits,
        "{value} does not fit a {digits}-digit tar field"
    );
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_sorted_and_padded() {
        let tar = build(vec![
            Entry::File {
                name: "b",
                mode: 0o644,
                data: b"hi",
            },
            Entry::Dir {
                name: "a",
                mode: 0o755,
            },
        ]);
        assert_eq!(tar.len(), 5 * BLOCK);
        assert_eq!(&tar[..2], b"a/");
        assert_eq!(&tar[BLOCK..BLOCK + 1], b"b");
        assert_eq!(&tar[2 * BLOCK..2 * BLOCK + 2], b"hi");
        assert!(tar[3 * BLOCK..].iter().all(|&b| b == 0));
    }

    #[test]
    fn checksum_matches_the_header() {
        let tar = build(vec![Entry::Dir {
            name: "dev",
            mode: 0o755,
        }]);
        let header = &tar[..BLOCK];
        let sum: u64 = header
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    u64::from(b' ')
                } else {
                    u64::from(b)
                }
            })
            .sum();
        assert_eq!(&header[148..156], format!("{sum:06o}\0 ").as_bytes());
    }
}
