//! The reference device (`gatehouse-device`, the firmware example in Rust) run as a process for
//! tests: registered, claimed through the API, its stdout events and executed tasks readable.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::{workspace_bin, Daemon};

/// The reference device as a process; its stdout events arrive on `events`.
pub struct Device {
    pub id: String,
    pub state: PathBuf,
    pub child: tokio::process::Child,
    pub events: mpsc::UnboundedReceiver<Value>,
}

impl Device {
    pub fn spawn(daemon: &Daemon, id: &str, behaviours: &[&str]) -> Device {
        let state = daemon.data_dir.join(format!("{id}.json"));
        let mut command = tokio::process::Command::new(workspace_bin("gatehouse-device"));
        command
            .args(["--id", id, "--mqtt", &daemon.runtime.mqtt.to_string()])
            .args(["--api", &format!("http://{}", daemon.runtime.http), "--interval", "1h"])
            .arg("--state")
            .arg(&state)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        for behaviour in behaviours {
            command.args(["--behaviour", behaviour]);
        }
        let mut child = command.spawn().expect("start gatehouse-device");
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    if tx.send(event).is_err() {
                        break;
                    }
                }
            }
        });
        Device { id: id.into(), state, child, events }
    }

    /// Registered, claimed through the API and connected with its own credentials.
    pub async fn claimed(daemon: &Daemon, id: &str, behaviours: &[&str]) -> Device {
        let mut device = Device::spawn(daemon, id, behaviours);
        let pending = device.expect("pending").await;
        let (status, body) = daemon.post_json("/api/claims", json!({ "code": pending["claimCode"] })).await;
        assert_eq!(status, 200, "{body}");
        device.expect("connected").await;
        device
    }

    /// Waits for the next stdout event named `event`, skipping others.
    pub async fn expect(&mut self, event: &str) -> Value {
        let id = self.id.clone();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(next) = self.events.recv().await {
                if next["event"] == event {
                    return next;
                }
            }
            panic!("{id} exited before `{event}`");
        })
        .await
        .unwrap_or_else(|_| panic!("{id}: no `{event}` within 30 s"))
    }

    /// Task id → how many times the device started executing it, from its state file.
    pub fn executions(&self) -> BTreeMap<String, u64> {
        let state: Value = serde_json::from_str(&std::fs::read_to_string(&self.state).unwrap()).unwrap();
        serde_json::from_value(state["executions"].clone()).unwrap()
    }

    /// Stops the process like a power cut (no DISCONNECT, no will-free goodbye).
    pub async fn power_off(&mut self) {
        let _ = self.child.kill().await;
    }
}
