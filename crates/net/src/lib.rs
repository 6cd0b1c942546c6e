//! Networks for jails: the original's IPv4 pool and VNET on Linux.
//!
//! A jail that asks for `ip4` leases an address from the [`pool`] and joins that
//! address's network namespace: a veth pair whose host end is on the bridge and whose other
//! end is `eth0` inside, the address, a default route via the gateway (the bridge's
//! address), loopback up, and /etc/resolv.conf with the configured servers. Everything is
//! done over netlink (rtnetlink), no `ip` processes.
//!
//! An address's namespace is made the first time the address is leased and kept for the
//! jails that lease it after, one at a time: creating and deleting links and namespaces
//! holds the kernel's RTNL lock for tens of milliseconds (an RCU grace period each), which
//! every other network change then waits for. While a jail runs, the namespace is its
//! alone; when it ends, its processes (and their sockets) are gone, and the namespace keeps
//! no TIME_WAIT sockets (`tcp_max_tw_buckets` is 0 in it), so nothing of one jail is
//! visible to the next; the jails have no capability to change anything else in it.
//! Namespaces unused for `keep_idle` are taken down in the background. Bridge ports are
//! isolated, so jails reach the gateway but not each other, unless the operator allows it.
//!
//! The bridge may live in a network namespace of its own (`network.ip4.netns`); netlink
//! sockets for another namespace are opened from a blocking thread that enters it and
//! comes straight back.

pub mod egress;
pub mod pool;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoBridgePort, InfoData, InfoVeth, LinkAttribute};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};
use rustix::fs::{FlockOperation, flock};
use skyisland_config::{Config, Ip4};
use skyisland_jail::FileSpec;
use skyisland_runner::{BoxFuture, JailNetwork};

pub use pool::{Address, Lease, Pool, PoolError, State};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Netlink { what: String, source: rtnetlink::Error },
    /// The pool's network is one the host already has an interface in: giving the bridge
    /// an address there would take that network's route (and perhaps its gateway's
    /// address) from the host.
    #[error(
        "network.ip4.cidr {cidr} overlaps {address}/{prefix} of interface {link}: choose a network of the jails' own"
    )]
    Overlaps { cidr: String, address: Ipv4Addr, prefix: u8, link: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Io { what, source }
}

fn nl_err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Netlink { what, source }
}

/// The jails' IPv4 network: the pool and the bridge.
pub struct Ip4Network {
    config: Ip4,
    pool: Arc<Pool>,
    /// Netlink in the bridge's namespace.
    handle: Netlink,
    bridge: u32,
    /// The bridge's namespace, when it is not ours.
    netns: Option<OwnedFd>,
    /// The jails' /etc/resolv.conf.
    resolv_conf: String,
    created_bridge: bool,
    /// `<run_dir>/net/<bridge>.lock`, share-locked by every server using the bridge: the
    /// last one to stop removes the rules.
    users: std::fs::File,
    /// Namespaces of addresses no jail holds now, with their address's lease (so that no
    /// one, in this process or another, leases the address while its namespace lives) and
    /// when they were last used.
    idle: std::sync::Mutex<Vec<Idle>>,
}

/// A namespace waiting for the next jail of its address.
#[derive(Debug)]
struct Idle {
    namespace: AddressNamespace,
    lease: Lease,
    since: std::time::Instant,
}

/// An address's network namespace, set up, and the host end of its link.
#[derive(Debug)]
struct AddressNamespace {
    ns: OwnedFd,
    host_link: String,
    /// The host end's index: links are deleted by index, never by name, so that a stale
    /// deletion can never remove a link made since under the same name.
    host_index: u32,
}

impl fmt::Debug for Ip4Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ip4Network").field("bridge", &self.config.bridge).field("cidr", &self.config.cidr).finish()
    }
}

/// The name of the host end of the link of the jail holding `ip` (unique per address).
fn host_link_name(ip: Ipv4Addr) -> String {
    format!("sk{:08x}", u32::from(ip))
}

