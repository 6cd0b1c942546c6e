//! `skyisland call URL CALL`: a function call through a running server, printing what it
//! printed (or the error, with a non-zero exit).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use skyisland_client::{Client, Request};

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
    if args.asynchronous {
        let submitted = client.call_async(&request, args.callback_url.as_deref(), args.idempotency_key.as_deref());
        return match runtime.block_on(submitted) {
            Ok(id) => {
                println!("{id}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => super::work::failed(e, &args.server),
        };
    }
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
        Err(e) => super::work::failed(e, &args.server),
    }
}
