//! Sky Island's configuration: one TOML schema with every key optional, the defaults in
//! one place (the `Default` impls below), and one validation path used by every command.

pub mod atomic;
pub mod original;
mod units;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use units::{Size, Span};

/// Why a configuration could not be used. Each message is one line naming the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    /// A JSON file (the original's format) that cannot be read as one.
    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },
    /// A value the types accept but the server cannot use; `message` starts with `key`.
    #[error("{origin}: {message}")]
    Invalid { origin: String, key: String, message: String },
}

impl ConfigError {
    /// The key a validation error is about.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// What [`Config::validate`] finds wrong, before it knows the file: the key and the rest.
#[derive(Debug)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl Invalid {
    fn new(key: impl Into<String>, rest: impl std::fmt::Display) -> Invalid {
        let key = key.into();
        Invalid { message: format!("{key} {rest}"), key }
    }

    /// The error, naming the file (or what else the configuration came from).
    pub fn at(self, origin: impl std::fmt::Display) -> ConfigError {
        ConfigError::Invalid { origin: origin.to_string(), key: self.key, message: self.message }
    }
}

/// Where an embedded default configuration comes from, in errors.
pub const DEFAULTS: &str = "(the embedded defaults)";

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Persistent state: the base root filesystem, the build jail's data, the caches.
    pub data_dir: PathBuf,
    /// Machine-wide runtime state shared by every Sky Island process on the host: jail
    /// slot locks and per-slot mount points. Lives on tmpfs so a reboot clears it.
    pub run_dir: PathBuf,
    pub admin: Admin,
    pub jails: Jails,
    pub storage: Storage,
    pub cgroup: Cgroup,
    pub git: Git,
    pub go: Go,
    pub build: Build,
    pub python: Python,
    pub node: Node,
    pub lua: Lua,
    pub limits: RequestLimits,
    pub network: Network,
    /// Where to send StatsD metrics (UDP), as the original did; unset, none are sent.
    pub statsd_addr: Option<SocketAddr>,
    /// Prefix (joined with a dot) of the StatsD metric names; empty for none.
    pub statsd_prefix: String,
    /// The server's log lines on stderr: `text` or `json` (one object per line). Either
    /// way, the lines of a request carry its id.
    pub log_format: LogFormat,
    pub cache: Cache,
    pub rate_limit: RateLimit,
    pub auth: Auth,
    pub circuit_breaker: CircuitBreaker,
    /// Asynchronous invocations, schedules and builds (`async` is a Rust keyword).
    #[serde(rename = "async")]
    pub asynchronous: Async,
    /// Git push webhooks (`POST /api/v1/hooks/git`).
    pub hooks: Hooks,
    /// Where asynchronous work is kept: this server's SQLite database, or Redis Streams
    /// shared by a cluster.
    pub queue: Queue,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 3280)),
            data_dir: PathBuf::from("/var/lib/skyisland"),
            run_dir: PathBuf::from("/run/skyisland"),
            admin: Admin::default(),
            jails: Jails::default(),
            storage: Storage::default(),
            cgroup: Cgroup::default(),
            git: Git::default(),
            go: Go::default(),
            build: Build::default(),
            python: Python::default(),
            node: Node::default(),
            lua: Lua::default(),
            limits: RequestLimits::default(),
            network: Network::default(),
            statsd_addr: None,
            statsd_prefix: String::new(),
            log_format: LogFormat::Text,
            cache: Cache::default(),
            rate_limit: RateLimit::default(),
            auth: Auth::default(),
            circuit_breaker: CircuitBreaker::default(),
            asynchronous: Async::default(),
            hooks: Hooks::default(),
            queue: Queue::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The admin API's credentials.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// The admin token. When unset, the server makes a random one at start-up and logs it.
    pub token: Option<String>,
    /// The request header that carries the token.
    pub header: String,
}

impl Default for Admin {
    fn default() -> Self {
        Admin { token: None, header: "X-Sky-Island-Token".into() }
    }
}

/// Limits of the execution jails (one per function call) and of the build jail.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jails {
    pub build_timeout: Span,
    pub exec_timeout: Span,
    /// Memory a function may use (the memory cgroup also carries `disk_limit`, because
    /// the jail's writable tmpfs is charged to it).
    pub memory_limit: Size,
    pub pids_limit: u32,
    /// Writable space of an execution jail's root filesystem.
    pub disk_limit: Size,
    /// Standard output and standard error kept per jail; more kills the jail.
    pub output_limit: Size,
    /// CPUs a jail may use (CFS quota); 0.5 is half a CPU.
    pub cpu_limit: f64,
    /// Execution jails that may run at once on this host (each has its own uid and cgroup).
    pub max_jails: u32,
    /// First uid of the jail range: the build jail runs as `uid_base`, execution slot `n`
    /// as `uid_base + 1 + n`. The range must not belong to real users.
    pub uid_base: u32,
    pub build_memory_limit: Size,
    pub build_pids_limit: u32,
    pub build_disk_limit: Size,
    /// Builds that may run at once.
    pub max_builds: u32,
    /// Execution jails kept set up and waiting for a call (per kind of jail), so that a
    /// call does not wait for a jail's setup; each serves one call. 0 turns this off.
    pub warm_jails: usize,
    /// Pre-started jails (a function's program already started in a fresh jail, waiting
    /// for its one call), all functions together. 0 turns pre-starting off.
    pub prestart_budget: u32,
    /// Memory of the pre-started jails together, each counted at `memory_limit`.
    pub prestart_memory: Size,
    /// Pre-started jails of one function at most.
    pub prestart_per_function: u32,
    /// A function not called for this long keeps no pre-started jail.
    pub prestart_idle: Span,
}

impl Default for Jails {
    fn default() -> Self {
        Jails {
            build_timeout: Span::secs(60),
            exec_timeout: Span::secs(5),
            memory_limit: Size::mib(256),
            pids_limit: 64,
            disk_limit: Size::mib(64),
            output_limit: Size::mib(1),
            cpu_limit: 1.0,
            max_jails: 32,
            uid_base: 1_000_000,
            build_memory_limit: Size::mib(2048),
            build_pids_limit: 1024,
            build_disk_limit: Size::mib(1024),
            max_builds: 2,
            warm_jails: 2,
            prestart_budget: 8,
            prestart_memory: Size::mib(2048),
            prestart_per_function: 4,
            prestart_idle: Span::secs(60),
        }
    }
}

/// Which copy-on-write mechanism clones the base root filesystem for each jail.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The read-only base as overlayfs lower layer, a per-jail tmpfs as the upper one.
    #[default]
    Overlay,
    /// A btrfs subvolume snapshot per jail (the analogue of a ZFS clone).
    Btrfs,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    pub backend: Backend,
    /// A directory on a btrfs filesystem holding the base subvolume, its read-only
    /// snapshot and the per-jail snapshots. Required by the btrfs backend.
    pub btrfs_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// v2 when `root` is a cgroup2 mount, v1 otherwise.
    #[default]
    Auto,
    V1,
    V2,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cgroup {
    pub version: CgroupVersion,
    /// Where the cgroup filesystems are mounted.
    pub root: PathBuf,
    /// The cgroup (below `root`, or below each v1 controller) holding the jail slots.
    pub parent: String,
}

