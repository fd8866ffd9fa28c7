//! Bridge networks end to end, as root, each test inside its own "host" network namespace.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use berth_network::dns::{build_query, parse_response};
use berth_network::{
    parse_port_spec, AttachRequest, CreateOptions, FirewallBackend, ManagerConfig, NetworkError,
    NetworkManager, PortMapping, Proto, SubnetRequest, OPT_MTU,
};
use common::{
    assert_clean, tcp_get, tcp_server, tcp_server6, udp_get, udp_server, udp_server6, Ns,
};

macro_rules! require_root {
    () => {
        if !common::can_run() {
            eprintln!("skipped: needs root, ip and nft");
            return;
        }
    };
}

fn manager(dir: &tempfile::TempDir) -> NetworkManager {
    let mut cfg = ManagerConfig::new(dir.path());
    cfg.firewall = Some(FirewallBackend::Nftables);
    cfg.dns_upstreams = Some(vec!["192.0.2.10:5300".parse().expect("addr")]);
    NetworkManager::open(cfg).expect("open manager")
}

fn ip_of(ep: &berth_network::Endpoint) -> IpAddr {
    ep.ipv4().expect("ipv4")
}

fn dns_query(ns: &Ns, server: IpAddr, name: &str) -> Option<(u8, Vec<IpAddr>)> {
    let name = name.to_string();
    ns.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        s.send_to(&build_query(42, &name, false), SocketAddr::new(server, 53))
            .ok()?;
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf).ok()?;
        parse_response(&buf[..n])
    })
}

