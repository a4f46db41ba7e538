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
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Packet, QoS};
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
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    registration_token: String,
    username: Option<String>,
    password: Option<String>,
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
        match (&state.username, &state.password) {
            (Some(username), Some(password)) => {
                match run_as_device(&args, username.clone(), password.clone(), &mut remaining).await {
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
                {"name": "set_interval", "description": "Change the telemetry interval",
                 "parameters": {"type": "object", "properties": {"seconds": {"type": "integer", "minimum": 1, "maximum": 3600}},
                                "required": ["seconds"], "additionalProperties": false}}
            ]
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
async fn run_as_device(args: &Args, username: String, password: String, remaining: &mut Option<u64>) -> Session {
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
    let telemetry_topic = format!("devices/{}/{}/telemetry", args.site, args.id);
    let credentials_topic = format!("devices/{}/{}/credentials", args.site, args.id);
    let mut sent = 0u64;
    let mut ticker = tokio::time::interval(args.interval);
    let mut connected = false;
    loop {
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    emit(json!({ "event": "connected" }));
                    let _ = client.publish(&status_topic, QoS::AtLeastOnce, true, "online").await;
                    let _ = client.subscribe(format!("devices/{}/{}/commands", args.site, args.id), QoS::AtLeastOnce).await;
                    let _ = client.subscribe(&credentials_topic, QoS::AtLeastOnce).await;
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
                    "door": sent % 5 == 0,
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

fn load_state(path: &Path) -> Result<State, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            serde_json::from_str(&text).map_err(|e| format!("{} is not a device state file: {e}", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let token: [u8; 16] = rand::random();
            let state = State { registration_token: hex::encode(token), username: None, password: None };
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
    options.open(path)?.write_all(serde_json::to_string_pretty(state).unwrap_or_default().as_bytes())
}