impl Default for Cgroup {
    fn default() -> Self {
        Cgroup { version: CgroupVersion::Auto, root: "/sys/fs/cgroup".into(), parent: "skyisland".into() }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Git {
    /// The git program (run inside the build jail, from the host's /usr).
    pub program: PathBuf,
    /// Clone URL rewrites, longest matching prefix first, like git's `insteadOf`:
    /// `"https://github.com/" = "file:///srv/git/github.com/"`.
    pub url_rewrite: BTreeMap<String, String>,
    /// Hosts that clones and downloads may reach although they resolve to a private,
    /// loopback or link-local address, or to this host (`"git.internal"`,
    /// `"10.0.0.5:3000"`): by default builds reach public addresses only. Import paths
    /// whose host is an IP literal or `localhost` are refused unless listed here.
    pub allow_hosts: Vec<AllowedHost>,
}

impl Default for Git {
    fn default() -> Self {
        Git { program: "/usr/bin/git".into(), url_rewrite: BTreeMap::new(), allow_hosts: Vec::new() }
    }
}

/// A host name or IP literal, optionally with a port: `git.internal`, `10.0.0.5:3000`,
/// `[fd00::1]:443`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    /// Lowercase; an IPv6 literal without brackets.
    pub host: String,
    pub port: Option<u16>,
}

impl AllowedHost {
    /// Whether this entry allows `host` (as a client names it) on `port`.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.names(host) && self.port.is_none_or(|p| p == port)
    }

    /// Whether this entry names `host`, on any port.
    pub fn names(&self, host: &str) -> bool {
        self.host.eq_ignore_ascii_case(host.trim_start_matches('[').trim_end_matches(']'))
    }
}

/// `host[:port]`, `[v6]:port` or a bare IPv6 address, split.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            port => Some((host, Some(port.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port.parse().ok()?))),
        Some(_) => s.parse::<std::net::Ipv6Addr>().ok().map(|_| (s, None)),
        None => Some((s, None)),
    }
}

/// A DNS name: labels of letters, digits and '-', not starting or ending with '-'.
pub fn valid_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl std::str::FromStr for AllowedHost {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid host {s:?}: expected a host name or address, optionally with :port");
        let (host, port) = split_host_port(s).ok_or_else(bad)?;
        let host = host.to_ascii_lowercase();
        if host.is_empty() || !(host.parse::<std::net::IpAddr>().is_ok() || valid_host_name(&host)) {
            return Err(bad());
        }
        Ok(AllowedHost { host, port })
    }
}

impl std::fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.host.contains(':'), self.port) {
            (true, Some(port)) => write!(f, "[{}]:{port}", self.host),
            (false, Some(port)) => write!(f, "{}:{port}", self.host),
            (_, None) => f.write_str(&self.host),
        }
    }
}

impl<'de> Deserialize<'de> for AllowedHost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for AllowedHost {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Go {
    /// The Go toolchain's `go` command; a bare name is looked up on PATH. One of the
    /// toolchains, and the one that builds Sky Island's own generator.
    pub program: PathBuf,
    /// More toolchains beside `program`: `go` commands or GOROOTs, or patterns with `*` in
    /// one part (a pattern that matches nothing is not an error). Each module is built by
    /// the oldest toolchain its `go` (and `toolchain`) lines allow.
    pub toolchains: Vec<String>,
    /// The old name of `[build] allow_downloads` (either turns downloads on).
    pub allow_module_downloads: bool,
    /// A module proxy for builds (any GOPROXY value: `https://proxy.internal`,
    /// `file:///srv/goproxy`, a list). A file:// directory is bound read-only into the
    /// build jail; an http(s) one is reached through the egress proxy, by name, wherever
    /// it resolves (see [`Config::download_hosts`]). Unset: downloads (if allowed) use
    /// Go's default proxy.
    pub proxy: Option<String>,
    /// Go environment variables passed to builds: GOPRIVATE, GONOPROXY, GONOSUMDB,
    /// GOSUMDB, GOINSECURE, GOFLAGS (added to Sky Island's own) and GOAMD64.
    pub env: BTreeMap<String, String>,
    /// The binary cache's bound; least recently used binaries go first.
    pub binary_cache_size: Size,
    /// Memory for the most recently run binaries, kept as sealed in-memory copies that jails
    /// execute (so that a jail sees no host path, and no binary can be changed).
    pub binary_memory: Size,
    /// Bound on the repositories' checked-out sources kept for builds; least recently used
    /// commits go first.
    pub source_cache_size: Size,
}

impl Default for Go {
    fn default() -> Self {
        Go {
            program: "go".into(),
            toolchains: vec![format!("{DEFAULT_TOOLCHAINS}/*/go/bin/go")],
            allow_module_downloads: false,
            proxy: None,
            env: BTreeMap::new(),
            binary_cache_size: Size::mib(2048),
            binary_memory: Size::mib(256),
            source_cache_size: Size::mib(4096),
        }
    }
}

impl Config {
    /// Whether builds and dependency installs may download what they need: `[build]
    /// allow_downloads`, or its older, Go-only name `[go] allow_module_downloads`.
    pub fn allow_downloads(&self) -> bool {
        self.build.allow_downloads || self.go.allow_module_downloads
    }

