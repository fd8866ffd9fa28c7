//! `berth network create/ls/inspect/rm/connect/disconnect/prune`, `berth port`, and the
//! network flags of `run`/`create` (`-p`, `-P`, `--add-host`, `--dns`, `--network-alias`, …).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{path_segment, query, Client};
use crate::format::{human_age, now_unix, print_table, render_template};

/// Network flags shared by `run` and `create`.
#[derive(Debug, Args, Default)]
pub struct NetOpts {
    /// Publish a container's port(s) to the host ([ip:][hostPort:]containerPort[/proto]).
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish all exposed ports to free host ports.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Expose a port or a range of ports.
    #[arg(long)]
    expose: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip).
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// Set custom DNS servers.
    #[arg(long)]
    dns: Vec<String>,
    /// Set custom DNS search domains.
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    /// Set DNS options.
    #[arg(long = "dns-option")]
    dns_option: Vec<String>,
    /// Add network-scoped aliases for the container.
    #[arg(long = "network-alias")]
    network_alias: Vec<String>,
    /// IPv4 address (e.g. 172.30.100.104).
    #[arg(long)]
    ip: Option<String>,
    /// Container NIS domain name.
    #[arg(long)]
    domainname: Option<String>,
}

fn range(s: &str, what: &str) -> Result<(u16, u16)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a
        .parse()
        .with_context(|| format!("invalid {what} port {s:?}"))?;
    let b: u16 = b
        .parse()
        .with_context(|| format!("invalid {what} port {s:?}"))?;
    if a == 0 || b < a {
        bail!("invalid {what} port range {s:?}");
    }
    Ok((a, b))
}

/// One `-p` value → (`"80/tcp"`, host ip, host port) entries (container ranges expanded).
pub fn parse_publish(spec: &str) -> Result<Vec<(String, String, String)>> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p @ ("tcp" | "udp"))) => (r, p),
        Some((_, p)) => bail!("invalid proto {p:?} in -p {spec:?}: use tcp or udp"),
        None => (spec, "tcp"),
    };
    let (ip, rest) = if let Some(s) = rest.strip_prefix('[') {
        let (ip, after) = s
            .split_once("]:")
            .with_context(|| format!("invalid IPv6 address in -p {spec:?}"))?;
        (ip.to_string(), after)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            1 | 2 => (String::new(), rest),
            3 => (parts[0].to_string(), &rest[parts[0].len() + 1..]),
            _ => bail!("invalid -p {spec:?}: too many colons"),
        }
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        bail!("invalid IP address {ip:?} in -p {spec:?}");
    }
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let (c_lo, c_hi) = range(container, "container")?;
    let mut out = Vec::new();
    if host.is_empty() {
        for c in c_lo..=c_hi {
            out.push((format!("{c}/{proto}"), ip.clone(), String::new()));
        }
        return Ok(out);
    }
    let (h_lo, h_hi) = range(host, "host")?;
    if c_lo == c_hi {
        out.push((format!("{c_lo}/{proto}"), ip, host.to_string()));
    } else if h_hi - h_lo == c_hi - c_lo {
        for i in 0..=(c_hi - c_lo) {
            out.push((
                format!("{}/{proto}", c_lo + i),
                ip.clone(),
                (h_lo + i).to_string(),
            ));
        }
    } else {
        bail!("invalid -p {spec:?}: host and container port ranges differ in size");
    }
    Ok(out)
}

