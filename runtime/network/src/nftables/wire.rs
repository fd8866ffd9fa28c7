//! nfnetlink framing for nf_tables: messages with their `nfgenmsg` header, netlink attributes
//! (nested ones marked `NLA_F_NESTED`), a batch that the kernel commits as one transaction, and
//! the exchange over a `NETLINK_NETFILTER` socket.
//!
//! Integer attributes of nf_tables travel in network byte order; the bytes that rules compare
//! against (`NFTA_DATA_VALUE`) are exactly what the kernel loads into its registers.

use std::io;

use netlink_sys::{Socket, SocketAddr};
use nix::sys::socket::sockopt;

/// `NETLINK_NETFILTER`, the protocol of nfnetlink sockets.
const NETLINK_NETFILTER: isize = 12;
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_CREATE`: for tables and chains, create if missing, never fail when present.
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_APPEND`: rules go after the chain's existing ones.
pub const NLM_F_APPEND: u16 = 0x800;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Attributes of one message (or of one nested attribute), appended in order.
#[derive(Default)]
pub struct Attrs {
    buf: Vec<u8>,
}

impl Attrs {
    pub fn new() -> Self {
        Self::default()
    }

    fn put(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        // Attribute lengths are u16; nothing Berth sends comes near (rules are a few hundred
        // bytes), and a longer value would be a bug here, not an input error.
        let len16 = u16::try_from(len).expect("netlink attribute under 64 KiB");
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut bytes = Vec::with_capacity(value.len() + 1);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
        self.put(kind, &bytes)
    }

    /// A 32-bit integer in network byte order.
    pub fn u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.put(kind, &value.to_be_bytes())
    }

    /// Raw bytes.
    pub fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        self.put(kind, value)
    }

    /// A nested attribute holding `inner`.
    pub fn nested(&mut self, kind: u16, inner: &Attrs) -> &mut Self {
        self.put(kind | NLA_F_NESTED, &inner.buf)
    }
}

/// What a message of the batch was, to name it when the kernel refuses it.
pub type Description = String;

/// Messages the kernel applies as one transaction: all of them, or none.
///
/// The kernel answers every refused message with its error; only the last message asks
/// for an acknowledgement as well, which tells a committed batch from an unanswered one
/// without an answer per rule (thousands of published ports would overflow the socket's
/// receive queue).
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// `(sequence number, description)` of every message.
    sent: Vec<(u32, Description)>,
    /// Where the last message's flags are in `buf`.
    last_flags: Option<usize>,
}

impl Batch {
    pub fn new() -> Self {
        let mut batch = Self {
            buf: Vec::with_capacity(4096),
            seq: 0,
            sent: Vec::new(),
            last_flags: None,
        };
        batch.frame(
            libc::NFNL_MSG_BATCH_BEGIN as u16,
            NLM_F_REQUEST,
            libc::AF_UNSPEC as u8,
            &Attrs::new(),
        );
        batch
    }

    /// Appends `nft_msg` (an `NFT_MSG_*` type) for address family `family` (an `NFPROTO_*`).
    pub fn add(
        &mut self,
        nft_msg: u16,
        flags: u16,
        family: u8,
        attrs: &Attrs,
        what: impl Into<Description>,
    ) {
        let kind = ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | nft_msg;
        self.last_flags = Some(self.buf.len() + 6);
        let seq = self.frame(kind, NLM_F_REQUEST | flags, family, attrs);
        self.sent.push((seq, what.into()));
    }

    fn frame(&mut self, kind: u16, flags: u16, family: u8, attrs: &Attrs) -> u32 {
        self.seq += 1;
        let len = NLMSG_HDRLEN + 4 + attrs.buf.len();
        let len32 = u32::try_from(len).expect("netlink message under 4 GiB");
        self.buf.extend_from_slice(&len32.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version, resource id (the subsystem, for batch delimiters).
        self.buf.push(family);
        self.buf.push(libc::NFNETLINK_V0 as u8);
        self.buf
            .extend_from_slice(&(libc::NFNL_SUBSYS_NFTABLES as u16).to_be_bytes());
        self.buf.extend_from_slice(&attrs.buf);
        self.seq
    }

    /// Sends the batch on `socket` and checks the kernel's verdict on every message.
    pub fn commit(mut self, socket: &Socket) -> Result<(), CommitError> {
        let Some(((last_seq, _), at)) = self.sent.last().zip(self.last_flags) else {
            return Ok(());
        };
        let last_seq = *last_seq;
        let flags = u16::from_ne_bytes([self.buf[at], self.buf[at + 1]]) | NLM_F_ACK;
        self.buf[at..at + 2].copy_from_slice(&flags.to_ne_bytes());
        self.frame(
            libc::NFNL_MSG_BATCH_END as u16,
            NLM_F_REQUEST,
            libc::AF_UNSPEC as u8,
            &Attrs::new(),
        );
        // Whatever an earlier, failed exchange left queued is not this batch's answer.
        drain(socket).map_err(CommitError::Socket)?;
        // A netlink message must fit the socket's send buffer: a batch of many rules is
        // larger than the default. Raising it needs CAP_NET_ADMIN, as the batch does.
        let room = self.buf.len() + 4096;
        if nix::sys::socket::setsockopt(socket, sockopt::SndBufForce, &room).is_err() {
            let _ = nix::sys::socket::setsockopt(socket, sockopt::SndBuf, &room);
        }
        socket.send(&self.buf, 0).map_err(CommitError::Socket)?;
        // The kernel handles the whole batch inside `send`, so its answers are queued by now.
        let answers = drain(socket).map_err(CommitError::Socket)?;
        let mut acked = false;
        for (seq, errno) in answers {
            if errno == 0 {
                acked |= seq == last_seq;
                continue;
            }
            let what = self
                .sent
                .iter()
                .find(|(s, _)| *s == seq)
                .map(|(_, w)| w.clone())
                .unwrap_or_else(|| format!("message {seq} of the batch"));
            return Err(CommitError::Refused {
                what,
                source: io::Error::from_raw_os_error(errno),
            });
        }
        if !acked {
            return Err(CommitError::Unanswered {
                sent: self.sent.len(),
            });
        }
        Ok(())
    }
}

/// Why a batch did not apply.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("nfnetlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("the kernel refused {what}: {source}")]
    Refused {
        what: Description,
        #[source]
        source: io::Error,
    },
    #[error("the kernel did not acknowledge the batch of {sent} messages")]
    Unanswered { sent: usize },
}

