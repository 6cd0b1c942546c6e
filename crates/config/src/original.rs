//! The original Sky Island's JSON configuration (`skyisland -c config.json`), read into
//! ours. A JSON file is the original's format: its keys keep their meaning and map onto
//! ours; ours may sit beside them under their own names (a JSON file may say everything a
//! TOML file says); keys with no meaning on Linux (ZFS, the FreeBSD release, the host
//! interface jails took aliases on) are accepted and named in one warning.
//!
//! | original | ours |
//! |---|---|
//! | `http_port` | `listen = "0.0.0.0:PORT"` (the original listened on every address) |
//! | `admin_api_token`, `admin_token_header` | `admin.token`, `admin.header` |
//! | `jails.base_jail_dir` | `data_dir` |
//! | `jails.cache_default_expiration`, `jails.cache_purge_after` | `cache.default_expiration`, `cache.purge_after` |
//! | `jails.build_timeout`, `jails.exec_timeout` | the same |
//! | `network.ip4.start_addr`, `gateway`, `dns` | the same |
//! | `network.ip4.mask` | `network.ip4.cidr` (the start address's network) |
//! | `network.ip4.range` (the last address's final octet) | `network.ip4.range` (a count) |
//! | `go_version`, `release`, `base_sys_pkg_dir`, `filesystem.*`, `network.ip4.interface`, `jails.children_max`, `jails.monitoring_addr` | nothing (warned) |

use std::net::Ipv4Addr;

use serde_json::{Map, Value};

/// Keys of the original's that mean nothing here, with what takes their place.
const MEANINGLESS: &[(&str, &str)] = &[
    ("release", "the base root filesystem is the host's own /usr"),
    ("base_sys_pkg_dir", "the base root filesystem is the host's own /usr"),
    ("go_version", "toolchains are go.program and go.toolchains"),
    ("filesystem.zfs_dataset", "storage.backend chooses overlayfs or btrfs"),
    ("filesystem.compression", "storage.backend chooses overlayfs or btrfs"),
    ("network.ip4.interface", "jails are on a bridge of their own, network.ip4.bridge"),
    ("jails.children_max", "jails cannot make jails"),
    ("jails.monitoring_addr", "metrics are at /metrics and, with statsd_addr, sent to StatsD"),
];

/// The original's configuration (and any of our keys beside it), as our keys; and one
/// warning naming what was ignored, if anything was.
pub fn to_ours(text: &str) -> Result<(Map<String, Value>, Option<String>), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Value::Object(mut top) = without_nulls(value) else { return Err("expected a JSON object".into()) };
    let mut ignored = Vec::new();
    let mut ignore = |map: &mut Map<String, Value>, path: &str| {
        let name = path.rsplit('.').next().unwrap_or(path);
        if map.remove(name).is_some() {
            ignored.push(path.to_owned());
        }
    };
    for (path, _) in MEANINGLESS {
        match path.split('.').collect::<Vec<_>>().as_slice() {
            [_] => ignore(&mut top, path),
            [section, _] => {
                if let Some(Value::Object(map)) = top.get_mut(*section) {
                    ignore(map, path);
                }
            }
            [a, b, _] => {
                if let Some(Value::Object(map)) = top.get_mut(*a).and_then(|v| v.get_mut(*b)) {
                    ignore(map, path);
                }
            }
            _ => unreachable!("paths have one to three parts"),
        }
    }
    // `filesystem` held only what is ignored: an empty one goes; anything else in it is
    // an unknown key, reported as one.
    if top.get("filesystem").is_some_and(|f| f.as_object().is_some_and(Map::is_empty)) {
        top.remove("filesystem");
    }

    if let Some(port) = top.remove("http_port") {
        let port = port
            .as_u64()
            .filter(|p| *p <= u64::from(u16::MAX))
            .ok_or_else(|| format!("http_port must be a port number, not {port}"))?;
        set(&mut top, &["listen"], Value::String(format!("0.0.0.0:{port}")), "http_port")?;
    }
    if let Some(token) = top.remove("admin_api_token") {
        set(&mut top, &["admin", "token"], token, "admin_api_token")?;
    }
    if let Some(header) = top.remove("admin_token_header") {
        set(&mut top, &["admin", "header"], header, "admin_token_header")?;
    }
    if let Some(Value::Object(jails)) = top.get_mut("jails") {
        let moves: Vec<(&str, Value, &[&str])> = [
            ("base_jail_dir", &["data_dir"][..]),
            ("cache_default_expiration", &["cache", "default_expiration"][..]),
            ("cache_purge_after", &["cache", "purge_after"][..]),
        ]
        .into_iter()
        .filter_map(|(name, to)| jails.remove(name).map(|v| (name, v, to)))
        .collect();
        for (name, value, to) in moves {
            set(&mut top, to, value, &format!("jails.{name}"))?;
        }
    }
    if let Some(Value::Object(ip4)) = top.get_mut("network").and_then(|n| n.get_mut("ip4")) {
        original_pool(ip4)?;
    }
    let warning = (!ignored.is_empty()).then(|| {
        let reasons: Vec<String> = ignored
            .iter()
            .map(|key| {
                let why = MEANINGLESS.iter().find(|(k, _)| k == key).map_or("", |(_, why)| why);
                format!("{key} ({why})")
            })
            .collect();
        format!("ignoring the original's keys that mean nothing on Linux: {}", reasons.join(", "))
    });
    Ok((top, warning))
}