/// Runs `f` on a blocking thread inside network namespace `ns` (a namespace file or a
/// pidfd); the thread comes back to its own namespace before it is reused.
async fn inside<T: Send + 'static>(
    ns: OwnedFd,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(move || {
        let enter = |fd: BorrowedFd<'_>| {
            rustix::thread::move_into_link_name_space(fd, Some(rustix::thread::LinkNameSpaceType::Network))
        };
        let here = rustix::fs::open(
            "/proc/thread-self/ns/net",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        enter(ns.as_fd())?;
        let result = f();
        if enter(here.as_fd()).is_err() {
            // This thread would make every later socket in the wrong namespace.
            std::process::abort();
        }
        result
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?
}

/// A netlink connection: its handle, and its socket's task, which ends when this is
/// dropped. (Left to itself, the task may outlive every handle until the socket next
/// receives something, which for a namespace's own socket is never: rust-netlink/rtnetlink#15.)
struct Netlink {
    handle: Handle,
    task: tokio::task::AbortHandle,
}

impl std::ops::Deref for Netlink {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A netlink connection in network namespace `ns`, or in ours. The socket stays in the
/// namespace it was made in.
async fn connection_in(ns: Option<OwnedFd>) -> Result<Netlink, NetError> {
    let made = match ns {
        None => rtnetlink::new_connection(),
        Some(ns) => inside(ns, rtnetlink::new_connection).await,
    };
    let (connection, handle, _) = made.map_err(io_err("open a netlink socket"))?;
    let task = tokio::spawn(connection).abort_handle();
    Ok(Netlink { handle, task })
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // No such device.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(None),
        Err(e) => Err(nl_err(format!("look up link {name}"))(e)),
    }
}

async fn link_name(handle: &Handle, index: u32) -> Option<String> {
    let link = handle.link().get().match_index(index).execute().try_next().await.ok()??;
    link.attributes.into_iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name),
        _ => None,
    })
}

const fn libc_enodev() -> i32 {
    19
}

async fn set_up(handle: &Handle, index: u32, what: &str) -> Result<(), NetError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl_err(format!("bring up {what}")))
}

/// Refuses a pool network that overlaps an address of any interface but the bridge (and
/// the jails' links on it, which have addresses only inside their own namespaces).
async fn refuse_overlaps(handle: &Handle, ip4: &Ip4) -> Result<(), NetError> {
    let bridge = link_index(handle, &ip4.bridge).await?;
    let mut addresses = handle.address().get().execute();
    while let Some(message) = addresses.try_next().await.map_err(nl_err("list the host's addresses"))? {
        if Some(message.header.index) == bridge {
            continue;
        }
        let prefix = message.header.prefix_len;
        for attribute in &message.attributes {
            let AddressAttribute::Address(IpAddr::V4(address)) = attribute else { continue };
            let shorter = prefix.min(ip4.cidr.prefix);
            let mask = if shorter == 0 { 0 } else { u32::MAX << (32 - u32::from(shorter)) };
            if u32::from(*address) & mask == u32::from(ip4.cidr.addr) & mask {
                let link =
                    link_name(handle, message.header.index).await.unwrap_or_else(|| message.header.index.to_string());
                return Err(NetError::Overlaps { cidr: ip4.cidr.to_string(), address: *address, prefix, link });
            }
        }
    }
    Ok(())
}

