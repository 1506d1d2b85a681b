//! Per-interface counters from `/proc/net/dev`.

use crate::config::NetworkConfig;
use crate::report::NetworkInterface;

pub fn parse_net_dev(text: &str) -> Vec<NetworkInterface> {
    text.lines()
        .filter_map(|line| {
            // Large counters can touch the colon ("eth0:123"), so split on it first.
            let (name, rest) = line.split_once(':')?;
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            if v.len() < 12 {
                return None;
            }
            Some(NetworkInterface {
                interface: name.trim().to_string(),
                bytes_recv: v[0],
                packets_recv: v[1],
                errors_in: v[2],
                drops_in: v[3],
                bytes_sent: v[8],
                packets_sent: v[9],
                errors_out: v[10],
                drops_out: v[11],
            })
        })
        .collect()
}

/// Glob match with `*` as the only wildcard (`veth*`, `*-int`, `docker*0`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(p) => rest = &rest[p + mid.len()..],
            None => return false,
        }
    }
    true
}

pub fn is_loopback(name: &str) -> bool {
    name == "lo"
}

pub fn keep_interface(name: &str, cfg: &NetworkConfig) -> bool {
    if is_loopback(name) && !cfg.include_loopback {
        return false;
    }
    if !cfg.include_interfaces.is_empty()
        && !cfg.include_interfaces.iter().any(|p| glob_match(p, name))
    {
        return false;
    }
    !cfg.exclude_interfaces.iter().any(|p| glob_match(p, name))
}

pub fn collect(cfg: &NetworkConfig, net_dev_text: &str) -> Vec<NetworkInterface> {
    parse_net_dev(net_dev_text)
        .into_iter()
        .filter(|i| keep_interface(&i.interface, cfg))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0
  eth0:234468309   10159    1    2    0     0          0         0   545192    5537    3    4    0     0       0          0
veth12ab:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
";

    #[test]
    fn parses_counters_including_glued_colon() {
        let v = parse_net_dev(NET_DEV);
        assert_eq!(v.len(), 3);
        let eth0 = &v[1];
        assert_eq!(eth0.interface, "eth0");
        assert_eq!(
            (
                eth0.bytes_recv,
                eth0.packets_recv,
                eth0.errors_in,
                eth0.drops_in
            ),
            (234468309, 10159, 1, 2)
        );
        assert_eq!(
            (
                eth0.bytes_sent,
                eth0.packets_sent,
                eth0.errors_out,
                eth0.drops_out
            ),
            (545192, 5537, 3, 4)
        );
    }

    #[test]
    fn loopback_is_excluded_by_default_and_patterns_apply() {
        let names = |cfg: &NetworkConfig| {
            collect(cfg, NET_DEV)
                .into_iter()
                .map(|i| i.interface)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&NetworkConfig::default()), vec!["eth0", "veth12ab"]);
        let cfg = NetworkConfig {
            exclude_interfaces: vec!["veth*".into()],
            include_loopback: true,
            ..Default::default()
        };
        assert_eq!(names(&cfg), vec!["lo", "eth0"]);
        let cfg = NetworkConfig {
            include_interfaces: vec!["eth*".into()],
            ..Default::default()
        };
        assert_eq!(names(&cfg), vec!["eth0"]);
    }

    #[test]
    fn glob() {
        assert!(glob_match("veth*", "veth12ab"));
        assert!(glob_match("*0", "docker0"));
        assert!(glob_match("d*r*0", "docker0"));
        assert!(glob_match("*", "anything"));
        assert!(!glob_match("eth*", "veth0"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("eth0", "eth0") && !glob_match("eth0", "eth01"));
    }
}
