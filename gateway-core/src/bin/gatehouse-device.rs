//! `gatehouse-device`: a reference LAN device that behaves like real firmware. It registers with
//! the shared provisioning identity, shows its claim code, waits to be claimed, stores the
//! credentials it receives, reconnects as itself (with a will on its status topic), sends
//! telemetry and status, and raises alerts. Firmware authors can read it as a worked example of
//! docs/protocol.md; tests and demos run it as a process.
//!
//! Progress is printed as one JSON object per line on stdout (`{"event":"pending","claimCode":…}`),
//! explanations on stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, NetworkOptions, Packet, QoS,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "gatehouse-device", about = "A reference LAN device for Gatehouse")]
struct Args {
    /// Device id (also its MQTT client id and, once claimed, its username).
    #[arg(long)]
    id: String,
    /// Human name sent in the registration.
    #[arg(long, default_value = "Reference device")]
    name: String,
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: String,
    #[arg(long, default_value = "home")]
    site: String,
    /// Where the device keeps its registration token and credentials (created, mode 0600).
    #[arg(long)]
    state: PathBuf,
    /// Gateway API to read the provisioning credentials from (instead of the two options below).
    #[arg(long)]
    api: Option<String>,
    #[arg(long, default_value = "provision")]
    provisioning_user: String,
    #[arg(long)]
    provisioning_password: Option<String>,
    /// Time between telemetry messages.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop after this many telemetry messages (default: run forever).
    #[arg(long)]
    count: Option<u64>,
    /// Raise an alert of this severity (info, warning, critical) after connecting.
    #[arg(long)]
    alert: Option<String>,
    /// How to handle a command, COMMAND=MODE (repeatable). Modes: succeed (default), fail,
    /// reject, hang (ack, never finish), slow:N (N seconds with progress), crash (exit 9 after
    /// the ack), duplicate (answer twice), ignore (never answer), ignore-once (ignore the first
    /// delivery of each task).
    #[arg(long = "behaviour", value_name = "COMMAND=MODE")]
    behaviours: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    registration_token: String,
    username: Option<String>,
    password: Option<String>,
    /// Task id → how many times this device started executing it (tests check it is never 2).
    #[serde(default)]
    executions: std::collections::BTreeMap<String, u32>,
    /// Task id → the final answer, re-sent when the gateway delivers the task again.
    #[serde(default)]
    results: std::collections::BTreeMap<String, Value>,
    /// Task ids ignored once (mode ignore-once).
    #[serde(default)]
    ignored: std::collections::BTreeSet<String>,
    /// The configuration last applied, and its version.
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    config_version: i64,
}

fn emit(event: Value) {
    println!("{event}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut state = match load_state(&args.state) {
        Ok(state) => state,
        Err(error) => {
            eprintln!("gatehouse-device: {error}");
            return ExitCode::from(2);
        }
    };
    let mut remaining = args.count;
    loop {
        match (state.username.clone(), state.password.clone()) {
            (Some(username), Some(password)) => {
                match run_as_device(&args, username, password, &mut remaining, &mut state).await {
                    Session::Exit(code) => return code,
                    Session::NewCredentials(username, password) => {
                        // Store first, then reconnect with them: the old password stops working
                        // once the gateway has seen the new one.
                        state.username = Some(username);
                        state.password = Some(password);
                        if let Err(error) = save_state(&args.state, &state) {
                            eprintln!("gatehouse-device: cannot save the new credentials: {error}");
                            return ExitCode::from(2);
                        }
                        emit(json!({ "event": "credentials_rotated" }));
                    }
                }
            }
            _ => match provision(&args, &state).await {
                Ok((username, password)) => {
                    state.username = Some(username);
                    state.password = Some(password);
                    if let Err(error) = save_state(&args.state, &state) {
                        eprintln!("gatehouse-device: cannot save the credentials: {error}");
                        return ExitCode::from(2);
                    }
                    emit(json!({ "event": "credentials_saved" }));
                }
                Err(code) => return code,
            },
        }
    }
}

fn split_addr(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(1883)),
        None => (addr.to_string(), 1883),
    }
}