impl Ip4Network {
    /// Sets up the bridge (and its address) unless present, and removes links that jails of
    /// a crashed process left on it. `None` when the configuration has no IPv4 pool.
    pub async fn open(config: &Config) -> Result<Option<Arc<Ip4Network>>, NetError> {
        let Some(ip4) = config.network.ip4.clone() else { return Ok(None) };
        let pool = Pool::open(
            ip4.addresses().collect(),
            &config.run_dir.join("ip4"),
            &config.data_dir.join("network/ip4-states.json"),
        )
        .map_err(io_err("open the IPv4 pool"))?;
        let netns = match &ip4.netns {
            Some(path) => {
                Some(std::fs::File::open(path).map(OwnedFd::from).map_err(io_err(format!("open {}", path.display())))?)
            }
            None => None,
        };
        let handle = connection_in(netns.as_ref().map(OwnedFd::try_clone).transpose().map_err(io_err("dup"))?).await?;
        refuse_overlaps(&handle, &ip4).await?;
        let (bridge, created_bridge) = match link_index(&handle, &ip4.bridge).await? {
            Some(index) => (index, false),
            None => {
                handle
                    .link()
                    .add(LinkBridge::new(&ip4.bridge).build())
                    .execute()
                    .await
                    .map_err(nl_err(format!("create bridge {}", ip4.bridge)))?;
                let index = link_index(&handle, &ip4.bridge).await?.ok_or_else(|| {
                    io_err(format!("find bridge {}", ip4.bridge))(std::io::Error::other("missing after creation"))
                })?;
                (index, true)
            }
        };
        let mut addresses = handle.address().get().set_link_index_filter(bridge).execute();
        let mut has_gateway = false;
        while let Some(message) = addresses.try_next().await.map_err(nl_err("list the bridge's addresses"))? {
            has_gateway |= message.attributes.contains(&AddressAttribute::Address(IpAddr::V4(ip4.gateway)));
        }
        if !has_gateway {
            handle
                .address()
                .add(bridge, IpAddr::V4(ip4.gateway), ip4.cidr.prefix)
                .execute()
                .await
                .map_err(nl_err(format!("give bridge {} address {}", ip4.bridge, ip4.gateway)))?;
        }
        set_up(&handle, bridge, &ip4.bridge).await?;
        let users_path = config.run_dir.join("net").join(format!("{}.lock", ip4.bridge));
        std::fs::create_dir_all(users_path.parent().expect("has a parent")).map_err(io_err("create run_dir/net"))?;
        let users = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&users_path)
            .map_err(io_err(format!("open {}", users_path.display())))?;
        flock(&users, FlockOperation::LockShared).map_err(|e| io_err("lock run_dir/net")(e.into()))?;
        let resolv_conf: String = ip4.dns.iter().map(|server| format!("nameserver {server}\n")).collect();
        let network = Ip4Network {
            config: ip4,
            pool,
            handle,
            bridge,
            netns,
            resolv_conf,
            created_bridge,
            idle: std::sync::Mutex::default(),
            users,
        };
        network.reconcile().await?;
        network.install_rules()?;
        let network = Arc::new(network);
        tokio::spawn(sweep(Arc::downgrade(&network)));
        Ok(Some(network))
    }

    /// Removes the host ends of links whose address no process holds (a crashed server's).
    async fn reconcile(&self) -> Result<(), NetError> {
        for ip in self.config.addresses() {
            if !self.pool.is_free(ip) {
                continue;
            }
            if let Some(index) = link_index(&self.handle, &host_link_name(ip)).await? {
                tracing::info!(link = host_link_name(ip), "removing a link left by a jail of an earlier run");
                let _ = self.handle.link().del(index).execute().await;
            }
        }
        Ok(())
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// What the network holds now, for leak accounting: addresses leased, address
    /// namespaces kept idle, and links attached to the bridge (one per live namespace).
    pub async fn census(&self) -> Result<NetCensus, NetError> {
        let mut links = self.handle.link().get().execute();
        let mut bridge_links = 0;
        while let Some(link) = links.try_next().await.map_err(nl_err("list links"))? {
            let on_bridge =
                link.attributes.iter().any(|a| matches!(a, LinkAttribute::Controller(i) if *i == self.bridge));
            bridge_links += usize::from(on_bridge);
        }
        let idle_namespaces = self.lock_idle().len();
        Ok(NetCensus {
            leases: self.pool.in_use() - idle_namespaces,
            idle_namespaces,
            bridge_links,
            egress_rules: self.rules_present(),
        })
    }

    pub fn config(&self) -> &Ip4 {
        &self.config
    }

    /// Leases an address for one jail; refused at once when the pool is exhausted.
    pub fn request(self: &Arc<Self>, holder: &str) -> Result<Box<dyn JailNetwork>, PoolError> {
        // An idle namespace first (the most recently used): its lease comes with it.
        if let Some(Idle { namespace, lease, .. }) = self.lock_idle().pop() {
            lease.set_holder(holder);
            return Ok(Box::new(JailLink { network: Arc::clone(self), lease, namespace: Some(namespace) }));
        }
        let lease = self.pool.lease(holder)?;
        Ok(Box::new(JailLink { network: Arc::clone(self), lease, namespace: None }))
    }

    /// The nftables table holding this bridge's rules.
    fn table(&self) -> String {
        format!("skyisland_{}", self.config.bridge.replace(['-', '.'], "_"))
    }

    /// The rules, as one `nft -f` script that replaces the table atomically (another server
    /// on the same bridge never sees it missing): traffic from the jails to any address of
    /// this host is refused but for DNS to the configured resolvers and the operator's
    /// `allow` entries; traffic routed onwards is refused to the private, loopback,
    /// link-local, shared, multicast and reserved ranges (and all IPv6) unless allowed;
    /// and, with `nat`, what leaves through another interface is masqueraded. Refused
    /// packets are answered "administratively prohibited", so a jail sees "no route to
    /// host" at once rather than a timeout.
    fn rules(&self) -> String {
        let c = &self.config;
        let table = self.table();
        let mut allow: Vec<String> = Vec::new();
        for dns in &c.dns {
            allow.push(format!("ip daddr {dns} udp dport 53 accept"));
            allow.push(format!("ip daddr {dns} tcp dport 53 accept"));
        }
        for rule in &c.allow {
            allow.push(match rule.port {
                Some((port, proto)) => format!("ip daddr {} {proto} dport {port} accept", rule.net),
                None => format!("ip daddr {} accept", rule.net),
            });
        }
        let mut onward = allow.clone();
        if c.jail_to_jail {
            // Jail to jail is bridged, but passes these hooks too where br_netfilter is
            // loaded (as with Docker): let it through when the operator allows it.
            onward.push(format!("ip daddr {} accept", c.cidr));
        }
        let allow = allow.join("\n    ");
        let onward = onward.join("\n    ");
        const REFUSE: &str = "reject with icmpx type admin-prohibited";
        let mut script = format!(
            "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{\n  \
             chain input {{ type filter hook input priority filter - 5; policy accept; iifname \"{b}\" jump jails_to_host; }}\n  \
             chain forward {{ type filter hook forward priority filter - 5; policy accept; iifname \"{b}\" jump jails_onward; }}\n  \
             chain jails_to_host {{\n    {allow}\n    {REFUSE}\n  }}\n  \
             chain jails_onward {{\n    {onward}\n    ip daddr {{ {ranges} }} {REFUSE}\n    meta nfproto ipv6 {REFUSE}\n  }}\n}}\n",
            b = c.bridge,
            ranges = PRIVATE_RANGES.join(", "),
        );
        if c.nat {
            script.push_str(&format!(
                "table ip {table}_nat {{}}\ndelete table ip {table}_nat\ntable ip {table}_nat {{\n  \
                 chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; ip saddr {} oifname != \"{}\" masquerade; }}\n}}\n",
                c.cidr, c.bridge
            ));
        }
        script
    }

    /// Runs `nft -f -` with `script`, in the bridge's namespace.
    fn nft(&self, script: &str) -> Result<String, NetError> {
        let mut command = match &self.config.netns {
            Some(path) => {
                let mut c = std::process::Command::new("nsenter");
                c.arg(format!("--net={}", path.display())).arg("--").arg("nft");
                c
            }
            None => std::process::Command::new("nft"),
        };
        command
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().map_err(io_err("run nft (is nftables installed?)"))?;
        std::io::Write::write_all(&mut child.stdin.take().expect("piped"), script.as_bytes())
            .map_err(io_err("write the nft rules"))?;
        let out = child.wait_with_output().map_err(io_err("run nft"))?;
        if !out.status.success() {
            return Err(io_err("nft")(std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned())));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Installs the rules (and IPv4 forwarding for NAT).
    fn install_rules(&self) -> Result<(), NetError> {
        self.nft(&self.rules())
            .map_err(|e| io_err("set up the jails' egress rules")(std::io::Error::other(e.to_string())))?;
        if self.config.nat && self.netns.is_none() {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(io_err("enable IPv4 forwarding"))?;
        }
        Ok(())
    }

    /// Whether the egress rules are in place (for the resources endpoint).
    pub fn rules_present(&self) -> bool {
        self.nft(&format!("list table inet {}\n", self.table())).is_ok_and(|out| out.contains("jails_to_host"))
    }

    /// Removes the rules, unless another server on this host still uses the bridge.
    fn remove_rules(&self) {
        if flock(&self.users, FlockOperation::NonBlockingLockExclusive).is_err() {
            tracing::info!(bridge = %self.config.bridge, "another server uses the bridge; its rules stay");
            return;
        }
        let table = self.table();
        let mut script = format!("delete table inet {table}\n");
        if self.config.nat {
            script.push_str(&format!("delete table ip {table}_nat\n"));
        }
        if let Err(e) = self.nft(&script) {
            tracing::warn!(error = %e, "removing the jails' egress rules");
        }
    }

    /// Removes the rules and the bridge if this process created it and no other process
    /// holds an address (their jails are on it).
    pub async fn shutdown(&self) {
        let idle: Vec<Idle> = self.lock_idle().drain(..).collect();
        for Idle { namespace, lease, .. } in idle {
            self.take_down(namespace).await;
            drop(lease);
        }
        self.remove_rules();
        if self.created_bridge
            && self.config.addresses().all(|ip| self.pool.is_free(ip))
            && let Err(e) = self.handle.link().del(self.bridge).execute().await
        {
            tracing::warn!(error = %e, bridge = %self.config.bridge, "removing the bridge");
        }
    }
}

impl Ip4Network {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the network namespace of address `ip`: a new namespace with no TIME_WAIT
    /// sockets, a veth pair from the bridge (isolated unless jails may talk) to its
    /// `eth0`, the address, loopback up and the default route.
    async fn make_namespace(&self, ip: Ipv4Addr) -> Result<AddressNamespace, NetError> {
        let config = &self.config;
        let ns = tokio::task::spawn_blocking(skyisland_jail::empty_network_namespace)
            .await
            .map_err(|e| io_err("create a network namespace")(std::io::Error::other(e.to_string())))?
            .map_err(io_err("create a network namespace"))?;
        let dup = || ns.try_clone().map_err(io_err("dup a namespace"));
        inside(dup()?, || std::fs::write("/proc/sys/net/ipv4/tcp_max_tw_buckets", "0"))
            .await
            .map_err(io_err("keep no TIME_WAIT sockets"))?;
        let name = host_link_name(ip);
        // The address's end is made inside its namespace, where it is the second link.
        let peer = LinkUnspec::new_with_name("eth0").index(JAIL_ETH0).setns_by_fd(ns.as_raw_fd()).build();
        let veth = || {
            LinkVeth::new(&name, "eth0")
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.clone())))
                .controller(self.bridge)
                .up()
                .build()
        };
        match self.handle.link().add(veth()).execute().await {
            Ok(()) => {}
            // Left over by a crashed process (the address was free): replace it.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -17 => {
                self.handle.link().del_with_message(LinkUnspec::new_with_name(&name).build()).execute().await.ok();
                self.handle.link().add(veth()).execute().await.map_err(nl_err(format!("create link {name}")))?;
            }
            Err(e) => return Err(nl_err(format!("create link {name}"))(e)),
        }
        let index = match link_index(&self.handle, &name).await {
            Ok(Some(index)) => index,
            Ok(None) => {
                return Err(io_err(format!("find link {name}"))(std::io::Error::other("missing after creation")));
            }
            Err(e) => return Err(e),
        };
        let namespace = AddressNamespace { ns, host_link: name.clone(), host_index: index };
        let configured = async {
            if !config.jail_to_jail {
                let isolated = LinkBridgePort::new(index).append_info_data(InfoBridgePort::Isolated(true)).build();
                self.handle.link().set_port(isolated).execute().await.map_err(nl_err(format!("isolate {name}")))?;
            }
            // Inside: a new namespace, so loopback is link 1.
            let inner = connection_in(Some(namespace.ns.try_clone().map_err(io_err("dup a namespace"))?)).await?;
            set_up(&inner, 1, "lo").await?;
            inner
                .address()
                .add(JAIL_ETH0, IpAddr::V4(ip), config.cidr.prefix)
                .execute()
                .await
                .map_err(nl_err("address eth0"))?;
            set_up(&inner, JAIL_ETH0, "eth0").await?;
            let default = RouteMessageBuilder::<Ipv4Addr>::new().gateway(config.gateway).build();
            inner.route().add(default).execute().await.map_err(nl_err("add the default route"))?;
            Ok::<(), NetError>(())
        }
        .await;
        match configured {
            Ok(()) => Ok(namespace),
            Err(e) => {
                self.take_down(namespace).await;
                Err(e)
            }
        }
    }

    /// Deletes an address's link (the namespace goes with its last descriptor).
    async fn take_down(&self, namespace: AddressNamespace) {
        if let Err(e) = self.handle.link().del(namespace.host_index).execute().await {
            tracing::warn!(link = %namespace.host_link, error = %e, "deleting a jail network link");
        }
    }
}

