//! The jail's seccomp policy. The rules are reviewed data in `seccomp/jail.json`
//! (seccompiler's JSON format); this module compiles them once per spawner and installs
//! them as the last step before `exec`.
//!
//! Three filters are stacked: an architecture guard, `deny` (EPERM for mounts, ptrace,
//! kexec, modules, keyrings, bpf, perf, io_uring, namespaces, clock and host-wide
//! settings), and `enosys` (ENOSYS for `clone3`, whose flags seccomp cannot inspect,
//! so that libc and Go fall back to `clone`, whose flags `deny` checks).

use seccompiler::{BpfProgram, TargetArch, sock_filter};

/// The reviewed policy.
pub const POLICY_JSON: &str = include_str!("../seccomp/jail.json");

/// Compiled filters in installation order.
#[derive(Debug, Clone)]
pub struct Policy {
    filters: Vec<BpfProgram>,
}

impl Policy {
    pub fn compile() -> Result<Policy, String> {
        let mut map = seccompiler::compile_from_json(POLICY_JSON.as_bytes(), TargetArch::x86_64)
            .map_err(|e| format!("seccomp policy: {e}"))?;
        let mut take = |name: &str| {
            map.remove(name)
                .ok_or_else(|| format!("seccomp policy lacks filter {name:?}"))
        };
        Ok(Policy {
            filters: vec![arch_guard(), take("deny")?, take("enosys")?],
        })
    }

    /// Installs every filter on the calling thread (requires `no_new_privs`).
    pub fn install(&self) -> std::io::Result<()> {
        for filter in &self.filters {
            seccompiler::apply_filter(filter).map_err(std::io::Error::other)?;
        }
        Ok(())
    }
}

/// Kills a process that calls in with another architecture's convention and refuses the
/// x32 ABI (syscall numbers with bit 30 set), which would otherwise bypass a deny list
/// written in x86_64 numbers on kernels built with CONFIG_X86_X32_ABI.
fn arch_guard() -> BpfProgram {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const RET_KILL_PROCESS: u32 = 0x8000_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        op(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        op(RET_K, 0, 0, RET_KILL_PROCESS),
        op(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        op(JGE_K, 0, 1, X32_SYSCALL_BIT),
        op(RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
        op(RET_K, 0, 0, RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_compiles_and_denies_what_the_jail_promises() {
        let policy = Policy::compile().expect("policy compiles");
        assert_eq!(policy.filters.len(), 3);
        let json: serde_json::Value = serde_json::from_str(POLICY_JSON).unwrap();
        let denied: Vec<&str> = json["deny"]["filter"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["syscall"].as_str().unwrap())
            .collect();
        for must in [
            "mount",
            "ptrace",
            "kexec_load",
            "init_module",
            "finit_module",
            "keyctl",
            "bpf",
            "perf_event_open",
            "io_uring_setup",
            "unshare",
            "setns",
            "reboot",
            "clone",
        ] {
            assert!(denied.contains(&must), "{must} must be denied");
        }
        assert_eq!(json["deny"]["match_action"]["errno"], 1);
        assert_eq!(json["enosys"]["filter"][0]["syscall"], "clone3");
    }
}