/// The original's pool: `mask` gives the network (our `cidr`) and `range` is the final
/// octet of the last address (the original counted from the start address's final octet
/// up to it), where ours is a count.
fn original_pool(ip4: &mut Map<String, Value>) -> Result<(), String> {
    let start = match ip4.get("start_addr") {
        Some(Value::String(s)) => {
            Some(s.parse::<Ipv4Addr>().map_err(|_| format!("network.ip4.start_addr {s:?} is not an IPv4 address"))?)
        }
        Some(other) => return Err(format!("network.ip4.start_addr must be an address, not {other}")),
        None => None,
    };
    if let Some(mask) = ip4.remove("mask") {
        if ip4.contains_key("cidr") {
            return Err("network.ip4.mask and network.ip4.cidr say the same: give one".into());
        }
        let text = mask.as_str().ok_or_else(|| format!("network.ip4.mask must be a string, not {mask}"))?;
        let bits =
            u32::from(text.parse::<Ipv4Addr>().map_err(|_| format!("network.ip4.mask {text:?} is not a netmask"))?);
        let prefix = bits.leading_ones();
        if bits.checked_shl(prefix).unwrap_or(0) != 0 {
            return Err(format!("network.ip4.mask {text:?} is not a netmask (its ones are not contiguous)"));
        }
        let start = start.ok_or("network.ip4.mask needs network.ip4.start_addr")?;
        let network = Ipv4Addr::from(u32::from(start) & bits);
        ip4.insert("cidr".into(), Value::String(format!("{network}/{prefix}")));
    }
    if let Some(range) = ip4.remove("range") {
        let last = range.as_u64().filter(|r| *r <= 255).ok_or_else(|| {
            format!("network.ip4.range must be the last address's final octet (0 to 255), not {range}")
        })?;
        let first = start.ok_or("network.ip4.range needs network.ip4.start_addr")?.octets()[3];
        // The original gave out the start address and each one after it up to `range`.
        let count = last.saturating_sub(u64::from(first)) + 1;
        ip4.insert("range".into(), Value::from(count));
    }
    Ok(())
}

/// A null means "not set", as an absent key does (and TOML has none).
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, without_nulls(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// Sets `path` in `top` to `value`, refusing when our key is given too.
fn set(top: &mut Map<String, Value>, path: &[&str], value: Value, from: &str) -> Result<(), String> {
    let (last, sections) = path.split_last().expect("a path has a key");
    let mut map = top;
    for section in sections {
        let entry = map.entry(section.to_string()).or_insert_with(|| Value::Object(Map::new()));
        map = entry.as_object_mut().ok_or_else(|| format!("{section} must be a table"))?;
    }
    if map.contains_key(*last) {
        return Err(format!("{from} and {} say the same: give one", path.join(".")));
    }
    map.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_example_maps_onto_ours() {
        let text = r#"{
            "release": "11.1-RELEASE", "http_port": 3280, "admin_api_token": "asdfasdfasdfasdf",
            "admin_token_header": "X-Sky-Island-Token", "go_version": "1.9.2",
            "base_sys_pkg_dir": "/tmp/11.1-RELEASE",
            "filesystem": {"zfs_dataset": "zroot", "compression": false},
            "network": {"ip4": {"interface": "em0", "start_addr": "192.168.0.20", "mask": "255.255.255.0",
                "range": 220, "gateway": "192.168.0.1", "dns": ["4.2.2.1", "4.2.2.2"]}},
            "jails": {"base_jail_dir": "/zroot/jails", "cache_default_expiration": "8h",
                "cache_purge_after": "24h", "children_max": 0, "monitoring_addr": "127.0.0.1",
                "build_timeout": "10s", "exec_timeout": "5s"}
        }"#;
        let (ours, warning) = to_ours(text).unwrap();
        assert_eq!(
            Value::Object(ours),
            serde_json::json!({
                "listen": "0.0.0.0:3280",
                "admin": {"token": "asdfasdfasdfasdf", "header": "X-Sky-Island-Token"},
                "data_dir": "/zroot/jails",
                "cache": {"default_expiration": "8h", "purge_after": "24h"},
                "network": {"ip4": {"start_addr": "192.168.0.20", "cidr": "192.168.0.0/24", "range": 201,
                    "gateway": "192.168.0.1", "dns": ["4.2.2.1", "4.2.2.2"]}},
                "jails": {"build_timeout": "10s", "exec_timeout": "5s"},
            })
        );
        let warning = warning.unwrap();
        for key in MEANINGLESS.iter().map(|(k, _)| k) {
            assert!(warning.contains(key), "{key}: {warning}");
        }
    }

    #[test]
    fn clashes_and_bad_values_are_named() {
        for (text, message) in [
            (r#"{"http_port": 1, "listen": "127.0.0.1:1"}"#, "http_port and listen"),
            (r#"{"http_port": 70000}"#, "http_port must be a port number"),
            (r#"{"jails": {"base_jail_dir": "/a"}, "data_dir": "/b"}"#, "jails.base_jail_dir and data_dir"),
            (r#"{"network": {"ip4": {"start_addr": "10.0.0.2", "mask": "255.0.255.0"}}}"#, "not contiguous"),
            (r#"{"network": {"ip4": {"mask": "255.255.255.0"}}}"#, "needs network.ip4.start_addr"),
            (r#"{"network": {"ip4": {"start_addr": "10.0.0.2", "range": 300}}}"#, "final octet"),
            ("[1]", "expected a JSON object"),
            ("{", "line 1 column 1"),
        ] {
            let error = to_ours(text).unwrap_err();
            assert!(error.contains(message), "{text}: {error}");
        }
        let (ours, warning) = to_ours(r#"{"network": {"ip4": {"start_addr": "10.0.0.9", "range": 3}}}"#).unwrap();
        assert_eq!(ours["network"]["ip4"]["range"], 1, "as the original: the start address alone");
        assert_eq!(warning, None);
    }
}
