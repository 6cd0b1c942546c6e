//! The jail's seccomp policy. The rules are reviewed data in `seccomp/jail.json` (an
//! allow-list: what is not listed fails with the default errno); this module compiles
//! them once per spawner into one classic-BPF program that every jail installs as the
//! last step before `exec`.
//!
//! The program is a balanced decision tree over the system call number, not a chain of
//! comparisons: the kernel verifies and JIT-compiles a filter at every installation, and
//! then runs it once per system call number to fill its per-filter cache of calls that are
//! always allowed, so both the length of the program and the length of the path a number
//! takes through it are paid in every jail (measured in BENCHMARKS.md). The numbers are
//! grouped into ranges that share an action; the tree compares with `>=` only, about
//! log2(ranges) comparisons per call. A call whose arguments matter jumps to a small block
//! that checks them.

mod x86_64;

use std::collections::BTreeMap;

use serde::Deserialize;

/// The reviewed policy.
pub const POLICY_JSON: &str = include_str!("../../seccomp/jail.json");

const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// The low 32 bits of argument `i` (little-endian).
const fn data_arg_low(i: u32) -> u32 {
    16 + 8 * i
}
/// Longest program: every jump of this compiler is a short (8-bit) forward jump.
const MAX_INSTRUCTIONS: usize = 256;

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
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
    default: String,
    allow: Vec<AllowGroup>,
    deny: Vec<DenyGroup>,
    conditional: Vec<Conditional>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowGroup {
    #[allow(dead_code)]
    why: String,
    syscalls: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyGroup {
    errno: String,
    #[allow(dead_code)]
    why: String,
    syscalls: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conditional {
    syscall: String,
    #[allow(dead_code)]
    why: String,
    allow_if: Vec<Vec<Check>>,
    otherwise: String,
}

/// One comparison of an argument's low 32 bits: equal to a value, or none of some flags set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    arg: u32,
    #[serde(default)]
    is: Option<Value>,
    #[serde(default)]
    none_of: Vec<String>,
}

/// A number, or the name of a constant.
#[derive(Deserialize)]
#[serde(untagged)]
enum Value {
    Number(u32),
    Name(String),
}

/// What the policy does with one system call number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Errno(u32),
    /// Depends on the arguments: the index of its conditional rule.
    Conditional(usize),
}

/// The compiled filter.
#[derive(Debug, Clone)]
pub struct Policy {
    program: Vec<Instruction>,
    /// The action for each listed number, and for everything else.
    actions: BTreeMap<u32, Action>,
    default: u32,
}

/// The number of a system call the policy may name.
pub fn syscall_number(name: &str) -> Option<u32> {
    x86_64::SYSCALLS.iter().find(|(n, _)| *n == name).map(|&(_, nr)| nr)
}

/// The name of a system call number, for messages and tests.
pub fn syscall_name(nr: u32) -> Option<&'static str> {
    x86_64::SYSCALLS.iter().find(|&&(_, n)| n == nr).map(|&(name, _)| name)
}

fn constant(name: &str) -> Option<u32> {
    Some(match name {
        "CLONE_NEWNS" => libc::CLONE_NEWNS as u32,
        "CLONE_NEWCGROUP" => libc::CLONE_NEWCGROUP as u32,
        "CLONE_NEWUTS" => libc::CLONE_NEWUTS as u32,
        "CLONE_NEWIPC" => libc::CLONE_NEWIPC as u32,
        "CLONE_NEWUSER" => libc::CLONE_NEWUSER as u32,
        "CLONE_NEWPID" => libc::CLONE_NEWPID as u32,
        "CLONE_NEWNET" => libc::CLONE_NEWNET as u32,
        // Shares its bit with CSIGNAL's range in clone(2), but clone3 only; listed for clone
        // anyway (unshare takes it), so the check stays true if the kernel ever accepts it.
        "CLONE_NEWTIME" => libc::CLONE_NEWTIME as u32,
        "AF_UNIX" => libc::AF_UNIX as u32,
        "AF_INET" => libc::AF_INET as u32,
        "AF_INET6" => libc::AF_INET6 as u32,
        "AF_NETLINK" => libc::AF_NETLINK as u32,
        "NETLINK_ROUTE" => libc::NETLINK_ROUTE as u32,
        _ => return None,
    })
}