    /// Where downloads come from, as the operator set it: the hosts (and ports) of the
    /// http(s) `[python] index_url` and `find_links`, `[node] registry` and `[go] proxy`
    /// entries, and — with downloads allowed — the public indexes pip, npm and go use where
    /// none is set (pypi.org and files.pythonhosted.org, registry.npmjs.org,
    /// proxy.golang.org and sum.golang.org, on 443). The egress proxy reaches these by
    /// name whatever address the host's resolver gives them (a mirror on a private
    /// network, as many sites resolve the public indexes to): no repository chose them.
    pub fn download_hosts(&self) -> Vec<AllowedHost> {
        let mut urls: Vec<&str> = Vec::new();
        urls.extend(self.python.index_url.as_deref());
        urls.extend(self.python.find_links.iter().map(String::as_str));
        urls.extend(self.node.registry.as_deref());
        urls.extend(self.go.proxy.iter().flat_map(|p| p.split([',', '|'])));
        let mut hosts: Vec<AllowedHost> = urls
            .into_iter()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .filter_map(|u| url::Url::parse(u).ok())
            .filter_map(|u| {
                let host = match u.host()? {
                    url::Host::Domain(name) => name.to_ascii_lowercase(),
                    url::Host::Ipv4(ip) => ip.to_string(),
                    url::Host::Ipv6(ip) => ip.to_string(),
                };
                Some(AllowedHost { host, port: Some(u.port_or_known_default()?) })
            })
            .collect();
        // PyPI's own index names files on another host.
        if hosts.iter().any(|h| h.host == "pypi.org") {
            hosts.push(AllowedHost { host: "files.pythonhosted.org".to_owned(), port: Some(443) });
        }
        if self.allow_downloads() {
            let mut public = Vec::new();
            if self.python.index_url.is_none() {
                public.extend(["pypi.org", "files.pythonhosted.org"]);
            }
            if self.node.registry.is_none() {
                public.push("registry.npmjs.org");
            }
            if self.go.proxy.is_none() {
                public.push("proxy.golang.org");
            }
            if !self.go.env.contains_key("GOSUMDB") {
                public.push("sum.golang.org");
            }
            hosts.extend(public.into_iter().map(|host| AllowedHost { host: host.to_owned(), port: Some(443) }));
        }
        hosts.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
        hosts.dedup();
        hosts
    }
}

/// What every runtime's build step shares.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Build {
    /// Let builds download modules and packages (Go modules, pip and npm installs): gives
    /// those build steps the egress proxy. `[go] allow_module_downloads` is its old name.
    pub allow_downloads: bool,
    /// Bound on the installed packages of Python and JavaScript functions (their sources
    /// and dependencies per commit); least recently used go first.
    pub artifact_cache_size: Size,
}

impl Default for Build {
    fn default() -> Self {
        Build { allow_downloads: false, artifact_cache_size: Size::mib(4096) }
    }
}

/// Python functions.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Python {
    /// The interpreter functions run with (and whose pip installs their dependencies); it
    /// must live under /usr. Missing: Python functions are refused with a clear message.
    pub program: PathBuf,
    /// A package index for dependency installs (pip's `--index-url`): an http(s) URL
    /// (reached through the egress proxy, by name, wherever it resolves: see
    /// [`Config::download_hosts`]) or a local directory (`file:///srv/pypi`, bound
    /// read-only).
    pub index_url: Option<String>,
    /// Directories (or URLs) of distributions (pip's `--find-links`); local ones bound read-only.
    pub find_links: Vec<String>,
}

impl Default for Python {
    fn default() -> Self {
        Python { program: "/usr/bin/python3".into(), index_url: None, find_links: Vec::new() }
    }
}

/// JavaScript functions (Node.js).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Node {
    /// The `node` functions run with; it must live under /usr.
    pub program: PathBuf,
    /// npm, which installs dependencies in the build jail; under /usr.
    pub npm: PathBuf,
    /// An npm registry for dependency installs (http(s), through the egress proxy, by
    /// name, wherever it resolves: see [`Config::download_hosts`]).
    pub registry: Option<String>,
    /// Run packages' install scripts (`preinstall`, `postinstall`, …). Off: installs run
    /// with `--ignore-scripts`.
    pub install_scripts: bool,
}

impl Default for Node {
    fn default() -> Self {
        Node { program: "/usr/bin/node".into(), npm: "/usr/bin/npm".into(), registry: None, install_scripts: false }
    }
}

/// Lua functions.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lua {
    /// The Lua 5.4 interpreter functions run with; under /usr.
    pub program: PathBuf,
}

impl Default for Lua {
    fn default() -> Self {
        Lua { program: "/usr/bin/lua5.4".into() }
    }
}

/// Where `scripts/setup.sh` installs Go toolchains beside the distribution's.
pub const DEFAULT_TOOLCHAINS: &str = "/opt/skyisland/toolchains";

/// The Go environment variables `[go] env` may set.
pub const GO_ENV_ALLOWED: [&str; 7] =
    ["GOPRIVATE", "GONOPROXY", "GONOSUMDB", "GOSUMDB", "GOINSECURE", "GOFLAGS", "GOAMD64"];

/// Networks for jails. Without `[network.ip4]`, no jail has a network.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    pub ip4: Option<Ip4>,
}

/// The IPv4 pool and the bridge that jails asking for `ip4` are connected to.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ip4 {
    /// The bridge; created if missing, its address the gateway.
    pub bridge: String,
    /// The pool's network.
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The pool: `range` addresses from `start_addr`.
    pub start_addr: Ipv4Addr,
    pub range: u32,
    /// Written to the jails' /etc/resolv.conf.
    pub dns: Vec<Ipv4Addr>,
    /// Masquerade the jails' traffic out of the host.
    pub nat: bool,
    /// Let jails on the bridge reach each other (off: the bridge isolates their ports).
    pub jail_to_jail: bool,
    /// A network namespace (a file such as `/run/netns/NAME`) to put the bridge and the
    /// host ends of the jails' links in, instead of the server's own.
    pub netns: Option<PathBuf>,
    /// An address's network namespace (its link, address and route) is made the first time
    /// the address is leased and kept for the jails that hold it after; unused this long,
    /// it is taken down.
    pub keep_idle: Span,
    /// What jails may reach of the host and of private networks, beyond DNS to the `dns`
    /// servers: `"ADDR[/PREFIX][:PORT/PROTO]"`, e.g. `"10.213.0.1:8080/tcp"`,
    /// `"192.168.7.0/24"`. Everything else of the host (any of its addresses) and of the
    /// private, loopback and link-local ranges is refused (nftables rules made at start-up).
    pub allow: Vec<EgressRule>,
}

/// One exception to the jails' egress rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressRule {
    pub net: Ipv4Net,
    /// A port and its protocol, or every port of every protocol.
    pub port: Option<(u16, Protocol)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl std::str::FromStr for EgressRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid rule {s:?}: expected ADDR[/PREFIX][:PORT/PROTO], e.g. \"10.213.0.1:53/udp\"");
        let (net, port) = match s.split_once(':') {
            Some((net, port)) => {
                let (port, proto) = port.split_once('/').ok_or_else(bad)?;
                let proto = match proto {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    _ => return Err(bad()),
                };
                (net, Some((port.parse().map_err(|_| bad())?, proto)))
            }
            None => (s, None),
        };
        let net = if net.contains('/') {
            net.parse::<Ipv4Net>().map_err(|_| bad())?
        } else {
            Ipv4Net { addr: net.parse().map_err(|_| bad())?, prefix: 32 }
        };
        Ok(EgressRule { net, port })
    }
}

