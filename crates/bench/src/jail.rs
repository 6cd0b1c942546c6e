//! How long a jail costs: a trivial static program run N times (a) with plain fork+exec,
//! (b) in a jail made inside this process the way the server makes them (no CLI start-up),
//! warm and cold, (c) through `skyisland jail run`, (d) through bubblewrap with comparable
//! isolation, bare and inside cgroups with Sky Island's limits, and (e) through crun.
//!
//! Variants are interleaved, one run of each in turn (the starting one rotating), after the
//! same warm-up, so that the machine's noise falls on all alike: (b)'s two in this process,
//! the others in a helper (`external`) in a private mount namespace, where crun can be
//! given a cgroup view it accepts.

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
/// Runs a command in fresh cgroups with Sky Island's default limits (memory, pids, cpu),
/// and removes them afterwards: what bubblewrap needs around it for limits comparable to a
/// Sky Island jail's. cgroup v2 (one group) when /sys/fs/cgroup is the unified hierarchy,
/// v1 (three) otherwise.
const CGROUP_WRAPPER_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
static void put(const char *dir, const char *file, const char *value) {
    char path[512]; snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "w"); if (!f || fputs(value, f) < 0 || fclose(f)) { perror(path); exit(1); }
}
int main(int argc, char **argv) {
    char dirs[3][256]; int n;
    int v2 = access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0;
    if (v2) {
        n = 1; snprintf(dirs[0], sizeof dirs[0], "/sys/fs/cgroup/bench-bwrap-%d", getpid());
        if (mkdir(dirs[0], 0755)) { perror(dirs[0]); return 1; }
        put(dirs[0], "memory.max", "335544320");
        put(dirs[0], "pids.max", "64");
        put(dirs[0], "cpu.max", "100000 100000");
    } else {
        static const char *ctl[] = {"memory", "pids", "cpu"};
        n = 3;
        for (int i = 0; i < 3; i++) {
            snprintf(dirs[i], sizeof dirs[i], "/sys/fs/cgroup/%s/bench-bwrap-%d", ctl[i], getpid());
            if (mkdir(dirs[i], 0755)) { perror(dirs[i]); return 1; }
        }
        put(dirs[0], "memory.limit_in_bytes", "335544320");
        put(dirs[1], "pids.max", "64");
        put(dirs[2], "cpu.cfs_quota_us", "100000");
    }
    pid_t child = fork();
    if (child == 0) { for (int i = 0; i < n; i++) put(dirs[i], "cgroup.procs", "0"); execvp(argv[1], argv + 1); perror(argv[1]); _exit(127); }
    int status; waitpid(child, &status, 0);
    for (int i = 0; i < n; i++) while (rmdir(dirs[i])) usleep(100);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
"#;

const HELLO_GO: &str = "package main\n\nimport \"os\"\n\nfunc main() { os.Stdout.WriteString(\"hello\\n\") }\n";

pub struct Args {
    pub runs: usize,
    pub dir: PathBuf,
}

/// Untimed runs of every variant before the timed ones.
const WARM_UP: usize = 10;

/// The variants run by the `external` helper, in the order of their first round.
const EXTERNAL: [&str; 5] = ["fork+exec", "skyisland jail run", "bubblewrap", "bubblewrap in cgroups", "crun"];

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

pub fn run(args: Args) -> anyhow::Result<()> {
    fs::create_dir_all(&args.dir)?;
    let (config_path, config) = config(&args.dir)?;
    skyisland_runner::machine::init(&config)?;
    let programs = programs(&args.dir)?;
    let wrapper_c = args.dir.join("cgwrap.c");
    fs::write(&wrapper_c, CGROUP_WRAPPER_C)?;
    let wrapper = args.dir.join("cgwrap");
    check(Command::new("gcc").args(["-O2", "-o"]).arg(&wrapper).arg(&wrapper_c))?;
    let base = config.data_dir.join("base");
    for (i, (_, program)) in programs.iter().enumerate() {
        crun_bundle(&args.dir.join(format!("crun-bundle-{i}")), &base, program)?;
    }
    // (a), (c), (d), (e): interleaved, in the helper, before any thread of ours exists.
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private"])
        .arg(std::env::current_exe()?)
        .arg("external")
        .arg(&args.dir)
        .arg(&config_path)
        .arg(args.runs.to_string())
        .args(programs.iter().map(|(_, p)| p))
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("the external variants failed");
    }
    let mut external: Vec<Vec<Vec<Duration>>> = vec![vec![Vec::new(); EXTERNAL.len()]; programs.len()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if let [program, variant, nanos] = fields[..] {
            external[program.parse::<usize>()?][variant.parse::<usize>()?].push(Duration::from_nanos(nanos.parse()?));
        }
    }
    // (b): warm and cold jails made in this process, as the server makes them.
    let mut cold_config = config.clone();
    cold_config.jails.warm_jails = 0;
    let warm_jails = Jails::open(&config)?;
    let cold_jails = Jails::open(&cold_config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut inside = Vec::new();
    let mut throughput = Vec::new();
    for (_, program) in &programs {
        inside.push(runtime.block_on(in_server(
            &[(&warm_jails, &config), (&cold_jails, &cold_config)],
            program,
            args.runs,
        ))?);
        throughput.push(runtime.block_on(in_server_throughput(
            &warm_jails,
            &config,
            program,
            16,
            Duration::from_secs(3),
        ))?);
    }
    runtime.block_on(warm_jails.shutdown(Duration::from_secs(5)))?;
    runtime.block_on(cold_jails.shutdown(Duration::from_secs(5)))?;

    println!("\n## Jails: {} runs of each, interleaved, after {WARM_UP} of each\n", args.runs);
    stats::header();
    let mut summaries = Vec::new();
    for (i, (name, _)) in programs.iter().enumerate() {
        let mut e: Vec<Summary> = external[i].iter_mut().map(|samples| summarize(samples)).collect();
        let [warm, cold] = &mut inside[i];
        let (warm, cold) = (summarize(warm), summarize(cold));
        stats::row(&format!("{name}: fork+exec"), &e[0]);
        stats::row(&format!("{name}: jail in the server, warm"), &warm);
        stats::row(&format!("{name}: jail in the server, cold"), &cold);
        for (variant, summary) in EXTERNAL.iter().zip(&e).skip(1) {
            stats::row(&format!("{name}: {variant}"), summary);
        }
        e.insert(1, warm);
        e.insert(2, cold);
        summaries.push(e);
    }
    println!();
    for (i, (name, _)) in programs.iter().enumerate() {
        // fork+exec, warm, cold, jail run, bwrap, bwrap in cgroups, crun
        let s = &summaries[i];
        stats::ratio(&format!("{name}: jail in the server (warm) / fork+exec"), s[1].median, s[0].median);
        stats::ratio(&format!("{name}: jail in the server (cold) / fork+exec"), s[2].median, s[0].median);
        stats::ratio(&format!("{name}: skyisland jail run / bubblewrap"), s[3].median, s[4].median);
        stats::ratio(&format!("{name}: skyisland jail run / bubblewrap in cgroups"), s[3].median, s[5].median);
        stats::ratio(&format!("{name}: crun / skyisland jail run"), s[6].median, s[3].median);
        println!("{name}: jails per second inside the server at concurrency 16: {:.0}", throughput[i]);
    }
    Ok(())
}

/// The helper: in a private mount namespace (where the hybrid hierarchy's cgroup2 mount,
/// which crun refuses, is taken away), runs every external variant of every program, one
/// run each in turn, and prints `program<TAB>variant<TAB>nanoseconds` per timed run.
pub fn external(dir: &Path, config: &Path, runs: usize, programs: &[PathBuf]) -> anyhow::Result<()> {
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let _ = Command::new("umount").arg("/sys/fs/cgroup/unified").status();
    }
    let skyisland = std::env::current_exe()?.with_file_name("skyisland");
    let wrapper = dir.join("cgwrap");
    let base = dir.join("data/base");
    let command = |variant: usize, index: usize, program: &Path, run: usize| -> Command {
        let bwrap = |cmd: &mut Command| {
            cmd.args(["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--ro-bind"])
                .arg(&base)
                .args(["/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run", "--ro-bind"])
                .arg(program)
                .args(["/run/program", "/run/program"]);
        };
        match variant {
            0 => Command::new(program),
            1 => {
                let mut cmd = Command::new(&skyisland);
                cmd.args(["jail", "run", "--config"]).arg(config).arg("--").arg(program);
                cmd
            }
            2 => {
                let mut cmd = Command::new("bwrap");
                bwrap(&mut cmd);
                cmd
            }
            3 => {
                let mut cmd = Command::new(&wrapper);
                cmd.arg("bwrap");
                bwrap(&mut cmd);
                cmd
            }
            _ => {
                let mut cmd = Command::new("crun");
                cmd.arg("run")
                    .arg("--bundle")
                    .arg(dir.join(format!("crun-bundle-{index}")))
                    .arg(format!("skyisland-bench-{}-{run}", std::process::id()));
                cmd
            }
        }
    };
    let mut out = std::io::stdout().lock();
    for run in 0..WARM_UP + runs {
        for (index, program) in programs.iter().enumerate() {
            for k in 0..EXTERNAL.len() {
                let variant = (run + k) % EXTERNAL.len();
                let mut cmd = command(variant, index, program, run);
                cmd.stdout(Stdio::null()).stderr(Stdio::piped());
                let started = Instant::now();
                let result = cmd.output()?;
                let elapsed = started.elapsed();
                if !result.status.success() {
                    bail!("{}: {cmd:?}: {}", EXTERNAL[variant], String::from_utf8_lossy(&result.stderr));
                }
                if run >= WARM_UP {
                    std::io::Write::write_all(
                        &mut out,
                        format!("{index}\t{variant}\t{}\n", elapsed.as_nanos()).as_bytes(),
                    )?;
                }
            }
        }
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
        input: None,
        prestart: None,
        reports_end: false,
    };
    let report = jails.run(request).await?;
    if report.end != End::Exited || !report.status.success() {
        bail!("jail ended {:?} {:?}: {}", report.end, report.status, String::from_utf8_lossy(&report.stderr));
    }
    Ok(())
}

