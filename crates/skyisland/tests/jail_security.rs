//! The security suite: real hostile programs in real jails through `skyisland jail run`.
//! Each test checks containment, then that the host is unharmed and nothing is left
//! behind (mounts, processes; the slot's empty cgroups and scratch directory stay ready
//! for the next run until `skyisland jail clean`).

mod support;

use std::net::TcpListener;
use std::process::Output;

use support::{SOCKET_ANSWERS, SYSCALL_REFUSALS, Sandbox, assert_answers, attack, root_or_skip};

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs the attack program's `command` in a fresh jail of a fresh sandbox, checks the
/// sandbox holds nothing but a slot ready for the next run afterwards (and nothing after
/// `jail clean`), and returns the output.
fn attack_in_jail(flags: &[&str], command: &[&str]) -> Output {
    let sandbox = Sandbox::new();
    let attack = attack();
    let mut program = vec![attack.to_str().unwrap()];
    program.extend_from_slice(command);
    let out = sandbox.jail_run(flags, &program);
    sandbox.assert_clean_after_jail_run();
    out
}

#[test]
fn the_jail_is_unprivileged_and_isolated() {
    if !root_or_skip("the_jail_is_unprivileged_and_isolated") {
        return;
    }
    let sandbox = Sandbox::new();
    let out = sandbox.jail_run(&[], &[attack().to_str().unwrap(), "whoami"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let exec_uid = sandbox.uid_base + 1;
    assert!(stdout.contains("host=sky-"), "hostname is the jail's name: {stdout}");
    assert!(stdout.contains(&format!("uid={exec_uid} gid={exec_uid} pid=1")), "{stdout}");
    for line in [
        "CapInh: 0000000000000000",
        "CapPrm: 0000000000000000",
        "CapEff: 0000000000000000",
        "CapBnd: 0000000000000000",
        "CapAmb: 0000000000000000",
        "NoNewPrivs: 1",
        "Seccomp: 2",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }
    sandbox.assert_clean_after_jail_run();
}

#[test]
fn a_fork_bomb_hits_the_pids_limit() {
    if !root_or_skip("a_fork_bomb_hits_the_pids_limit") {
        return;
    }
    let out = attack_in_jail(&["--pids", "20", "--timeout", "10s"], &["forkbomb"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout} {stderr}");
    let started: usize = stdout.split("started=").nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
    assert!(started < 20, "the pids limit stops the bomb: {stdout}");
    assert!(stdout.contains("resource temporarily unavailable"), "{stdout}");
}

#[test]
fn a_memory_bomb_is_killed_at_the_memory_limit() {
    if !root_or_skip("a_memory_bomb_is_killed_at_the_memory_limit") {
        return;
    }
    let out = attack_in_jail(&["--memory", "64MiB", "--disk", "1MiB", "--timeout", "30s"], &["membomb"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(137), "{stderr}");
    assert!(stderr.contains("memory limit"), "{stderr}");
    let allocated: Vec<u32> =
        stdout.lines().filter_map(|l| l.strip_prefix("allocated ")?.strip_suffix(" MiB")?.parse().ok()).collect();
    assert!(allocated.last().is_some_and(|mib| *mib <= 64), "killed by 64MiB: {allocated:?}");
}

#[test]
fn a_disk_fill_stops_at_the_disk_limit() {
    if !root_or_skip("a_disk_fill_stops_at_the_disk_limit") {
        return;
    }
    let out = attack_in_jail(&["--disk", "8MiB"], &["diskfill"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("no space left on device"), "{stdout}");
    let filled: u32 = stdout.split("filled=").nth(1).and_then(|s| s.split("MiB").next()).unwrap().parse().unwrap();
    assert!(filled <= 8, "{stdout}");
}

#[test]
fn host_files_and_devices_are_out_of_reach() {
    if !root_or_skip("host_files_and_devices_are_out_of_reach") {
        return;
    }
    for (command, expect) in [
        (vec!["read", "/etc/shadow"], "no such file or directory"),
        (vec!["read", "/proc/1/root/etc/shadow"], "no such file or directory"),
        (vec!["read", "/dev/vda"], "no such file or directory"),
        (vec!["read", "/dev/sda"], "no such file or directory"),
        (vec!["read", "/sys/kernel/notes"], "no such file or directory"),
        (vec!["read", "/proc/kcore"], "no such file or directory"),
        (vec!["mknod"], "mknod: operation not permitted"),
        (vec!["mount"], "mount: operation not permitted"),
        (vec!["setuid"], "setuid: operation not permitted"),
        // A child of its own (same uid): only seccomp stops this.
        (vec!["ptrace-child"], "ptrace child: operation not permitted"),
        (vec!["cwd"], "cwd /tmp ok"),
    ] {
        let out = attack_in_jail(&[], &command);
        let (stdout, stderr) = text(&out);
        assert!(stdout.contains(expect), "{command:?}: {stdout} {stderr}");
    }
    // Only the jail's own device nodes exist.
    let out = attack_in_jail(&[], &["ls", "/dev"]);
    let listing: Vec<String> = text(&out).0.lines().map(str::to_owned).collect();
    assert_eq!(listing, ["fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "urandom", "zero"]);
}

#[test]
fn host_processes_are_invisible_and_unkillable() {
    if !root_or_skip("host_processes_are_invisible_and_unkillable") {
        return;
    }
    let victim = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let out = attack_in_jail(&[], &["kill", &victim.id().to_string()]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("no such process"), "{stdout}");
    let mut victim = victim;
    assert!(victim.try_wait().unwrap().is_none(), "the host process survived");
    victim.kill().unwrap();
    victim.wait().unwrap();
    let out = attack_in_jail(&[], &["ls", "/proc"]);
    let pids: Vec<String> =
        text(&out).0.lines().filter(|l| l.chars().all(|c| c.is_ascii_digit())).map(str::to_owned).collect();
    assert_eq!(pids, ["1"], "the jail sees only itself");
}

#[test]
fn there_is_no_network_unless_asked_for() {
    if !root_or_skip("there_is_no_network_unless_asked_for") {
        return;
    }
    // A listener on the host's loopback, up before the attempt: reachable from the host
    // (the positive control), unreachable from the jail, which has no route at all.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let host = std::process::Command::new(attack()).args(["connect", &addr]).output().unwrap();
    assert_eq!(text(&host).0.trim(), format!("connect {addr}: ok"), "the listener answers the host");
    let out = attack_in_jail(&[], &["connect", &addr]);
    assert_eq!(text(&out).0.trim(), format!("connect {addr}: network is unreachable"));
    let out = attack_in_jail(&[], &["interfaces"]);
    assert_eq!(text(&out).0.trim(), "lo up=false");
}

#[test]
fn dangerous_system_calls_are_refused() {
    if !root_or_skip("dangerous_system_calls_are_refused") {
        return;
    }
    let out = attack_in_jail(&[], &["syscalls"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_answers("syscalls in a jail", &stdout, SYSCALL_REFUSALS);
    let out = attack_in_jail(&[], &["sockets"]);
    assert_answers("sockets in a jail", &text(&out).0, SOCKET_ANSWERS);
}

/// The positive control of the two tests above: outside a jail, as an unprivileged uid
/// without seccomp, the calls that only seccomp refuses succeed on this host, so a jail's
/// refusal is the filter's doing.
#[test]
fn what_only_seccomp_refuses_works_outside_a_jail() {
    if !root_or_skip("what_only_seccomp_refuses_works_outside_a_jail") {
        return;
    }
    let unprivileged = |command: &str| {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(attack())
            .arg(command)
            .output()
            .unwrap();
        text(&out).0
    };
    let calls = unprivileged("syscalls");
    for name in ["clone_newuser", "kcmp", "modify_ldt", "personality_exec", "process_vm_readv", "sysfs"] {
        assert!(calls.lines().any(|l| l == format!("{name}: ok")), "{name} outside a jail:\n{calls}");
    }
    let sockets = unprivileged("sockets");
    assert!(sockets.lines().any(|l| l == "netlink_audit: ok"), "{sockets}");
    assert_eq!(unprivileged("ptrace-child").trim(), "ptrace child: ok");
}

#[test]
fn an_endless_loop_is_killed_at_the_timeout() {
    if !root_or_skip("an_endless_loop_is_killed_at_the_timeout") {
        return;
    }
    let started = std::time::Instant::now();
    let out = attack_in_jail(&["--timeout", "500ms"], &["spin"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(124), "{stderr}");
    assert!(stderr.contains("timeout"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn an_output_flood_is_cut_at_the_output_limit() {
    if !root_or_skip("an_output_flood_is_cut_at_the_output_limit") {
        return;
    }
    let out = attack_in_jail(&["--timeout", "30s"], &["flood"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(137), "{stderr}");
    assert!(stderr.contains("output limit"), "{stderr}");
    assert_eq!(stdout.len(), 1 << 20, "exactly the 1MiB output limit passes through");
}

#[test]
fn output_and_exit_status_pass_through() {
    if !root_or_skip("output_and_exit_status_pass_through") {
        return;
    }
    let out = attack_in_jail(&[], &["exit", "7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out).0, "bye");
    let out = attack_in_jail(&[], &["stderr", "to stderr"]);
    assert_eq!((out.status.code(), text(&out).1), (Some(3), "to stderr".to_owned()));
    // A dynamically linked host program gets the host's /usr, read-only.
    let sandbox = Sandbox::new();
    let out = sandbox.jail_run(&[], &["/bin/sh", "-c", "echo hi from $(hostname); touch /usr/x 2>&1"]);
    let (stdout, stderr) = text(&out);
    assert!(stdout.starts_with("hi from sky-"), "{stdout} {stderr}");
    assert!(stdout.contains("Read-only file system"), "{stdout}");
    sandbox.assert_clean_after_jail_run();
}

#[test]
fn bad_input_is_one_clear_line() {
    if !root_or_skip("bad_input_is_one_clear_line") {
        return;
    }
    let sandbox = Sandbox::new();
    let data_file = sandbox.path().join("data.txt");
    std::fs::write(&data_file, "not a program").unwrap();
    let data_file = data_file.to_str().unwrap();
    for (flags, program, expect) in [
        (vec![], vec!["/no/such/program"], "program \"/no/such/program\" not found"),
        (vec!["--memory", "lots"], vec!["/bin/true"], "invalid size \"lots\""),
        (vec!["--timeout", "5 parsecs"], vec!["/bin/true"], "invalid duration"),
        (vec![], vec![data_file], "is not executable"),
    ] {
        let out = sandbox.jail_run(&flags, &program);
        let (_, stderr) = text(&out);
        assert!(!out.status.success());
        assert!(stderr.contains(expect), "{program:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    sandbox.assert_clean();
    // An unknown configuration key.
    let config = sandbox.path().join("bad.toml");
    std::fs::write(&config, "[jails]\nmemory_limt = \"1MiB\"\n").unwrap();
    let out = std::process::Command::new(support::bin())
        .args(["jail", "run", "--config"])
        .arg(&config)
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.toml:2:1: unknown field `memory_limt`"), "{stderr}");
}

#[test]
fn jail_run_leaves_its_slot_ready_and_jail_clean_spares_slots_in_use() {
    if !root_or_skip("jail_run_leaves_its_slot_ready_and_jail_clean_spares_slots_in_use") {
        return;
    }
    let sandbox = Sandbox::new();
    let slot = format!("exec-{}", sandbox.uid_base + 1);
    let out = sandbox.jail_run(&[], &["/bin/sh", "-c", "echo one > /tmp/mark; ls /tmp"]);
    assert_eq!(text(&out).0, "mark\n", "{}", text(&out).1);
    // The slot stays, empty, for the next run: no mkdir and rmdir of three cgroups a run.
    let census = sandbox.census();
    assert!(census.cgroups.contains(&slot), "{census:?}");
    assert!(census.scratch.contains(&slot), "{census:?}");
    let netns = sandbox.run_dir().join("slots").join(format!("{slot}.netns"));
    assert!(census.mounts.contains(netns.to_str().unwrap()), "its network namespace stays bound: {census:?}");
    // The next run takes the same slot and finds nothing of the last one.
    let out = sandbox.jail_run(&[], &["/bin/sh", "-c", "ls -A /tmp"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "");
    let parent = format!("the parent {}", sandbox.cgroup_parent);
    assert_eq!(sandbox.census().cgroups, [slot.clone(), parent.clone()].into(), "the same slot again");

    // The kept namespace is the jail's own, empty one; a link planted in its place (to
    // the host's namespace: the one of whoever opens it) is replaced, not followed.
    let out = sandbox.jail_run(&[], &[attack().to_str().unwrap(), "interfaces"]);
    assert_eq!(text(&out).0.trim(), "lo up=false");
    std::fs::remove_file(&netns).unwrap_or_else(|_| {
        support::run(std::process::Command::new("umount").arg(&netns));
        std::fs::remove_file(&netns).unwrap();
    });
    std::os::unix::fs::symlink("/proc/self/ns/net", &netns).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = sandbox.jail_run(&[], &[attack().to_str().unwrap(), "connect", &addr]);
    assert_eq!(text(&out).0.trim(), format!("connect {addr}: network is unreachable"), "{}", text(&out).1);
    assert!(!std::fs::symlink_metadata(&netns).unwrap().file_type().is_symlink(), "the link was replaced");
    assert!(sandbox.census().mounts.contains(netns.to_str().unwrap()));
    // The host's namespace bound there (which only root could do) is refused and replaced.
    use std::os::unix::fs::MetadataExt;
    let host_ns = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    support::run(std::process::Command::new("umount").arg(&netns));
    support::run(std::process::Command::new("mount").args(["--bind", "/proc/self/ns/net"]).arg(&netns));
    assert_eq!(std::fs::metadata(&netns).unwrap().ino(), host_ns);
    let out = sandbox.jail_run(&[], &[attack().to_str().unwrap(), "connect", &addr]);
    assert_eq!(text(&out).0.trim(), format!("connect {addr}: network is unreachable"), "{}", text(&out).1);
    assert_ne!(std::fs::metadata(&netns).unwrap().ino(), host_ns, "the binding was replaced");

    // `jail clean` removes free slots only: a jail running meanwhile keeps its slot and
    // ends normally, while the slot a second run left ready goes.
    let mut running = sandbox
        .jail_command("run")
        .args(["--", "/bin/sh", "-c", "echo started; sleep 2; echo survived"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = running.stdout.take().unwrap();
    let mut first = [0u8; 8];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    assert_eq!(&first, b"started\n");
    let out = sandbox.jail_run(&[], &["/bin/true"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let second = format!("exec-{}", sandbox.uid_base + 2);
    assert_eq!(
        sandbox.census().cgroups,
        [slot.clone(), second.clone(), parent].into(),
        "the running one's, the left one"
    );
    // A link in a slot's place to some other mount: cleaning removes the link, and never
    // unmounts what it points to.
    let victim = sandbox.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    support::run(std::process::Command::new("mount").args(["-t", "tmpfs", "victim"]).arg(&victim));
    let third = sandbox.run_dir().join("slots").join(format!("exec-{}.netns", sandbox.uid_base + 3));
    std::os::unix::fs::symlink(&victim, &third).unwrap();
    let out = sandbox.jail_clean();
    let victim_mounted = sandbox.census().mounts.contains(victim.to_str().unwrap());
    assert!(victim_mounted, "jail clean unmounted what a link pointed to");
    support::run(std::process::Command::new("umount").arg(&victim));
    assert!(std::fs::symlink_metadata(&third).is_err(), "the link is gone");
    assert_eq!(text(&out).0, "removed 2 free jail slots\n", "{}", text(&out).1);
    assert!(out.status.success());
    let census = sandbox.census();
    assert!(census.cgroups.contains(&slot) && !census.cgroups.contains(&second), "{census:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "survived\n");
    assert!(running.wait().unwrap().success());
    sandbox.assert_clean_after_jail_run();
}
