//! The `/networks` endpoints, and the network parts of the container endpoints: the create
//! body's ports/DNS/networks in, `NetworkSettings` and `Ports` out — Docker's shapes, with the
//! fields docker-compose reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_engine::containers::{
    ContainerError, ContainerNetwork, ContainerRecord, ContainerService, EndpointOptions,
    HostBinding,
};
use berth_network::{CreateOptions, Endpoint, Network, NetworkError, SubnetRequest};
use hyper::body::Incoming;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{self, ApiResponse};
use crate::error::{chain, ApiError};
use crate::query::{glob, Query};
use crate::ApiState;

/// Docker's status for each network error kind (moby: overlap, in use and pre-defined are
/// "forbidden", a name taken is a conflict).
pub fn api_error(err: NetworkError) -> ApiError {
    let message = chain(&err);
    match berth_engine::containers::network_status(&err) {
        404 => ApiError::NotFound(message),
        403 => ApiError::Forbidden(message),
        409 => ApiError::Conflict(message),
        400 => ApiError::BadRequest(message),
        _ => ApiError::Internal(message),
    }
}

// ---- the create body ----------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateNet {
    exposed_ports: Option<BTreeMap<String, Value>>,
    domainname: Option<String>,
    host_config: Option<HostNet>,
    networking_config: Option<NetworkingConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct HostNet {
    port_bindings: Option<BTreeMap<String, Option<Vec<PortBindingBody>>>>,
    publish_all_ports: bool,
    extra_hosts: Option<Vec<String>>,
    dns: Option<Vec<String>>,
    dns_search: Option<Vec<String>>,
    dns_options: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PortBindingBody {
    host_ip: String,
    host_port: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkingConfig {
    endpoints_config: Option<BTreeMap<String, Option<EndpointBody>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EndpointBody {
    #[serde(rename = "Aliases")]
    aliases: Option<Vec<String>>,
    #[serde(rename = "IPAMConfig")]
    ipam_config: Option<IpamBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IpamBody {
    #[serde(rename = "IPv4Address")]
    ipv4_address: Option<String>,
    #[serde(rename = "IPv6Address")]
    ipv6_address: Option<String>,
}

impl EndpointBody {
    fn into_options(self) -> EndpointOptions {
        let ipam = self.ipam_config.unwrap_or_default();
        EndpointOptions {
            aliases: self.aliases.unwrap_or_default(),
            ipv4_address: ipam.ipv4_address.filter(|s| !s.is_empty()),
            ipv6_address: ipam.ipv6_address.filter(|s| !s.is_empty()),
        }
    }
}

/// The network options of a `POST /containers/create` body.
pub fn container_options(bytes: &[u8]) -> Result<ContainerNetwork, ApiError> {
    let body: CreateNet = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad(format!(
            "invalid network options in the create request: {e}"
        ))
    })?;
    let host = body.host_config.unwrap_or_default();
    let port_bindings = host
        .port_bindings
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = v
                .unwrap_or_default()
                .into_iter()
                .map(|b| HostBinding {
                    host_ip: b.host_ip,
                    host_port: b.host_port,
                })
                .collect();
            (k, v)
        })
        .collect();
    let endpoints = body
        .networking_config
        .and_then(|n| n.endpoints_config)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default().into_options()))
        .collect();
    Ok(ContainerNetwork {
        port_bindings,
        publish_all_ports: host.publish_all_ports,
        exposed_ports: body.exposed_ports.unwrap_or_default().into_keys().collect(),
        extra_hosts: host.extra_hosts.unwrap_or_default(),
        dns: host.dns.unwrap_or_default(),
        dns_search: host.dns_search.unwrap_or_default(),
        dns_options: host.dns_options.unwrap_or_default(),
        domainname: body.domainname.filter(|d| !d.is_empty()),
        endpoints,
    })
}

// ---- container views ------------------------------------------------------------------------