fn errno(name: &str) -> Option<u32> {
    Some(match name {
        "EPERM" => libc::EPERM,
        "ENOSYS" => libc::ENOSYS,
        "EACCES" => libc::EACCES,
        "EAFNOSUPPORT" => libc::EAFNOSUPPORT,
        _ => return None,
    } as u32)
}

fn op(code: u16, jt: u8, jf: u8, k: u32) -> Instruction {
    Instruction { code, jt, jf, k }
}

/// Where a jump goes, resolved once every block has its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    At(usize),
    Action(Action),
    /// The next case of conditional rule `rule`, or its `otherwise` after the last.
    Case {
        rule: usize,
        case: usize,
    },
}

/// A jump whose offsets are filled in at the end.
struct Pending {
    at: usize,
    jt: Target,
    jf: Target,
}

/// A conditional rule, resolved.
struct Resolved {
    cases: Vec<Vec<(u32, Compare)>>,
    otherwise: u32,
}

#[derive(Clone, Copy)]
enum Compare {
    Equal(u32),
    NoneOf(u32),
}

impl Policy {
    pub fn compile() -> Result<Policy, String> {
        Self::compile_json(POLICY_JSON)
    }

    /// Compiles a policy file:
    ///
    /// ```text
    /// load arch; != x86_64 → kill
    /// load nr
    /// decision tree: nr >= pivot ? right : left, down to ranges of one action
    /// per conditional rule: each case's checks on the arguments → allow; else the next case
    /// the returns: allow, and each errno
    /// ```
    fn compile_json(json: &str) -> Result<Policy, String> {
        let file: PolicyFile = serde_json::from_str(json).map_err(|e| format!("seccomp policy: {e}"))?;
        let default =
            errno(&file.default).ok_or_else(|| format!("seccomp policy: unknown errno {:?}", file.default))?;
        let mut actions: BTreeMap<u32, Action> = BTreeMap::new();
        let mut set = |name: &str, action: Action| -> Result<(), String> {
            let nr = syscall_number(name).ok_or_else(|| format!("seccomp policy: unknown system call {name:?}"))?;
            match actions.insert(nr, action) {
                Some(_) => Err(format!("seccomp policy: {name} listed twice")),
                None => Ok(()),
            }
        };
        for group in &file.allow {
            for name in &group.syscalls {
                set(name, Action::Allow)?;
            }
        }
        for group in &file.deny {
            let e = errno(&group.errno).ok_or_else(|| format!("seccomp policy: unknown errno {:?}", group.errno))?;
            for name in &group.syscalls {
                set(name, Action::Errno(e))?;
            }
        }
        let mut rules = Vec::new();
        for (index, rule) in file.conditional.iter().enumerate() {
            set(&rule.syscall, Action::Conditional(index))?;
            let otherwise =
                errno(&rule.otherwise).ok_or_else(|| format!("seccomp policy: unknown errno {:?}", rule.otherwise))?;
            let mut cases = Vec::new();
            for case in &rule.allow_if {
                let mut checks = Vec::new();
                for check in case {
                    if check.arg > 5 {
                        return Err(format!("seccomp policy: {} has no argument {}", rule.syscall, check.arg));
                    }
                    let compare = match (&check.is, check.none_of.is_empty()) {
                        (Some(value), true) => Compare::Equal(match value {
                            Value::Number(n) => *n,
                            Value::Name(name) => {
                                constant(name).ok_or_else(|| format!("seccomp policy: unknown constant {name:?}"))?
                            }
                        }),
                        (None, false) => {
                            let mut mask = 0;
                            for name in &check.none_of {
                                mask |= constant(name)
                                    .ok_or_else(|| format!("seccomp policy: unknown constant {name:?}"))?;
                            }
                            Compare::NoneOf(mask)
                        }
                        _ => {
                            return Err(format!(
                                "seccomp policy: a check of {} needs exactly one of \"is\" and \"none_of\"",
                                rule.syscall
                            ));
                        }
                    };
                    checks.push((check.arg, compare));
                }
                if checks.is_empty() {
                    return Err(format!("seccomp policy: an empty case for {} would allow everything", rule.syscall));
                }
                cases.push(checks);
            }
            rules.push(Resolved { cases, otherwise });
        }

        // Ranges [start, next start) of one action, over every 32-bit number.
        let mut ranges: Vec<(u32, Action)> = vec![(0, Action::Errno(default))];
        for (&nr, &action) in &actions {
            let last = ranges.last_mut().expect("never empty");
            if last.0 == nr {
                last.1 = action;
            } else if last.1 != action {
                ranges.push((nr, action));
            }
            if nr < u32::MAX && !actions.contains_key(&(nr + 1)) {
                ranges.push((nr + 1, Action::Errno(default)));
            }
            // Merge with the previous range when the action is the same.
            while ranges.len() >= 2 && ranges[ranges.len() - 1].1 == ranges[ranges.len() - 2].1 {
                ranges.pop();
            }
        }

        let mut program = vec![
            op(LD_W_ABS, 0, 0, DATA_ARCH),
            op(JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
            op(RET_K, 0, 0, RET_KILL_PROCESS),
            op(LD_W_ABS, 0, 0, DATA_NR),
        ];
        let mut pending = Vec::new();
        let root = tree(&ranges, &mut program, &mut pending);
        if let Target::Action(_) = root {
            return Err("seccomp policy: every system call has the same action".into());
        }
        // Conditional blocks: one per rule, its cases one after the other.
        let mut case_starts: Vec<Vec<usize>> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let mut starts = Vec::new();
            for (c, checks) in rule.cases.iter().enumerate() {
                starts.push(program.len());
                let fail = Target::Case { rule: index, case: c + 1 };
                for (i, &(arg, compare)) in checks.iter().enumerate() {
                    let pass = if i + 1 == checks.len() {
                        Target::Action(Action::Allow)
                    } else {
                        Target::At(program.len() + 2)
                    };
                    program.push(op(LD_W_ABS, 0, 0, data_arg_low(arg)));
                    let at = program.len();
                    match compare {
                        Compare::Equal(value) => {
                            program.push(op(JMP_JEQ_K, 0, 0, value));
                            pending.push(Pending { at, jt: pass, jf: fail });
                        }
                        Compare::NoneOf(mask) => {
                            program.push(op(JMP_JSET_K, 0, 0, mask));
                            pending.push(Pending { at, jt: fail, jf: pass });
                        }
                    }
                }
            }
            case_starts.push(starts);
        }
        // The returns.
        let mut returns: BTreeMap<u32, usize> = BTreeMap::new();
        let allow_at = program.len();
        program.push(op(RET_K, 0, 0, RET_ALLOW));
        let mut errnos: Vec<u32> = ranges
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Errno(e) => Some(*e),
                _ => None,
            })
            .chain(rules.iter().map(|r| r.otherwise))
            .collect();
        errnos.sort_unstable();
        errnos.dedup();
        for e in errnos {
            returns.insert(e, program.len());
            program.push(op(RET_K, 0, 0, RET_ERRNO | e));
        }
        if program.len() > MAX_INSTRUCTIONS {
            return Err(format!(
                "seccomp policy: {} instructions exceed the short jumps this compiler uses",
                program.len()
            ));
        }
        let resolve = |target: Target| -> usize {
            match target {
                Target::At(at) => at,
                Target::Action(Action::Allow) => allow_at,
                Target::Action(Action::Errno(e)) => returns[&e],
                Target::Action(Action::Conditional(rule)) => case_starts[rule][0],
                Target::Case { rule, case } => match case_starts[rule].get(case) {
                    Some(&start) => start,
                    None => returns[&rules[rule].otherwise],
                },
            }
        };
        for jump in pending {
            let offset = |target: Target| -> Result<u8, String> {
                let to = resolve(target);
                to.checked_sub(jump.at + 1)
                    .and_then(|d| u8::try_from(d).ok())
                    .ok_or_else(|| format!("seccomp policy: a jump from {} to {to} does not fit", jump.at))
            };
            program[jump.at].jt = offset(jump.jt)?;
            program[jump.at].jf = offset(jump.jf)?;
        }
        Ok(Policy { program, actions, default })
    }

    pub fn instructions(&self) -> &[Instruction] {
        &self.program
    }

    /// What the policy does with system call `nr` (before looking at arguments).
    pub fn action(&self, nr: u32) -> Action {
        self.actions.get(&nr).copied().unwrap_or(Action::Errno(self.default))
    }

    /// What the filter answers to system call `nr` with `args`, as the kernel would run it:
    /// `Ok` when allowed, the errno when refused, `Err(None)` when the process is killed.
    pub fn check(&self, nr: u32, args: [u64; 6]) -> Result<(), Option<i32>> {
        match run(&self.program, AUDIT_ARCH_X86_64, nr, args).0 {
            RET_ALLOW => Ok(()),
            ret if ret & 0xffff_0000 == RET_ERRNO => Err(Some((ret & 0xffff) as i32)),
            _ => Err(None),
        }
    }

    /// Installs the filter on the calling thread (requires `no_new_privs`).
    pub fn install(&self) -> std::io::Result<()> {
        crate::sys::install_seccomp_filter(&self.program)
    }
}

