//! How long a jail costs: a trivial static program run N times (a) with plain fork+exec,
//! (b) in a jail made inside this process the way the server makes them (no CLI start-up),
//! (c) through `skyisland jail run`, (d) through bubblewrap with comparable isolation, and
//! (e) through crun.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use skyisland_config::Config;
use skyisland_jail::Launch;
use skyisland_runner::{End, Jails, Output, RunRequest};

use crate::stats::{self, Summary, summarize};

const TRIVIAL_C: &str = "int main(void) { return 0; }\n";
/// Runs a command in fresh memory, pids and cpu cgroups (v1) with Sky Island's default
/// limits, and removes them afterwards: what bubblewrap needs around it for limits
/// comparable to a Sky Island jail's.
const CGROUP_WRAPPER_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
static const char *ctl[] = {"memory", "pids", "cpu"};
static void put(const char *c, const char *name, const char *file, const char *value) {
    char path[512]; snprintf(path, sizeof path, "/sys/fs/cgroup/%s/%s/%s", c, name, file);
    FILE *f = fopen(path, "w"); if (!f || fputs(value, f) < 0 || fclose(f)) { perror(path); exit(1); }
}
int main(int argc, char **argv) {
    char name[64], path[512]; snprintf(name, sizeof name, "bench-bwrap-%d", getpid());
    for (int i = 0; i < 3; i++) { snprintf(path, sizeof path, "/sys/fs/cgroup/%s/%s", ctl[i], name); if (mkdir(path, 0755)) { perror(path); return 1; } }
    put("memory", name, "memory.limit_in_bytes", "335544320");
    put("pids", name, "pids.max", "64");
    put("cpu", name, "cpu.cfs_quota_us", "100000");
    pid_t child = fork();
    if (child == 0) { for (int i = 0; i < 3; i++) put(ctl[i], name, "cgroup.procs", "0"); execvp(argv[1], argv + 1); perror(argv[1]); _exit(127); }
    int status; waitpid(child, &status, 0);
    for (int i = 0; i < 3; i++) { snprintf(path, sizeof path, "/sys/fs/cgroup/%s/%s", ctl[i], name); while (rmdir(path)) usleep(100); }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
"#;

const HELLO_GO: &str = "package main\n\nimport \"os\"\n\nfunc main() { os.Stdout.WriteString(\"hello\\n\") }\n";

pub struct Args {
    pub runs: usize,
    pub dir: PathBuf,
}

/// The bench's own configuration: data and slots of its own.
pub fn config(dir: &Path) -> anyhow::Result<(PathBuf, Config)> {
    let text = format!(
        "data_dir = \"{}/data\"\nrun_dir = \"{}/run\"\n[jails]\nuid_base = 40000000\nmax_jails = 32\n[cgroup]\nparent = \"skyisland-bench\"\n",
        dir.display(),
        dir.display()
    );
    let path = dir.join("skyisland.toml");
    fs::write(&path, &text)?;
    Ok((path.clone(), Config::parse(&text, &path)?))
}

fn programs(dir: &Path) -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
    let c = dir.join("trivial.c");
    fs::write(&c, TRIVIAL_C)?;
    let trivial = dir.join("trivial");
    check(Command::new("gcc").args(["-static", "-O2", "-o"]).arg(&trivial).arg(&c))?;
    let go_dir = dir.join("hello-go");
    fs::create_dir_all(&go_dir)?;
    fs::write(go_dir.join("main.go"), HELLO_GO)?;
    fs::write(go_dir.join("go.mod"), "module hello\n\ngo 1.19\n")?;
    let hello = dir.join("hello");
    check(
        Command::new("go")
            .args(["build", "-trimpath", "-o"])
            .arg(&hello)
            .arg(".")
            .current_dir(&go_dir)
            .env("CGO_ENABLED", "0"),
    )?;
    Ok(vec![("static C, returns at once", trivial), ("static Go, prints hello", hello)])
}

