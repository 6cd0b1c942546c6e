//! `skyisland api-key new|list|revoke`: the API keys kept, hashed, in the data directory.
//! A running server picks up changes within a second.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use skyisland_server::auth;

use super::{ApiKeyCommand, load};

pub fn run(config: Option<PathBuf>, command: ApiKeyCommand) -> anyhow::Result<ExitCode> {
    let config = load(config)?;
    let path = auth::key_file(&config.data_dir);
    // Changes are made under the file's lock, which servers take too (keys made or
    // revoked through the admin API).
    let _lock = match command {
        ApiKeyCommand::List { .. } => None,
        _ => Some(auth::lock_key_file(&path).with_context(|| format!("locking {}", path.display()))?),
    };
    let mut file = auth::read_key_file(&path).with_context(|| format!("reading {}", path.display()))?;
    match command {
        ApiKeyCommand::New { name, per_second, burst } => {
            // The same rules as [rate_limit] in the configuration.
            skyisland_config::validate_rate(["--per-second", "--burst"], per_second, burst)
                .map_err(|e| e.at("the command line"))?;
            let (secret, stored) = auth::new_key(&name, per_second, burst);
            let id = stored.id.clone();
            file.keys.push(stored);
            auth::write_key_file(&path, &file).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("made API key {id} ({name}); it is shown once, here:");
            println!("{secret}");
        }
        ApiKeyCommand::List { json } => {
            for key in &file.keys {
                if json {
                    let line = serde_json::json!({
                        "id": key.id,
                        "created_at": key.created_at,
                        "name": key.name,
                        "per_second": key.per_second,
                        "burst": key.burst,
                    });
                    println!("{line}");
                    continue;
                }
                let rate = match key.per_second {
                    Some(rate) => format!("{rate}/s burst {}", key.burst.map_or("default".into(), |b| b.to_string())),
                    None => "default rate".into(),
                };
                println!("{}\t{}\t{}\t{rate}", key.id, human_time(key.created_at), key.name);
            }
        }
        ApiKeyCommand::Revoke { id } => {
            let before = file.keys.len();
            file.keys.retain(|k| k.id != id);
            if file.keys.len() == before {
                bail!("no API key with id {id:?} (see skyisland api-key list)");
            }
            auth::write_key_file(&path, &file).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("revoked API key {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Unix seconds as "2026-12-02 15:04:05 UTC".
fn human_time(unix_seconds: u64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| format!("{unix_seconds} (Unix time)"))
}