/// Runs a classic BPF program on `struct seccomp_data`, as the kernel would; returns the
/// result and the number of instructions executed. (For [`Policy::check`] and the tests;
/// the kernel runs the real thing.)
fn run(program: &[Instruction], arch: u32, nr: u32, args: [u64; 6]) -> (u32, usize) {
    let word = |offset: u32| match offset {
        DATA_NR => nr,
        DATA_ARCH => arch,
        o if (16..64).contains(&o) && (o - 16) % 8 == 0 => args[((o - 16) / 8) as usize] as u32,
        other => unreachable!("the compiler emits no load at {other}"),
    };
    let (mut pc, mut a, mut steps) = (0usize, 0u32, 0);
    loop {
        let i = program[pc];
        pc += 1;
        steps += 1;
        match i.code {
            LD_W_ABS => a = word(i.k),
            JMP_JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
            JMP_JGE_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
            JMP_JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
            RET_K => return (i.k, steps),
            other => unreachable!("the compiler emits no opcode {other:#x}"),
        }
    }
}

/// Emits the comparisons that lead a number to its range's action, in pre-order (each
/// node's `>=` branch is after its `<` branch, so every jump is forward). Returns where the
/// subtree starts: an instruction, or directly an action when it is one range.
fn tree(ranges: &[(u32, Action)], program: &mut Vec<Instruction>, pending: &mut Vec<Pending>) -> Target {
    if let [(_, action)] = ranges {
        return Target::Action(*action);
    }
    let mid = ranges.len() / 2;
    let at = program.len();
    program.push(op(JMP_JGE_K, 0, 0, ranges[mid].0));
    let below = tree(&ranges[..mid], program, pending);
    let above = tree(&ranges[mid..], program, pending);
    pending.push(Pending { at, jt: above, jf: below });
    Target::At(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x86(policy: &Policy, name: &str, args: [u64; 6]) -> u32 {
        let nr = syscall_number(name).unwrap_or_else(|| panic!("{name}"));
        run(policy.instructions(), AUDIT_ARCH_X86_64, nr, args).0
    }

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;

    #[test]
    fn the_table_agrees_with_libc() {
        use libc::*;
        for (name, nr) in [
            ("read", SYS_read),
            ("clone", SYS_clone),
            ("rseq", SYS_rseq),
            ("pidfd_send_signal", SYS_pidfd_send_signal),
            ("io_uring_setup", SYS_io_uring_setup),
            ("clone3", SYS_clone3),
            ("memfd_secret", SYS_memfd_secret),
            ("fchmodat2", SYS_fchmodat2),
            ("mseal", SYS_mseal),
        ] {
            assert_eq!(syscall_number(name), Some(nr as u32), "{name}");
        }
        let mut seen = std::collections::HashSet::new();
        for w in x86_64::SYSCALLS.windows(2) {
            assert!(w[0].1 < w[1].1, "sorted by number: {w:?}");
        }
        assert!(x86_64::SYSCALLS.iter().all(|(name, _)| seen.insert(*name)), "names are unique");
    }

    #[test]
    fn every_number_takes_the_action_the_policy_lists() {
        let policy = Policy::compile().expect("the policy compiles");
        let p = policy.instructions();
        assert!(p.len() <= 160, "{} instructions", p.len());
        let mut deepest = 0;
        for nr in (0..600).chain([0x3fff_ffff, 0x4000_0000, 0x4000_0001, u32::MAX]) {
            let (result, steps) = run(p, AUDIT_ARCH_X86_64, nr, [0; 6]);
            if matches!(policy.action(nr), Action::Allow | Action::Errno(_)) {
                deepest = deepest.max(steps);
            }
            let expected = match policy.action(nr) {
                Action::Allow => RET_ALLOW,
                Action::Errno(e) => RET_ERRNO | e,
                // With all-zero arguments every conditional rule of this policy allows,
                // but for socket and socketpair (0 is AF_UNSPEC).
                Action::Conditional(_) => result,
            };
            assert_eq!(result, expected, "system call {nr} ({:?})", syscall_name(nr));
        }
        assert!(deepest <= 12, "the tree is balanced: {deepest} steps");
    }

    #[test]
    fn the_compiled_policy_denies_what_the_jail_promises() {
        let policy = Policy::compile().expect("the policy compiles");
        for name in [
            "mount",
            "ptrace",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "keyctl",
            "bpf",
            "perf_event_open",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "unshare",
            "setns",
            "reboot",
            "userfaultfd",
            "pivot_root",
            "move_mount",
            "kcmp",
            "modify_ldt",
            "mbind",
            "set_mempolicy",
            "migrate_pages",
            "memfd_secret",
            "open_by_handle_at",
            "process_vm_readv",
        ] {
            assert_eq!(x86(&policy, name, [0; 6]), EPERM, "{name}");
        }
        for name in ["read", "write", "openat", "mmap", "execve", "exit_group", "futex", "rseq", "getrandom"] {
            assert_eq!(x86(&policy, name, [0; 6]), RET_ALLOW, "{name}");
        }
        // Unlisted: old, removed or new calls nobody reviewed.
        for name in ["sysfs", "ustat", "lsm_get_self_attr", "getxattrat", "tuxcall"] {
            assert_eq!(x86(&policy, name, [0; 6]), ENOSYS, "{name}");
        }
        assert_eq!(run(policy.instructions(), AUDIT_ARCH_X86_64, 467, [0; 6]).0, ENOSYS, "newer than the table");
        // Threads and plain forks yes; new namespaces no.
        let thread =
            (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
        assert_eq!(x86(&policy, "clone", [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(x86(&policy, "clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), RET_ALLOW);
        for ns in
            [libc::CLONE_NEWNS, libc::CLONE_NEWPID, libc::CLONE_NEWUSER, libc::CLONE_NEWNET, libc::CLONE_NEWCGROUP]
        {
            assert_eq!(x86(&policy, "clone", [ns as u64 | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), EPERM);
        }
        assert_eq!(x86(&policy, "clone3", [0; 6]), ENOSYS);
        // Socket families.
        let socket = |domain: i32, protocol: i32| x86(&policy, "socket", [domain as u64, 1, protocol as u64, 0, 0, 0]);
        for domain in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
            assert_eq!(socket(domain, 0), RET_ALLOW, "family {domain}");
        }
        assert_eq!(socket(libc::AF_NETLINK, libc::NETLINK_ROUTE), RET_ALLOW);
        for (domain, protocol) in [
            (libc::AF_NETLINK, libc::NETLINK_AUDIT),
            (libc::AF_NETLINK, libc::NETLINK_KOBJECT_UEVENT),
            (libc::AF_NETLINK, libc::NETLINK_SOCK_DIAG),
            (libc::AF_VSOCK, 0),
            (libc::AF_PACKET, 0),
            (libc::AF_ALG, 0),
            (libc::AF_BLUETOOTH, 0),
            (libc::AF_UNSPEC, 0),
        ] {
            assert_eq!(socket(domain, protocol), EPERM, "family {domain} protocol {protocol}");
        }
        // The high half of an int argument is ignored by the kernel, and by the check.
        assert_eq!(x86(&policy, "socket", [(1 << 32) | libc::AF_INET as u64, 1, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(x86(&policy, "socketpair", [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(x86(&policy, "socketpair", [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0]), EPERM);
        // Personas.
        for persona in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(x86(&policy, "personality", [persona, 0, 0, 0, 0, 0]), RET_ALLOW, "{persona:#x}");
        }
        for persona in [0x0040_0000u64 /* READ_IMPLIES_EXEC */, 0x0004_0000 /* ADDR_NO_RANDOMIZE */, 1] {
            assert_eq!(x86(&policy, "personality", [persona, 0, 0, 0, 0, 0]), EPERM, "{persona:#x}");
        }
        // Other architectures die; x32 numbers get the default.
        assert_eq!(run(policy.instructions(), 0x4000_0003, 0, [0; 6]).0, RET_KILL_PROCESS, "i386 is killed");
        let x32_mount = 0x4000_0000 | syscall_number("mount").unwrap();
        assert_eq!(run(policy.instructions(), AUDIT_ARCH_X86_64, x32_mount, [0; 6]).0, ENOSYS);
    }

    #[test]
    fn bad_policies_are_refused() {
        let policy = |rest: &str| format!(r#"{{"about": "", "default": "ENOSYS", {rest}}}"#);
        for (json, error) in [
            (
                policy(
                    r#""allow": [{"why": "", "syscalls": ["read"]}], "deny": [{"errno": "EPERM", "why": "", "syscalls": ["read"]}], "conditional": []"#,
                ),
                "listed twice",
            ),
            (
                policy(r#""allow": [{"why": "", "syscalls": ["no_such_call"]}], "deny": [], "conditional": []"#),
                "unknown system call",
            ),
            (
                policy(
                    r#""allow": [], "deny": [{"errno": "EWHAT", "why": "", "syscalls": ["mount"]}], "conditional": []"#,
                ),
                "unknown errno",
            ),
            (
                policy(
                    r#""allow": [], "deny": [], "conditional": [{"syscall": "clone", "why": "", "allow_if": [[{"arg": 0, "none_of": ["CLONE_VM2"]}]], "otherwise": "EPERM"}]"#,
                ),
                "unknown constant",
            ),
            (
                policy(
                    r#""allow": [], "deny": [], "conditional": [{"syscall": "socket", "why": "", "allow_if": [[]], "otherwise": "EPERM"}]"#,
                ),
                "would allow everything",
            ),
            (
                policy(
                    r#""allow": [], "deny": [], "conditional": [{"syscall": "socket", "why": "", "allow_if": [[{"arg": 7, "is": 1}]], "otherwise": "EPERM"}]"#,
                ),
                "no argument 7",
            ),
            (policy(r#""allow": [], "deny": [], "conditional": [], "extra": 1"#), "unknown field"),
        ] {
            let e = Policy::compile_json(&json).unwrap_err();
            assert!(e.contains(error), "{e}");
        }
    }
}