impl std::fmt::Display for EgressRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.net)?;
        if let Some((port, proto)) = self.port {
            write!(f, ":{port}/{proto}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for EgressRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for EgressRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Default for Ip4 {
    fn default() -> Self {
        Ip4 {
            bridge: "skyisland0".into(),
            cidr: Ipv4Net { addr: Ipv4Addr::new(10, 213, 0, 0), prefix: 24 },
            gateway: Ipv4Addr::new(10, 213, 0, 1),
            start_addr: Ipv4Addr::new(10, 213, 0, 20),
            range: 200,
            dns: vec![Ipv4Addr::new(10, 213, 0, 1)],
            nat: false,
            jail_to_jail: false,
            netns: None,
            keep_idle: Span::secs(60),
            allow: Vec::new(),
        }
    }
}

/// An IPv4 network written as `"10.213.0.0/24"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = self.mask();
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }

    pub fn mask(&self) -> u32 {
        if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) }
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("invalid network {s:?}: expected an address and a prefix length such as \"10.213.0.0/24\"");
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Ipv4Net { addr, prefix })
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Bounds on what requests may ask of the server.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLimits {
    /// Largest request body accepted.
    pub max_body: Size,
    /// Longest `call` accepted.
    pub max_call: Size,
    /// Function requests this server works on at once (cache hits included).
    pub max_in_flight: usize,
    /// Requests that may wait for one of those places, and builds or runs that may wait
    /// for a slot; more are refused with 503.
    pub max_queue: usize,
    /// At shutdown (SIGTERM), how long running requests get to finish before their jails
    /// are killed.
    pub drain: Span,
    /// How long a client gets to send a request's headers, and then its body; slower
    /// clients are disconnected. Also how long an idle keep-alive connection stays open.
    pub client_timeout: Span,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_body: Size::kib(64),
            max_call: Size::kib(4),
            max_in_flight: 64,
            max_queue: 256,
            drain: Span::secs(10),
            client_timeout: Span::secs(10),
        }
    }
}

/// The request cache (results of identical calls) and the Redis tier shared by servers.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// Whether a request that does not say (`"cache": true|false`) is served from and
    /// stored in the request cache. Functions are not always pure: turn it off if yours
    /// are not.
    pub request_cache: bool,
    /// How long a result is served from the cache.
    pub default_expiration: Span,
    /// How often expired results are dropped from memory.
    pub purge_after: Span,
    /// Memory the request cache may use on this server; least recently used results go first.
    pub max_memory: Size,
    /// A Redis server (`redis://host:port/db`) through which several servers share their
    /// results and built binaries. Unset, every server keeps its own.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this server uses.
    pub redis_prefix: String,
    /// How long a built binary stays in Redis.
    pub binary_expiration: Span,
    /// A `cache_bust` drops a repository's clone and binaries (so the next call fetches and
    /// builds) at most once this often; one sooner drops its cached results only.
    pub bust_interval: Span,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            request_cache: true,
            default_expiration: Span::secs(8 * 3600),
            purge_after: Span::secs(24 * 3600),
            max_memory: Size::mib(64),
            redis_url: None,
            redis_prefix: "skyisland".into(),
            binary_expiration: Span::secs(7 * 24 * 3600),
            bust_interval: Span::secs(10),
        }
    }
}

/// Token buckets for the function endpoint, one per client address and one per API key.
/// Off unless `per_second` is set.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    /// Requests per second each client address (and each API key) may make, on average.
    pub per_second: Option<f64>,
    /// Requests that may come at once after a quiet period; defaults to `per_second`
    /// rounded up.
    pub burst: Option<u32>,
}

impl RateLimit {
    /// The bucket size: `burst`, or `per_second` rounded up.
    pub fn burst_or_default(&self, per_second: f64) -> u32 {
        self.burst.unwrap_or_else(|| per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)
    }
}

/// API keys for the function endpoint (the admin endpoints have the admin token).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Require an API key on `POST /api/v1/function`.
    pub api_keys_required: bool,
    /// Keys given here, in addition to the hashed ones kept in the data directory
    /// (`skyisland api-key new`).
    pub api_keys: Vec<String>,
    /// The header that carries a key, besides `Authorization: Bearer KEY`.
    pub key_header: String,
}

impl Default for Auth {
    fn default() -> Self {
        Auth { api_keys_required: false, api_keys: Vec::new(), key_header: "X-Sky-Island-Key".into() }
    }
}

/// Per repository: after `failures` clone or build failures in a row, requests for it
/// fail at once for `cool_down`, then one trial request is let through.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreaker {
    /// 0 turns the breaker off.
    pub failures: u32,
    pub cool_down: Span,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker { failures: 5, cool_down: Span::secs(30) }
    }
}

/// Asynchronous invocations (`"async": true`), schedules and builds: kept in an embedded
/// SQLite database in the data directory, run by this server's workers.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Async {
    /// Invocations and builds run at once, at most; each takes one only while an
    /// execution slot is free, so synchronous calls keep priority. 0 runs none (they stay
    /// queued).
    pub workers: u32,
    /// Attempts an invocation gets when it ends in a 5xx that is not its own doing (a
    /// timeout, an overloaded server, a server that stopped under it).
    pub max_attempts: u32,
    /// The wait before the second attempt; doubled for each further one (at most a minute).
    pub retry_backoff: Span,
    /// How long a finished invocation or build (and its idempotency key) is kept.
    pub keep_results: Span,
    /// URL prefixes (`scheme://host[:port][/path]`) that `callback_url` may start with;
    /// empty, no callback is accepted. Callbacks are never sent anywhere else, and
    /// redirects are not followed.
    pub callback_allow: Vec<String>,
    /// Attempts to deliver a callback (with backoff from one second, doubled each time).
    pub callback_attempts: u32,
    /// Queued invocations and builds, at most; more are refused with 503.
    pub max_queued: u32,
}

impl Default for Async {
    fn default() -> Self {
        Async {
            workers: 2,
            max_attempts: 3,
            retry_backoff: Span::secs(1),
            keep_results: Span::secs(7 * 24 * 3600),
            callback_allow: Vec::new(),
            callback_attempts: 5,
            max_queued: 10_000,
        }
    }
}

/// The engine of asynchronous work.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// `auto`: Redis when `redis_url` or `[cache] redis_url` is set, else the embedded
    /// SQLite database; or `sqlite`, or `redis`.
    pub backend: QueueBackend,
    /// A Redis server for the queue other than `[cache] redis_url`.
    pub redis_url: Option<String>,
    /// With Redis: a job whose server has not said it is still working on it for this long
    /// is taken over by another (its attempt counted as cut short). Servers say so every
    /// third of it.
    pub visibility_timeout: Span,
}

impl Default for Queue {
    fn default() -> Self {
        Queue { backend: QueueBackend::Auto, redis_url: None, visibility_timeout: Span::secs(30) }
    }
}