impl NetOpts {
    /// Adds the flags to a create body (`ExposedPorts`, `HostConfig`, `NetworkingConfig`).
    pub fn apply(&self, body: &mut Value, network: Option<&str>) -> Result<()> {
        let mut exposed = serde_json::Map::new();
        let mut bindings = serde_json::Map::new();
        for p in &self.publish {
            for (key, ip, port) in parse_publish(p)? {
                exposed.insert(key.clone(), json!({}));
                let entry = bindings.entry(key).or_insert_with(|| json!([]));
                if let Some(a) = entry.as_array_mut() {
                    a.push(json!({"HostIp": ip, "HostPort": port}));
                }
            }
        }
        for e in &self.expose {
            let (ports, proto) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
            let (lo, hi) = range(ports, "exposed")?;
            for p in lo..=hi {
                exposed.insert(format!("{p}/{proto}"), json!({}));
            }
        }
        if !exposed.is_empty() {
            body["ExposedPorts"] = Value::Object(exposed);
        }
        let host = &mut body["HostConfig"];
        if !bindings.is_empty() {
            host["PortBindings"] = Value::Object(bindings);
        }
        host["PublishAllPorts"] = json!(self.publish_all);
        if !self.add_host.is_empty() {
            host["ExtraHosts"] = json!(self.add_host);
        }
        if !self.dns.is_empty() {
            host["Dns"] = json!(self.dns);
        }
        if !self.dns_search.is_empty() {
            host["DnsSearch"] = json!(self.dns_search);
        }
        if !self.dns_option.is_empty() {
            host["DnsOptions"] = json!(self.dns_option);
        }
        if let Some(d) = &self.domainname {
            body["Domainname"] = json!(d);
        }
        let net = network.unwrap_or("default");
        if !self.network_alias.is_empty() || self.ip.is_some() {
            if matches!(net, "default" | "bridge" | "host" | "none") {
                bail!(
                    "network-scoped aliases and --ip are only supported for user-defined networks"
                );
            }
            let mut ep = json!({"Aliases": self.network_alias});
            if let Some(ip) = &self.ip {
                ep["IPAMConfig"] = json!({"IPv4Address": ip});
            }
            body["NetworkingConfig"] = json!({"EndpointsConfig": {net: ep}});
        }
        Ok(())
    }
}

/// `ip:port`, with an IPv6 address in brackets (`[::]:8080`), as the docker CLI writes it.
fn host_port(ip: &str, port: impl std::fmt::Display) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The PORTS column of `ps`: `0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, 443/tcp`.
pub fn format_ports(ports: &Value) -> String {
    let mut items: Vec<String> = ports
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let private = p["PrivatePort"].as_u64().unwrap_or(0);
            let proto = p["Type"].as_str().unwrap_or("tcp");
            match p["PublicPort"].as_u64() {
                Some(public) => format!(
                    "{}->{private}/{proto}",
                    host_port(p["IP"].as_str().unwrap_or("0.0.0.0"), public)
                ),
                None => format!("{private}/{proto}"),
            }
        })
        .collect();
    items.sort();
    items.dedup();
    items.join(", ")
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks.
    Inspect(InspectArgs),
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Connect a container to a network.
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(DisconnectArgs),
    /// Remove all unused networks.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Driver to manage the network (only bridge).
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR format.
    #[arg(long)]
    subnet: Vec<String>,
    /// Gateway for the subnet.
    #[arg(long)]
    gateway: Vec<String>,
    /// Allocate container addresses from a sub-range.
    #[arg(long = "ip-range")]
    ip_range: Vec<String>,
    /// Enable IPv6 networking.
    #[arg(long)]
    ipv6: bool,
    /// Restrict external access to the network.
    #[arg(long)]
    internal: bool,
    /// Set metadata on a network.
    #[arg(long)]
    label: Vec<String>,
    /// Set driver specific options.
    #[arg(short, long = "opt")]
    opt: Vec<String>,
    /// Network name.
    name: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Provide filter values (e.g. driver=bridge).
    #[arg(short, long)]
    filter: Vec<String>,
    /// Only display network IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate the output.
    #[arg(long)]
    no_trunc: bool,
    /// Format output using a Go template.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a Go template.
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Do not error if the network does not exist.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Add network-scoped aliases for the container.
    #[arg(long)]
    alias: Vec<String>,
    /// IPv4 address.
    #[arg(long)]
    ip: Option<String>,
    network: String,
    container: String,
}

#[derive(Debug, Args)]
pub struct DisconnectArgs {
    /// Force the container to disconnect from a network.
    #[arg(short, long)]
    force: bool,
    network: String,
    container: String,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
    /// Provide filter values (e.g. label=key).
    #[arg(long)]
    filter: Vec<String>,
}

