//! The btrfs clone backend (a writable snapshot per jail, like the original's ZFS clones)
//! on a loop-mounted btrfs image made by the test.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Repo, Sandbox, Server, attack, root_or_skip, run};

/// A btrfs filesystem in a sparse file, mounted while this lives.
struct LoopBtrfs {
    mount: PathBuf,
}

impl LoopBtrfs {
    fn new(dir: &Path) -> LoopBtrfs {
        let image = dir.join("btrfs.img");
        let mount = dir.join("btrfs");
        std::fs::File::create(&image).unwrap().set_len(1 << 30).unwrap();
        run(Command::new("mkfs.btrfs").arg("-q").arg(&image));
        std::fs::create_dir(&mount).unwrap();
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount));
        LoopBtrfs { mount }
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        // The loop device is set to autoclear: unmounting detaches it.
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btrfs_snapshots_clone_limit_and_disappear() {
    if !root_or_skip("btrfs_snapshots_clone_limit_and_disappear") {
        return;
    }
    let mut sandbox = Sandbox::new();
    let fs = LoopBtrfs::new(sandbox.path());
    let dir = fs.mount.join("skyisland");
    sandbox.extra_config = format!("[storage]\nbackend = \"btrfs\"\nbtrfs_dir = \"{}\"\n", dir.display());
    let init = || output(Command::new(support::bin()).args(["init", "--config"]).arg(sandbox.config()));
    let (ok, stdout, stderr) = init();
    assert!(ok && stdout.contains("laid down the base root filesystem (btrfs backend)"), "{stdout} {stderr}");
    let (ok, stdout, _) = init();
    assert!(ok && stdout.contains("already have"), "init is idempotent: {stdout}");
    let subvolumes = run(Command::new("btrfs").args(["subvolume", "list", "-o"]).arg(&fs.mount));
    assert!(subvolumes.contains("skyisland/base") && subvolumes.contains("skyisland/base@snap"), "{subvolumes}");

    let attack = attack();
    let out = sandbox.jail_run(&[], &[attack.to_str().unwrap(), "whoami"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pid=1"));

    // The snapshot's quota group bounds what the jail may write.
    let out = sandbox.jail_run(&["--disk", "16MiB"], &[attack.to_str().unwrap(), "diskfill"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("disk quota exceeded"), "{stdout}");
    let filled: u32 = stdout.split("filled=").nth(1).and_then(|s| s.split("MiB").next()).unwrap().parse().unwrap();
    assert!(filled <= 16, "{stdout}");

    // Writes in one jail's clone are invisible to the next and to the base.
    let out = sandbox.jail_run(&[], &["/bin/sh", "-c", "echo x > /tmp/mark && ls /tmp"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "mark\n");
    let out = sandbox.jail_run(&[], &["/bin/sh", "-c", "ls /tmp"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert!(!dir.join("base/tmp/mark").exists() && !dir.join("base@snap/tmp/mark").exists());

    // Functions run on btrfs clones too, build jail included.
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let mut server = Server::start(&sandbox);
    assert_eq!(server.data(&misc.import_path, "Hello()").await, "hello");
    server.stop();

    let left: Vec<_> = std::fs::read_dir(dir.join("jails")).unwrap().collect();
    assert!(left.is_empty(), "no snapshot is left behind: {left:?}");
    drop(fs);
    sandbox.assert_clean();
}