impl Queue {
    /// The Redis server to queue through, if any.
    pub fn redis_url<'a>(&'a self, cache: &'a Cache) -> Option<&'a str> {
        match self.backend {
            QueueBackend::Sqlite => None,
            QueueBackend::Auto | QueueBackend::Redis => self.redis_url.as_deref().or(cache.redis_url.as_deref()),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    #[default]
    Auto,
    Sqlite,
    Redis,
}

/// Git push webhooks: the secrets their HMAC signatures are checked with.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    /// The secret for repositories not listed in `secrets`; unset, only those are accepted.
    pub secret: Option<String>,
    /// Per repository (its import path, e.g. `github.com/user/repo`): its secret.
    pub secrets: BTreeMap<String, String>,
}

impl Config {
    /// Reads and validates a configuration file, or returns the embedded defaults; with
    /// the warnings to show (for keys of the original's that mean nothing here). A file
    /// whose text starts with `{` is the original's JSON format ([`original`]); any other
    /// is TOML.
    pub fn load(path: Option<&Path>) -> Result<(Config, Vec<String>), ConfigError> {
        let Some(path) = path else {
            let config = Config::default();
            config.validate().map_err(|e| e.at(DEFAULTS))?;
            return Ok((config, Vec::new()));
        };
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        if is_json(&text) {
            let (config, warning) = Config::parse_json(&text, path)?;
            return Ok((config, warning.into_iter().map(|w| format!("{}: {w}", path.display())).collect()));
        }
        Ok((Config::parse(&text, path)?, Vec::new()))
    }

    /// Reads the original's JSON configuration (see [`original`]): the configuration and
    /// the warning naming the keys ignored.
    pub fn parse_json(text: &str, origin: &Path) -> Result<(Config, Option<String>), ConfigError> {
        let (ours, warning) = Config::json_to_ours(text, origin)?;
        let config: Config = serde_json::from_value(serde_json::Value::Object(ours))
            .map_err(|e| ConfigError::Json { path: origin.to_owned(), message: e.to_string() })?;
        config.validate().map_err(|e| e.at(origin.display()))?;
        Ok((config, warning))
    }

    /// The original's JSON configuration as the equivalent TOML (only what the file sets,
    /// so our defaults still apply to the rest), after checking that it is valid.
    pub fn convert_json(text: &str, origin: &Path) -> Result<String, ConfigError> {
        let (_, warning) = Config::parse_json(text, origin)?;
        let (ours, _) = Config::json_to_ours(text, origin)?;
        let toml = toml::to_string(&serde_json::Value::Object(ours))
            .map_err(|e| ConfigError::Json { path: origin.to_owned(), message: e.to_string() })?;
        let mut out = format!("# Converted from {} by `skyisland config convert`.\n", origin.display());
        if let Some(warning) = warning {
            out.push_str(&format!("# {warning}\n"));
        }
        out.push('\n');
        out.push_str(&toml);
        Ok(out)
    }

