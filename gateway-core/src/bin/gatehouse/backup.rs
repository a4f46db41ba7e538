//! `gatehouse backup`, `gatehouse restore FILE` and `gatehouse export DEVICE`: the API's backup,
//! restore and readings export from the command line. A restore without a running gateway is
//! validated and staged directly in the data directory.

use std::path::PathBuf;

use clap::Args;
use gateway_core::config::Config;

use crate::client::{block_on, Api, ApiArgs};

#[derive(Args)]
pub struct BackupArgs {
    /// Where to write the backup (default: gatehouse-backup-<unix time>.db here).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn backup(args: BackupArgs) -> std::process::ExitCode {
    block_on(async move {
        let api = Api::connect(&args.api)?;
        let bytes = api.download("/api/backup").await?;
        let out = args.out.unwrap_or_else(|| {
            PathBuf::from(format!("gatehouse-backup-{}.db", gateway_core::reading::now_ms() / 1000))
        });
        std::fs::write(&out, &bytes).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        let info = gateway_core::store::backup::validate(&out)
            .map_err(|e| format!("the backup in {} is not usable: {e}", out.display()))?;
        println!(
            "backup written to {} ({} bytes, {} devices, {} readings)",
            out.display(),
            bytes.len(),
            info.devices,
            info.readings
        );
        Ok(())
    })
}

#[derive(Args)]
pub struct RestoreArgs {
    /// A database written by `gatehouse backup` (or the web UI's export).
    file: PathBuf,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn restore(args: RestoreArgs) -> std::process::ExitCode {
    block_on(async move {
        let bytes = std::fs::read(&args.file).map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
        match Api::connect(&args.api) {
            Ok(api) => match api.upload("/api/restore", bytes).await {
                Ok(answer) => {
                    println!("{}", answer["message"].as_str().unwrap_or("staged"));
                    return Ok(());
                }
                // A runtime file left by a gateway that crashed: nothing is listening.
                Err(error) if args.api.api.is_none() && error.starts_with("cannot reach") => {}
                Err(error) => return Err(error),
            },
            Err(error) if args.api.api.is_some() => return Err(error),
            Err(_) => {}
        }
        // No gateway running: check the file and stage it directly.
        let mut config = Config::default();
        config.data_dir = args.api.data_dir.clone();
        let data_dir = config.resolved_data_dir();
        std::fs::create_dir_all(&data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let info =
            gateway_core::store::backup::stage(&data_dir, &args.file).map_err(|e| format!("not restored: {e}"))?;
        println!(
            "staged in {} ({} devices, {} readings); it replaces the database when Gatehouse starts next",
            data_dir.display(),
            info.devices,
            info.readings
        );
        Ok(())
    })
}

#[derive(Args)]
pub struct ExportArgs {
    /// The device whose readings to export.
    device: String,
    /// From this time: RFC 3339, Unix milliseconds, `now`, or a duration before now such as -24h.
    #[arg(long)]
    from: Option<String>,
    /// Up to (excluding) this time.
    #[arg(long)]
    to: Option<String>,
    /// csv or json (one object per line).
    #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
    format: String,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn export(args: ExportArgs) -> std::process::ExitCode {
    block_on(async move {
        let api = Api::connect(&args.api)?;
        let mut path = format!("/api/devices/{}/export?format={}", args.device, args.format);
        for (name, value) in [("from", &args.from), ("to", &args.to)] {
            if let Some(value) = value {
                path.push_str(&format!("&{name}={value}"));
            }
        }
        let bytes = api.download(&path).await?;
        use std::io::Write as _;
        std::io::stdout().write_all(&bytes).map_err(|e| e.to_string())
    })
}