/// `berth port CONTAINER [PRIVATE_PORT[/PROTO]]`.
#[derive(Debug, Args)]
pub struct PortArgs {
    container: String,
    port: Option<String>,
}

/// Unix seconds of an RFC 3339 UTC time (`2026-11-23T09:00:00.123Z`).
fn rfc3339_secs(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (y >= 0).then_some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn filters_json(filters: &[String]) -> Result<String> {
    let mut map = serde_json::Map::new();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .with_context(|| format!("bad format of filter (expected name=value): {f}"))?;
        let entry = map.entry(k.to_string()).or_insert_with(|| json!({}));
        entry[v] = json!(true);
    }
    Ok(Value::Object(map).to_string())
}

fn key_values(items: &[String]) -> Value {
    let mut m = serde_json::Map::new();
    for i in items {
        let (k, v) = i.split_once('=').unwrap_or((i.as_str(), ""));
        m.insert(k.to_string(), json!(v));
    }
    Value::Object(m)
}

pub async fn network_command(client: &Client, command: NetworkCommand) -> Result<()> {
    match command {
        NetworkCommand::Create(a) => create(client, &a).await,
        NetworkCommand::Ls(a) => ls(client, &a).await,
        NetworkCommand::Inspect(a) => inspect(client, &a).await,
        NetworkCommand::Rm(a) => rm(client, &a).await,
        NetworkCommand::Connect(a) => {
            let mut ep = json!({"Aliases": a.alias});
            if let Some(ip) = &a.ip {
                ep["IPAMConfig"] = json!({"IPv4Address": ip});
            }
            let body = json!({"Container": a.container, "EndpointConfig": ep});
            let path = format!("/networks/{}/connect", path_segment(&a.network));
            let _: Value = client.post_json(&path, Some(&body)).await?;
            Ok(())
        }
        NetworkCommand::Disconnect(a) => {
            let body = json!({"Container": a.container, "Force": a.force});
            let path = format!("/networks/{}/disconnect", path_segment(&a.network));
            let _: Value = client.post_json(&path, Some(&body)).await?;
            Ok(())
        }
        NetworkCommand::Prune(a) => {
            let _ = a.force;
            let filters = filters_json(&a.filter)?;
            let path = format!("/networks/prune{}", query(&[("filters", &filters)]));
            let r: Value = client.post_json(&path, None).await?;
            let names: Vec<&str> = r["NetworksDeleted"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !names.is_empty() {
                println!("Deleted Networks:");
                for n in names {
                    println!("{n}");
                }
            }
            Ok(())
        }
    }
}

async fn create(client: &Client, a: &CreateArgs) -> Result<()> {
    if a.gateway.len() > a.subnet.len() || a.ip_range.len() > a.subnet.len() {
        bail!("every --gateway and --ip-range needs a --subnet");
    }
    let config: Vec<Value> = a
        .subnet
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut c = json!({"Subnet": s});
            if let Some(g) = a.gateway.get(i) {
                c["Gateway"] = json!(g);
            }
            if let Some(r) = a.ip_range.get(i) {
                c["IPRange"] = json!(r);
            }
            c
        })
        .collect();
    let body = json!({
        "Name": a.name,
        "Driver": a.driver,
        "EnableIPv6": a.ipv6,
        "Internal": a.internal,
        "IPAM": {"Driver": "default", "Config": config},
        "Options": key_values(&a.opt),
        "Labels": key_values(&a.label),
    });
    let r: Value = client.post_json("/networks/create", Some(&body)).await?;
    println!("{}", r["Id"].as_str().unwrap_or_default());
    Ok(())
}

