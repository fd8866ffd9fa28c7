//! A minimal `/proc/self/mountinfo` reader, used only off the hot path
//! (cgroup v1 hierarchies, non-default root propagation).

use std::borrow::Cow;

use super::RootfsError;

pub(crate) const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of mountinfo, fields borrowed from the text (still escaped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    /// Path inside the filesystem that is the root of this mount.
    pub root: &'a str,
    pub mount_point: &'a str,
    pub fstype: &'a str,
    pub super_options: &'a str,
}

pub(crate) fn read() -> Result<String, RootfsError> {
    std::fs::read_to_string(MOUNTINFO).map_err(|source| RootfsError::ReadProcFile {
        path: MOUNTINFO,
        source,
    })
}

/// Parses the lines of a mountinfo text; malformed lines are skipped.
pub(crate) fn entries(text: &str) -> impl Iterator<Item = Entry<'_>> {
    text.lines().filter_map(parse_line)
}

fn parse_line(line: &str) -> Option<Entry<'_>> {
    // id parent major:minor root mount_point options [optional...] - fstype source super_options
    let (head, tail) = line.split_once(" - ")?;
    let mut head = head.split(' ');
    let root = head.nth(3)?;
    let mount_point = head.next()?;
    let mut tail = tail.split(' ');
    let fstype = tail.next()?;
    let _source = tail.next()?;
    let super_options = tail.next().unwrap_or("");
    Some(Entry {
        root,
        mount_point,
        fstype,
        super_options,
    })
}

/// Undoes the octal escapes (`\040` for a space, ...) the kernel uses in
/// mountinfo paths.
pub(crate) fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (u32::from(b[i + 1] - b'0') << 6)
                | (u32::from(b[i + 2] - b'0') << 3)
                | u32::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_mountinfo_parse() {
        let text = "31 23 0:28 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755\n\
                    40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n\
                    garbage\n";
        let e: Vec<_> = entries(text).collect();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].mount_point, "/sys/fs/cgroup");
        assert_eq!(e[0].fstype, "tmpfs");
        assert_eq!(e[1].super_options, "rw,xattr,name=systemd");
        assert_eq!(e[1].root, "/");
    }

    #[test]
    fn rootfs_mountinfo_unescape() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\04"), "/x\\04");
    }
}
