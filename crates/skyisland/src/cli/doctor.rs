//! `skyisland doctor`: what the host has of what Sky Island needs, one line per check,
//! with what to do about what is missing. `serve` runs the same checks first and refuses
//! to start on a missing requirement, rather than failing on the first request.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use skyisland_config::{Backend, Config};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Works, but worse than it could (slower, less room, less to watch).
    Warn,
    /// Sky Island cannot work without it.
    Missing,
}

#[derive(Debug)]
pub struct Check {
    pub what: &'static str,
    pub level: Level,
    /// What was found, or what is wrong.
    pub found: String,
    /// What to do about it (empty when nothing is to be done).
    pub fix: String,
}

impl Check {
    fn ok(what: &'static str, found: impl Into<String>) -> Check {
        Check { what, level: Level::Ok, found: found.into(), fix: String::new() }
    }

    fn bad(what: &'static str, level: Level, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { what, level, found: found.into(), fix: fix.into() }
    }

    pub fn line(&self) -> String {
        let tag = match self.level {
            Level::Ok => "ok     ",
            Level::Warn => "warn   ",
            Level::Missing => "MISSING",
        };
        if self.fix.is_empty() {
            format!("{tag} {}: {}", self.what, self.found)
        } else {
            format!("{tag} {}: {} — {}", self.what, self.found, self.fix)
        }
    }
}

/// Every check that applies to `config`: the requirements, then the advisories.
pub fn checks(config: &Config) -> Vec<Check> {
    let mut checks = requirements(config);
    checks.extend(advisories(config));
    checks
}

/// What Sky Island cannot run without (each check `Ok` or `Missing`).
fn requirements(config: &Config) -> Vec<Check> {
    let mut checks = vec![root(), kernel(), architecture(), namespaces(), cgroups(config)];
    match config.storage.backend {
        Backend::Overlay => {
            checks.push(filesystem("overlayfs", "overlay", "load the overlay module (modprobe overlay)"))
        }
        Backend::Btrfs => {
            checks.push(filesystem("btrfs", "btrfs", "install btrfs-progs and load the btrfs module (modprobe btrfs)"));
            checks.push(loop_devices());
        }
    }
    if config.network.ip4.is_some() {
        checks.push(program("nftables", Path::new("nft"), &["--version"], "install nftables (apt install nftables)"));
        checks.push(program("iproute2", Path::new("ip"), &["-V"], "install iproute2 (apt install iproute2)"));
    }
    checks.push(go_toolchains(config));
    checks.push(program("git", &config.git.program, &["--version"], "install git (apt install git)"));
    checks
}

