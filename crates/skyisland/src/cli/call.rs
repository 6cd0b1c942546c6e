//! `skyisland call URL CALL`: a function call through a running server, printing what it
//! printed (or the error, with a non-zero exit).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use skyisland_client::{Client, Error, Request};

use super::CallArgs;

pub fn run(args: CallArgs) -> anyhow::Result<ExitCode> {
    let mut client = Client::new(&args.server)?;
    if let Some(key) = &args.api_key {
        client = client.api_key(key);
    }
    let request = Request {
        version: args.version,
        cache_bust: args.cache_bust,
        ip4: args.ip4,
        runtime: args.runtime,
        cache: if args.no_cache { Some(false) } else { None },
        ..Request::new(args.url, args.call)
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match runtime.block_on(client.call(&request)) {
        Ok(answer) => {
            let mut stdout = std::io::stdout();
            if args.json {
                writeln!(stdout, "{}", serde_json::to_string(&answer)?)?;
            } else {
                write!(stdout, "{}", answer.data)?;
                if !answer.data.ends_with('\n') {
                    writeln!(stdout)?;
                }
            }
            stdout.flush().context("writing the answer")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(Error::Status { status, message, body, .. }) => {
            eprintln!("skyisland: {status}: {message}");
            for extra in ["output", "stderr", "detail"] {
                if let Some(text) = body.get(extra).and_then(|v| v.as_str()).filter(|t| !t.is_empty()) {
                    eprintln!("{}", text.trim_end());
                }
            }
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e).with_context(|| format!("calling {}", args.server)),
    }
}
