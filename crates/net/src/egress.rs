//! Egress for build jails: clones, module and package downloads.
//!
//! A build jail that needs the network never runs in the host's network namespace. It
//! gets a fresh namespace of its own with only loopback, where an HTTP proxy of the
//! server's listens (`127.0.0.1:3128`, named in `http_proxy`/`https_proxy`); git, go, pip
//! and npm all speak to it. The proxy lives in the server, outside the jail: it resolves
//! the name the tool asked for and connects only to public addresses — never to
//! loopback, private, link-local, shared (CGNAT), multicast or reserved ranges, nor to any
//! address of the host itself — unless the operator lists the host (`[git] allow_hosts`)
//! or named it as where downloads come from (an index, a registry, a module proxy; with
//! downloads allowed, the public ones: `Config::download_hosts`), which is reached by
//! name, on that port only, wherever the host's resolver points it.
//! So a repository cannot use the server to scan or reach the operator's network, and a
//! refusal sends nothing anywhere.
//!
//! The proxy understands `CONNECT host:port` (https, which is all that import paths and
//! registries use) and absolute-form plain-HTTP requests (an operator's `http://` mirror),
//! one request per connection. Request heads are parsed with `httparse`; the rest is
//! bytes copied both ways.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use skyisland_config::{AllowedHost, split_host_port, valid_host_name};
use skyisland_jail::FileSpec;
use skyisland_runner::{BoxFuture, JailNetwork};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Where the proxy listens inside a build jail's namespace.
pub const PROXY_ADDR: &str = "127.0.0.1:3128";
/// The environment that points git, go, pip and npm at the proxy.
pub fn proxy_env() -> Vec<String> {
    let url = format!("http://{PROXY_ADDR}");
    ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "npm_config_proxy", "npm_config_https_proxy"]
        .iter()
        .map(|key| format!("{key}={url}"))
        .chain(["no_proxy=".to_owned(), "NO_PROXY=".to_owned()])
        .collect()
}

const HEAD_LIMIT: usize = 16 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const HEAD_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether `ip` is an address anyone on the Internet could reach: not loopback, private,
/// link-local, shared, multicast, reserved, documentation or unspecified (IPv4-mapped and
/// NAT64 IPv6 addresses are judged by the IPv4 address they carry).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96): the IPv4 address in the low 32 bits.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
                return public_v4(Ipv4Addr::from(u128::from(v6) as u32));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard-only 100::/64
                || s[0..6] == [0; 6]) // IPv4-compatible and other ::/96 forms
        }
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || o[0] == 0 // "this network"
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || ip.is_documentation()
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || ip.is_multicast()
        || o[0] >= 240) // reserved and broadcast
}

/// Whether `ip` belongs to this host (binding to it succeeds only then).
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The egress proxy's policy, shared by every build jail.
#[derive(Debug)]
pub struct Egress {
    /// `[git] allow_hosts`.
    allow: Vec<AllowedHost>,
    /// Where the operator's configuration says downloads come from
    /// (`Config::download_hosts`): reached by name like `allow`, but no reason to accept
    /// an import path naming them.
    downloads: Vec<AllowedHost>,
}

impl Egress {
    pub fn new(allow: Vec<AllowedHost>, downloads: Vec<AllowedHost>) -> Arc<Egress> {
        Arc::new(Egress { allow, downloads })
    }

    /// Whether the operator lists `host` (for import paths naming an address or localhost).
    pub fn lists(&self, host: &str) -> bool {
        self.allow.iter().any(|a| a.names(host))
    }

    /// A network for one build jail: a fresh namespace with the proxy on its loopback.
    pub fn request(self: &Arc<Self>, label: &str) -> Box<dyn JailNetwork> {
        Box::new(EgressJail { egress: Arc::clone(self), label: label.to_owned(), task: None })
    }