/// What makes it run worse when absent (each check `Ok` or `Warn`).
fn advisories(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(url) = &config.cache.redis_url {
        checks.push(redis(url));
    }
    // Each interpreter only matters to its own functions: missing, Go still runs.
    let interpreters: [(&'static str, &Path, &[&str], &str); 4] = [
        ("Python functions", &config.python.program, &["--version"], "install python3 and python3-pip"),
        ("JavaScript functions", &config.node.program, &["--version"], "install nodejs"),
        ("npm", &config.node.npm, &["--version"], "install npm (JavaScript functions' dependencies)"),
        ("Lua functions", &config.lua.program, &["-v"], "install lua5.4"),
    ];
    for (what, path, args, fix) in interpreters {
        let mut check = program(what, path, args, fix);
        if check.level == Level::Missing {
            check.level = Level::Warn;
        }
        checks.push(check);
    }
    if let Some(check) = cgroup_migrations(config) {
        checks.push(check);
    }
    checks.push(free_disk(&config.data_dir));
    checks.push(run_dir(&config.run_dir));
    checks.push(descriptors());
    checks
}

/// `skyisland doctor`: prints every check; exit status 1 if something needed is missing.
pub fn run(config: &Config) -> ExitCode {
    let checks = checks(config);
    for check in &checks {
        println!("{}", check.line());
    }
    let missing = checks.iter().filter(|c| c.level == Level::Missing).count();
    if missing == 0 {
        println!("Sky Island can run here.");
        ExitCode::SUCCESS
    } else {
        println!("{missing} requirement(s) missing: Sky Island cannot run here until they are met.");
        ExitCode::FAILURE
    }
}

/// What `serve` refuses to start without: the missing requirements' lines, if any. (The
/// advisories are not run: a Redis PING could hold the start for its timeout, for a
/// warning nobody would read.)
pub fn missing(config: &Config) -> Option<String> {
    let lines: Vec<String> =
        requirements(config).iter().filter(|c| c.level == Level::Missing).map(Check::line).collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

fn root() -> Check {
    match skyisland_runner::machine::require_root("doctor") {
        Ok(()) => Check::ok("root", "running as root"),
        Err(e) => {
            Check::bad("root", Level::Missing, e.to_string(), "run as root: jails need namespaces, mounts and cgroups")
        }
    }
}

/// openat2 (5.6) reads go.mod files without following links; pidfds (5.3) wait for jails.
const KERNEL_MIN: (u32, u32) = (5, 6);

fn kernel() -> Check {
    let name = rustix::system::uname();
    let release = name.release().to_string_lossy().into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version >= KERNEL_MIN {
        Check::ok("kernel", format!("Linux {release}"))
    } else {
        Check::bad(
            "kernel",
            Level::Missing,
            format!("Linux {release}"),
            format!("Sky Island needs Linux {}.{} or later (pidfd, openat2)", KERNEL_MIN.0, KERNEL_MIN.1),
        )
    }
}

fn architecture() -> Check {
    let arch = std::env::consts::ARCH;
    match arch {
        "x86_64" | "aarch64" => Check::ok("architecture", arch),
        other => Check::bad(
            "architecture",
            Level::Missing,
            other,
            "the seccomp policy is written for x86_64 and aarch64 only",
        ),
    }
}

fn namespaces() -> Check {
    let kinds = ["mnt", "pid", "net", "uts", "ipc", "cgroup"];
    let missing: Vec<&str> = kinds.into_iter().filter(|k| !Path::new("/proc/self/ns").join(k).exists()).collect();
    if missing.is_empty() {
        Check::ok("namespaces", kinds.join(", "))
    } else {
        Check::bad(
            "namespaces",
            Level::Missing,
            format!("no {} namespaces", missing.join(", ")),
            "use a kernel built with CONFIG_NAMESPACES and each kind enabled",
        )
    }
}

fn cgroups(config: &Config) -> Check {
    match skyisland_runner::machine::cgroups(config) {
        Ok(cgroups) => Check::ok(
            "cgroups",
            format!(
                "cgroup {} at {}, controllers memory, pids, cpu",
                match cgroups.version() {
                    skyisland_jail::CgroupVersion::V1 => "v1",
                    skyisland_jail::CgroupVersion::V2 => "v2",
                },
                config.cgroup.root.display()
            ),
        ),
        Err(e) => Check::bad(
            "cgroups",
            Level::Missing,
            e.to_string(),
            "mount cgroup v2 with the memory, pids and cpu controllers enabled, or v1 hierarchies of each (see [cgroup] in the configuration)",
        ),
    }
}

/// On cgroup v1 a jail joins its cgroups by writing its pid, which waits for an RCU grace
/// period (7–15 ms measured) when no process moved between cgroups in the last few
/// milliseconds, unless some hierarchy is mounted with `favordynmods` (BENCHMARKS.md). On
/// v2 jails are cloned into their cgroup: nothing to say.
fn cgroup_migrations(config: &Config) -> Option<Check> {
    let cgroups = skyisland_runner::machine::cgroups(config).ok()?;
    if cgroups.version() != skyisland_jail::CgroupVersion::V1 {
        return None;
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let favoured = mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(point), Some(kind), Some(options)) = (fields.get(1), fields.get(2), fields.get(3)) else {
            return None;
        };
        (kind.starts_with("cgroup") && options.split(',').any(|o| o == "favordynmods")).then(|| point.to_string())
    });
    Some(match favoured {
        Some(point) => {
            Check::ok("cgroup migrations", format!("favordynmods on {point}: joining a cgroup does not wait"))
        }
        None => Check::bad(
            "cgroup migrations",
            Level::Warn,
            "after a quiet moment, joining a v1 cgroup waits for an RCU grace period (7–15 ms measured): a `jail run` and the first jail of a burst pay it",
            "if forks slightly costlier host-wide are acceptable, keep a hierarchy mounted with favordynmods (docs/operators.md, Tuning)",
        ),
    })
}

fn filesystem(what: &'static str, name: &str, fix: &str) -> Check {
    let known = std::fs::read_to_string("/proc/filesystems")
        .map(|text| text.lines().any(|line| line.split_whitespace().last() == Some(name)))
        .unwrap_or(false);
    if known {
        Check::ok(what, format!("{name} in /proc/filesystems"))
    } else {
        Check::bad(what, Level::Missing, format!("{name} is not in /proc/filesystems"), fix)
    }
}

fn loop_devices() -> Check {
    if Path::new("/dev/loop-control").exists() {
        Check::ok("loop devices", "/dev/loop-control")
    } else {
        Check::bad("loop devices", Level::Missing, "no /dev/loop-control", "load the loop module (modprobe loop)")
    }
}