    fn json_to_ours(
        text: &str,
        origin: &Path,
    ) -> Result<(serde_json::Map<String, serde_json::Value>, Option<String>), ConfigError> {
        original::to_ours(text).map_err(|message| ConfigError::Json { path: origin.to_owned(), message })
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |span| span.start);
            let (line, column) = line_column(text, offset);
            let mut message = e.message().trim().replace('\n', " ");
            if let Some(key) =
                key_at(text, offset).filter(|key| !message.contains(key.rsplit('.').next().unwrap_or(key)))
            {
                message = format!("{key}: {message}");
            }
            ConfigError::Parse { path: origin.to_owned(), line, column, message }
        })?;
        config.validate().map_err(|e| e.at(origin.display()))?;
        Ok(config)
    }

    /// Checks what the types alone cannot, and bounds every number to what the code can
    /// carry. The one validation path: command-line flags are applied to the `Config` and
    /// checked here too.
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |key: &str, rest: String| Err(Invalid::new(key, rest));
        const DAY: u64 = 24 * 3600;
        let j = &self.jails;
        for (key, span, max) in [
            ("jails.exec_timeout", j.exec_timeout, 24 * 3600),
            ("jails.build_timeout", j.build_timeout, 24 * 3600),
            ("limits.client_timeout", self.limits.client_timeout, 3600),
            ("cache.default_expiration", self.cache.default_expiration, 366 * DAY),
            ("cache.purge_after", self.cache.purge_after, 366 * DAY),
            ("cache.binary_expiration", self.cache.binary_expiration, 366 * DAY),
            ("circuit_breaker.cool_down", self.circuit_breaker.cool_down, DAY),
            ("async.retry_backoff", self.asynchronous.retry_backoff, 3600),
            ("async.keep_results", self.asynchronous.keep_results, 366 * DAY),
            ("queue.visibility_timeout", self.queue.visibility_timeout, DAY),
        ] {
            if span.get().is_zero() || span.get() > std::time::Duration::from_secs(max) {
                return bad(key, format!("must be longer than zero and at most {}, not {span}", Span::secs(max)));
            }
        }
        for (key, span, max) in
            [("limits.drain", self.limits.drain, 3600), ("cache.bust_interval", self.cache.bust_interval, 366 * DAY)]
        {
            if span.get() > std::time::Duration::from_secs(max) {
                return bad(key, format!("must be at most {}, not {span}", Span::secs(max)));
            }
        }
        // Package sources: an http(s) URL, or a local directory (file:// or a path).
        let source_ok = |url: &str| {
            url.starts_with("http://")
                || url.starts_with("https://")
                || url.strip_prefix("file://").unwrap_or(url).starts_with('/')
        };
        let sources = self.python.index_url.iter().map(|u| ("python.index_url", u.as_str()));
        let links = self.python.find_links.iter().map(|u| ("python.find_links", u.as_str()));
        for (key, url) in sources.chain(links) {
            if !source_ok(url) || url.chars().any(char::is_whitespace) {
                return bad(
                    key,
                    format!("{url:?} must be an http(s) URL or a local directory (file:// or an absolute path)"),
                );
            }
        }
        if let Some(registry) = &self.node.registry
            && (!(registry.starts_with("http://") || registry.starts_with("https://"))
                || registry.chars().any(char::is_whitespace))
        {
            return bad("node.registry", format!("{registry:?} must be an http(s) URL"));
        }
        for (key, program) in [
            ("python.program", &self.python.program),
            ("node.program", &self.node.program),
            ("node.npm", &self.node.npm),
            ("lua.program", &self.lua.program),
        ] {
            if !program.is_absolute() {
                return bad(key, format!("{} must be an absolute path (under /usr)", program.display()));
            }
        }
        if !(1..=4096).contains(&j.max_jails) {
            return bad("jails.max_jails", format!("must be between 1 and 4096, not {}", j.max_jails));
        }
        if j.warm_jails > j.max_jails as usize {
            return bad(
                "jails.warm_jails",
                format!("({}) cannot exceed jails.max_jails ({})", j.warm_jails, j.max_jails),
            );
        }
        // (A budget above max_jails is not refused: pre-starting never takes the last free
        // slot, so the slots bound it anyway.)
        if j.prestart_budget > 4096 {
            return bad("jails.prestart_budget", format!("must be at most 4096, not {}", j.prestart_budget));
        }
        if j.prestart_per_function == 0 || j.prestart_per_function > 256 {
            return bad(
                "jails.prestart_per_function",
                format!("must be between 1 and 256, not {}", j.prestart_per_function),
            );
        }
        if j.prestart_idle.get().is_zero() || j.prestart_idle.get() > std::time::Duration::from_secs(24 * 3600) {
            return bad(
                "jails.prestart_idle",
                format!("must be longer than zero and at most 1d, not {}", j.prestart_idle),
            );
        }
        if !(1..=256).contains(&j.max_builds) {
            return bad("jails.max_builds", format!("must be between 1 and 256, not {}", j.max_builds));
        }
        if j.uid_base < 1000 || u64::from(j.uid_base) + u64::from(j.max_jails) + 1 >= 1 << 31 {
            return bad(
                "jails.uid_base",
                format!(
                    "{} must be at least 1000 and leave room for jails.max_jails ({}) jail uids below 2^31",
                    j.uid_base, j.max_jails
                ),
            );
        }
        for (key, pids) in [("jails.pids_limit", j.pids_limit), ("jails.build_pids_limit", j.build_pids_limit)] {
            if !(1..=4_194_304).contains(&pids) {
                return bad(key, format!("must be between 1 and 4194304, not {pids}"));
            }
        }
        const TIB: u64 = 1 << 40;
        for (key, size, min, max) in [
            ("jails.memory_limit", j.memory_limit, Size::mib(8), Size(TIB)),
            ("jails.build_memory_limit", j.build_memory_limit, Size::mib(64), Size(TIB)),
            ("jails.disk_limit", j.disk_limit, Size::kib(64), Size(TIB)),
            ("jails.build_disk_limit", j.build_disk_limit, Size::mib(16), Size(TIB)),
            ("jails.output_limit", j.output_limit, Size(1), Size::mib(1024)),
            ("limits.max_body", self.limits.max_body, Size::kib(1), Size::mib(1024)),
            ("cache.max_memory", self.cache.max_memory, Size(0), Size(TIB)),
            ("go.binary_cache_size", self.go.binary_cache_size, Size::mib(1), Size(64 * TIB)),
            ("build.artifact_cache_size", self.build.artifact_cache_size, Size::mib(1), Size(64 * TIB)),
            ("go.binary_memory", self.go.binary_memory, Size::mib(1), Size(TIB)),
            ("go.source_cache_size", self.go.source_cache_size, Size::mib(1), Size(64 * TIB)),
        ] {
            if size < min || size > max {
                return bad(key, format!("must be between {min} and {max}, not {size}"));
            }
        }
        if !(j.cpu_limit.is_finite() && (0.01..=1024.0).contains(&j.cpu_limit)) {
            return bad("jails.cpu_limit", format!("must be a number of CPUs from 0.01 to 1024, not {}", j.cpu_limit));
        }
        if self.storage.backend == Backend::Btrfs && self.storage.btrfs_dir.is_none() {
            return bad("storage.btrfs_dir", "is required by storage.backend = \"btrfs\"".into());
        }
        let header = &self.admin.header;
        if header.is_empty()
            || header.len() > 256
            || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("admin.header", format!("{header:?} is not a valid HTTP header name"));
        }
        if let Some(token) = &self.admin.token
            && (token.len() < 8 || token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return bad("admin.token", "must be 8 to 4096 printable characters without spaces".into());
        }
        let parent = &self.cgroup.parent;
        if parent.is_empty() || parent.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
            return bad("cgroup.parent", format!("{parent:?} must be a relative cgroup path"));
        }
        for (from, to) in &self.git.url_rewrite {
            if from.is_empty() || to.is_empty() {
                return bad("git.url_rewrite", "entries must not be empty".into());
            }
        }
        if let Some(ip4) = &self.network.ip4 {
            ip4.validate()?;
        }
        for pattern in &self.go.toolchains {
            let stars = pattern.matches('*').count();
            let partial = pattern.split('/').any(|part| part.contains('*') && part != "*");
            if !pattern.starts_with('/') || stars > 1 || partial || pattern.split('/').any(|part| part == "..") {
                return bad(
                    "go.toolchains",
                    format!(
                        "{pattern:?} must be an absolute path, with at most one `*` standing for a whole directory name"
                    ),
                );
            }
        }
        if let Some(proxy) = &self.go.proxy
            && (proxy.is_empty() || proxy.contains(char::is_whitespace))
        {
            return bad(
                "go.proxy",
                format!(
                    "{proxy:?} must be a GOPROXY value such as \"https://proxy.internal\" or \"file:///srv/goproxy\""
                ),
            );
        }
        for (name, value) in &self.go.env {
            if !GO_ENV_ALLOWED.contains(&name.as_str()) {
                return bad(
                    "go.env",
                    format!(
                        "cannot set {name}: only {} may be set (the rest keep builds isolated and reproducible)",
                        GO_ENV_ALLOWED.join(", ")
                    ),
                );
            }
            if value.contains(['\0', '\n']) || value.len() > 4096 {
                return bad("go.env", format!("{name} must be one line of at most 4096 bytes"));
            }
        }
        let a = &self.asynchronous;
        for (key, value, range) in [
            ("async.workers", a.workers, 0..=1024),
            ("async.max_attempts", a.max_attempts, 1..=100),
            ("async.callback_attempts", a.callback_attempts, 1..=100),
            ("async.max_queued", a.max_queued, 1..=10_000_000),
        ] {
            if !range.contains(&value) {
                return bad(key, format!("must be between {} and {}, not {value}", range.start(), range.end()));
            }
        }
        if self.queue.backend == QueueBackend::Redis && self.queue.redis_url(&self.cache).is_none() {
            return bad("queue.backend", "is redis, but neither queue.redis_url nor cache.redis_url is set".into());
        }
        for prefix in &a.callback_allow {
            if let Err(why) = CallbackPrefix::parse(prefix) {
                return bad("async.callback_allow", format!("has {prefix:?}: {why}"));
            }
        }
        // A call's literals travel to the jail in one message of the spawner's (1 MiB).
        if self.limits.max_call < Size(16) || self.limits.max_call > self.limits.max_body.min(Size::kib(64)) {
            return bad(
                "limits.max_call",
                format!(
                    "must be at least 16B and at most limits.max_body ({}) and 64KiB, not {}",
                    self.limits.max_body, self.limits.max_call
                ),
            );
        }
        if !(1..=100_000).contains(&self.limits.max_in_flight) {
            return bad(
                "limits.max_in_flight",
                format!("must be between 1 and 100000, not {}", self.limits.max_in_flight),
            );
        }
        if self.limits.max_queue > 1_000_000 {
            return bad("limits.max_queue", format!("must be at most 1000000, not {}", self.limits.max_queue));
        }
        let cache = &self.cache;
        if let Some(url) = &cache.redis_url {
            let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|s| url.starts_with(s));
            if !scheme_ok {
                return bad("cache.redis_url", format!("{url:?} must start with redis://, rediss:// or unix://"));
            }
        }
        if cache.redis_prefix.is_empty()
            || cache.redis_prefix.len() > 256
            || cache.redis_prefix.contains(char::is_whitespace)
        {
            return bad("cache.redis_prefix", format!("{:?} must be a non-empty word", cache.redis_prefix));
        }
        validate_rate(
            ["rate_limit.per_second", "rate_limit.burst"],
            self.rate_limit.per_second,
            self.rate_limit.burst,
        )?;
        let key_header = &self.auth.key_header;
        if key_header.is_empty()
            || key_header.len() > 256
            || !key_header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("auth.key_header", format!("{key_header:?} is not a valid HTTP header name"));
        }
        if let Some(short) = self
            .auth
            .api_keys
            .iter()
            .find(|k| k.len() < 16 || k.len() > 4096 || !k.bytes().all(|b| b.is_ascii_graphic()))
        {
            let shown: String = short.chars().take(4).collect();
            return bad(
                "auth.api_keys",
                format!("the key starting {shown:?} must be 16 to 4096 printable characters without spaces"),
            );
        }
        if self.circuit_breaker.failures > 1_000_000 {
            return bad(
                "circuit_breaker.failures",
                format!("must be at most 1000000, not {}", self.circuit_breaker.failures),
            );
        }
        if self.statsd_prefix.len() > 256
            || self.statsd_prefix.contains(|c: char| c.is_whitespace() || c == ':' || c == '|')
        {
            return bad("statsd_prefix", format!("{:?} must not contain spaces, ':' or '|'", self.statsd_prefix));
        }
        for (key, path) in [("data_dir", &self.data_dir), ("run_dir", &self.run_dir)] {
            if !path.is_absolute() {
                return bad(key, format!("must be an absolute path, not {}", path.display()));
            }
        }
        Ok(())
    }
}