fn check(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn time_command(runs: usize, mut make: impl FnMut() -> Command) -> anyhow::Result<Summary> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut cmd = make();
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let started = Instant::now();
        let out = cmd.output()?;
        samples.push(started.elapsed());
        if !out.status.success() {
            bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(summarize(&mut samples))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    fs::create_dir_all(&args.dir)?;
    let (config_path, config) = config(&args.dir)?;
    skyisland_runner::machine::init(&config)?;
    let programs = programs(&args.dir)?;
    // (a) fork+exec, measured before any thread exists, like everything in this process.
    let mut plain = Vec::new();
    for (_, program) in &programs {
        plain.push(time_command(args.runs, || Command::new(program))?);
    }
    // (b) in this process, as the server does it.
    let jails = Jails::open(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut inside = Vec::new();
    let mut throughput = Vec::new();
    for (_, program) in &programs {
        inside.push(runtime.block_on(in_server(&jails, &config, program, args.runs))?);
        throughput.push(runtime.block_on(in_server_throughput(
            &jails,
            &config,
            program,
            16,
            Duration::from_secs(3),
        ))?);
    }
    runtime.block_on(jails.shutdown(Duration::from_secs(5)))?;
    drop(jails);
    drop(runtime);
    // The same without warm jails: every jail set up on the request's path.
    let mut cold_config = config.clone();
    cold_config.jails.warm_jails = 0;
    let jails = Jails::open(&cold_config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut cold = Vec::new();
    for (_, program) in &programs {
        cold.push(runtime.block_on(in_server(&jails, &cold_config, program, args.runs))?);
    }
    runtime.block_on(jails.shutdown(Duration::from_secs(5)))?;
    drop(jails);
    let wrapper_c = args.dir.join("cgwrap.c");
    fs::write(&wrapper_c, CGROUP_WRAPPER_C)?;
    let wrapper = args.dir.join("cgwrap");
    check(Command::new("gcc").args(["-O2", "-o"]).arg(&wrapper).arg(&wrapper_c))?;
    let cli_runs = (args.runs / 2).max(20);
    let skyisland = std::env::current_exe()?.with_file_name("skyisland");
    let base = config.data_dir.join("base");
    let mut cli = Vec::new();
    let mut bwrap = Vec::new();
    let mut bwrap_cgroups = Vec::new();
    let mut crun = Vec::new();
    let bwrap_args = |cmd: &mut Command, program: &Path| {
        cmd.args(["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--ro-bind"])
            .arg(&base)
            .args(["/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run", "--ro-bind"])
            .arg(program)
            .args(["/run/program", "/run/program"]);
    };
    for (_, program) in &programs {
        cli.push(time_command(cli_runs, || {
            let mut cmd = Command::new(&skyisland);
            cmd.args(["jail", "run", "--config"]).arg(&config_path).arg("--").arg(program);
            cmd
        })?);
        bwrap.push(time_command(cli_runs, || {
            let mut cmd = Command::new("bwrap");
            bwrap_args(&mut cmd, program);
            cmd
        })?);
        bwrap_cgroups.push(time_command(cli_runs, || {
            let mut cmd = Command::new(&wrapper);
            cmd.arg("bwrap");
            bwrap_args(&mut cmd, program);
            cmd
        })?);
        crun.push(crun_runs(&args.dir, &base, program, cli_runs)?);
    }

    println!("\n## Jails: {} runs each (crun, bubblewrap and the CLI: {cli_runs})\n", args.runs);
    stats::header();
    for (i, (name, _)) in programs.iter().enumerate() {
        stats::row(&format!("{name}: fork+exec"), &plain[i]);
        stats::row(&format!("{name}: jail in the server, warm"), &inside[i]);
        stats::row(&format!("{name}: jail in the server, cold"), &cold[i]);
        stats::row(&format!("{name}: skyisland jail run"), &cli[i]);
        stats::row(&format!("{name}: bubblewrap"), &bwrap[i]);
        stats::row(&format!("{name}: bubblewrap in 3 cgroups"), &bwrap_cgroups[i]);
        stats::row(&format!("{name}: crun"), &crun[i]);
    }
    println!();
    for (i, (name, _)) in programs.iter().enumerate() {
        stats::ratio(&format!("{name}: jail in the server (warm) / fork+exec"), inside[i].median, plain[i].median);
        stats::ratio(&format!("{name}: jail in the server (cold) / fork+exec"), cold[i].median, plain[i].median);
        stats::ratio(&format!("{name}: skyisland jail run / bubblewrap"), cli[i].median, bwrap[i].median);
        stats::ratio(
            &format!("{name}: skyisland jail run / bubblewrap in 3 cgroups"),
            cli[i].median,
            bwrap_cgroups[i].median,
        );
        stats::ratio(&format!("{name}: crun / skyisland jail run"), crun[i].median, cli[i].median);
        println!("{name}: jails per second inside the server at concurrency 16: {:.0}", throughput[i]);
    }
    Ok(())
}

fn launch(config: &Config, label: &str) -> Launch {
    skyisland_runner::machine::exec_launch(config, vec![label.to_owned()])
}

async fn one(jails: &Jails, config: &Config, program: &Path) -> anyhow::Result<()> {
    let request = RunRequest {
        launch: launch(config, "bench"),
        label: "bench".into(),
        timeout: Duration::from_secs(10),
        output_limit: 1 << 20,
        output: Output::Capture,
        exec: Some(fs::File::open(program)?.into()),
        network: None,
    };
    let report = jails.run(request).await?;
    if report.end != End::Exited || !report.status.success() {
        bail!("jail ended {:?} {:?}: {}", report.end, report.status, String::from_utf8_lossy(&report.stderr));
    }
    Ok(())
}

async fn in_server(jails: &Jails, config: &Config, program: &Path, runs: usize) -> anyhow::Result<Summary> {
    for _ in 0..10 {
        one(jails, config, program).await?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        one(jails, config, program).await?;
        samples.push(started.elapsed());
    }
    Ok(summarize(&mut samples))
}

async fn in_server_throughput(
    jails: &Jails,
    config: &Config,
    program: &Path,
    concurrency: usize,
    period: Duration,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| async {
        let mut done = 0u64;
        while started.elapsed() < period {
            one(jails, config, program).await?;
            done += 1;
        }
        anyhow::Ok(done)
    });
    let total: u64 = futures::future::try_join_all(workers).await?.into_iter().sum();
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// crun refuses hybrid cgroup hosts whose cgroup2 mount has controllers, so it runs in a
/// private mount namespace without that mount (`crun-inner`).
fn crun_runs(dir: &Path, base: &Path, program: &Path, runs: usize) -> anyhow::Result<Summary> {
    let bundle = dir.join("crun-bundle");
    let _ = fs::remove_dir_all(&bundle);
    fs::create_dir_all(&bundle)?;
    check(Command::new("cp").arg("-a").arg(base).arg(bundle.join("rootfs")))?;
    fs::copy(program, bundle.join("rootfs/run/program"))?;
    check(Command::new("crun").arg("spec").current_dir(&bundle))?;
    let spec_path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&fs::read_to_string(&spec_path)?)?;
    spec["process"]["args"] = serde_json::json!(["/run/program"]);
    spec["process"]["terminal"] = false.into();
    spec["root"]["readonly"] = true.into();
    fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private"])
        .arg(std::env::current_exe()?)
        .arg("crun-inner")
        .arg(&bundle)
        .arg(runs.to_string())
        .output()?;
    if !out.status.success() {
        bail!("crun: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut samples: Vec<Duration> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .collect();
    Ok(summarize(&mut samples))
}

/// In a private mount namespace: hides the cgroup2 mount from crun and times `runs` runs.
pub fn crun_inner(bundle: &Path, runs: usize) -> anyhow::Result<()> {
    let _ = Command::new("umount").arg("/sys/fs/cgroup/unified").status();
    for i in 0..runs {
        let started = Instant::now();
        let out = Command::new("crun")
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(format!("skyisland-bench-{}-{i}", std::process::id()))
            .stdout(Stdio::null())
            .output()?;
        let elapsed = started.elapsed();
        if !out.status.success() {
            bail!("crun run: {}", String::from_utf8_lossy(&out.stderr));
        }
        println!("{}", elapsed.as_nanos());
    }
    Ok(())
}