fn exposed(r: &ContainerRecord) -> Vec<String> {
    let mut keys: Vec<String> = r
        .resolved
        .exposed_ports
        .iter()
        .chain(r.config.network.exposed_ports.iter())
        .chain(r.config.network.port_bindings.keys())
        .map(|k| {
            if k.contains('/') {
                k.clone()
            } else {
                format!("{k}/tcp")
            }
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn endpoint_json(n: &Network, e: &Endpoint, r: &ContainerRecord) -> Value {
    let v4 = e.addresses.iter().find(|a| a.addr().is_ipv4());
    let v6 = e.addresses.iter().find(|a| a.addr().is_ipv6());
    let gw4 = e.gateways.iter().find(|g| g.is_ipv4());
    let gw6 = e.gateways.iter().find(|g| g.is_ipv6());
    let eo = r.config.network.endpoints.get(&n.name);
    let mut dns_names: Vec<String> = vec![r.name.trim_start_matches('/').to_string()];
    dns_names.push(r.id.chars().take(12).collect());
    dns_names.extend(e.aliases.iter().cloned());
    json!({
        "IPAMConfig": eo.filter(|o| o.ipv4_address.is_some() || o.ipv6_address.is_some()).map(|o| json!({
            "IPv4Address": o.ipv4_address.clone().unwrap_or_default(),
            "IPv6Address": o.ipv6_address.clone().unwrap_or_default(),
        })),
        "Links": null,
        "Aliases": if e.aliases.is_empty() { Value::Null } else { json!(e.aliases) },
        "MacAddress": e.mac,
        "DriverOpts": null,
        "NetworkID": n.id,
        "EndpointID": e.id,
        "Gateway": gw4.map(|g| g.to_string()).unwrap_or_default(),
        "IPAddress": v4.map(|a| a.addr().to_string()).unwrap_or_default(),
        "IPPrefixLen": v4.map(|a| a.prefix_len()).unwrap_or(0),
        "IPv6Gateway": gw6.map(|g| g.to_string()).unwrap_or_default(),
        "GlobalIPv6Address": v6.map(|a| a.addr().to_string()).unwrap_or_default(),
        "GlobalIPv6PrefixLen": v6.map(|a| a.prefix_len()).unwrap_or(0),
        "DNSNames": if n.dns { json!(dns_names) } else { Value::Null },
    })
}

/// `NetworkSettings` of `GET /containers/{id}/json`.
pub fn inspect_settings(service: &ContainerService, r: &ContainerRecord) -> Value {
    let eps = service.record_endpoints(r);
    let mut ports = serde_json::Map::new();
    let active = r.state.status.is_active();
    for key in exposed(r) {
        ports.insert(key, Value::Null);
    }
    let mut networks = serde_json::Map::new();
    for (n, e) in &eps {
        for b in &e.ports {
            let key = format!("{}/{}", b.container_port, b.proto);
            let entry = ports.entry(key).or_insert_with(|| json!([]));
            if !entry.is_array() {
                *entry = json!([]);
            }
            if let Some(a) = entry.as_array_mut() {
                a.push(
                    json!({"HostIp": b.host_ip.to_string(), "HostPort": b.host_port.to_string()}),
                );
            }
        }
        networks.insert(n.name.clone(), endpoint_json(n, e, r));
    }
    if !active {
        ports.clear();
    }
    // Containers not running still list the networks they join, without addresses.
    if eps.is_empty() {
        let mode = match r.config.host_config.network_mode.as_str() {
            "" | "default" => "bridge",
            m => m,
        };
        if !mode.starts_with("container:") {
            networks.insert(mode.to_string(), empty_endpoint());
        }
        for name in r.config.network.endpoints.keys() {
            if !networks.contains_key(name) {
                networks.insert(name.clone(), empty_endpoint());
            }
        }
    }
    // The top-level address fields describe the default network only, as in Docker.
    let default = eps.iter().find(|(n, _)| n.name == "bridge");
    let top = default.map(|(n, e)| endpoint_json(n, e, r));
    let field = |k: &str| {
        top.as_ref()
            .and_then(|t| t.get(k).cloned())
            .unwrap_or(json!(""))
    };
    json!({
        "Bridge": "",
        "SandboxID": if eps.is_empty() { String::new() } else { r.id.clone() },
        "SandboxKey": service.sandbox_key(&r.id).map(|p| p.display().to_string()).unwrap_or_default(),
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports,
        "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null,
        "EndpointID": field("EndpointID"),
        "Gateway": field("Gateway"),
        "GlobalIPv6Address": field("GlobalIPv6Address"),
        "GlobalIPv6PrefixLen": top.as_ref().and_then(|t| t.get("GlobalIPv6PrefixLen").cloned()).unwrap_or(json!(0)),
        "IPAddress": field("IPAddress"),
        "IPPrefixLen": top.as_ref().and_then(|t| t.get("IPPrefixLen").cloned()).unwrap_or(json!(0)),
        "IPv6Gateway": field("IPv6Gateway"),
        "MacAddress": field("MacAddress"),
        "Networks": networks,
    })
}

fn empty_endpoint() -> Value {
    json!({
        "IPAMConfig": null, "Links": null, "Aliases": null, "MacAddress": "", "DriverOpts": null,
        "NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": null,
    })
}

/// `Ports` of `GET /containers/json` (what `docker ps` shows).
pub fn list_ports(r: &ContainerRecord, eps: &[(Network, Endpoint)]) -> Value {
    let mut out = Vec::new();
    let mut published = std::collections::HashSet::new();
    if r.state.status.is_active() {
        for (_, e) in eps {
            for b in &e.ports {
                published.insert(format!("{}/{}", b.container_port, b.proto));
                out.push(json!({
                    "IP": b.host_ip.to_string(),
                    "PrivatePort": b.container_port,
                    "PublicPort": b.host_port,
                    "Type": b.proto.as_str(),
                }));
            }
        }
    }
    for key in exposed(r) {
        if published.contains(&key) {
            continue;
        }
        if let Some((port, proto)) = berth_engine::containers::parse_port_key(&key) {
            out.push(json!({"PrivatePort": port, "Type": proto.as_str()}));
        }
    }
    Value::Array(out)
}

/// `NetworkSettings` of `GET /containers/json`.
pub fn list_settings(r: &ContainerRecord, eps: &[(Network, Endpoint)]) -> Value {
    let mut networks = serde_json::Map::new();
    for (n, e) in eps {
        networks.insert(n.name.clone(), endpoint_json(n, e, r));
    }
    json!({"Networks": networks})
}

// ---- /networks ------------------------------------------------------------------------------

fn networking(state: &ApiState) -> Result<&berth_engine::containers::Networking, ApiError> {
    state.containers.network_service().ok_or_else(|| {
        ApiError::NotImplemented(
            "networking is disabled in this daemon (started with --bridge none)".into(),
        )
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}

fn created(n: &Network) -> String {
    crate::time::format_rfc3339_nanos(i128::from(n.created) * 1_000_000_000)
}

fn network_json(service: &ContainerService, n: &Network, with_containers: bool) -> Value {
    let config: Vec<Value> = n
        .ipam
        .iter()
        .map(|p| {
            let mut c = json!({"Subnet": p.subnet.to_string(), "Gateway": p.gateway.to_string()});
            if let Some(r) = p.ip_range {
                c["IPRange"] = json!(r.to_string());
            }
            c
        })
        .collect();
    let mut containers = serde_json::Map::new();
    if with_containers {
        for (cid, e) in &n.endpoints {
            let name = service
                .inspect(cid)
                .map(|i| i.record.name.trim_start_matches('/').to_string())
                .unwrap_or_else(|_| e.container_name.clone().unwrap_or_default());
            containers.insert(
                cid.clone(),
                json!({
                    "Name": name,
                    "EndpointID": e.id,
                    "MacAddress": e.mac,
                    "IPv4Address": e.addresses.iter().find(|a| a.addr().is_ipv4()).map(|a| a.to_string()).unwrap_or_default(),
                    "IPv6Address": e.addresses.iter().find(|a| a.addr().is_ipv6()).map(|a| a.to_string()).unwrap_or_default(),
                }),
            );
        }
    }
    let mut options = n.options.clone();
    options
        .entry(berth_network::OPT_BRIDGE_NAME.to_string())
        .or_insert_with(|| n.bridge.clone());
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": created(n),
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv4": true,
        "EnableIPv6": n.enable_ipv6,
        "IPAM": {"Driver": "default", "Options": null, "Config": config},
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": n.labels,
    })
}

/// The `host` and `none` networks Docker always lists (no bridge behind them).
fn builtin(name: &str) -> Value {
    let driver = if name == "host" { "host" } else { "null" };
    // A stable id per name, 64 hex digits like a real one.
    let id: String = name
        .bytes()
        .cycle()
        .take(32)
        .map(|b| format!("{b:02x}"))
        .collect();
    json!({
        "Name": name, "Id": id, "Created": "0001-01-01T00:00:00Z", "Scope": "local",
        "Driver": driver, "EnableIPv4": true, "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": []},
        "Internal": false, "Attachable": false, "Ingress": false,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": false, "Containers": {}, "Options": {},
        "Labels": {},
    })
}

fn matches(filters: &crate::query::Filters, v: &Value) -> bool {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    let name_ok = filters.get("name").is_empty()
        || filters
            .get("name")
            .iter()
            .any(|f| s("Name").contains(f.as_str()) || glob(f, s("Name")));
    let id_ok = filters.get("id").is_empty()
        || filters
            .get("id")
            .iter()
            .any(|f| s("Id").starts_with(f.as_str()));
    let driver_ok =
        filters.get("driver").is_empty() || filters.get("driver").iter().any(|f| f == s("Driver"));
    let predefined = matches!(s("Name"), "bridge" | "host" | "none");
    let type_ok = filters.get("type").iter().all(|t| match t.as_str() {
        "custom" => !predefined,
        "builtin" => predefined,
        _ => true,
    });
    let labels: BTreeMap<String, String> = v
        .get("Labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    name_ok && id_ok && driver_ok && type_ok && filters.labels_match("label", &labels)
}

/// `GET /networks`.
pub async fn list(state: &Arc<ApiState>, query: &Query) -> Result<ApiResponse, ApiError> {
    let filters = query.filters()?;
    filters.only(&["name", "id", "driver", "type", "label", "dangling", "scope"])?;
    let dangling = filters.bool("dangling")?;
    let net = networking(state)?;
    let mut items: Vec<Value> = Vec::new();
    let nets = net.manager().list();
    for n in &nets {
        if let Some(d) = dangling {
            if d != n.endpoints.is_empty() || (d && n.name == "bridge") {
                continue;
            }
        }
        items.push(network_json(&state.containers, n, false));
    }
    if dangling != Some(true) {
        if !nets.iter().any(|n| n.name == "bridge") {
            // The default network is made on first use; list it as Docker does, with no subnet yet.
            let mut b = builtin("bridge");
            b["Driver"] = json!("bridge");
            items.push(b);
        }
        items.push(builtin("host"));
        items.push(builtin("none"));
    }
    items.retain(|v| matches(&filters, v));
    Ok(body::json(StatusCode::OK, &items))
}

/// `GET /networks/{id}`.
pub async fn inspect(state: &Arc<ApiState>, key: &str) -> Result<ApiResponse, ApiError> {
    if matches!(key, "host" | "none") {
        return Ok(body::json(StatusCode::OK, &builtin(key)));
    }
    let st = Arc::clone(state);
    let key = key.to_string();
    let value = blocking(move || {
        let net = networking(&st)?;
        match net.manager().inspect(&key) {
            Ok(n) => Ok(network_json(&st.containers, &n, true)),
            // The default network is made when a container first needs it; until then it is
            // described without a subnet (the CLI inspects before `rm`, which must not make it).
            Err(NetworkError::NotFound(_)) if key == net.default_network() => {
                let mut b = builtin(&key);
                b["Driver"] = json!("bridge");
                Ok(b)
            }
            Err(e) => Err(api_error(e)),
        }
    })
    .await?;
    Ok(body::json(StatusCode::OK, &value))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: Option<String>,
    internal: bool,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    #[serde(rename = "IPAM")]
    ipam: Option<IpamCreate>,
    options: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamCreate {
    driver: Option<String>,
    config: Option<Vec<IpamPool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamPool {
    subnet: Option<String>,
    #[serde(rename = "IPRange")]
    ip_range: Option<String>,
    gateway: Option<String>,
}

fn parse_create(bytes: &[u8]) -> Result<CreateOptions, ApiError> {
    let b: CreateBody = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad(format!("invalid JSON in the network create request: {e}")))?;
    if b.name.is_empty() {
        return Err(ApiError::bad("network name is required"));
    }
    if matches!(b.name.as_str(), "bridge" | "host" | "none") {
        return Err(ApiError::Forbidden(format!(
            "{} is a pre-defined network and cannot be created",
            b.name
        )));
    }
    let ipam = b.ipam.unwrap_or_default();
    if let Some(d) = ipam
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "default")
    {
        return Err(ApiError::bad(format!(
            "IPAM driver {d:?} is not supported (only default)"
        )));
    }
    let mut subnets = Vec::new();
    for p in ipam.config.unwrap_or_default() {
        let Some(subnet) = p.subnet.filter(|s| !s.is_empty()) else {
            if p.gateway.is_some() || p.ip_range.is_some() {
                return Err(ApiError::bad("a gateway or ip-range needs a subnet"));
            }
            continue;
        };
        let subnet = subnet
            .parse()
            .map_err(|_| ApiError::bad(format!("invalid subnet {subnet:?}")))?;
        let gateway = match p.gateway.filter(|g| !g.is_empty()) {
            Some(g) => Some(
                g.parse()
                    .map_err(|_| ApiError::bad(format!("invalid gateway {g:?}")))?,
            ),
            None => None,
        };
        let ip_range = match p.ip_range.filter(|r| !r.is_empty()) {
            Some(r) => Some(
                r.parse()
                    .map_err(|_| ApiError::bad(format!("invalid ip-range {r:?}")))?,
            ),
            None => None,
        };
        subnets.push(SubnetRequest {
            subnet,
            gateway,
            ip_range,
        });
    }
    let enable_ipv6 =
        b.enable_ipv6.unwrap_or(false) || subnets.iter().any(|s| s.subnet.network().is_ipv6());
    Ok(CreateOptions {
        name: b.name,
        driver: b.driver.filter(|d| !d.is_empty()),
        subnets,
        enable_ipv6,
        internal: b.internal,
        labels: b.labels.unwrap_or_default(),
        options: b.options.unwrap_or_default(),
    })
}

/// `POST /networks/create`.
pub async fn create(state: &Arc<ApiState>, body: Incoming) -> Result<ApiResponse, ApiError> {
    let bytes = body::collect(body, 1 << 20).await?;
    let opts = parse_create(&bytes)?;
    let st = Arc::clone(state);
    let n = blocking(move || {
        let net = networking(&st)?;
        net.manager().create_network(opts).map_err(api_error)
    })
    .await?;
    network_event(state, "create", &n);
    Ok(body::json(
        StatusCode::CREATED,
        &json!({"Id": n.id, "Warning": ""}),
    ))
}

fn network_event(state: &ApiState, action: &str, n: &Network) {
    let attributes = BTreeMap::from([
        ("name".to_string(), n.name.clone()),
        ("type".to_string(), n.driver.clone()),
    ]);
    state.events.publish("network", action, &n.id, attributes);
}

/// `DELETE /networks/{id}`.
pub async fn remove(state: &Arc<ApiState>, key: &str) -> Result<ApiResponse, ApiError> {
    if matches!(key, "host" | "none" | "bridge") {
        return Err(ApiError::Forbidden(format!(
            "{key} is a pre-defined network and cannot be removed"
        )));
    }
    let st = Arc::clone(state);
    let key = key.to_string();
    let n = blocking(move || {
        let net = networking(&st)?;
        let n = net.manager().inspect(&key).map_err(api_error)?;
        net.manager().remove_network(&n.id).map_err(|e| match e {
            NetworkError::InUse { .. } => {
                ApiError::Forbidden(format!("error while removing network: {}", chain(&e)))
            }
            e => api_error(e),
        })?;
        Ok(n)
    })
    .await?;
    network_event(state, "destroy", &n);
    Ok(body::empty(StatusCode::NO_CONTENT))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectBody {
    container: String,
    endpoint_config: Option<EndpointBody>,
    force: bool,
}

fn container_err(e: ContainerError) -> ApiError {
    let message = chain(&e);
    match e.http_status() {
        404 => ApiError::NotFound(message),
        403 => ApiError::Forbidden(message),
        409 => ApiError::Conflict(message),
        400 => ApiError::BadRequest(message),
        _ => ApiError::Internal(message),
    }
}

/// `POST /networks/{id}/connect` and `/disconnect`.
pub async fn connect(
    state: &Arc<ApiState>,
    key: &str,
    body: Incoming,
    connect: bool,
) -> Result<ApiResponse, ApiError> {
    let bytes = body::collect(body, 1 << 20).await?;
    let b: ConnectBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad(format!("invalid JSON in the request: {e}")))?;
    if b.container.is_empty() {
        return Err(ApiError::bad("a container is required"));
    }
    let _ = b.force;
    let st = Arc::clone(state);
    let key = key.to_string();
    blocking(move || {
        networking(&st)?;
        let svc = &st.containers;
        if connect {
            let eo = b.endpoint_config.unwrap_or_default().into_options();
            svc.connect(&b.container, &key, eo).map_err(container_err)
        } else {
            svc.disconnect(&b.container, &key).map_err(container_err)
        }
    })
    .await?;
    Ok(body::empty(StatusCode::OK))
}

/// `POST /networks/prune`.
pub async fn prune(state: &Arc<ApiState>, query: &Query) -> Result<ApiResponse, ApiError> {
    let filters = query.filters()?;
    filters.only(&["label", "until"])?;
    let st = Arc::clone(state);
    let deleted = blocking(move || {
        let net = networking(&st)?;
        let mut out = Vec::new();
        for n in net.manager().list() {
            if n.name == "bridge"
                || !n.endpoints.is_empty()
                || !filters.labels_match("label", &n.labels)
            {
                continue;
            }
            if net.manager().remove_network(&n.id).is_ok() {
                out.push(n.name);
            }
        }
        Ok(out)
    })
    .await?;
    Ok(body::json(
        StatusCode::OK,
        &json!({"NetworksDeleted": deleted}),
    ))
}