#[test]
fn containers_on_a_network_reach_each_other_and_not_across() {
    require_root!();
    let host = Ns::host();
    let (c1, c2, c3) = (Ns::new("c1"), Ns::new("c2"), Ns::new("c3"));
    let dir = tempfile::tempdir().expect("tempdir");
    host.run(|| {
        let mgr = manager(&dir);
        let alpha = mgr
            .create_network(CreateOptions::named("alpha"))
            .expect("alpha");
        let beta = mgr
            .create_network(CreateOptions::named("beta"))
            .expect("beta");
        assert_ne!(alpha.ipam[0].subnet, beta.ipam[0].subnet);

        let mut r1 = AttachRequest::new("alpha", "c1id", c1.path());
        r1.container_name = Some("web".into());
        let e1 = mgr.attach(&r1).expect("attach c1");
        let mut r2 = AttachRequest::new("alpha", "c2id", c2.path());
        r2.container_name = Some("db".into());
        r2.aliases = vec!["database".into()];
        let e2 = mgr.attach(&r2).expect("attach c2");
        let e3 = mgr
            .attach(&AttachRequest::new(beta.id.clone(), "c3id", c3.path()))
            .expect("attach c3");
        assert_eq!(e1.ifname, "eth0");
        assert_eq!(e1.mac.len(), 17);
        let _ = e3;
        // The bridge and the host-side veths pass large GSO packets whole (a sender on a
        // loopback with BIG TCP would otherwise have its packets cut up in software); the
        // container's end keeps the default, for its traffic out through the host's NIC.
        for dev in [alpha.bridge.as_str(), e1.host_veth.as_str()] {
            let info = host.ip(&["-d", "link", "show", dev]);
            assert!(info.contains("gso_max_size 524280 "), "{dev}: {info}");
        }
        let info = c1.ip(&["-d", "link", "show", "eth0"]);
        assert!(info.contains("gso_max_size 65536 "), "{info}");

        let _srv = tcp_server(&c2, 7000, "from-db");
        let target = SocketAddr::new(ip_of(&e2), 7000);
        assert_eq!(tcp_get(&c1, target).as_deref(), Ok("from-db"));
        assert!(tcp_get(&c3, target).is_err(), "beta must not reach alpha");

        // Embedded DNS: names and aliases on the network, other names forwarded upstream.
        let gw = alpha.ipam[0].gateway;
        assert_eq!(mgr.dns_address("alpha").expect("dns"), Some(gw));
        let (rc, addrs) = dns_query(&c1, gw, "db").expect("dns answer");
        assert_eq!((rc, addrs), (0, vec![ip_of(&e2)]));
        let (_, addrs) = dns_query(&c1, gw, "DATABASE").expect("alias");
        assert_eq!(addrs, vec![ip_of(&e2)]);
        let upstream = {
            let s = UdpSocket::bind("192.0.2.10:5300").expect("fake upstream");
            s.set_read_timeout(Some(Duration::from_secs(3))).expect("t");
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                if let Ok((n, peer)) = s.recv_from(&mut buf) {
                    // Answer with the question echoed and one A record 198.51.100.7.
                    let mut r = buf[..n].to_vec();
                    r[2] |= 0x80;
                    r[7] = 1;
                    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                    r.extend_from_slice(&[198, 51, 100, 7]);
                    let _ = s.send_to(&r, peer);
                }
            })
        };
        let (_, addrs) = dns_query(&c1, gw, "example.test").expect("forwarded");
        assert_eq!(addrs, vec!["198.51.100.7".parse::<IpAddr>().expect("ip")]);
        let _ = upstream.join();

        // Bad input.
        let overlap = mgr
            .create_network(CreateOptions {
                subnets: vec![SubnetRequest {
                    subnet: alpha.ipam[0].subnet,
                    gateway: None,
                    ip_range: None,
                }],
                ..CreateOptions::named("gamma")
            })
            .expect_err("overlap");
        let msg = overlap.to_string();
        assert!(
            msg.contains("gamma") && msg.contains("alpha"),
            "error names both: {msg}"
        );
        let in_use = mgr.remove_network("alpha").expect_err("in use");
        assert!(matches!(in_use, NetworkError::InUse { .. }), "{in_use}");
        assert!(in_use.to_string().contains("web"), "{in_use}");
        assert!(matches!(
            mgr.create_network(CreateOptions::named("alpha")),
            Err(NetworkError::NameInUse(_))
        ));
        assert!(matches!(
            mgr.inspect("nope"),
            Err(NetworkError::NotFound(_))
        ));

        // Teardown through the API leaves nothing.
        for (net, c) in [("alpha", "c1id"), ("alpha", "c2id"), ("beta", "c3id")] {
            mgr.detach(net, c).expect("detach");
        }
        assert!(c1.links().iter().all(|l| l == "lo"), "{:?}", c1.links());
        mgr.remove_network("alpha").expect("rm alpha");
        assert_eq!(mgr.prune().expect("prune"), vec!["beta".to_string()]);
        assert!(mgr.list().is_empty());
    });
    assert_clean(&host);
}

