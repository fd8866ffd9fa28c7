//! GUIDs as Windows lays them out (`GUID { Data1, Data2, Data3, Data4 }`),
//! parsed from and printed as the usual `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`
//! text. Hyper-V sockets address a VM and a service by GUID, and HCS reports
//! the VM's runtime id as text; the Windows code only copies the fields.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

impl Guid {
    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, with or without braces,
    /// in either case.
    pub fn parse(text: &str) -> Option<Guid> {
        let text = text.trim();
        let text = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(text);
        let parts: Vec<&str> = text.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if parts.len() != 5
            || parts
                .iter()
                .zip(lens)
                .any(|(p, n)| p.len() != n || !p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return None;
        }
        let data1 = u32::from_str_radix(parts[0], 16).ok()?;
        let data2 = u16::from_str_radix(parts[1], 16).ok()?;
        let data3 = u16::from_str_radix(parts[2], 16).ok()?;
        // Data4 is the last two groups as bytes, in text order.
        let tail = format!("{}{}", parts[3], parts[4]);
        let mut data4 = [0u8; 8];
        for (i, byte) in data4.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&tail[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Guid {
            data1,
            data2,
            data3,
            data4,
        })
    }

    /// The service GUID of vsock port `port` (see [`super::hyperv_service_guid`]).
    pub fn vsock_service(port: u32) -> Guid {
        let mut g = VSOCK_TEMPLATE;
        g.data1 = port;
        g
    }
}

/// `00000000-facb-11e6-bd58-64006a7986d3`: the vsock template; Data1 is the port.
const VSOCK_TEMPLATE: Guid = Guid {
    data1: 0,
    data2: 0xfacb,
    data3: 0x11e6,
    data4: [0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79, 0x86, 0xd3],
};

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_spellings() {
        let g = Guid::parse("{A42E7CDA-D03F-480C-9CC2-A4DE20ABB878}").expect("guid");
        assert_eq!(g.data1, 0xa42e7cda);
        assert_eq!(g.data2, 0xd03f);
        assert_eq!(g.data3, 0x480c);
        assert_eq!(g.data4, [0x9c, 0xc2, 0xa4, 0xde, 0x20, 0xab, 0xb8, 0x78]);
        assert_eq!(g.to_string(), "a42e7cda-d03f-480c-9cc2-a4de20abb878");
        assert_eq!(Guid::parse(&g.to_string()), Some(g));
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "a42e7cda-d03f-480c-9cc2",
            "a42e7cda-d03f-480c-9cc2-a4de20abb87",
            "a42e7cdaXd03f-480c-9cc2-a4de20abb878",
            "g42e7cda-d03f-480c-9cc2-a4de20abb878",
            "+42e7cda-d03f-480c-9cc2-a4de20abb878",
            "{a42e7cda-d03f-480c-9cc2-a4de20abb878",
        ] {
            assert_eq!(Guid::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn vsock_service_matches_the_text_template() {
        for port in [0, 564, 1024, 2375, u32::MAX] {
            let g = Guid::vsock_service(port);
            assert_eq!(g.to_string(), super::super::hyperv_service_guid(port));
            assert_eq!(
                super::super::port_from_hyperv_service_guid(&g.to_string()),
                Some(port)
            );
        }
    }
}