/// Checks a rate (requests per second) and burst, of `[rate_limit]` or of an API key, named
/// in errors by `keys` (`["rate_limit.per_second", "rate_limit.burst"]`, or flags).
pub fn validate_rate(keys: [&str; 2], per_second: Option<f64>, burst: Option<u32>) -> Result<(), Invalid> {
    if let Some(rate) = per_second
        && !(rate.is_finite() && (0.001..=1e6).contains(&rate))
    {
        return Err(Invalid::new(keys[0], format!("must be from 0.001 to 1000000, not {rate}")));
    }
    if let Some(burst) = burst
        && !(1..=1_000_000).contains(&burst)
    {
        return Err(Invalid::new(keys[1], format!("must be between 1 and 1000000, not {burst}")));
    }
    Ok(())
}

impl Ip4 {
    fn validate(&self) -> Result<(), Invalid> {
        let bad = |key: &str, rest: String| Err(Invalid::new(format!("network.ip4.{key}"), rest));
        let net = &self.cidr;
        if !(8..=30).contains(&net.prefix) {
            return bad("cidr", format!("{net} must have a prefix length between 8 and 30"));
        }
        if !net.contains(self.gateway) {
            return bad("gateway", format!("{} is not in network.ip4.cidr {net}", self.gateway));
        }
        if self.range == 0 {
            return bad("range", "must be at least 1".into());
        }
        let first = u32::from(self.start_addr);
        let Some(last) = first.checked_add(self.range - 1) else {
            return bad("range", "runs past 255.255.255.255".into());
        };
        let broadcast = u32::from(net.addr) | !net.mask();
        if !net.contains(self.start_addr) || last >= broadcast || first <= u32::from(net.addr) & net.mask() {
            return bad(
                "range",
                format!(
                    "{} addresses from network.ip4.start_addr {} do not fit in network.ip4.cidr {net} (without its network and broadcast addresses)",
                    self.range, self.start_addr
                ),
            );
        }
        if (first..=last).contains(&u32::from(self.gateway)) {
            return bad("gateway", format!("{} is inside the pool (network.ip4.start_addr, range)", self.gateway));
        }
        let name_ok = !self.bridge.is_empty()
            && self.bridge.len() <= 15
            && self.bridge.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return bad("bridge", format!("{:?} is not a valid interface name", self.bridge));
        }
        if self.keep_idle.get().is_zero() || self.keep_idle.get() > std::time::Duration::from_secs(24 * 3600) {
            return bad("keep_idle", format!("must be longer than zero and at most 1d, not {}", self.keep_idle));
        }
        if self.dns.len() > 16 || self.allow.len() > 1024 {
            return bad("dns", "and network.ip4.allow are too long (16 and 1024 entries at most)".into());
        }
        Ok(())
    }

    /// The addresses of the pool, in order.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let first = u32::from(self.start_addr);
        (0..self.range).map(move |i| Ipv4Addr::from(first + i))
    }
}

/// The dotted key whose value is at `offset` (`jails.exec_timeout`): the name before `=` on
/// that line, in the last table opened above it. `None` outside a `key = value` line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |nl| nl + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let (name, _) = line.split_once('=')?;
    let name = name.trim().trim_matches('"');
    if name.is_empty() || name.starts_with('[') {
        return None;
    }
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    Some(match table {
        Some(table) if !table.is_empty() => format!("{table}.{name}"),
        _ => name.to_owned(),
    })
}