async fn provisioning_password(args: &Args) -> Result<String, String> {
    if let Some(password) = &args.provisioning_password {
        return Ok(password.clone());
    }
    let api = args.api.as_ref().ok_or("give --provisioning-password or --api URL (the gateway shows both)")?;
    let body: Value = reqwest::get(format!("{}/api/provisioning", api.trim_end_matches('/')))
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    body["password"].as_str().map(String::from).ok_or_else(|| format!("unexpected answer: {body}"))
}

fn registration(args: &Args, state: &State) -> Value {
    json!({
        "deviceId": args.id,
        "name": args.name,
        "type": "sensor",
        "model": "gatehouse-device",
        "manufacturer": "Gatehouse",
        "firmware": env!("CARGO_PKG_VERSION"),
        "hardware": "reference",
        "registrationToken": state.registration_token,
        "capabilities": {
            "telemetry": [
                {"name": "temperature", "unit": "°C", "type": "number"},
                {"name": "humidity", "unit": "%", "type": "number"},
                {"name": "door", "type": "boolean"}
            ],
            "commands": [
                {"name": "reboot", "description": "Restart the device"},
                {"name": "identify", "description": "Blink the LED",
                 "parameters": {"type": "object", "properties": {"seconds": {"type": "integer", "minimum": 1, "maximum": 60}},
                                "additionalProperties": false}},
                {"name": "set_interval", "description": "Change the telemetry interval",
                 "parameters": {"type": "object", "properties": {"seconds": {"type": "integer", "minimum": 1, "maximum": 3600}},
                                "required": ["seconds"], "additionalProperties": false}}
            ],
            "config": {
                "type": "object",
                "properties": {
                    "interval": {"type": "integer", "minimum": 1, "maximum": 3600, "description": "seconds between readings"},
                    "label": {"type": "string", "maxLength": 32}
                },
                "additionalProperties": false
            }
        }
    })
}