#[test]
fn published_ports_answer_on_loopback_host_address_and_hairpin() {
    require_root!();
    let host = Ns::host();
    let c1 = Ns::new("pub");
    let dir = tempfile::tempdir().expect("tempdir");
    host.run(|| {
        let mgr = manager(&dir);
        let def = mgr.ensure_default().expect("default network");
        assert_eq!(def.bridge, "berth0");
        assert_eq!(def.ipam[0].subnet.to_string(), "172.17.0.0/16");
        let ep = mgr
            .attach(&AttachRequest::new("bridge", "pubid", c1.path()))
            .expect("attach");
        assert_eq!(
            ep.ipv4().map(|a| a.to_string()).as_deref(),
            Some("172.17.0.2")
        );
        assert_eq!(ep.mac, "02:42:ac:11:00:02");
        let _tcp = tcp_server(&c1, 80, "tcp-ok");
        let _udp = udp_server(&c1, 5353, "udp-ok");

        let mut maps = parse_port_spec("18080:80").expect("spec");
        maps.extend(parse_port_spec("18053:5353/udp").expect("spec"));
        maps.push(PortMapping::any_host_port(80, Proto::Tcp));
        let bound = mgr.publish("bridge", "pubid", &maps).expect("publish");
        // Every mapping without a host address is published on 0.0.0.0 and on [::] alike.
        assert_eq!(bound.len(), 6, "{bound:?}");
        for pair in bound.chunks(2) {
            assert_eq!(pair[0].host_ip.to_string(), "0.0.0.0", "{bound:?}");
            assert_eq!(pair[1].host_ip.to_string(), "::", "{bound:?}");
            assert_eq!(pair[0].host_port, pair[1].host_port, "{bound:?}");
        }
        let ephemeral = bound[4].host_port;
        assert!(ephemeral >= 1024, "ephemeral port {ephemeral}");

        for ip in ["127.0.0.1", "192.0.2.10"] {
            let ip: IpAddr = ip.parse().expect("ip");
            let got = common::tcp_get(&host, SocketAddr::new(ip, 18080));
            assert_eq!(got.as_deref(), Ok("tcp-ok"), "tcp via {ip}");
            let got = udp_get(&host, SocketAddr::new(ip, 18053));
            assert_eq!(got.as_deref(), Ok("udp-ok"), "udp via {ip}");
            let got = common::tcp_get(&host, SocketAddr::new(ip, ephemeral));
            assert_eq!(got.as_deref(), Ok("tcp-ok"), "-P port via {ip}");
        }
        // Hairpin: the container reaches its own published port via the host address.
        let got = tcp_get(&c1, "192.0.2.10:18080".parse().expect("addr"));
        assert_eq!(got.as_deref(), Ok("tcp-ok"), "hairpin");

        // Host port in use: clear error, rules and state unchanged.
        let before = host.ruleset();
        let _squatter = std::net::TcpListener::bind("0.0.0.0:18081").expect("squat");
        let err = mgr
            .publish(
                "bridge",
                "pubid",
                &parse_port_spec("18081:80").expect("spec"),
            )
            .expect_err("port in use");
        assert!(
            matches!(err, NetworkError::PortInUse { port: 18081, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("18081"), "{err}");
        assert_eq!(host.ruleset(), before);
        // Our own reservation also conflicts.
        assert!(matches!(
            mgr.publish("bridge", "pubid", &parse_port_spec("18080:80").expect("s")),
            Err(NetworkError::PortInUse { .. })
        ));

        mgr.unpublish("bridge", "pubid").expect("unpublish");
        assert!(common::tcp_get(&host, "127.0.0.1:18080".parse().expect("a")).is_err());
        assert!(!host.ruleset().contains("dnat to"));

        assert!(matches!(
            mgr.remove_network("bridge"),
            Err(NetworkError::Predefined(_))
        ));
        mgr.detach("bridge", "pubid").expect("detach");
        mgr.remove_all().expect("remove all");
        let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("fwd");
        assert_eq!(forward.trim(), "1", "forwarding on in the test namespace");
    });
    assert_clean(&host);
}

#[test]
fn published_ports_answer_on_ipv6_through_dnat_or_the_proxy() {
    require_root!();
    let host = Ns::host();
    // A global IPv6 address of the "host" (documentation prefix, inside the test namespace).
    host.ip(&["addr", "add", "2001:db8::10/64", "dev", "up0", "nodad"]);
    let (c4, c6) = (Ns::new("p4"), Ns::new("p6"));
    let dir = tempfile::tempdir().expect("tempdir");
    host.run(|| {
        let mgr = manager(&dir);
        mgr.ensure_default().expect("default network");
        let mut six = CreateOptions::named("six");
        six.enable_ipv6 = true;
        for subnet in ["10.66.0.0/24", "fd00:66::/64"] {
            six.subnets.push(SubnetRequest {
                subnet: subnet.parse().expect("subnet"),
                gateway: None,
                ip_range: None,
            });
        }
        mgr.create_network(six).expect("ipv6 network");
        mgr.attach(&AttachRequest::new("bridge", "c4", c4.path()))
            .expect("attach c4");
        let e6 = mgr
            .attach(&AttachRequest::new("six", "c6", c6.path()))
            .expect("attach c6");
        let v6addr = e6.ipv6().expect("IPv6 address");
        let _servers = (
            tcp_server(&c4, 80, "four"),
            udp_server(&c4, 53, "udp-four"),
            tcp_server6(&c6, 80, "six"),
            udp_server6(&c6, 53, "udp-six"),
        );
        let m = |specs: &[&str]| -> Vec<PortMapping> {
            specs
                .iter()
                .flat_map(|s| parse_port_spec(s).expect("spec"))
                .collect()
        };
        let shown = |b: &[berth_network::PortBinding]| -> Vec<String> {
            b.iter()
                .map(|b| format!("{}/{}", SocketAddr::new(b.host_ip, b.host_port), b.proto))
                .collect()
        };
        let b4 = mgr
            .publish(
                "bridge",
                "c4",
                &m(&["18100:80", "18101:53/udp", "[::1]:18102:80", "127.0.0.1:18103:80"]),
            )
            .expect("publish c4");
        assert_eq!(
            shown(&b4),
            [
                "0.0.0.0:18100/tcp",
                "[::]:18100/tcp",
                "0.0.0.0:18101/udp",
                "[::]:18101/udp",
                "[::1]:18102/tcp",
                "127.0.0.1:18103/tcp"
            ]
        );
        mgr.publish("six", "c6", &m(&["18110:80", "18111:53/udp"]))
            .expect("publish c6");
        let rules = host.ruleset();
        assert!(
            rules.contains(&format!("dnat to [{v6addr}]:80")),
            "{rules}"
        );

        let addr = |ip: &str, port: u16| SocketAddr::new(ip.parse().expect("ip"), port);
        // An IPv4-only container answers on every host address, IPv6 through the proxy; a
        // dual-stack one through DNAT (the proxy only for ::1).
        for ip in ["127.0.0.1", "192.0.2.10", "::1", "2001:db8::10"] {
            assert_eq!(tcp_get(&host, addr(ip, 18100)).as_deref(), Ok("four"), "{ip}");
            assert_eq!(udp_get(&host, addr(ip, 18101)).as_deref(), Ok("udp-four"), "{ip}");
            assert_eq!(tcp_get(&host, addr(ip, 18110)).as_deref(), Ok("six"), "{ip}");
            assert_eq!(udp_get(&host, addr(ip, 18111)).as_deref(), Ok("udp-six"), "{ip}");
        }
        // A binding on one address answers there only.
        assert_eq!(tcp_get(&host, addr("::1", 18102)).as_deref(), Ok("four"));
        assert!(tcp_get(&host, addr("127.0.0.1", 18102)).is_err());
        assert_eq!(tcp_get(&host, addr("127.0.0.1", 18103)).as_deref(), Ok("four"));
        assert!(tcp_get(&host, addr("::1", 18103)).is_err());
        // Hairpin over IPv6: the container reaches its own port on the host's address.
        assert_eq!(tcp_get(&c6, addr("2001:db8::10", 18110)).as_deref(), Ok("six"));

        // A port taken on IPv6 only: a clear error naming it, nothing left on IPv4 or in the
        // rules.
        let before = host.ruleset();
        let squatter = std::net::TcpListener::bind("[::1]:18120").expect("squat");
        let err = mgr
            .publish("bridge", "c4", &m(&["18120:80"]))
            .expect_err("port in use on IPv6");
        assert!(
            matches!(&err, NetworkError::PortInUse { port: 18120, host_ip, .. } if host_ip.is_ipv6()),
            "{err}"
        );
        assert!(err.to_string().contains("[::]:18120/tcp"), "{err}");
        assert_eq!(host.ruleset(), before);
        assert!(std::net::TcpListener::bind("0.0.0.0:18120").is_ok());
        drop(squatter);

        // Unpublished: every port free on both families at once, connections refused.
        mgr.unpublish("bridge", "c4").expect("unpublish c4");
        mgr.unpublish("six", "c6").expect("unpublish c6");
        for port in [18100, 18102, 18110] {
            assert!(std::net::TcpListener::bind(("::1", port)).is_ok(), "{port}");
            assert!(tcp_get(&host, addr("::1", port)).is_err(), "{port}");
        }
        for port in [18101, 18111] {
            assert!(std::net::UdpSocket::bind(("::1", port)).is_ok(), "{port}");
        }
        assert!(!host.ruleset().contains("dnat to"));
        // Published again at once, although the proxy's closed connections are in TIME_WAIT.
        mgr.publish("bridge", "c4", &m(&["18100:80"]))
            .expect("publish again");
        assert_eq!(tcp_get(&host, addr("::1", 18100)).as_deref(), Ok("four"));
        mgr.detach("bridge", "c4").expect("detach");
        mgr.detach("six", "c6").expect("detach");
        mgr.remove_all().expect("remove all");
    });
    drop((c4, c6));
    assert_clean(&host);
}

#[test]
fn links_are_jumbo_while_default_routes_keep_the_network_mtu() {
    require_root!();
    let host = Ns::host();
    let (c1, c2) = (Ns::new("mtu1"), Ns::new("mtu2"));
    let dir = tempfile::tempdir().expect("tempdir");
    host.run(|| {
        let mgr = manager(&dir);
        let def = mgr.ensure_default().expect("default network");
        let gateway = def.ipam[0].gateway;
        let e1 = mgr
            .attach(&AttachRequest::new("bridge", "m1", c1.path()))
            .expect("attach m1");
        let mut small = CreateOptions::named("small");
        small.options.insert(OPT_MTU.into(), "1400".into());
        mgr.create_network(small).expect("network with an MTU");
        let e2 = mgr
            .attach(&AttachRequest::new("small", "m2", c2.path()))
            .expect("attach m2");
        let link = |ns: &Ns, dev: &str| ns.ip(&["-o", "link", "show", dev]);

        // No MTU option: every link of the network is jumbo, the default route is not.
        for l in [
            link(&c1, "eth0"),
            link(&host, &def.bridge),
            link(&host, &e1.host_veth),
        ] {
            assert!(l.contains(" mtu 65535 "), "{l}");
        }
        let route = c1.ip(&["route", "show", "default"]);
        assert!(route.contains(" mtu 1500"), "{route}");
        // An MTU option: that MTU on the links, as in Docker, and none on the route.
        for l in [link(&c2, "eth0"), link(&host, &e2.host_veth)] {
            assert!(l.contains(" mtu 1400 "), "{l}");
        }
        let route = c2.ip(&["route", "show", "default"]);
        assert!(!route.contains("mtu"), "{route}");

        // What TCP makes of it: the MSS a server on the host sees from the container is
        // jumbo on the bridge's subnet (the gateway), and 1500's beyond the default route
        // (the host's uplink address stands for any address outside).
        let listener = std::net::TcpListener::bind("0.0.0.0:18200").expect("listen");
        let mss_from = |ip: IpAddr| -> u32 {
            let addr = SocketAddr::new(ip, 18200);
            let client = c1.run(move || std::net::TcpStream::connect(addr).expect("connect"));
            let (server, _) = listener.accept().expect("accept");
            let mss = nix::sys::socket::getsockopt(&server, nix::sys::socket::sockopt::TcpMaxSeg)
                .expect("TCP_MAXSEG");
            drop(client);
            mss
        };
        // (Until data flows, TCP also caps the MSS at half the peer's window: 32 KiB here.)
        let inside = mss_from(gateway);
        assert!(inside > 9000, "MSS on the bridge's subnet: {inside}");
        let outside = mss_from("192.0.2.10".parse().expect("ip"));
        assert!(outside <= 1460, "MSS beyond the default route: {outside}");

        mgr.detach("bridge", "m1").expect("detach");
        mgr.detach("small", "m2").expect("detach");
        mgr.remove_all().expect("remove all");
    });
    drop((c1, c2));
    assert_clean(&host);
}

#[test]
fn default_subnet_skips_routed_subnets() {
    require_root!();
    let host = Ns::host();
    host.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d0p"]);
    host.ip(&["link", "set", "d0", "up"]);
    host.ip(&["link", "set", "d0p", "up"]);
    host.ip(&["route", "add", "172.17.0.0/16", "dev", "d0"]);
    host.ip(&["addr", "add", "172.18.5.1/24", "dev", "d0"]);
    let dir = tempfile::tempdir().expect("tempdir");
    host.run(|| {
        let mgr = manager(&dir);
        let def = mgr.ensure_default().expect("default");
        assert_eq!(def.ipam[0].subnet.to_string(), "172.19.0.0/16");
        // Persisted: a second manager on the same root sees the same network.
        drop(mgr);
        let again = manager(&dir);
        assert_eq!(again.ensure_default().expect("default").id, def.id);
        again.remove_all().expect("remove all");
    });
    assert_clean(&host);
}

#[test]
fn failed_attach_leaves_nothing_behind() {
    require_root!();
    let host = Ns::host();
    let c = Ns::new("fail");
    c.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    host.run(|| {
        let mgr = manager(&dir);
        mgr.create_network(CreateOptions {
            subnets: vec![SubnetRequest {
                subnet: "10.77.0.0/24".parse().expect("net"),
                gateway: None,
                ip_range: Some("10.77.0.128/25".parse().expect("range")),
            }],
            ..CreateOptions::named("fails")
        })
        .expect("create");
        let links_before = host.links();
        let rules_before = host.ruleset();

        // eth0 already exists in the container: the veth cannot be made.
        let mut req = AttachRequest::new("fails", "cid", c.path());
        req.ifname = Some("eth0".into());
        let err = mgr.attach(&req).expect_err("name clash");
        assert!(err.to_string().contains("veth"), "{err}");
        // Unknown namespace, static address outside the subnet, unknown network.
        let err = mgr
            .attach(&AttachRequest::new(
                "fails",
                "cid",
                "/run/netns/berthtest-missing",
            ))
            .expect_err("no netns");
        assert!(matches!(err, NetworkError::Netns { .. }), "{err}");
        let mut req = AttachRequest::new("fails", "cid", c.path());
        req.ipv4 = Some("10.78.0.5".parse().expect("ip"));
        assert!(matches!(
            mgr.attach(&req),
            Err(NetworkError::AddressOutOfRange { .. })
        ));
        assert!(matches!(
            mgr.attach(&AttachRequest::new("nope", "cid", c.path())),
            Err(NetworkError::NotFound(_))
        ));
        assert_eq!(host.links(), links_before);
        assert_eq!(host.ruleset(), rules_before);
        assert!(mgr.inspect("fails").expect("net").endpoints.is_empty());
        assert_eq!(c.links().len(), 3, "{:?}", c.links());

        // A good attach takes from the ip-range; a static one gets exactly its address.
        let ok = mgr
            .attach(&AttachRequest::new("fails", "cid", c.path()))
            .expect("attach as eth1");
        assert_eq!(ok.ifname, "eth1");
        assert_eq!(
            ok.ipv4().map(|a| a.to_string()).as_deref(),
            Some("10.77.0.128")
        );
        mgr.detach("fails", "cid").expect("detach");
        mgr.remove_network("fails").expect("remove");
    });
    assert_clean(&host);
}

#[test]
fn attach_latency_median_of_20() {
    require_root!();
    let host = Ns::host();
    let containers: Vec<Ns> = (0..20).map(|i| Ns::new(&format!("lat{i}"))).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    host.run(|| {
        let mgr = manager(&dir);
        mgr.create_network(CreateOptions::named("lat")).expect("net");
        // The first attach also creates the bridge; measure it separately.
        let mut attach = Vec::new();
        let mut detach = Vec::new();
        for (i, c) in containers.iter().enumerate() {
            let t = Instant::now();
            mgr.attach(&AttachRequest::new("lat", format!("c{i}"), c.path()))
                .expect("attach");
            attach.push(t.elapsed());
        }
        for i in 0..containers.len() {
            let t = Instant::now();
            mgr.detach("lat", &format!("c{i}")).expect("detach");
            detach.push(t.elapsed());
        }
        let first = attach[0];
        attach.sort();
        detach.sort();
        println!(
            "attach latency: median {:?}, first (creates bridge) {:?}, max {:?}; detach median {:?}",
            attach[attach.len() / 2],
            first,
            attach[attach.len() - 1],
            detach[detach.len() / 2]
        );
        mgr.remove_network("lat").expect("remove");
    });
    assert_clean(&host);
}

#[test]
fn release_defers_rules_and_restore_reclaims_after_a_restart() {
    require_root!();
    let host = Ns::host();
    let (c1, c2) = (Ns::new("r1"), Ns::new("r2"));
    let dir = tempfile::tempdir().expect("tempdir");
    host.run(|| {
        let mut cfg = ManagerConfig::new(dir.path());
        cfg.firewall = Some(FirewallBackend::Nftables);
        cfg.firewall_table = "berth_rel".into();
        cfg.default_bridge = "brel0".into();
        cfg.default_subnet = Some("10.79.0.1/24".parse().expect("net"));
        let mgr = NetworkManager::open(cfg.clone()).expect("open");
        let def = mgr.ensure_default().expect("default");
        assert_eq!(def.bridge, "brel0");
        assert_eq!(def.ipam[0].subnet.to_string(), "10.79.0.0/24");
        let e1 = mgr
            .attach(&AttachRequest::new("bridge", "c1", c1.path()))
            .expect("c1");
        mgr.attach(&AttachRequest::new("bridge", "c2", c2.path()))
            .expect("c2");
        let m = |spec: &str| parse_port_spec(spec).expect("spec");
        // Deferred publish: reserved now, rules on sync.
        let b1 = mgr
            .publish_with("bridge", "c1", &m("127.0.0.1::80"), false)
            .expect("publish");
        assert!(!host.ruleset().contains("dnat to"), "not applied yet");
        mgr.sync_firewall().expect("sync");
        assert!(host.ruleset().contains("table ip berth_rel"));
        assert!(host.ruleset().contains("dnat to"));
        mgr.publish("bridge", "c2", &m("127.0.0.1::81"))
            .expect("publish c2");

        // release: the port is free at once, the veth and the rule stay until their time.
        mgr.release("bridge", "c1").expect("release");
        let port = b1[0].host_port;
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        assert!(host.links().contains(&e1.host_veth));
        mgr.sync_firewall().expect("sync");
        assert!(!host.ruleset().contains(&format!("dport {port} ")));

        // A restart: a new manager on the same store keeps c2 (alive), drops nothing else.
        drop(mgr);
        let mgr = NetworkManager::open(cfg).expect("reopen");
        let dropped = mgr.restore(|ep| ep.container_id == "c2").expect("restore");
        assert!(dropped.is_empty(), "{dropped:?}");
        let c2port = mgr.endpoints_of("c2")[0].1.ports[0].host_port;
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", c2port)).is_err(),
            "held again after restore"
        );
        // And when c2 is gone too, restore drops it and frees its port.
        let dropped = mgr.restore(|_| false).expect("restore");
        assert_eq!(dropped, vec![("bridge".to_string(), "c2".to_string())]);
        assert!(std::net::TcpListener::bind(("127.0.0.1", c2port)).is_ok());
        mgr.remove_all().expect("remove all");
    });
    drop((c1, c2));
    assert_clean(&host);
}