/// See [`Ip4Network::census`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NetCensus {
    pub leases: usize,
    pub idle_namespaces: usize,
    pub bridge_links: usize,
    /// Whether the jails' egress rules are in place.
    pub egress_rules: bool,
}

/// Takes down namespaces unused for `keep_idle`, until the network is dropped.
async fn sweep(network: std::sync::Weak<Ip4Network>) {
    loop {
        let Some(net) = network.upgrade() else { return };
        let keep = net.config.keep_idle.get();
        let expired: Vec<Idle> = {
            let mut idle = net.lock_idle();
            let (old, kept): (Vec<Idle>, Vec<Idle>) = idle.drain(..).partition(|i| i.since.elapsed() >= keep);
            *idle = kept;
            old
        };
        // Each keeps its lease until its link is gone.
        for Idle { namespace, lease, .. } in expired {
            net.take_down(namespace).await;
            drop(lease);
        }
        let pause = (keep / 4).clamp(std::time::Duration::from_millis(50), std::time::Duration::from_secs(5));
        drop(net);
        tokio::time::sleep(pause).await;
    }
}

/// What jails may not reach unless the operator allows it: "this network", private,
/// shared (CGNAT), loopback, link-local, IETF, benchmarking, multicast and reserved ranges.
const PRIVATE_RANGES: [&str; 11] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// The index of `eth0` in an address's namespace (after `lo`).
const JAIL_ETH0: u32 = 2;

