//! The jail's seccomp policy. The rules are reviewed data in `seccomp/jail.json`; this
//! module compiles them once per spawner into one classic-BPF program that every jail
//! installs as the last step before `exec`.
//!
//! The program is a single chain of comparisons, not a general rule compiler's output:
//! the kernel checks and JIT-compiles a filter at every installation, at a few
//! microseconds per instruction, and every jail installs it. seccompiler compiled the same
//! policy into three filters of 357 instructions; this one has about 70 (measured in
//! BENCHMARKS.md).

use serde::Deserialize;

/// The reviewed policy.
pub const POLICY_JSON: &str = include_str!("../seccomp/jail.json");

const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG0_LOW: u32 = 16;

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const JMP_JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[allow(dead_code)]
    about: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    syscall: String,
    action: String,
    #[serde(default)]
    if_flags: Vec<String>,
    #[allow(dead_code)]
    #[serde(default)]
    why: Option<String>,
}

/// The compiled filter.
#[derive(Debug, Clone)]
pub struct Policy {
    program: Vec<Instruction>,
}

/// System call numbers (x86_64) of every name the policy may use.
fn syscall_number(name: &str) -> Option<i64> {
    use libc::*;
    Some(match name {
        "mount" => SYS_mount,
        "umount2" => SYS_umount2,
        "pivot_root" => SYS_pivot_root,
        "chroot" => SYS_chroot,
        "move_mount" => SYS_move_mount,
        "open_tree" => SYS_open_tree,
        "fsopen" => SYS_fsopen,
        "fsconfig" => SYS_fsconfig,
        "fsmount" => SYS_fsmount,
        "fspick" => SYS_fspick,
        "mount_setattr" => SYS_mount_setattr,
        "open_by_handle_at" => SYS_open_by_handle_at,
        "name_to_handle_at" => SYS_name_to_handle_at,
        "ptrace" => SYS_ptrace,
        "process_vm_readv" => SYS_process_vm_readv,
        "process_vm_writev" => SYS_process_vm_writev,
        "pidfd_getfd" => SYS_pidfd_getfd,
        "kexec_load" => SYS_kexec_load,
        "kexec_file_load" => SYS_kexec_file_load,
        "reboot" => SYS_reboot,
        "init_module" => SYS_init_module,
        "finit_module" => SYS_finit_module,
        "delete_module" => SYS_delete_module,
        "keyctl" => SYS_keyctl,
        "add_key" => SYS_add_key,
        "request_key" => SYS_request_key,
        "bpf" => SYS_bpf,
        "perf_event_open" => SYS_perf_event_open,
        "userfaultfd" => SYS_userfaultfd,
        "io_uring_setup" => SYS_io_uring_setup,
        "io_uring_enter" => SYS_io_uring_enter,
        "io_uring_register" => SYS_io_uring_register,
        "unshare" => SYS_unshare,
        "setns" => SYS_setns,
        "swapon" => SYS_swapon,
        "swapoff" => SYS_swapoff,
        "acct" => SYS_acct,
        "settimeofday" => SYS_settimeofday,
        "clock_settime" => SYS_clock_settime,
        "clock_adjtime" => SYS_clock_adjtime,
        "adjtimex" => SYS_adjtimex,
        "syslog" => SYS_syslog,
        "sethostname" => SYS_sethostname,
        "setdomainname" => SYS_setdomainname,
        "vhangup" => SYS_vhangup,
        "iopl" => SYS_iopl,
        "ioperm" => SYS_ioperm,
        "quotactl" => SYS_quotactl,
        "quotactl_fd" => SYS_quotactl_fd,
        "lookup_dcookie" => SYS_lookup_dcookie,
        "uselib" => SYS_uselib,
        "fanotify_init" => SYS_fanotify_init,
        "migrate_pages" => SYS_migrate_pages,
        "move_pages" => SYS_move_pages,
        "clone" => SYS_clone,
        "clone3" => SYS_clone3,
        _ => return None,
    })
}

fn flag(name: &str) -> Option<u32> {
    Some(match name {
        "CLONE_NEWNS" => libc::CLONE_NEWNS,
        "CLONE_NEWCGROUP" => libc::CLONE_NEWCGROUP,
        "CLONE_NEWUTS" => libc::CLONE_NEWUTS,
        "CLONE_NEWIPC" => libc::CLONE_NEWIPC,
        "CLONE_NEWUSER" => libc::CLONE_NEWUSER,
        "CLONE_NEWPID" => libc::CLONE_NEWPID,
        "CLONE_NEWNET" => libc::CLONE_NEWNET,
        _ => return None,
    } as u32)
}