/// Runs `program args` and reports its first line of output.
fn program(what: &'static str, program: &Path, args: &[&str], fix: &str) -> Check {
    match std::process::Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => {
            let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
            let first = String::from_utf8_lossy(&text).lines().next().unwrap_or_default().trim().to_owned();
            Check::ok(what, first)
        }
        Ok(out) => Check::bad(
            what,
            Level::Missing,
            format!("{} {} failed ({})", program.display(), args.join(" "), out.status),
            fix,
        ),
        Err(e) => Check::bad(what, Level::Missing, format!("{}: {e}", program.display()), fix),
    }
}

fn go_toolchains(config: &Config) -> Check {
    match skyisland_functions::golang::discover(&config.go.program, &config.go.toolchains) {
        Ok(found) => {
            let names: Vec<String> = found.iter().map(|go| format!("{} ({})", go.name, go.go.display())).collect();
            Check::ok("Go toolchains", names.join(", "))
        }
        Err(e) => Check::bad(
            "Go toolchains",
            Level::Missing,
            e,
            "install golang-go, or run scripts/setup.sh, or set go.program / go.toolchains",
        ),
    }
}

/// A PING to Redis (a warning only: without Redis a server serves from its own caches).
fn redis(url: &str) -> Check {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let has_port = host.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) && !host.ends_with(']');
    let host_port = if has_port { host.to_owned() } else { format!("{host}:6379") };
    let reply = (|| -> std::io::Result<String> {
        use std::io::{Read, Write};
        use std::net::ToSocketAddrs;
        let addr = host_port.to_socket_addrs()?.next().ok_or_else(|| std::io::Error::other("no address"))?;
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
    })();
    match reply {
        // Without a password Redis answers +PONG; with one, -NOAUTH: either way it is up.
        Ok(reply) if reply.starts_with("+PONG") || reply.starts_with("-NOAUTH") => {
            Check::ok("Redis", format!("{host_port} answers"))
        }
        Ok(reply) => Check::bad(
            "Redis",
            Level::Warn,
            format!("{host_port} answered {reply:?}"),
            "check cache.redis_url; until then each server uses its own caches",
        ),
        Err(e) => Check::bad(
            "Redis",
            Level::Warn,
            format!("{host_port}: {e}"),
            "start Redis or fix cache.redis_url; until then each server uses its own caches",
        ),
    }
}

/// Below this, builds and the binary cache soon fail for want of room.
const DISK_LOW: u64 = 1 << 30;

fn free_disk(data_dir: &Path) -> Check {
    // The directory may not exist yet: its nearest existing ancestor holds it.
    let existing = data_dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    match rustix::fs::statvfs(existing) {
        Ok(fs) => {
            let free = fs.f_bavail.saturating_mul(fs.f_frsize);
            let shown = format!("{:.1} GiB free for {}", free as f64 / (1u64 << 30) as f64, data_dir.display());
            if free >= DISK_LOW {
                Check::ok("disk", shown)
            } else {
                Check::bad("disk", Level::Warn, shown, "free space: builds, sources and binaries are kept there")
            }
        }
        Err(e) => Check::bad("disk", Level::Warn, format!("{}: {e}", existing.display()), "check data_dir"),
    }
}

const TMPFS_MAGIC: i64 = 0x0102_1994;

fn run_dir(run_dir: &Path) -> Check {
    let existing = run_dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    match rustix::fs::statfs(existing) {
        #[allow(clippy::unnecessary_cast, reason = "f_type is not i64 on every architecture")]
        Ok(fs) if fs.f_type as i64 == TMPFS_MAGIC => Check::ok("run_dir", format!("{} on tmpfs", run_dir.display())),
        Ok(_) => Check::bad(
            "run_dir",
            Level::Warn,
            format!("{} is not on tmpfs", run_dir.display()),
            "put run_dir under /run: slot locks and scratch should not outlive a reboot",
        ),
        Err(e) => Check::bad("run_dir", Level::Warn, format!("{}: {e}", existing.display()), "check run_dir"),
    }
}

/// Every connection, jail pipe, slot and binary held in memory is a descriptor.
const DESCRIPTORS_WANTED: u64 = 65_536;

fn descriptors() -> Check {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard >= DESCRIPTORS_WANTED {
        Check::ok("open files", format!("hard limit {hard}"))
    } else {
        Check::bad(
            "open files",
            Level::Warn,
            format!("hard limit {hard}"),
            format!("raise it to {DESCRIPTORS_WANTED} or more (LimitNOFILE= in the unit, or ulimit -Hn)"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_what_and_what_to_do() {
        let check = Check::bad("git", Level::Missing, "git: not found", "install git");
        assert_eq!(check.line(), "MISSING git: git: not found — install git");
        assert_eq!(Check::ok("kernel", "Linux 6.1").line(), "ok      kernel: Linux 6.1");
    }
}
