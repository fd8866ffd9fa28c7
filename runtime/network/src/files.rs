//! A container's `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.

use std::net::IpAddr;

/// Inputs for a container's name-resolution files.
#[derive(Debug, Clone, Default)]
pub struct ResolverFiles {
    /// `--hostname` (defaults to the first 12 characters of the container id).
    pub hostname: String,
    /// `--domainname`, appended as `hostname.domain` in /etc/hosts when set.
    pub domainname: Option<String>,
    /// The container's own addresses (one line each in /etc/hosts).
    pub addresses: Vec<IpAddr>,
    /// `--add-host name:ip`.
    pub extra_hosts: Vec<(String, IpAddr)>,
    /// `--dns`: overrides every other nameserver.
    pub dns: Vec<IpAddr>,
    /// `--dns-search`.
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    pub dns_options: Vec<String>,
    /// The network's embedded DNS address (user-defined networks), if any.
    pub network_dns: Option<IpAddr>,
}

impl ResolverFiles {
    /// `/etc/hostname`.
    pub fn hostname_file(&self) -> String {
        format!("{}\n", self.hostname)
    }

    /// `/etc/hosts`: localhost entries, the container's own names, then `--add-host` lines.
    pub fn hosts_file(&self) -> String {
        let mut s = String::from(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
             ff02::2\tip6-allrouters\n",
        );
        for line in self.own_entries() {
            s.push_str(&line);
            s.push('\n');
        }
        for (name, ip) in &self.extra_hosts {
            s.push_str(&format!("{ip}\t{name}\n"));
        }
        s
    }

    /// The `/etc/hosts` lines (without newline) naming the container at each of its addresses:
    /// what joining a network adds and leaving it removes.
    pub fn own_entries(&self) -> Vec<String> {
        let names = match &self.domainname {
            Some(d) if !d.is_empty() => format!("{}.{} {}", self.hostname, d, self.hostname),
            _ => self.hostname.clone(),
        };
        self.addresses
            .iter()
            .map(|a| format!("{a}\t{names}"))
            .collect()
    }

    /// `/etc/resolv.conf`: `--dns` if given, else the network's DNS, else the host's resolvers
    /// minus loopback ones (unreachable from the container's namespace). The host's `search`
    /// and `options` lines are kept unless overridden.
    pub fn resolv_conf(&self, host_resolv_conf: &str) -> String {
        let mut servers: Vec<String> = self.dns.iter().map(|ip| ip.to_string()).collect();
        if servers.is_empty() {
            if let Some(ip) = self.network_dns {
                servers.push(ip.to_string());
            }
        }
        let mut search = Vec::new();
        let mut options = Vec::new();
        for line in host_resolv_conf.lines() {
            let mut it = line.split_whitespace();
            match it.next() {
                Some("nameserver") if self.dns.is_empty() && self.network_dns.is_none() => {
                    if let Some(ip) = it.next().and_then(|v| v.parse::<IpAddr>().ok()) {
                        if !ip.is_loopback() {
                            servers.push(ip.to_string());
                        }
                    }
                }
                Some("search") => search = it.map(str::to_string).collect(),
                Some("options") => options.extend(it.map(str::to_string)),
                _ => {}
            }
        }
        if !self.dns_search.is_empty() {
            search = self.dns_search.clone();
        }
        if !self.dns_options.is_empty() {
            options = self.dns_options.clone();
        }
        let mut s = String::new();
        for ns in servers {
            s.push_str(&format!("nameserver {ns}\n"));
        }
        if !search.is_empty() {
            s.push_str(&format!("search {}\n", search.join(" ")));
        }
        if !options.is_empty() {
            s.push_str(&format!("options {}\n", options.join(" ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_files() {
        let f = ResolverFiles {
            hostname: "web".into(),
            addresses: vec!["172.18.0.2".parse().expect("ip")],
            extra_hosts: vec![("db".into(), "10.0.0.9".parse().expect("ip"))],
            network_dns: Some("172.18.0.1".parse().expect("ip")),
            ..Default::default()
        };
        assert_eq!(f.hostname_file(), "web\n");
        let hosts = f.hosts_file();
        assert!(hosts.contains("172.18.0.2\tweb\n"), "{hosts}");
        assert!(hosts.contains("10.0.0.9\tdb\n"), "{hosts}");
        let host_conf = "nameserver 127.0.0.53\nnameserver 9.9.9.9\nsearch lan\n";
        assert_eq!(
            f.resolv_conf(host_conf),
            "nameserver 172.18.0.1\nsearch lan\n"
        );
        let plain = ResolverFiles {
            hostname: "x".into(),
            ..Default::default()
        };
        assert_eq!(
            plain.resolv_conf(host_conf),
            "nameserver 9.9.9.9\nsearch lan\n"
        );
        let over = ResolverFiles {
            dns: vec!["1.1.1.1".parse().expect("ip")],
            dns_search: vec!["corp".into()],
            ..plain
        };
        assert_eq!(
            over.resolv_conf(host_conf),
            "nameserver 1.1.1.1\nsearch corp\n"
        );
    }
}