/// One jail's network: its address's lease and, once prepared, the address's namespace.
#[derive(Debug)]
struct JailLink {
    network: Arc<Ip4Network>,
    lease: Lease,
    namespace: Option<AddressNamespace>,
}

impl JailNetwork for JailLink {
    fn files(&self) -> Vec<FileSpec> {
        vec![FileSpec { path: "/etc/resolv.conf".into(), contents: self.network.resolv_conf.clone() }]
    }

    fn prepare(&mut self) -> BoxFuture<'_, Result<(OwnedFd, String), String>> {
        Box::pin(async move {
            let ip = self.lease.ip;
            let namespace = match self.namespace.take() {
                Some(namespace) => namespace,
                None => self.network.make_namespace(ip).await.map_err(|e| e.to_string())?,
            };
            let ns = namespace.ns.try_clone().map_err(|e| format!("dup a namespace: {e}"))?;
            self.namespace = Some(namespace);
            Ok((ns, ip.to_string()))
        })
    }

    /// The jail has ended and its processes with it. If no socket of theirs lingers in the
    /// namespace (a connection still closing), it waits, with its address's lease, for the
    /// next jail; otherwise it is taken down, so the next jail of the address never sees
    /// the previous one's sockets.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let JailLink { network, lease, namespace } = *self;
            let Some(namespace) = namespace else { return };
            let left = match namespace.ns.try_clone() {
                Ok(ns) => inside(ns, sockets_in_namespace).await.unwrap_or(usize::MAX),
                Err(_) => usize::MAX,
            };
            if left == 0 {
                // Held for the namespace, not by a jail.
                lease.set_holder("");
                network.lock_idle().push(Idle { namespace, lease, since: std::time::Instant::now() });
            } else {
                metrics::counter!("skyisland_ip4_namespaces_replaced_total").increment(1);
                tracing::debug!(ip = %lease.ip, sockets = left, "a jail left sockets behind; replacing its namespace");
                network.take_down(namespace).await;
                drop(lease);
            }
        })
    }
}

