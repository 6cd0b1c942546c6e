//! The cgroup code against the host's real hierarchy. On a pure cgroup v2 host this
//! creates a cgroup, sets every limit, moves a process in, kills it with `cgroup.kill`
//! and removes it; on a v1 host (with its controller-less cgroup2 mount) it checks that
//! v2 is detected and refused with a clear message, then does the same on v1.

use std::path::Path;
use std::time::Duration;

use skyisland_jail::{CgroupVersion, Cgroups, Limits};

fn root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "the cgroup tests need root and CI must not skip them");
    eprintln!("skipping: needs root");
    false
}

/// This test process's own parent cgroup: no other test run collides with it.
fn parent() -> String {
    format!("skyisland-cgtest-{}", std::process::id())
}

fn exercise(cgroups: &Cgroups) {
    let name = format!("exercise-{}", std::process::id());
    assert!(cgroups.ensure(&name).unwrap());
    cgroups.set_limits(&name, &Limits { memory: 64 << 20, pids: 8, cpu: 0.5 }).unwrap();
    let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let procs = match cgroups.version() {
        CgroupVersion::V1 => {
            ["memory", "pids", "cpu"].map(|c| format!("/sys/fs/cgroup/{c}/{}/{name}/cgroup.procs", parent())).to_vec()
        }
        CgroupVersion::V2 => vec![format!("/sys/fs/cgroup/{}/{name}/cgroup.procs", parent())],
    };
    for file in procs {
        std::fs::write(file, child.id().to_string()).unwrap();
    }
    assert_eq!(cgroups.procs(&name).unwrap(), vec![child.id() as i32]);
    cgroups.kill_all(&name, Duration::from_secs(5)).unwrap();
    assert!(child.wait().unwrap().code().is_none(), "killed by a signal");
    assert_eq!(cgroups.oom_kills(&name).unwrap(), 0);
    cgroups.remove(&name).unwrap();
    cgroups.remove_parent_if_empty();
    assert!(cgroups.list().is_empty());
}

#[test]
fn the_hosts_own_hierarchy() {
    if !root() {
        return;
    }
    let unified = Path::new("/sys/fs/cgroup/unified");
    let auto = Cgroups::new(Path::new("/sys/fs/cgroup"), None, &parent()).unwrap();
    match auto.version() {
        CgroupVersion::V2 => exercise(&auto),
        CgroupVersion::V1 => {
            if unified.join("cgroup.controllers").exists() {
                // A hybrid host: cgroup2 is detected, and refused for lack of controllers.
                let err = Cgroups::new(unified, None, &parent()).unwrap_err().to_string();
                assert!(err.contains("are not available"), "{err}");
            }
            exercise(&auto);
        }
    }
}