async fn ls(client: &Client, a: &LsArgs) -> Result<()> {
    let filters = filters_json(&a.filter)?;
    let list: Vec<Value> = client
        .get_json(&format!("/networks{}", query(&[("filters", &filters)])))
        .await?;
    let now = now_unix();
    let rows: Vec<Value> = list
        .iter()
        .map(|n| {
            let id = n["Id"].as_str().unwrap_or_default();
            let created = rfc3339_secs(n["Created"].as_str().unwrap_or(""));
            json!({
                "ID": if a.no_trunc { id.to_string() } else { id.chars().take(12).collect() },
                "Name": n["Name"],
                "Driver": n["Driver"],
                "Scope": n["Scope"],
                "IPv6": n["EnableIPv6"].as_bool().unwrap_or(false).to_string(),
                "Internal": n["Internal"].as_bool().unwrap_or(false).to_string(),
                "CreatedAt": created.map(|c| human_age(now - c)).unwrap_or_default(),
                "Labels": n["Labels"],
            })
        })
        .collect();
    if a.quiet {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    if let Some(t) = &a.format {
        for r in &rows {
            println!("{}", render_template(t, r));
        }
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            ["ID", "Name", "Driver", "Scope"]
                .iter()
                .map(|k| r[*k].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .collect();
    print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &table);
    Ok(())
}

async fn inspect(client: &Client, a: &InspectArgs) -> Result<()> {
    let mut out = Vec::new();
    let mut failed = false;
    for n in &a.networks {
        match client
            .get_json::<Value>(&format!("/networks/{}", path_segment(n)))
            .await
        {
            Ok(v) => out.push(v),
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    match &a.format {
        Some(t) => {
            for v in &out {
                println!("{}", render_template(t, v));
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    if failed {
        bail!("some networks could not be inspected");
    }
    Ok(())
}

async fn rm(client: &Client, a: &RmArgs) -> Result<()> {
    let mut failed = false;
    for n in &a.networks {
        match client
            .call(Method::DELETE, &format!("/networks/{}", path_segment(n)))
            .await
        {
            Ok(_) => println!("{n}"),
            Err(e) => {
                let missing = e
                    .downcast_ref::<crate::client::ApiError>()
                    .is_some_and(|x| x.status == hyper::StatusCode::NOT_FOUND);
                if !(a.force && missing) {
                    eprintln!("{e:#}");
                    failed = true;
                }
            }
        }
    }
    if failed {
        bail!("some networks could not be removed");
    }
    Ok(())
}

/// `berth port`.
pub async fn port(client: &Client, a: &PortArgs) -> Result<()> {
    let c: Value = client
        .get_json(&format!("/containers/{}/json", path_segment(&a.container)))
        .await?;
    let ports = c["NetworkSettings"]["Ports"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let want = a.port.as_ref().map(|p| {
        if p.contains('/') {
            p.clone()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut printed = false;
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort_by_key(|k| {
        k.split('/')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(0)
    });
    for key in keys {
        if want.as_ref().is_some_and(|w| w != key) {
            continue;
        }
        for b in ports[key].as_array().into_iter().flatten() {
            let addr = host_port(
                b["HostIp"].as_str().unwrap_or(""),
                b["HostPort"].as_str().unwrap_or(""),
            );
            if want.is_some() {
                println!("{addr}");
            } else {
                println!("{key} -> {addr}");
            }
            printed = true;
        }
    }
    if let (Some(w), false) = (&want, printed) {
        bail!("Error: No public port '{w}' published for {}", a.container);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        assert_eq!(
            parse_publish("8080:80").expect("spec"),
            vec![("80/tcp".into(), "".into(), "8080".into())]
        );
        assert_eq!(
            parse_publish("127.0.0.1::53/udp").expect("spec"),
            vec![("53/udp".into(), "127.0.0.1".into(), "".into())]
        );
        assert_eq!(parse_publish("9000-9001:7000-7001").expect("spec").len(), 2);
        assert_eq!(
            parse_publish("8000-8010:80").expect("spec")[0].2,
            "8000-8010"
        );
        for bad in ["x", "80/sctp", "1:2:3:4", "0", "1-3:1-2", "a.b:1:2"] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_column() {
        let ports = json!([
            {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"PrivatePort": 443, "Type": "tcp"}
        ]);
        assert_eq!(
            format_ports(&ports),
            "0.0.0.0:8080->80/tcp, 443/tcp, [::]:8080->80/tcp"
        );
    }
}