    /// Where a request for `host:port` may connect: the addresses allowed, or why none.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let listed = self.allow.iter().chain(&self.downloads).any(|a| a.matches(host, port));
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        if literal.is_none() && !valid_host_name(host) {
            return Err(format!("{host:?} is not a host name"));
        }
        let addresses: Vec<SocketAddr> = match literal {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| format!("resolving {host} timed out"))?
                .map_err(|e| format!("resolving {host}: {e}"))?
                .collect(),
        };
        if listed {
            return Ok(addresses);
        }
        let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
            addresses.into_iter().partition(|a| is_public(a.ip()) && !is_local(a.ip()));
        if allowed.is_empty() {
            let shown: Vec<String> = refused.iter().map(|a| a.ip().to_string()).collect();
            return Err(format!(
                "{host} resolves to {} — not a public address; builds reach only public hosts unless the operator lists it in [git] allow_hosts",
                if shown.is_empty() { "nothing".to_owned() } else { shown.join(", ") }
            ));
        }
        Ok(allowed)
    }
}

/// One build jail's egress: its namespace and the proxy task listening in it.
struct EgressJail {
    egress: Arc<Egress>,
    label: String,
    task: Option<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for EgressJail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressJail").field("label", &self.label).finish_non_exhaustive()
    }
}

impl JailNetwork for EgressJail {
    fn files(&self) -> Vec<FileSpec> {
        // Names are resolved by the proxy: the jail needs no resolver.
        Vec::new()
    }

    fn prepare(&mut self) -> BoxFuture<'_, Result<(OwnedFd, String), String>> {
        Box::pin(async move {
            let ns = tokio::task::spawn_blocking(skyisland_jail::empty_network_namespace)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("create a network namespace: {e}"))?;
            let inner = crate::connection_in(Some(ns.try_clone().map_err(|e| e.to_string())?))
                .await
                .map_err(|e| e.to_string())?;
            crate::set_up(&inner, 1, "lo").await.map_err(|e| e.to_string())?;
            drop(inner);
            let listener = crate::inside(ns.try_clone().map_err(|e| e.to_string())?, || {
                let listener = std::net::TcpListener::bind(PROXY_ADDR)?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .await
            .map_err(|e| format!("listen on {PROXY_ADDR} in the build jail's namespace: {e}"))?;
            let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
            let egress = Arc::clone(&self.egress);
            let label = self.label.clone();
            self.task = Some(tokio::spawn(accept(listener, egress, label)).abort_handle());
            Ok((ns, PROXY_ADDR.to_owned()))
        })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(task) = self.task {
                task.abort();
            }
        })
    }
}

async fn accept(listener: TcpListener, egress: Arc<Egress>, label: String) {
    loop {
        let Ok((client, _)) = listener.accept().await else { return };
        let egress = Arc::clone(&egress);
        let label = label.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(client, &egress).await {
                tracing::debug!(build = %label, error = %e, "egress connection ended");
            }
        });
    }
}

/// What the client asked for.
struct Target {
    host: String,
    port: u16,
    /// For plain HTTP: the head to send upstream (origin-form, one request per connection).
    forward: Option<Vec<u8>>,
}

