//! Device commands on a running gateway: `gatehouse devices`, `gatehouse claim CODE`,
//! `gatehouse pair --minutes 3`, `gatehouse deactivate ID`.

use clap::Args;
use serde_json::{json, Value};

use crate::client::{block_on, Api, ApiArgs};

#[derive(Args)]
pub struct ListArgs {
    /// Only devices in this state: discovered, pending_claim, active, deactivated.
    #[arg(long)]
    state: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn list(args: ListArgs) -> std::process::ExitCode {
    block_on(async move {
        let api = Api::connect(&args.api)?;
        let path = match &args.state {
            Some(state) => format!("/api/devices?state={state}"),
            None => "/api/devices".to_string(),
        };
        let devices = api.get(&path).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&devices).unwrap_or_default());
            return Ok(());
        }
        println!("{:<28} {:<10} {:<14} {:<8} {}", "ID", "KIND", "STATE", "ONLINE", "NAME");
        for device in devices.as_array().into_iter().flatten() {
            println!(
                "{:<28} {:<10} {:<14} {:<8} {}",
                text(&device["id"]),
                text(&device["kind"]),
                text(&device["state"]),
                if device["online"] == true { "yes" } else { "no" },
                text(&device["name"])
            );
        }
        Ok(())
    })
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

#[derive(Args)]
pub struct ClaimArgs {
    /// The code the device shows, e.g. 7KQ4M-2XDAB (case, spaces and dashes do not matter).
    code: String,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn claim(args: ClaimArgs) -> std::process::ExitCode {
    block_on(async move {
        let api = Api::connect(&args.api)?;
        let device = api.post("/api/claims", json!({ "code": args.code })).await?;
        println!("claimed {} ({}); its credentials are on their way to it", text(&device["id"]), text(&device["name"]));
        Ok(())
    })
}

#[derive(Args)]
pub struct PairArgs {
    /// How long new registrations may be approved without a code (at most the configured maximum).
    #[arg(long, default_value_t = 3.0)]
    minutes: f64,
    /// Close the pairing window now.
    #[arg(long)]
    close: bool,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn pair(args: PairArgs) -> std::process::ExitCode {
    block_on(async move {
        let api = Api::connect(&args.api)?;
        if args.close {
            api.delete("/api/pairing").await?;
            println!("pairing window closed");
            return Ok(());
        }
        let status = api.post("/api/pairing", json!({ "minutes": args.minutes })).await?;
        let until = status["until"].as_i64().unwrap_or_default();
        let seconds = (until - now_ms()).max(0) / 1000;
        println!("pairing window open for {seconds} s: devices that register now appear in the inbox");
        println!("approve one with: POST /api/devices/<id>/approve (or the web UI)");
        Ok(())
    })
}

#[derive(Args)]
pub struct DeactivateArgs {
    /// The device id.
    id: String,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn deactivate(args: DeactivateArgs) -> std::process::ExitCode {
    block_on(async move {
        let api = Api::connect(&args.api)?;
        api.post(&format!("/api/devices/{}/deactivate", args.id), Value::Null).await?;
        println!("{} deactivated: its credentials are revoked and its session closed; its history is kept", args.id);
        Ok(())
    })
}

fn now_ms() -> i64 {
    gateway_core::reading::now_ms()
}
