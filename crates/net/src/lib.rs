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

pub mod pool;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoBridgePort, InfoData, InfoVeth, LinkAttribute};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};
use skyisland_config::{Config, Ip4};
use skyisland_jail::Bind;
use skyisland_runner::{BoxFuture, JailNetwork};

pub use pool::{Address, Lease, Pool, PoolError, State};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Netlink { what: String, source: rtnetlink::Error },
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
    resolv_conf: PathBuf,
    created_bridge: bool,
    /// Namespaces of addresses no jail holds now, with when they were last used.
    idle: std::sync::Mutex<std::collections::HashMap<Ipv4Addr, (AddressNamespace, std::time::Instant)>>,
}

/// An address's network namespace, set up, and the host end of its link.
#[derive(Debug)]
struct AddressNamespace {
    ns: OwnedFd,
    host_link: String,
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
        let resolv_conf = config.run_dir.join("net").join(format!("resolv.conf.{}", ip4.bridge));
        std::fs::create_dir_all(resolv_conf.parent().expect("has a parent")).map_err(io_err("create run_dir/net"))?;
        let text: String = ip4.dns.iter().map(|server| format!("nameserver {server}\n")).collect();
        std::fs::write(&resolv_conf, text).map_err(io_err(format!("write {}", resolv_conf.display())))?;
        let network = Ip4Network {
            config: ip4,
            pool,
            handle,
            bridge,
            netns,
            resolv_conf,
            created_bridge,
            idle: std::sync::Mutex::default(),
        };
        network.reconcile().await?;
        if network.config.nat {
            network.nat(true)?;
        }
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
        Ok(NetCensus { leases: self.pool.in_use(), idle_namespaces: self.lock_idle().len(), bridge_links })
    }

    pub fn config(&self) -> &Ip4 {
        &self.config
    }

    /// Leases an address for one jail; refused at once when the pool is exhausted.
    pub fn request(self: &Arc<Self>, holder: &str) -> Result<Box<dyn JailNetwork>, PoolError> {
        let lease = self.pool.lease(holder)?;
        Ok(Box::new(JailLink { network: Arc::clone(self), lease, namespace: None }))
    }

    /// Masquerades the pool's traffic leaving through anything but the bridge (on), or
    /// stops (off). Runs `nft` (at start-up and shutdown, not per request).
    fn nat(&self, on: bool) -> Result<(), NetError> {
        let table = format!("skyisland_{}", self.config.bridge.replace(['-', '.'], "_"));
        let script = if on {
            format!(
                "table ip {table} {{\n chain postrouting {{\n  type nat hook postrouting priority srcnat; policy accept;\n  ip saddr {} oifname != \"{}\" masquerade\n }}\n}}\n",
                self.config.cidr, self.config.bridge
            )
        } else {
            format!("delete table ip {table}\n")
        };
        let mut command = match &self.config.netns {
            Some(path) => {
                let mut c = std::process::Command::new("nsenter");
                c.arg(format!("--net={}", path.display())).arg("--").arg("nft");
                c
            }
            None => std::process::Command::new("nft"),
        };
        command.args(["-f", "-"]).stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = command.spawn().map_err(io_err("run nft (is nftables installed?)"))?;
        std::io::Write::write_all(&mut child.stdin.take().expect("piped"), script.as_bytes())
            .map_err(io_err("write the nft rules"))?;
        let out = child.wait_with_output().map_err(io_err("run nft"))?;
        if on {
            let forward = match &self.netns {
                Some(_) => None,
                None => Some(Path::new("/proc/sys/net/ipv4/ip_forward")),
            };
            if let Some(sysctl) = forward {
                std::fs::write(sysctl, "1").map_err(io_err("enable IPv4 forwarding"))?;
            }
        }
        if !out.status.success() && on {
            return Err(io_err("set up NAT with nft")(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            )));
        }
        Ok(())
    }

    /// Stops NAT and removes the bridge if this process created it and no other process
    /// holds an address (their jails are on it).
    pub async fn shutdown(&self) {
        let idle: Vec<AddressNamespace> = self.lock_idle().drain().map(|(_, (namespace, _))| namespace).collect();
        for namespace in idle {
            self.take_down(namespace).await;
        }
        if self.config.nat
            && let Err(e) = self.nat(false)
        {
            tracing::warn!(error = %e, "removing the NAT rules");
        }
        if self.created_bridge
            && self.config.addresses().all(|ip| self.pool.is_free(ip))
            && let Err(e) = self.handle.link().del(self.bridge).execute().await
        {
            tracing::warn!(error = %e, bridge = %self.config.bridge, "removing the bridge");
        }
    }
}

impl Ip4Network {
    fn lock_idle(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<Ipv4Addr, (AddressNamespace, std::time::Instant)>> {
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
        let namespace = AddressNamespace { ns, host_link: name.clone() };
        let configured = async {
            if !config.jail_to_jail {
                let index = link_index(&self.handle, &name).await?.ok_or_else(|| {
                    io_err(format!("find link {name}"))(std::io::Error::other("missing after creation"))
                })?;
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
        let link = LinkUnspec::new_with_name(&namespace.host_link).build();
        if let Err(e) = self.handle.link().del_with_message(link).execute().await {
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
}

/// Takes down namespaces unused for `keep_idle`, until the network is dropped.
async fn sweep(network: std::sync::Weak<Ip4Network>) {
    loop {
        let Some(net) = network.upgrade() else { return };
        let keep = net.config.keep_idle.get();
        let expired: Vec<AddressNamespace> = {
            let mut idle = net.lock_idle();
            let old: Vec<Ipv4Addr> =
                idle.iter().filter(|(_, (_, since))| since.elapsed() >= keep).map(|(ip, _)| *ip).collect();
            old.into_iter().filter_map(|ip| idle.remove(&ip)).map(|(namespace, _)| namespace).collect()
        };
        for namespace in expired {
            net.take_down(namespace).await;
        }
        let pause = (keep / 4).clamp(std::time::Duration::from_millis(50), std::time::Duration::from_secs(5));
        drop(net);
        tokio::time::sleep(pause).await;
    }
}

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
    fn binds(&self) -> Vec<Bind> {
        vec![Bind { source: self.network.resolv_conf.clone(), target: "/etc/resolv.conf".into(), writable: false }]
    }

    fn prepare(&mut self) -> BoxFuture<'_, Result<(OwnedFd, String), String>> {
        Box::pin(async move {
            let ip = self.lease.ip;
            let idle = self.network.lock_idle().remove(&ip).map(|(namespace, _)| namespace);
            let namespace = match idle {
                Some(namespace) => namespace,
                None => self.network.make_namespace(ip).await.map_err(|e| e.to_string())?,
            };
            let ns = namespace.ns.try_clone().map_err(|e| format!("dup a namespace: {e}"))?;
            self.namespace = Some(namespace);
            Ok((ns, ip.to_string()))
        })
    }

    /// The jail has ended and its processes with it: the namespace waits for the next
    /// jail of this address, and the address goes back to the pool.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let JailLink { network, lease, namespace } = *self;
            if let Some(namespace) = namespace {
                network.lock_idle().insert(lease.ip, (namespace, std::time::Instant::now()));
            }
            drop(lease);
        })
    }
}
