//! The rules derived from the network state, as nftables (rendered in nft's syntax) and
//! iptables-restore input: which networks get which NAT, isolation and DNAT rules.

mod common;

use berth_network::firewall::{ip6tables_rules_in, iptables_rules_in};
use berth_network::nftables::rules::{tables, Family};
use berth_network::Proto;
use common::fixtures::{endpoint, network, state};

#[test]
fn ipv6_networks_get_isolation_and_nat_in_their_own_table() {
    let v4_only = state(vec![network("a", &["10.1.0.0/24"], false)]);
    let [v6, v4] = tables("t", &v4_only);
    assert_eq!((v6.family, v4.family), (Family::Ip6, Family::Ip));
    assert!(v6.chains.is_none(), "{v6}");
    assert!(v4.chains.is_some(), "{v4}");

    let mixed = state(vec![
        network("a", &["10.1.0.0/24"], false),
        network("b", &["10.2.0.0/24", "fd00:2::/64"], false),
        network("c", &["10.3.0.0/24", "fd00:3::/64"], true),
    ]);
    let v6 = tables("t", &mixed)[0].to_string();
    assert!(
        v6.contains("ip6 saddr fd00:2::/64 oifname != \"br-b\" masquerade"),
        "{v6}"
    );
    // Internal networks get no outbound NAT, and keep to their bridge.
    assert!(
        !v6.contains("ip6 saddr fd00:3::/64 oifname != \"br-c\" masquerade"),
        "{v6}"
    );
    assert!(
        v6.contains("iifname \"br-c\" oifname != \"br-c\" drop"),
        "{v6}"
    );
    for other in ["br-a", "br-c"] {
        let rule = format!("iifname \"br-b\" oifname \"{other}\" drop");
        assert!(v6.contains(&rule), "{v6}");
    }

    let rules = ip6tables_rules_in("T", &mixed);
    assert!(
        rules.contains("-A T-POSTROUTING -s fd00:2::/64 ! -o br-b -j MASQUERADE"),
        "{rules}"
    );
    assert!(
        rules.contains("-A T-FORWARD -i br-b -o br-c -j DROP"),
        "{rules}"
    );
    assert!(!rules.contains("BERTH-"), "{rules}");
}

#[test]
fn ipv6_bindings_are_dnated_only_to_containers_with_ipv6_and_never_for_loopback() {
    let mut dual = network("d", &["10.2.0.0/24", "fd00:2::/64"], false);
    dual.endpoints.insert(
        "c6".into(),
        endpoint(
            "c6",
            &["10.2.0.2/24", "fd00:2::2/64"],
            &[
                ("0.0.0.0", 8080, 80, Proto::Tcp),
                ("::", 8080, 80, Proto::Tcp),
                ("::1", 8081, 81, Proto::Tcp),
                ("fd55::5", 8082, 82, Proto::Udp),
            ],
        ),
    );
    let mut v4 = network("a", &["10.1.0.0/24"], false);
    v4.endpoints.insert(
        "c4".into(),
        endpoint(
            "c4",
            &["10.1.0.2/24"],
            &[
                ("0.0.0.0", 9090, 90, Proto::Tcp),
                ("::", 9090, 90, Proto::Tcp),
            ],
        ),
    );
    let st = state(vec![dual, v4]);
    let [v6, v4] = tables("t", &st).map(|t| t.to_string());
    for want in [
        "tcp dport 8080 dnat to 10.2.0.2:80",
        "tcp dport 9090 dnat to 10.1.0.2:90",
    ] {
        assert!(v4.contains(want), "{want}: {v4}");
    }
    assert!(!v4.contains('['), "no IPv6 in the ip table: {v4}");
    for want in [
        "ip6 daddr != ::1 fib daddr type local jump publish",
        "\ttcp dport 8080 dnat to [fd00:2::2]:80",
        "ip6 daddr fd55::5 udp dport 8082 dnat to [fd00:2::2]:82",
        "oifname \"br-d\" ip6 saddr fd00:2::/64 ct status dnat masquerade",
    ] {
        assert!(v6.contains(want), "{want}: {v6}");
    }
    // ::1 and the IPv4-only container are the proxy's.
    assert!(!v6.contains("8081") && !v6.contains("9090"), "{v6}");

    let rules = ip6tables_rules_in("T", &st);
    assert!(
        rules.contains(
            "-A T-PUBLISH -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00:2::2]:80"
        ),
        "{rules}"
    );
    assert!(
        rules.contains("-A T-PUBLISH -d fd55::5/128 -p udp -m udp --dport 8082"),
        "{rules}"
    );
    assert!(
        !rules.contains("8081") && !rules.contains("9090"),
        "{rules}"
    );
    let rules4 = iptables_rules_in("T", &st);
    assert!(
        rules4.contains("--dport 9090 -j DNAT --to-destination 10.1.0.2:90"),
        "{rules4}"
    );
    assert!(!rules4.contains("fd00"), "{rules4}");
}
