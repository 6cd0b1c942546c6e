//! `skyisland invocation|build|schedule`: asynchronous work through a running server.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;
use skyisland_client::{Client, Error};

/// Where the server is, and the credentials to send.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "SKYISLAND_SERVER", default_value = "http://127.0.0.1:3280")]
    server: String,
    /// An API key (sent as a bearer token).
    #[arg(long, env = "SKYISLAND_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The admin token (schedules, lists of invocations).
    #[arg(long, env = "SKYISLAND_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The header the server expects the admin token in.
    #[arg(long, default_value = "X-Sky-Island-Token")]
    admin_header: String,
}

impl ServerArgs {
    fn client(&self) -> anyhow::Result<Client> {
        let mut client = Client::with_timeout(&self.server, Duration::from_secs(60))?.admin_header(&self.admin_header);
        if let Some(key) = &self.api_key {
            client = client.api_key(key);
        }
        if let Some(token) = &self.admin_token {
            client = client.admin_token(token);
        }
        Ok(client)
    }
}

#[derive(Debug, Subcommand)]
pub enum InvocationCommand {
    /// Print an invocation as JSON; exit 1 if it failed.
    Get {
        id: String,
        /// Wait until it has finished (at most this long, e.g. 5m).
        #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "10m")]
        wait: Option<humantime::Duration>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List invocations, newest first (admin token).
    List {
        /// queued, running, succeeded or failed.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The package's import path.
    url: String,
    /// A commit, tag or branch (default: the repository's current commit).
    #[arg(long)]
    version: Option<String>,
    /// The package's runtime (go, python, node, lua); without it the server detects it.
    #[arg(long)]
    runtime: Option<String>,
    /// Print only the build's id and return at once.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule: `--cron '*/5 * * * *'` or `--every 30s`.
    Add {
        name: String,
        url: String,
        call: String,
        #[arg(long, conflicts_with = "every", required_unless_present = "every")]
        cron: Option<String>,
        #[arg(long)]
        every: Option<String>,
        /// The cron expression's IANA time zone (default UTC).
        #[arg(long, requires = "cron")]
        timezone: Option<String>,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        runtime: Option<String>,
        /// Run a tick missed while the server was down once at start-up.
        #[arg(long)]
        catch_up: bool,
        /// Neither answer from nor store in the request cache.
        #[arg(long)]
        no_cache: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the schedules.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a schedule with its last runs.
    Get {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a schedule.
    Rm {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    Pause {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    Resume {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn print(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// An error answer on stderr (exit 1); no answer at all is an error of the command.
pub fn failed(e: Error, server: &str) -> anyhow::Result<ExitCode> {
    match e {
        Error::Status { status, message, body, .. } => {
            eprintln!("skyisland: {status}: {message}");
            for extra in ["output", "stderr", "detail"] {
                if let Some(text) = body.get(extra).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    eprintln!("{}", text.trim_end());
                }
            }
            Ok(ExitCode::FAILURE)
        }
        e => Err(e).with_context(|| format!("asking {server}")),
    }
}

/// Prints a finished job; exit 1 if it failed.
fn finished(job: &Value) -> anyhow::Result<ExitCode> {
    print(job)?;
    Ok(if job["status"] == "failed" { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub fn invocation(command: InvocationCommand) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match command {
        InvocationCommand::Get { id, wait, server } => {
            let client = server.client()?;
            let job = match wait {
                Some(timeout) => rt.block_on(client.wait_invocation(&id, timeout.into())),
                None => rt.block_on(client.invocation(&id)),
            };
            match job {
                Ok(job) => finished(&job),
                Err(e) => failed(e, &server.server),
            }
        }
        InvocationCommand::List { status, server } => {
            match rt.block_on(server.client()?.invocations(status.as_deref())) {
                Ok(list) => print(&list).map(|()| ExitCode::SUCCESS),
                Err(e) => failed(e, &server.server),
            }
        }
    }
}

pub fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let client = args.server.client()?;
    let id = match rt.block_on(client.build(&args.url, args.version.as_deref(), args.runtime.as_deref())) {
        Ok(id) => id,
        Err(e) => return failed(e, &args.server.server),
    };
    if args.no_wait {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    match rt.block_on(client.wait_build(&id, Duration::from_secs(3600))) {
        Ok(job) => {
            if job["status"] == "failed" {
                let error = &job["error"];
                eprintln!("skyisland: build {id} failed: {}", error["error"].as_str().unwrap_or("?"));
                if let Some(output) = error["output"].as_str() {
                    eprintln!("{}", output.trim_end());
                }
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "{} {}",
                job["result"]["commit"].as_str().unwrap_or(""),
                job["result"]["runtime"].as_str().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => failed(e, &args.server.server),
    }
}

pub fn schedule(command: ScheduleCommand) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let (server, answer) = match command {
        ScheduleCommand::Add {
            name,
            url,
            call,
            cron,
            every,
            timezone,
            version,
            runtime,
            catch_up,
            no_cache,
            server,
        } => {
            let mut body = serde_json::json!({ "name": name, "url": url, "call": call, "catch_up": catch_up });
            for (key, value) in
                [("cron", cron), ("every", every), ("timezone", timezone), ("version", version), ("runtime", runtime)]
            {
                if let Some(value) = value {
                    body[key] = value.into();
                }
            }
            if no_cache {
                body["cache"] = false.into();
            }
            let answer = rt.block_on(server.client()?.add_schedule(&body));
            (server, answer)
        }
        ScheduleCommand::List { server } => {
            let answer = rt.block_on(server.client()?.schedules());
            (server, answer)
        }
        ScheduleCommand::Get { name, server } => {
            let answer = rt.block_on(server.client()?.schedule(&name));
            (server, answer)
        }
        ScheduleCommand::Rm { name, server } => {
            let answer = rt.block_on(server.client()?.delete_schedule(&name)).map(|()| Value::Null);
            (server, answer)
        }
        ScheduleCommand::Pause { name, server } => {
            let answer = rt.block_on(server.client()?.pause_schedule(&name, true));
            (server, answer)
        }
        ScheduleCommand::Resume { name, server } => {
            let answer = rt.block_on(server.client()?.pause_schedule(&name, false));
            (server, answer)
        }
    };
    match answer {
        Ok(Value::Null) => Ok(ExitCode::SUCCESS),
        Ok(value) => print(&value).map(|()| ExitCode::SUCCESS),
        Err(e) => failed(e, &server.server),
    }
}