/// Whether configuration text is JSON (the original's format): TOML cannot start with `{`.
fn is_json(text: &str) -> bool {
    text.trim_start_matches('\u{feff}').trim_start().starts_with('{')
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../skyisland.example.toml");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn the_documented_example_loads() {
        let config = parse(EXAMPLE).expect("example config");
        assert_eq!(config.jails.exec_timeout, Span::secs(5));
        assert_eq!(config.jails.memory_limit, Size::mib(256));
        assert_eq!(config.admin.token.as_deref(), Some("change-me"));
        assert_eq!(config.listen.port(), 3280);
        let ip4 = config.network.ip4.expect("the example has a pool");
        assert_eq!(ip4.addresses().count(), 200);
        assert_eq!(ip4.addresses().next(), Some(Ipv4Addr::new(10, 213, 0, 20)));
    }

    #[test]
    fn every_key_is_optional() {
        let config = parse("").unwrap();
        assert!(config.network.ip4.is_none(), "no network unless configured");
        assert_eq!(config.jails.output_limit, Size::mib(1));
        assert_eq!(config.admin.header, "X-Sky-Island-Token");
    }

    #[test]
    fn allowed_hosts_parse_and_match() {
        let a: AllowedHost = "Git.Internal:3000".parse().unwrap();
        assert!(a.matches("git.internal", 3000) && !a.matches("git.internal", 443));
        assert!(a.names("git.internal"));
        let b: AllowedHost = "10.0.0.5".parse().unwrap();
        assert!(b.matches("10.0.0.5", 443) && b.matches("10.0.0.5", 80));
        let c: AllowedHost = "[fd00::1]:443".parse().unwrap();
        assert!(c.matches("fd00::1", 443) && c.names("[fd00::1]"));
        assert_eq!(c.to_string(), "[fd00::1]:443");
        for bad in ["", "a b", "-x.com", "x.com:99999", "x.com:", "http://x.com", "[fd00::1", "a..b"] {
            assert!(bad.parse::<AllowedHost>().is_err(), "{bad}");
        }
        let rule: EgressRule = "10.213.0.0/24:53/udp".parse().unwrap();
        assert_eq!(rule.to_string(), "10.213.0.0/24:53/udp");
        assert_eq!("10.1.2.3".parse::<EgressRule>().unwrap().to_string(), "10.1.2.3/32");
    }

    #[test]
    fn downloads_reach_the_indexes_the_operator_named_and_with_downloads_the_public_ones() {
        let shown = |text: &str| {
            let hosts = parse(text).unwrap().download_hosts();
            hosts.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
        };
        assert_eq!(shown(""), "", "no downloads, no index: nothing");
        assert_eq!(
            shown("[build]\nallow_downloads = true"),
            "files.pythonhosted.org:443 proxy.golang.org:443 pypi.org:443 registry.npmjs.org:443 sum.golang.org:443"
        );
        assert_eq!(
            shown(
                "[python]\nindex_url = \"http://Mirror.internal:8080/simple/\"\nfind_links = [\"/srv/w\", \"https://links.internal/w/\"]\n\
                 [node]\nregistry = \"https://10.0.0.7/\"\n[go]\nproxy = \"https://goproxy.internal,file:///srv/g|direct\""
            ),
            "10.0.0.7:443 goproxy.internal:443 links.internal:443 mirror.internal:8080"
        );
        assert_eq!(
            shown("[go]\nallow_module_downloads = true\nproxy = \"off\"\n[python]\nindex_url = \"file:///srv/pypi\""),
            "registry.npmjs.org:443 sum.golang.org:443",
            "the old name allows downloads too; a set index replaces the public one"
        );
        assert_eq!(
            shown("[python]\nindex_url = \"https://pypi.org/simple/\""),
            "files.pythonhosted.org:443 pypi.org:443",
            "PyPI named as the index brings the host its files are on"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        for (text, expect) in [
            ("lisen = \"1.2.3.4:5\"", "test.toml:1:1: unknown field `lisen`"),
            ("[jails]\nmemory_limit = \"lots\"", "test.toml:2:16: jails.memory_limit: invalid size \"lots\""),
            ("[jails]\nexec_timeout = \"5 parsecs\"", "test.toml:2:16: jails.exec_timeout: invalid duration"),
            ("[jails]\nexec_timeout = \"0s\"", "jails.exec_timeout must be longer than zero"),
            ("[jails]\nexec_timeout = \"100000y\"", "jails.exec_timeout must be longer than zero and at most 1day"),
            ("[rate_limit]\nper_second = 1e-30", "rate_limit.per_second must be from 0.001"),
            ("[jails]\ncpu_limit = 1e-30", "jails.cpu_limit must be a number of CPUs"),
            ("[jails]\nmax_jails = 0", "jails.max_jails must be between 1 and 4096"),
            ("[storage]\nbackend = \"zfs\"", "unknown variant `zfs`"),
            ("[storage]\nbackend = \"btrfs\"", "storage.btrfs_dir is required"),
            ("[admin]\nheader = \"X Bad\"", "not a valid HTTP header name"),
            ("[cgroup]\nparent = \"../escape\"", "must be a relative cgroup path"),
            ("data_dir = \"relative\"", "data_dir must be an absolute path"),
            ("[network.ip4]\ncidr = \"10.0.0.0\"", "invalid network \"10.0.0.0\""),
            (
                "[network.ip4]\ngateway = \"10.9.0.1\"",
                "network.ip4.gateway 10.9.0.1 is not in network.ip4.cidr 10.213.0.0/24",
            ),
            (
                "[network.ip4]\nrange = 300",
                "network.ip4.range 300 addresses from network.ip4.start_addr 10.213.0.20 do not fit",
            ),
            (
                "[network.ip4]\nstart_addr = \"10.213.0.1\"\nrange = 5",
                "network.ip4.gateway 10.213.0.1 is inside the pool",
            ),
            ("[network.ip4]\nbridge = \"a-very-long-bridge-name\"", "not a valid interface name"),
            ("[network.ip4]\nallow = [\"10.0.0.1:53\"]", "expected ADDR[/PREFIX][:PORT/PROTO]"),
            ("[network.ip4]\nallow = [\"10.0.0.1:53/icmp\"]", "expected ADDR[/PREFIX][:PORT/PROTO]"),
            ("[git]\nallow_hosts = [\"http://x\"]", "invalid host"),
            ("[cache]\nredis_url = \"http://x\"", "must start with redis://"),
            ("[cache]\ndefault_expiration = \"0s\"", "must be longer than zero"),
            ("[rate_limit]\nper_second = 0", "rate_limit.per_second must be from 0.001"),
            ("[auth]\napi_keys = [\"short\"]", "must be 16 to 4096 printable characters"),
            ("[limits]\nmax_call = \"1MiB\"", "limits.max_call must be at least 16B"),
            ("statsd_addr = \"nowhere\"", "invalid socket address"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }
}

/// An allowed callback URL prefix: scheme, host and port must equal the URL's, and the
/// URL's path must be the prefix's or lie below it (`/hooks` allows `/hooks` and
/// `/hooks/x`, not `/hooksx`). Compared on parsed URLs, never on strings, so that
/// `http://allowed@elsewhere/` or `http://allowed.elsewhere/` do not pass.
#[derive(Clone, Debug)]
pub struct CallbackPrefix {
    url: url::Url,
}

impl CallbackPrefix {
    pub fn parse(text: &str) -> Result<CallbackPrefix, String> {
        let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
        check_callback_url(&url)?;
        if url.query().is_some() {
            return Err("a prefix has no query".into());
        }
        Ok(CallbackPrefix { url })
    }

    /// Whether `url` (already checked with [`check_callback_url`]) starts with this prefix.
    pub fn allows(&self, url: &url::Url) -> bool {
        let (p, u) = (&self.url, url);
        if p.scheme() != u.scheme() || p.host() != u.host() || p.port_or_known_default() != u.port_or_known_default() {
            return false;
        }
        let base = p.path().trim_end_matches('/');
        match u.path().strip_prefix(base) {
            Some(rest) => rest.is_empty() || rest.starts_with('/') || base.is_empty(),
            None => false,
        }
    }
}

/// What any callback URL must be: http or https, a host, no user name or password, no
/// fragment.
pub fn check_callback_url(url: &url::Url) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("the scheme must be http or https, not {}", url.scheme()));
    }
    if url.host().is_none() {
        return Err("it names no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("it may not carry a user name or password".into());
    }
    if url.fragment().is_some() {
        return Err("it may not have a fragment".into());
    }
    Ok(())
}