fn errno(action: &str) -> Option<u32> {
    Some(match action {
        "EPERM" => libc::EPERM,
        "ENOSYS" => libc::ENOSYS,
        "EACCES" => libc::EACCES,
        _ => return None,
    } as u32)
}

fn op(code: u16, jt: u8, jf: u8, k: u32) -> Instruction {
    Instruction { code, jt, jf, k }
}

impl Policy {
    pub fn compile() -> Result<Policy, String> {
        Self::compile_json(POLICY_JSON)
    }

    /// Compiles a policy file:
    ///
    /// ```text
    /// load arch; != x86_64 → kill
    /// load nr;   x32 → ENOSYS
    /// nr == rule.syscall → its return (or its flag check)      one per rule
    /// allow
    /// flag checks: load arg0; any flag set → its return; allow   one per conditional rule
    /// the distinct returns
    /// ```
    fn compile_json(json: &str) -> Result<Policy, String> {
        let file: PolicyFile = serde_json::from_str(json).map_err(|e| format!("seccomp policy: {e}"))?;
        let mut returns: Vec<u32> = Vec::new();
        let mut return_index = |errno: u32| match returns.iter().position(|&e| e == errno) {
            Some(i) => i,
            None => {
                returns.push(errno);
                returns.len() - 1
            }
        };
        // Validate and resolve each rule first.
        struct Resolved {
            nr: u32,
            ret: usize,
            mask: Option<u32>,
        }
        let mut rules = Vec::new();
        for rule in &file.rules {
            let nr = syscall_number(&rule.syscall)
                .ok_or_else(|| format!("seccomp policy: unknown system call {:?}", rule.syscall))?;
            let errno =
                errno(&rule.action).ok_or_else(|| format!("seccomp policy: unknown action {:?}", rule.action))?;
            let mask = if rule.if_flags.is_empty() {
                None
            } else {
                let mut mask = 0;
                for name in &rule.if_flags {
                    mask |= flag(name).ok_or_else(|| format!("seccomp policy: unknown flag {name:?}"))?;
                }
                Some(mask)
            };
            if rules.iter().any(|r: &Resolved| r.nr == nr as u32) {
                return Err(format!("seccomp policy: {} listed twice", rule.syscall));
            }
            rules.push(Resolved { nr: nr as u32, ret: return_index(errno), mask });
        }
        let conditional = rules.iter().filter(|r| r.mask.is_some()).count();
        // Layout: 5 header, one per rule, allow, 3 per conditional rule, the returns.
        let chain_start = 5;
        let allow = chain_start + rules.len();
        let checks_start = allow + 1;
        let returns_start = checks_start + 3 * conditional;
        let len = returns_start + returns.len() + 1;
        if len > 255 {
            return Err(format!("seccomp policy: {len} instructions exceed the short jumps this compiler uses"));
        }
        let jump = |from: usize, to: usize| -> u8 { (to - from - 1) as u8 };
        let x32_return = returns_start + returns.len();
        let mut program = vec![
            op(LD_W_ABS, 0, 0, DATA_ARCH),
            op(JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
            op(RET_K, 0, 0, RET_KILL_PROCESS),
            op(LD_W_ABS, 0, 0, DATA_NR),
            op(JMP_JGE_K, jump(4, x32_return), 0, X32_SYSCALL_BIT),
        ];
        let mut check = checks_start;
        for (i, rule) in rules.iter().enumerate() {
            let at = chain_start + i;
            let target = match rule.mask {
                Some(_) => {
                    let target = check;
                    check += 3;
                    target
                }
                None => returns_start + rule.ret,
            };
            program.push(op(JMP_JEQ_K, jump(at, target), 0, rule.nr));
        }
        program.push(op(RET_K, 0, 0, RET_ALLOW));
        for rule in rules.iter().filter(|r| r.mask.is_some()) {
            let at = program.len();
            program.push(op(LD_W_ABS, 0, 0, DATA_ARG0_LOW));
            program.push(op(JMP_JSET_K, jump(at + 1, returns_start + rule.ret), 0, rule.mask.expect("conditional")));
            program.push(op(RET_K, 0, 0, RET_ALLOW));
        }
        program.extend(returns.iter().map(|&errno| op(RET_K, 0, 0, RET_ERRNO | errno)));
        program.push(op(RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32));
        debug_assert_eq!(program.len(), len);
        debug_assert!(program.iter().all(|i| i.code != JMP_JA));
        Ok(Policy { program })
    }

    pub fn instructions(&self) -> &[Instruction] {
        &self.program
    }

    /// Installs the filter on the calling thread (requires `no_new_privs`).
    pub fn install(&self) -> std::io::Result<()> {
        crate::sys::install_seccomp_filter(&self.program)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic BPF program on `struct seccomp_data`, as the kernel would.
    fn run(program: &[Instruction], arch: u32, nr: u32, arg0: u64) -> u32 {
        let word = |offset: u32| match offset {
            DATA_NR => nr,
            DATA_ARCH => arch,
            DATA_ARG0_LOW => arg0 as u32,
            other => panic!("unexpected load at {other}"),
        };
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = program[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => a = word(i.k),
                JMP_JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JMP_JGE_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                JMP_JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                RET_K => return i.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_compiled_policy_denies_what_the_jail_promises() {
        let policy = Policy::compile().expect("the policy compiles");
        let p = policy.instructions();
        assert!(p.len() < 80, "{} instructions", p.len());
        let x86 = |nr: i64, arg0: u64| run(p, AUDIT_ARCH_X86_64, nr as u32, arg0);
        let eperm = RET_ERRNO | libc::EPERM as u32;
        for nr in [
            libc::SYS_mount,
            libc::SYS_ptrace,
            libc::SYS_kexec_load,
            libc::SYS_kexec_file_load,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_delete_module,
            libc::SYS_keyctl,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_reboot,
            libc::SYS_userfaultfd,
            libc::SYS_pivot_root,
            libc::SYS_move_mount,
        ] {
            assert_eq!(x86(nr, 0), eperm, "system call {nr}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_mmap,
            libc::SYS_execve,
            libc::SYS_exit_group,
            libc::SYS_futex,
        ] {
            assert_eq!(x86(nr, 0), RET_ALLOW, "system call {nr}");
        }
        // Threads and plain forks yes; new namespaces no.
        let thread =
            (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
        assert_eq!(x86(libc::SYS_clone, thread), RET_ALLOW);
        assert_eq!(x86(libc::SYS_clone, libc::SIGCHLD as u64), RET_ALLOW);
        for ns in
            [libc::CLONE_NEWNS, libc::CLONE_NEWPID, libc::CLONE_NEWUSER, libc::CLONE_NEWNET, libc::CLONE_NEWCGROUP]
        {
            assert_eq!(x86(libc::SYS_clone, ns as u64 | libc::SIGCHLD as u64), eperm);
        }
        let enosys = RET_ERRNO | libc::ENOSYS as u32;
        assert_eq!(x86(libc::SYS_clone3, 0), enosys);
        assert_eq!(x86(X32_SYSCALL_BIT as i64 | libc::SYS_mount, 0), enosys, "x32 is refused");
        assert_eq!(run(p, 0x4000_0003, libc::SYS_read as u32, 0), RET_KILL_PROCESS, "i386 is killed");
    }

    #[test]
    fn bad_policies_are_refused() {
        for (json, error) in [
            (
                r#"{"about": "", "rules": [{"syscall": "mount", "action": "EPERM"}, {"syscall": "mount", "action": "EPERM"}]}"#,
                "listed twice",
            ),
            (r#"{"about": "", "rules": [{"syscall": "no_such_call", "action": "EPERM"}]}"#, "unknown system call"),
            (r#"{"about": "", "rules": [{"syscall": "mount", "action": "EWHAT"}]}"#, "unknown action"),
            (
                r#"{"about": "", "rules": [{"syscall": "clone", "action": "EPERM", "if_flags": ["CLONE_VM2"]}]}"#,
                "unknown flag",
            ),
            (r#"{"about": "", "rules": [], "extra": 1}"#, "unknown field"),
        ] {
            let e = Policy::compile_json(json).unwrap_err();
            assert!(e.contains(error), "{e}");
        }
    }
}
