//! The nftables tables Berth programs over netlink, read back with `nft`: every rule the
//! engine means must be listed by nft exactly as Berth writes it, so each match and action
//! was encoded as the expression nft itself would have sent.

mod common;

use berth_network::nftables::{rules::tables, Nftables};
use berth_network::{Proto, State};
use common::fixtures::{endpoint, network, state};
use common::Ns;

/// Three networks (IPv4 only, dual stack, internal dual stack) with ports of every kind.
fn sample_state() -> State {
    let mut v4 = network("a", &["10.1.0.0/24"], false);
    v4.endpoints.insert(
        "c4".into(),
        endpoint(
            "c4",
            &["10.1.0.2/24"],
            &[
                ("0.0.0.0", 9090, 90, Proto::Tcp),
                ("192.0.2.10", 9091, 91, Proto::Udp),
            ],
        ),
    );
    let mut dual = network("b", &["10.2.0.0/16", "fd00:2::/64"], false);
    dual.endpoints.insert(
        "c6".into(),
        endpoint(
            "c6",
            &["10.2.0.2/16", "fd00:2::2/64"],
            &[
                ("::", 8080, 80, Proto::Tcp),
                ("2001:db8::1", 8082, 82, Proto::Udp),
            ],
        ),
    );
    let internal = network("c", &["10.3.0.0/24", "fd00:3::/64"], true);
    state(vec![v4, dual, internal])
}

/// The rule lines of `nft list table <family> <name>`, trimmed.
fn listed_rules(ns: &Ns, family: &str, name: &str) -> Vec<String> {
    ns.exec(&["nft", "list", "table", family, name])
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("table ")
                && !l.starts_with("chain ")
                && !l.starts_with("type ")
                && *l != "}"
        })
        .map(str::to_owned)
        .collect()
}

/// Asserts that nft lists exactly the rules of `state`, in order, in both tables.
fn assert_listed(ns: &Ns, table: &str, state: &State) {
    for t in tables(table, state) {
        let family = t.family.name();
        let chains = t.chains.expect("both families are present");
        let want: Vec<String> = chains
            .iter()
            .flat_map(|c| c.rules.iter().map(ToString::to_string))
            .collect();
        assert!(want.len() > 8, "the sample exercises many rules: {want:?}");
        assert_eq!(listed_rules(ns, family, table), want, "table {family}");
    }
}

#[test]
fn nft_lists_every_rule_as_berth_writes_it() {
    if !common::can_run() {
        eprintln!("skipped: needs root, ip and nft");
        return;
    }
    let ns = Ns::new("nftlist");
    let state = sample_state();
    // One instance: its socket, kept open, serves every change.
    let nft = Nftables::new();
    ns.run(|| nft.apply("tlist", &state))
        .expect("apply the sample state");
    assert_listed(&ns, "tlist", &state);

    // Applying again replaces the tables instead of adding to them.
    ns.run(|| nft.apply("tlist", &state)).expect("apply again");
    assert_listed(&ns, "tlist", &state);

    // No networks: both tables are gone.
    ns.run(|| nft.apply("tlist", &State::default()))
        .expect("apply the empty state");
    let listed = ns.exec(&["nft", "list", "tables"]);
    assert!(!listed.contains("tlist"), "{listed}");
}

#[test]
fn an_interface_name_too_long_is_refused_and_the_rules_stay() {
    if !common::can_run() {
        eprintln!("skipped: needs root, ip and nft");
        return;
    }
    let ns = Ns::new("nftlong");
    let state = sample_state();
    ns.run(|| Nftables::new().apply("tlong", &state))
        .expect("apply");
    let before = ns.exec(&["nft", "list", "ruleset"]);

    let mut bad = sample_state();
    let mut long = network("d", &["10.4.0.0/24"], false);
    long.bridge = "br-0123456789abc".into();
    bad.networks.insert(long.id.clone(), long);
    let err = ns
        .run(|| Nftables::new().apply("tlong", &bad))
        .expect_err("a 16-byte interface name");
    let msg = err.to_string();
    assert!(msg.contains("\"br-0123456789abc\""), "{msg}");
    assert!(msg.contains("longer than 15 bytes"), "{msg}");
    assert_eq!(ns.exec(&["nft", "list", "ruleset"]), before);
}

#[test]
fn one_instance_programs_the_namespace_of_each_caller() {
    if !common::can_run() {
        eprintln!("skipped: needs root, ip and nft");
        return;
    }
    let (first, second) = (Ns::new("nftone"), Ns::new("nfttwo"));
    let state = sample_state();
    let nft = Nftables::new();
    first.run(|| nft.apply("tboth", &state)).expect("first");
    second.run(|| nft.apply("tboth", &state)).expect("second");
    assert_listed(&first, "tboth", &state);
    assert_listed(&second, "tboth", &state);
    first
        .run(|| nft.apply("tboth", &State::default()))
        .expect("emptied");
    assert!(!first.exec(&["nft", "list", "tables"]).contains("tboth"));
    assert_listed(&second, "tboth", &state);
}

/// `-p 10000-11499:10000-11499 -p 10000-11499:10000-11499/udp`: 3000 rules, far more than
/// one default-sized netlink message holds, in one transaction.
#[test]
fn thousands_of_published_ports_apply_in_one_transaction() {
    if !common::can_run() {
        eprintln!("skipped: needs root, ip and nft");
        return;
    }
    let ns = Ns::new("nftmany");
    let ports: Vec<(&str, u16, u16, Proto)> = (10000..11500)
        .flat_map(|p| [("0.0.0.0", p, p, Proto::Tcp), ("0.0.0.0", p, p, Proto::Udp)])
        .collect();
    let mut net = network("m", &["10.9.0.0/24"], false);
    net.endpoints
        .insert("cm".into(), endpoint("cm", &["10.9.0.2/24"], &ports));
    let many = state(vec![net]);
    let nft = Nftables::new();
    ns.run(|| nft.apply("tmany", &many)).expect("3000 ports");
    let listed = listed_rules(&ns, "ip", "tmany");
    let dnats = listed.iter().filter(|r| r.contains(" dnat to ")).count();
    assert_eq!(dnats, 3000);
    assert!(listed.contains(&"udp dport 11499 dnat to 10.9.0.2:11499".to_string()));
    // And back to none, on the same socket.
    ns.run(|| nft.apply("tmany", &State::default()))
        .expect("emptied");
    assert!(!ns.exec(&["nft", "list", "tables"]).contains("tmany"));
}
