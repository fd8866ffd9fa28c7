//! Small conversions the Windows backends share (HCS, HNS, Hyper-V sockets).

use windows_sys::core::GUID;

use crate::vsock::guid::Guid;

/// The GUID as Windows' own struct.
pub fn guid(g: Guid) -> GUID {
    GUID {
        data1: g.data1,
        data2: g.data2,
        data3: g.data3,
        data4: g.data4,
    }
}

/// A copy of the NUL-terminated UTF-16 string at `p` (empty for null); the
/// caller frees `p` as the API that returned it says.
///
/// # Safety
/// `p` is null or points to a NUL-terminated UTF-16 string.
pub unsafe fn utf16_until_nul(p: *const u16) -> String {
    if p.is_null() {
        return String::new();
    }
    let mut len = 0;
    // SAFETY: the string is NUL-terminated (caller's promise).
    while unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: len u16s were just read.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) })
}
