//! Tasks from the command line: `gatehouse send DEVICE COMMAND --params '{…}' --wait` prints each
//! transition as it happens and exits 0 only when the device reports success;
//! `gatehouse tasks DEVICE` lists, `gatehouse cancel TASK` cancels.

use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use crate::client::{block_on, Api, ApiArgs};

#[derive(Args)]
pub struct SendArgs {
    /// The device's id (see `gatehouse devices`).
    device: String,
    /// A command the device declared, e.g. reboot.
    command: String,
    /// Parameters as a JSON object; checked against the schema the device declared.
    #[arg(long, default_value = "{}")]
    params: String,
    /// Wait for the task to finish, printing every transition.
    #[arg(long)]
    wait: bool,
    /// Give up on the task if the device has not taken it within this time (default 24h).
    #[arg(long, value_name = "DURATION")]
    expires_in: Option<String>,
    /// How long the device has to acknowledge (default 30s).
    #[arg(long, value_name = "DURATION")]
    ack_timeout: Option<String>,
    /// How long the device has to finish once it acknowledged (default 60s).
    #[arg(long, value_name = "DURATION")]
    execution_timeout: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn send(args: SendArgs) -> std::process::ExitCode {
    block_on(async move {
        let params: Value = serde_json::from_str(&args.params)
            .map_err(|e| format!("--params is not JSON ({e}); example: --params '{{\"seconds\": 10}}'"))?;
        let mut body = json!({ "command": args.command, "params": params });
        for (key, value) in [
            ("expiresIn", &args.expires_in),
            ("ackTimeout", &args.ack_timeout),
            ("executionTimeout", &args.execution_timeout),
        ] {
            if let Some(value) = value {
                body[key] = json!(value);
            }
        }
        let api = Api::connect(&args.api)?;
        let task = api.post(&format!("/api/devices/{}/tasks", args.device), body).await?;
        let id = task["id"].as_str().unwrap_or_default().to_string();
        if !args.wait {
            println!("{id}");
            return Ok(());
        }
        println!("task {id}: {} on {}", args.command, args.device);
        wait(&api, &id).await
    })
}

/// Follows the task's event log until it is finished. Polling the log (rather than a live
/// stream) cannot miss a transition that happened before we started watching.
async fn wait(api: &Api, id: &str) -> Result<(), String> {
    let mut printed = 0;
    loop {
        let task = api.get(&format!("/api/tasks/{id}")).await?;
        let events = task["events"].as_array().cloned().unwrap_or_default();
        for event in events.iter().skip(printed) {
            println!("{}", describe(event));
        }
        printed = printed.max(events.len());
        let state = task["state"].as_str().unwrap_or_default();
        match state {
            "succeeded" => {
                if !task["result"].is_null() {
                    println!("result: {}", task["result"]);
                }
                return Ok(());
            }
            "failed" | "rejected" | "timed_out" | "expired" | "canceled" => {
                let why = task["message"].as_str().map(|m| format!(": {m}")).unwrap_or_default();
                return Err(format!("task {id} {state}{why}"));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn describe(event: &Value) -> String {
    let at = event["ts"]
        .as_i64()
        .and_then(|ms| std::time::UNIX_EPOCH.checked_add(Duration::from_millis(ms as u64)))
        .map(|t| humantime::format_rfc3339_millis(t).to_string())
        .unwrap_or_default();
    let state = event["state"].as_str().unwrap_or("?");
    let attempt = event["attempt"].as_u64().unwrap_or(0);
    let detail = &event["detail"];
    let detail = if detail.is_null() { String::new() } else { format!(" {detail}") };
    format!("{at}  {state:<16} attempt {attempt}{detail}")
}

#[derive(Args)]
pub struct ListArgs {
    device: String,
    /// Only tasks in this state (queued, sent, delivered, in_progress, succeeded, failed…).
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn list(args: ListArgs) -> std::process::ExitCode {
    block_on(async move {
        let api = Api::connect(&args.api)?;
        let mut path = format!("/api/devices/{}/tasks", args.device);
        if let Some(state) = &args.state {
            path.push_str(&format!("?state={state}"));
        }
        let tasks = api.get(&path).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&tasks).unwrap_or_default());
            return Ok(());
        }
        println!("{:<36}  {:<16} {:<12} {:>7}  MESSAGE", "TASK", "COMMAND", "STATE", "ATTEMPT");
        for task in tasks.as_array().into_iter().flatten() {
            println!(
                "{:<36}  {:<16} {:<12} {:>7}  {}",
                task["id"].as_str().unwrap_or_default(),
                task["command"].as_str().unwrap_or_default(),
                task["state"].as_str().unwrap_or_default(),
                task["attempt"],
                task["message"].as_str().unwrap_or_default()
            );
        }
        Ok(())
    })
}

#[derive(Args)]
pub struct CancelArgs {
    task: String,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn cancel(args: CancelArgs) -> std::process::ExitCode {
    block_on(async move {
        let api = Api::connect(&args.api)?;
        let task = api.post(&format!("/api/tasks/{}/cancel", args.task), json!({})).await?;
        println!("task {} {}", args.task, task["state"].as_str().unwrap_or_default());
        Ok(())
    })
}
