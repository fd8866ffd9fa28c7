//! A small synchronous rtnetlink client on the rust-netlink packet crates.
//!
//! A netlink socket talks to the network namespace it was *created* in, whatever namespace the
//! thread using it is in later. [`Netlink::new`] binds to the calling thread's namespace;
//! [`Netlink::in_netns`] creates the socket on a short-lived thread that first `setns`'s into the
//! target namespace, so no long-running thread ever changes namespace.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// A route-netlink socket bound to one network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// Interface summary from a link dump.
#[derive(Debug, Clone)]
pub struct LinkSummary {
    pub index: u32,
    pub name: String,
    pub controller: Option<u32>,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn new() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            seq: 0,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// A socket in the network namespace `ns` (an open `/proc/<pid>/ns/net` or `/run/netns/x`).
    pub fn in_netns(ns: BorrowedFd<'_>) -> io::Result<Self> {
        crate::netns::run_in(ns, Self::new)?
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;
        Ok(seq)
    }

    /// Receives replies for `seq` until an ACK/error (`dump == false`) or `NLMSG_DONE`.
    fn receive(&mut self, seq: u32, dump: bool) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        loop {
            self.buf.clear();
            let n = self.socket.recv(&mut self.buf, 0)?;
            let data = &self.buf[..n.min(self.buf.len())];
            let mut offset = 0;
            while offset < data.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "zero-length netlink message",
                    ));
                }
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        if e.code.is_some() {
                            return Err(e.to_io());
                        }
                        if !dump {
                            return Ok(out);
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
            }
        }
    }

    fn request(&mut self, msg: RouteNetlinkMessage, extra: u16) -> io::Result<()> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | extra)?;
        self.receive(seq, false).map(|_| ())
    }

    fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        self.receive(seq, true)
    }

    /// All links in the namespace.
    pub fn links(&mut self) -> io::Result<Vec<LinkSummary>> {
        let msgs = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        let mut out = Vec::new();
        for m in msgs {
            if let RouteNetlinkMessage::NewLink(link) = m {
                let mut name = String::new();
                let mut controller = None;
                for a in &link.attributes {
                    match a {
                        LinkAttribute::IfName(n) => name = n.clone(),
                        LinkAttribute::Controller(c) => controller = Some(*c),
                        _ => {}
                    }
                }
                out.push(LinkSummary {
                    index: link.header.index,
                    name,
                    controller,
                });
            }
        }
        Ok(out)
    }

    /// The index of the link called `name`, if it exists.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let seq = self.send(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST)?;
        match self.receive_one(seq) {
            Ok(Some(RouteNetlinkMessage::NewLink(link))) => Ok(Some(link.header.index)),
            Ok(_) => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// For non-dump GETs: the kernel answers with one message or an error (no ACK requested).
    fn receive_one(&mut self, seq: u32) -> io::Result<Option<RouteNetlinkMessage>> {
        loop {
            self.buf.clear();
            let n = self.socket.recv(&mut self.buf, 0)?;
            let data = &self.buf[..n.min(self.buf.len())];
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(data)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if msg.header.sequence_number != seq {
                continue;
            }
            return match msg.payload {
                NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
                NetlinkPayload::InnerMessage(inner) => Ok(Some(inner)),
                _ => Ok(None),
            };
        }
    }

    /// Creates a bridge device, up, and returns its index.
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>) -> io::Result<u32> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)?;
        self.link_index(name)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "bridge vanished"))
    }

    /// Creates a veth pair in one request: `host` (up, attached to bridge `controller`) in this
    /// namespace, and `peer` (down, MAC `mac`) created directly inside the namespace `peer_ns`.
    pub fn create_veth(
        &mut self,
        host: &str,
        controller: u32,
        mtu: Option<u32>,
        peer: &str,
        peer_ns: BorrowedFd<'_>,
        mac: [u8; 6],
    ) -> io::Result<()> {
        // The peer is created down: bringing it up inside the creation request fails
        // (ENOTCONN) when it lands in another namespace; the caller sets it up there.
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        peer_msg
            .attributes
            .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
        peer_msg
            .attributes
            .push(LinkAttribute::Address(mac.to_vec()));
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        msg.attributes.push(LinkAttribute::Controller(controller));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
            peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Turns on hairpin mode on bridge port `name` (needed for a container to reach its own
    /// published port through the host address when bridged traffic is netfiltered).
    pub fn set_hairpin(&mut self, name: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                true,
            )])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), 0)
    }

    /// Lets link `name` carry GSO packets of up to `size` bytes (IPv6 and IPv4 "BIG TCP"),
    /// so a device of ours never makes the stack split a larger packet a sender built for its
    /// own route (e.g. loopback traffic DNATed to a container). `EINVAL` on kernels whose
    /// limit for the device is lower.
    pub fn set_gso_max_size(&mut self, name: &str, size: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::GsoMaxSize(size));
        // Unknown to kernels before 6.3, which then ignore it (IPv4 stays at 64 KiB).
        msg.attributes.push(LinkAttribute::GsoIpv4MaxSize(size));
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Sets link `index` administratively up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Deletes the link called `name`; `Ok(false)` if there was none.
    pub fn delete_link(&mut self, name: &str) -> io::Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds address `addr/prefix` to link `index`.
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = family(addr);
        msg.header.prefix_len = prefix;
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(addr));
        msg.attributes.push(AddressAttribute::Address(addr));
        if let IpAddr::V4(v4) = addr {
            let host_bits = 32 - u32::from(prefix);
            let bcast = if host_bits >= 32 {
                u32::MAX
            } else {
                u32::from(v4) | ((1u32 << host_bits) - 1)
            };
            msg.attributes
                .push(AddressAttribute::Broadcast(std::net::Ipv4Addr::from(bcast)));
        } else {
            // Skip duplicate address detection: IPAM already guarantees uniqueness, and DAD
            // would keep the address unusable for a second or more.
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Adds a default route via `gateway` out of link `index` (main table), with an MTU of its
    /// own when `mtu` is given (below the link's: see the manager's `JUMBO_MTU`).
    pub fn add_default_route(
        &mut self,
        index: u32,
        gateway: IpAddr,
        mtu: Option<u32>,
    ) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(gateway);
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes.push(RouteAttribute::Gateway(match gateway {
            IpAddr::V4(v) => RouteAddress::Inet(v),
            IpAddr::V6(v) => RouteAddress::Inet6(v),
        }));
        msg.attributes.push(RouteAttribute::Oif(index));
        if let Some(mtu) = mtu {
            msg.attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Destinations of all IPv4 routes in all tables (default routes excluded) and the subnets
    /// of all IPv4 addresses: what a new network's subnet must not collide with.
    pub fn used_ipv4_subnets(&mut self) -> io::Result<Vec<IpNet>> {
        let mut out = Vec::new();
        let mut rmsg = RouteMessage::default();
        rmsg.header.address_family = AddressFamily::Inet;
        for m in self.dump(RouteNetlinkMessage::GetRoute(rmsg))? {
            if let RouteNetlinkMessage::NewRoute(r) = m {
                let plen = r.header.destination_prefix_length;
                if plen == 0 || r.header.kind != RouteType::Unicast {
                    continue;
                }
                for a in &r.attributes {
                    if let RouteAttribute::Destination(RouteAddress::Inet(d)) = a {
                        if let Ok(n) = IpNet::new(IpAddr::V4(*d), plen) {
                            out.push(n.trunc());
                        }
                    }
                }
            }
        }
        let mut amsg = AddressMessage::default();
        amsg.header.family = AddressFamily::Inet;
        for m in self.dump(RouteNetlinkMessage::GetAddress(amsg))? {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                for attr in &a.attributes {
                    if let AddressAttribute::Local(ip @ IpAddr::V4(v4)) = attr {
                        if v4.is_loopback() {
                            continue;
                        }
                        if let Ok(n) = IpNet::new(*ip, a.header.prefix_len) {
                            out.push(n.trunc());
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}