/// Warm and cold jails in this process, one run of each in turn after the same warm-up.
async fn in_server(
    variants: &[(&Jails, &Config); 2],
    program: &Path,
    runs: usize,
) -> anyhow::Result<[Vec<Duration>; 2]> {
    let mut samples = [Vec::with_capacity(runs), Vec::with_capacity(runs)];
    for run in 0..WARM_UP + runs {
        for k in 0..2 {
            let variant = (run + k) % 2;
            let (jails, config) = variants[variant];
            let started = Instant::now();
            one(jails, config, program).await?;
            if run >= WARM_UP {
                samples[variant].push(started.elapsed());
            }
        }
    }
    Ok(samples)
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

/// A crun bundle running `program` on a copy of the base root, read-only, with crun's
/// default OCI spec.
fn crun_bundle(bundle: &Path, base: &Path, program: &Path) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(bundle);
    fs::create_dir_all(bundle)?;
    check(Command::new("cp").arg("-a").arg(base).arg(bundle.join("rootfs")))?;
    fs::copy(program, bundle.join("rootfs/run/program"))?;
    check(Command::new("crun").arg("spec").current_dir(bundle))?;
    let spec_path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&fs::read_to_string(&spec_path)?)?;
    spec["process"]["args"] = serde_json::json!(["/run/program"]);
    spec["process"]["terminal"] = false.into();
    spec["root"]["readonly"] = true.into();
    fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}