/// Sockets of any kind in the calling thread's network namespace.
///
/// TCP, UDP and raw sockets are counted from `sockstat`/`sockstat6` (`inuse`, and `tw` for
/// TCP's TIME_WAIT), which the kernel keeps per namespace: reading `/proc/net/tcp` instead
/// walks the host's whole connection hash table (sized by memory) and cost ~13 ms per ip4
/// call on a 24 GiB host. Where a kernel keeps a count for the whole host (`tw` before
/// 5.19), the count is higher, never lower: the namespace is replaced, not reused.
/// Unix and packet sockets are listed per namespace: counted by line.
fn sockets_in_namespace() -> std::io::Result<usize> {
    let mut count = 0;
    for (file, protocols) in [
        ("sockstat", &["TCP:", "UDP:", "UDPLITE:", "RAW:"][..]),
        ("sockstat6", &["TCP6:", "UDP6:", "UDPLITE6:", "RAW6:"][..]),
    ] {
        match std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) {
            Ok(text) => count += in_use(&text, protocols),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    for table in ["unix", "packet"] {
        match std::fs::read_to_string(format!("/proc/thread-self/net/{table}")) {
            // A header line, then one line per socket.
            Ok(text) => count += text.lines().count().saturating_sub(1),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(count)
}

/// The `inuse` and `tw` counts of `protocols` in a `sockstat` file.
fn in_use(sockstat: &str, protocols: &[&str]) -> usize {
    sockstat
        .lines()
        .filter_map(|line| line.split_once(' ').filter(|(name, _)| protocols.contains(name)))
        .map(|(_, fields)| {
            let fields: Vec<&str> = fields.split_whitespace().collect();
            fields
                .chunks(2)
                .filter(|pair| matches!(pair[0], "inuse" | "tw"))
                .filter_map(|pair| pair.get(1)?.parse::<usize>().ok())
                .sum::<usize>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::in_use;

    #[test]
    fn sockstat_counts_sockets_in_use_and_time_wait() {
        let v4 = "sockets: used 16\nTCP: inuse 2 orphan 1 tw 15 alloc 2 mem 138\nUDP: inuse 3 mem 0\nUDPLITE: inuse 0\nRAW: inuse 1\nFRAG: inuse 7 memory 0\n";
        assert_eq!(in_use(v4, &["TCP:", "UDP:", "UDPLITE:", "RAW:"]), 2 + 15 + 3 + 1);
        let v6 = "TCP6: inuse 4\nUDP6: inuse 0\nUDPLITE6: inuse 0\nRAW6: inuse 0\nFRAG6: inuse 9 memory 0\n";
        assert_eq!(in_use(v6, &["TCP6:", "UDP6:", "UDPLITE6:", "RAW6:"]), 4);
        assert_eq!(in_use("", &["TCP:"]), 0);
    }
}