/// A socket to nfnetlink in the calling thread's network namespace.
pub fn open() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    // An error carries the refused message's header only, not the whole rule back.
    socket.set_cap_ack(true)?;
    Ok(socket)
}

/// Every `NLMSG_ERROR` answer queued on `socket`, as `(sequence number, errno)` (0: an ack).
fn drain(socket: &Socket) -> io::Result<Vec<(u32, i32)>> {
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        match socket.recv(&mut buf, libc::MSG_DONTWAIT) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
            Err(e) => return Err(e),
        }
        let mut rest = &buf[..];
        while rest.len() >= NLMSG_HDRLEN {
            let field = |at: usize| [rest[at], rest[at + 1], rest[at + 2], rest[at + 3]];
            let len = u32::from_ne_bytes(field(0)) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            let seq = u32::from_ne_bytes(field(8));
            if len < NLMSG_HDRLEN || len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed netlink answer",
                ));
            }
            if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
                let code = i32::from_ne_bytes(field(NLMSG_HDRLEN));
                out.push((seq, -code));
            }
            rest = &rest[align4(len).min(rest.len())..];
        }
    }
}

/// Whether this network namespace's kernel speaks nf_tables: it answers a request for the
/// rule set's generation.
pub fn nf_tables_answers() -> bool {
    // A request on its own, outside a batch.
    let mut request = Batch {
        buf: Vec::new(),
        seq: 0,
        sent: Vec::new(),
        last_flags: None,
    };
    let kind = ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | libc::NFT_MSG_GETGEN as u16;
    request.frame(
        kind,
        NLM_F_REQUEST | NLM_F_ACK,
        libc::AF_UNSPEC as u8,
        &Attrs::new(),
    );
    let Ok(socket) = open() else { return false };
    if socket.send(&request.buf, 0).is_err() {
        return false;
    }
    matches!(drain(&socket).as_deref(), Ok([(_, 0)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested_ones_marked() {
        let mut inner = Attrs::new();
        inner.str(1, "ab").u32(2, 0x0102_0304);
        let mut outer = Attrs::new();
        outer.nested(7, &inner);
        let b = &outer.buf;
        // "ab\0" is 7 bytes with its header, padded to 8; the u32 is 8; the nest header 4.
        assert_eq!(b.len(), 20);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 20);
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), 7 | NLA_F_NESTED);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 7, "unpadded length");
        assert_eq!(&b[8..11], b"ab\0");
        assert_eq!(&b[16..20], &[1, 2, 3, 4], "network byte order");
    }

    /// In a network namespace of its own thread (gone when the thread ends): a batch whose
    /// last message the kernel refuses is reported by that message's description, and none
    /// of the batch applies.
    #[test]
    fn a_refused_message_is_named_and_nothing_of_its_batch_applies() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare net");
            let family = libc::NFPROTO_IPV4 as u8;
            let mut table = Attrs::new();
            table.str(1, "trefuse");
            let mut rule = Attrs::new();
            rule.str(1, "trefuse").str(2, "missing");
            let mut batch = Batch::new();
            let (new_table, new_rule) =
                (libc::NFT_MSG_NEWTABLE as u16, libc::NFT_MSG_NEWRULE as u16);
            batch.add(new_table, NLM_F_CREATE, family, &table, "table ip trefuse");
            batch.add(
                new_rule,
                NLM_F_CREATE,
                family,
                &rule,
                "a rule in chain missing",
            );
            let socket = open().expect("nfnetlink socket");
            let err = batch.commit(&socket).expect_err("no such chain");
            assert!(
                matches!(&err, CommitError::Refused { what, source }
                    if what == "a rule in chain missing"
                        && source.raw_os_error() == Some(libc::ENOENT)),
                "{err}"
            );
            // The namespace is this thread's, so `nft` started from it lists it.
            let out = std::process::Command::new("nft")
                .args(["list", "tables"])
                .output();
            if let Ok(out) = out {
                assert!(out.status.success());
                let listed = String::from_utf8_lossy(&out.stdout);
                assert!(!listed.contains("trefuse"), "{listed}");
            }
        })
        .join()
        .expect("test thread");
    }
}