async fn serve(mut client: TcpStream, egress: &Egress) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(2048);
    let (target, body_start) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client, &mut buf)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => return refuse(&mut client, 400, "malformed or oversized request").await,
        Ok(Err(e)) => return Err(e),
        Err(_) => return refuse(&mut client, 408, "the request head took too long").await,
    };
    let addresses = match egress.resolve(&target.host, target.port).await {
        Ok(addresses) => addresses,
        Err(reason) => {
            metrics::counter!("skyisland_egress_connections_total", "result" => "refused").increment(1);
            tracing::warn!(host = %target.host, port = target.port, %reason, "egress refused");
            return refuse(&mut client, 403, &reason).await;
        }
    };
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addresses[..])).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            metrics::counter!("skyisland_egress_connections_total", "result" => "failed").increment(1);
            return refuse(&mut client, 502, &format!("connecting to {}:{}: {e}", target.host, target.port)).await;
        }
        Err(_) => {
            metrics::counter!("skyisland_egress_connections_total", "result" => "failed").increment(1);
            return refuse(&mut client, 504, &format!("connecting to {}:{} timed out", target.host, target.port)).await;
        }
    };
    metrics::counter!("skyisland_egress_connections_total", "result" => "allowed").increment(1);
    let mut upstream = upstream;
    match target.forward {
        None => client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?,
        Some(head) => upstream.write_all(&head).await?,
    }
    upstream.write_all(&buf[body_start..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

async fn refuse(client: &mut TcpStream, status: u16, reason: &str) -> std::io::Result<()> {
    let text = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        502 => "Bad Gateway",
        _ => "Gateway Timeout",
    };
    let body = format!("Sky Island egress: {reason}\n");
    let answer = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(answer.as_bytes()).await?;
    client.shutdown().await
}

/// Reads until the end of the request head; returns the target and where the body starts
/// in `buf`, or `None` for a head that is malformed or too long.
async fn read_head(client: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<(Target, usize)>> {
    loop {
        let mut chunk = [0u8; 2048];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buf) {
            Ok(httparse::Status::Complete(len)) => return Ok(parse_target(&request).map(|t| (t, len))),
            Ok(httparse::Status::Partial) if buf.len() < HEAD_LIMIT => continue,
            _ => return Ok(None),
        }
    }
}

fn parse_target(request: &httparse::Request<'_, '_>) -> Option<Target> {
    let (method, path) = (request.method?, request.path?);
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(path)?;
        return Some(Target { host: host.to_ascii_lowercase(), port: port?, forward: None });
    }
    // Absolute form: http://host[:port]/path
    let rest = path.strip_prefix("http://")?;
    let (authority, origin) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return None;
    }
    let (host, port) = split_host_port(authority)?;
    let mut head = format!("{method} {origin} HTTP/1.1\r\n").into_bytes();
    for header in request.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        if matches!(name.as_str(), "connection" | "proxy-connection" | "keep-alive" | "proxy-authorization") {
            continue;
        }
        head.extend_from_slice(header.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(header.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    Some(Target { host: host.to_ascii_lowercase(), port: port.unwrap_or(80), forward: Some(head) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "140.82.112.3", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn request_heads_name_their_target() {
        let parse = |head: &str| {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut request = httparse::Request::new(&mut headers);
            request.parse(head.as_bytes()).unwrap();
            parse_target(&request)
        };
        let t = parse("CONNECT github.com:443 HTTP/1.1\r\nHost: github.com:443\r\n\r\n").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.forward.is_none()), ("github.com", 443, true));
        let t = parse("GET http://Mirror.Example:8080/a/b.git/info/refs?x=1 HTTP/1.1\r\nHost: mirror.example:8080\r\nProxy-Connection: keep-alive\r\n\r\n").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("mirror.example", 8080));
        let head = String::from_utf8(t.forward.unwrap()).unwrap();
        assert!(head.starts_with("GET /a/b.git/info/refs?x=1 HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("Connection: close") && !head.contains("Proxy-Connection"), "{head}");
        assert!(parse("GET /relative HTTP/1.1\r\n\r\n").is_none());
        assert!(parse("GET http://user@host/ HTTP/1.1\r\n\r\n").is_none());
        assert!(parse("CONNECT host HTTP/1.1\r\n\r\n").is_none(), "a port is required");
    }

    #[tokio::test]
    async fn private_names_are_refused_unless_listed() {
        let egress = Egress::new(Vec::new(), Vec::new());
        let e = egress.resolve("localhost", 443).await.unwrap_err();
        assert!(e.contains("not a public address"), "{e}");
        assert!(egress.resolve("127.0.0.1", 443).await.is_err());
        assert!(egress.resolve("not a name", 443).await.is_err());
        let listed = Egress::new(vec!["localhost:8080".parse().unwrap()], Vec::new());
        assert!(listed.resolve("localhost", 8080).await.is_ok());
        assert!(listed.resolve("localhost", 8081).await.is_err(), "only the port listed");
        assert!(listed.lists("localhost"));
        // An index the operator named is reached, on its port only; it is no import path.
        let index = Egress::new(Vec::new(), vec!["localhost:8080".parse().unwrap()]);
        assert!(index.resolve("localhost", 8080).await.is_ok());
        assert!(index.resolve("localhost", 8081).await.is_err(), "only the index's port");
        assert!(index.resolve("127.0.0.1", 8080).await.is_err(), "by the name the operator gave");
        assert!(!index.lists("localhost"));
    }
}