/// Registers and waits until the device is claimed; returns its credentials.
async fn provision(args: &Args, state: &State) -> Result<(String, String), ExitCode> {
    let password = provisioning_password(args).await.map_err(|e| {
        eprintln!("gatehouse-device: {e}");
        ExitCode::from(2)
    })?;
    let (host, port) = split_addr(&args.mqtt);
    let mut options = MqttOptions::new(&args.id, host, port);
    options.set_credentials(&args.provisioning_user, password).set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let reply_topic = format!("provisioning/{}/{}/reply", args.site, args.id);
    let register_topic = format!("provisioning/{}/{}/register", args.site, args.id);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                // Subscribe before registering, so the reply cannot be missed.
                let _ = client.subscribe(&reply_topic, QoS::AtLeastOnce).await;
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = client
                    .publish(&register_topic, QoS::AtLeastOnce, false, registration(args, state).to_string())
                    .await;
            }
            Ok(Event::Incoming(Packet::Publish(message))) if message.topic == reply_topic => {
                let reply: Value = serde_json::from_slice(&message.payload).unwrap_or_default();
                match reply["status"].as_str() {
                    Some("pending") => {
                        let code = reply["claimCode"].as_str().unwrap_or("?");
                        eprintln!(
                            "\n    Claim code for {}: {code}\n    (enter it in Gatehouse: gatehouse claim {code})\n",
                            args.id
                        );
                        emit(json!({ "event": "pending", "claimCode": code, "expiresAt": reply["expiresAt"] }));
                    }
                    Some("credentials") => {
                        let _ = client.disconnect().await;
                        let username = reply["username"].as_str().unwrap_or(&args.id).to_string();
                        let password = reply["password"].as_str().unwrap_or_default().to_string();
                        emit(json!({ "event": "claimed" }));
                        return Ok((username, password));
                    }
                    _ => {
                        eprintln!("gatehouse-device: registration refused: {reply}");
                        emit(json!({ "event": "refused", "reply": reply }));
                        return Err(ExitCode::from(2));
                    }
                }
            }
            Ok(_) => {}
            Err(ConnectionError::ConnectionRefused(code)) => {
                eprintln!("gatehouse-device: the broker refused the provisioning credentials ({code:?})");
                return Err(ExitCode::from(3));
            }
            Err(error) => {
                eprintln!("gatehouse-device: {error}; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

enum Session {
    Exit(ExitCode),
    /// The gateway sent new credentials on the device's credentials topic.
    NewCredentials(String, String),
}

/// Connects as itself and sends telemetry; exit status 3 when the gateway no longer accepts the
/// credentials (the device was deactivated).
async fn run_as_device(
    args: &Args,
    username: String,
    password: String,
    remaining: &mut Option<u64>,
    state: &mut State,
) -> Session {
    let (host, port) = split_addr(&args.mqtt);
    let status_topic = format!("devices/{}/{}/status", args.site, args.id);
    let mut options = MqttOptions::new(&args.id, host, port);
    options.set_credentials(username, password).set_keep_alive(Duration::from_secs(30)).set_last_will(LastWill::new(
        &status_topic,
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    // Without TCP_NODELAY an answer written right after a PUBACK waits for the delayed ACK
    // (about 40 ms on Linux) before it leaves: docs/protocol.md asks firmware to set it.
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let telemetry_topic = format!("devices/{}/{}/telemetry", args.site, args.id);
    let credentials_topic = format!("devices/{}/{}/credentials", args.site, args.id);
    let commands_topic = format!("devices/{}/{}/commands", args.site, args.id);
    let response_topic = format!("devices/{}/{}/command_response", args.site, args.id);
    let config_topic = format!("devices/{}/{}/config", args.site, args.id);
    let reported_topic = format!("devices/{}/{}/config_reported", args.site, args.id);
    let mut sent = 0u64;
    let mut ticker = tokio::time::interval(configured_interval(args, state));
    let mut connected = false;
    let mut running = Running::default();
    let (finished_tx, mut finished_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Value)>();
    running.finished = Some(finished_tx);
    loop {
        tokio::select! {
            Some((task_id, result)) = finished_rx.recv() => {
                finish_task(args, &client, &response_topic, &mut running, state, task_id, result).await;
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    emit(json!({ "event": "connected" }));
                    let _ = client.publish(&status_topic, QoS::AtLeastOnce, true, "online").await;
                    let _ = client.subscribe(&commands_topic, QoS::AtLeastOnce).await;
                    let _ = client.subscribe(&credentials_topic, QoS::AtLeastOnce).await;
                    let _ = client.subscribe(&config_topic, QoS::AtLeastOnce).await;
                    if let Some(severity) = &args.alert {
                        let alert = json!({ "severity": severity, "code": "started", "message": format!("{} started", args.name) });
                        let _ = client.publish(format!("devices/{}/{}/alert", args.site, args.id), QoS::AtLeastOnce, false, alert.to_string()).await;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(message))) if message.topic == credentials_topic => {
                    let reply: Value = serde_json::from_slice(&message.payload).unwrap_or_default();
                    if let (Some(username), Some(password)) = (reply["username"].as_str(), reply["password"].as_str()) {
                        let _ = client.disconnect().await;
                        let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
                        return Session::NewCredentials(username.to_string(), password.to_string());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(message))) if message.topic == config_topic => {
                    let desired: Value = serde_json::from_slice(&message.payload).unwrap_or_default();
                    let report = apply_config(args, state, &desired);
                    if report["status"] == "applied" {
                        ticker = tokio::time::interval(configured_interval(args, state));
                    }
                    emit(json!({ "event": "config", "report": report }));
                    let _ = client.publish(&reported_topic, QoS::AtLeastOnce, false, report.to_string()).await;
                }
                Ok(Event::Incoming(Packet::Publish(message))) if message.topic == commands_topic => {
                    let envelope: Value = serde_json::from_slice(&message.payload).unwrap_or_default();
                    if let Some(code) = handle_task(args, &client, &response_topic, &envelope, &mut running, state).await {
                        // Stop like a device losing power, once the gateway has the acknowledgement.
                        let _ = tokio::time::timeout(Duration::from_secs(3), async {
                            while !matches!(eventloop.poll().await, Ok(Event::Incoming(Packet::PubAck(_))) | Err(_)) {}
                        }).await;
                        return Session::Exit(code);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(message))) => {
                    emit(json!({ "event": "message", "topic": message.topic, "payload": String::from_utf8_lossy(&message.payload) }));
                }
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword)) => {
                    eprintln!("gatehouse-device: the gateway refused this device's credentials (deactivated?); delete {} to register again", args.state.display());
                    emit(json!({ "event": "refused" }));
                    return Session::Exit(ExitCode::from(3));
                }
                Err(error) => {
                    connected = false;
                    eprintln!("gatehouse-device: {error}; reconnecting in 2 s");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            },
            _ = ticker.tick(), if connected => {
                let reading = json!({
                    "temperature": 20.0 + (sent % 10) as f64 * 0.1,
                    "humidity": 45.0,
                    "door": sent.is_multiple_of(5),
                });
                if client.publish(&telemetry_topic, QoS::AtLeastOnce, false, reading.to_string()).await.is_ok() {
                    sent += 1;
                    if let Some(left) = remaining.as_mut() {
                        *left = left.saturating_sub(1);
                    }
                    emit(json!({ "event": "telemetry", "n": sent }));
                }
                if remaining.is_some_and(|left| left == 0) {
                    // Let the last publishes go out, then leave cleanly.
                    for _ in 0..20 {
                        if tokio::time::timeout(Duration::from_millis(50), eventloop.poll()).await.is_err() {
                            break;
                        }
                    }
                    let _ = client.publish(&status_topic, QoS::AtLeastOnce, true, "offline").await;
                    let _ = client.disconnect().await;
                    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
                    return Session::Exit(ExitCode::SUCCESS);
                }
            }
        }
    }
}

/// The telemetry interval: the applied configuration's, else the command line's.
fn configured_interval(args: &Args, state: &State) -> Duration {
    state.config.as_ref().and_then(|c| c["interval"].as_u64()).map(Duration::from_secs).unwrap_or(args.interval)
}

/// Applies a desired configuration (docs/protocol.md, config push) and returns the report. An
/// older or the same version is answered with what is applied now, so re-sends are harmless.
fn apply_config(args: &Args, state: &mut State, desired: &Value) -> Value {
    let Some(version) = desired["version"].as_i64() else {
        return json!({ "version": 0, "status": "rejected", "message": "no version in the configuration message" });
    };
    if version <= state.config_version {
        return json!({ "version": state.config_version, "status": "applied" });
    }
    let config = &desired["config"];
    // The schema allows 1 s; this hardware cannot sample faster than every 2 s.
    if config["interval"].as_u64().is_some_and(|i| i < 2) {
        return json!({ "version": version, "status": "rejected", "message": "interval below this hardware's minimum of 2 s" });
    }
    state.config = Some(config.clone());
    state.config_version = version;
    if let Err(error) = save_state(&args.state, state) {
        return json!({ "version": version, "status": "rejected", "message": format!("cannot store it: {error}") });
    }
    json!({ "version": version, "status": "applied" })
}

/// Tasks this process is executing right now (not persisted: a restart interrupts them).
#[derive(Default)]
struct Running {
    tasks: std::collections::HashSet<String>,
    /// Long executions run beside the MQTT loop and hand their final answer back here.
    finished: Option<tokio::sync::mpsc::UnboundedSender<(String, Value)>>,
}

fn task_answer(task_id: &str, attempt: u64, status: &str, extra: Value) -> Value {
    let mut body = json!({ "taskId": task_id, "attempt": attempt, "status": status });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

async fn send_answer(client: &AsyncClient, topic: &str, body: &Value) {
    let _ = client.publish(topic, QoS::AtLeastOnce, false, body.to_string()).await;
}

/// The device side of the task protocol (docs/protocol.md): de-duplicate on the task id, answer a
/// redelivered task from the stored result, acknowledge, execute, answer. Returns an exit code
/// when the configured behaviour is to crash.
async fn handle_task(
    args: &Args,
    client: &AsyncClient,
    topic: &str,
    envelope: &Value,
    running: &mut Running,
    state: &mut State,
) -> Option<ExitCode> {
    if envelope["type"] != "task" {
        return None; // a cancel: nothing of ours can be stopped half-way
    }
    let task_id = envelope["taskId"].as_str()?.to_string();
    let attempt = envelope["attempt"].as_u64().unwrap_or(1);
    let command = envelope["command"].as_str().unwrap_or_default().to_string();
    // Already finished: the same answer again, never a second execution.
    if let Some(stored) = state.results.get(&task_id) {
        let mut again = stored.clone();
        again["attempt"] = json!(attempt);
        emit(json!({ "event": "task_duplicate", "taskId": task_id }));
        send_answer(client, topic, &again).await;
        return None;
    }
    // Still running here: say so rather than start it again.
    if running.tasks.contains(&task_id) {
        emit(json!({ "event": "task_duplicate", "taskId": task_id }));
        send_answer(client, topic, &task_answer(&task_id, attempt, "in_progress", json!({}))).await;
        return None;
    }
    // Started before a crash and never finished: report it instead of running it twice.
    if state.executions.contains_key(&task_id) {
        let body = task_answer(
            &task_id,
            attempt,
            "failed",
            json!({ "message": "interrupted: the device restarted during the task" }),
        );
        state.results.insert(task_id.clone(), body.clone());
        let _ = save_state(&args.state, state);
        emit(json!({ "event": "task_finished", "taskId": task_id, "status": "failed" }));
        send_answer(client, topic, &body).await;
        return None;
    }
    let mode = args
        .behaviours
        .iter()
        .find_map(|b| b.split_once('=').filter(|(c, _)| *c == command).map(|(_, m)| m.to_string()))
        .unwrap_or_else(|| "succeed".into());
    if mode == "ignore" || (mode == "ignore-once" && state.ignored.insert(task_id.clone())) {
        let _ = save_state(&args.state, state);
        emit(json!({ "event": "task_ignored", "taskId": task_id }));
        return None;
    }
    *state.executions.entry(task_id.clone()).or_default() += 1;
    let _ = save_state(&args.state, state);
    emit(json!({ "event": "task_started", "taskId": task_id, "command": command }));
    send_answer(client, topic, &task_answer(&task_id, attempt, "delivered", json!({}))).await;
    let result = match mode.as_str() {
        "crash" => return Some(ExitCode::from(9)),
        "hang" => {
            running.tasks.insert(task_id);
            return None;
        }
        "reject" => task_answer(
            &task_id,
            attempt,
            "rejected",
            json!({ "message": format!("{command} is not accepted right now") }),
        ),
        "fail" => {
            task_answer(&task_id, attempt, "failed", json!({ "message": format!("{command} failed (simulated)") }))
        }
        m if m.starts_with("slow:") => {
            let seconds: u64 = m[5..].parse().unwrap_or(1).max(1);
            running.tasks.insert(task_id.clone());
            let (client, topic, finished) = (client.clone(), topic.to_string(), running.finished.clone());
            tokio::spawn(async move {
                for step in 1..seconds {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let progress = step * 100 / seconds;
                    let body = task_answer(
                        &task_id,
                        attempt,
                        "in_progress",
                        json!({ "progress": progress, "extendMs": 5_000 }),
                    );
                    send_answer(&client, &topic, &body).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                let result =
                    task_answer(&task_id, attempt, "succeeded", json!({ "result": { "tookSeconds": seconds } }));
                if let Some(finished) = finished {
                    let _ = finished.send((task_id, result));
                }
            });
            return None;
        }
        _ => match command.as_str() {
            "set_interval" => task_answer(
                &task_id,
                attempt,
                "succeeded",
                json!({ "result": { "interval": envelope["params"]["seconds"] } }),
            ),
            _ => task_answer(&task_id, attempt, "succeeded", json!({ "result": {} })),
        },
    };
    if mode == "duplicate" {
        send_answer(client, topic, &result).await;
    }
    finish_task(args, client, topic, running, state, task_id, result).await;
    None
}

/// Stores the final answer (so a redelivery gets it again) before sending it.
async fn finish_task(
    args: &Args,
    client: &AsyncClient,
    topic: &str,
    running: &mut Running,
    state: &mut State,
    task_id: String,
    result: Value,
) {
    running.tasks.remove(&task_id);
    state.results.insert(task_id.clone(), result.clone());
    let _ = save_state(&args.state, state);
    emit(json!({ "event": "task_finished", "taskId": task_id, "status": result["status"] }));
    send_answer(client, topic, &result).await;
}

fn load_state(path: &Path) -> Result<State, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            serde_json::from_str(&text).map_err(|e| format!("{} is not a device state file: {e}", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let token: [u8; 16] = rand::random();
            let state = State { registration_token: hex::encode(token), ..State::default() };
            save_state(path, &state).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            Ok(state)
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

fn save_state(path: &Path, state: &State) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    // Write then rename: a device that loses power mid-write keeps its old state, never half of it.
    let temporary = path.with_extension("tmp");
    options.open(&temporary)?.write_all(serde_json::to_string_pretty(state).unwrap_or_default().as_bytes())?;
    std::fs::rename(&temporary, path)
}
