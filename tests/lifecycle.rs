//! The device lifecycle against the real daemon with real MQTT clients: register → pending →
//! claim → credentials → reconnect with its own identity → telemetry; wrong, expired and reused
//! codes; pairing approval; deactivation.

use std::time::Duration;

use gatehouse_tests::device::{active_device, fresh_device, registration, send_registration};
use gatehouse_tests::mqtt::{options_as, Client};
use gatehouse_tests::{Credentials, Daemon};
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_claim_receive_credentials_and_send_telemetry() {
    let daemon = Daemon::start(&[]);
    let addr = daemon.runtime.mqtt;
    let viewer = daemon.account("viewer", "service", &[]).await;
    let mut watcher = Client::connect(options_as("watcher", addr, &viewer)).await;
    watcher.subscribe_many(&["devices/home/esp32-a1b2/telemetry", "devices/home/esp32-a1b2/status"]).await;

    let mut device = fresh_device(&daemon, "esp32-a1b2").await;
    let reply = send_registration(&mut device, "esp32-a1b2", &registration("esp32-a1b2")).await.json();
    assert_eq!(reply["status"], "pending", "{reply}");
    let code = reply["claimCode"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 11, "{code}");
    assert!(reply["expiresAt"].as_i64().unwrap() > reply_time_floor());
    assert!(!reply.to_string().contains("token-"), "the registration token is never echoed");

    // Re-registration refreshes the same device and keeps its code.
    let again = send_registration(&mut device, "esp32-a1b2", &registration("esp32-a1b2")).await.json();
    assert_eq!(again["claimCode"], code.as_str());
    let pending = daemon.get_json("/api/devices?state=pending_claim").await;
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["model"], "ESP32-C3");
    assert_eq!(pending[0]["capabilities"]["commands"][0]["name"], "reboot");

    // A pending device cannot publish telemetry: its identity only opens its provisioning topics.
    device
        .client
        .publish("devices/home/esp32-a1b2/telemetry", QoS::AtLeastOnce, false, "{\"temperature\":1}")
        .await
        .unwrap();
    assert!(watcher.next_on("devices/home/esp32-a1b2/telemetry", Duration::from_secs(1)).await.is_none());

    // The person types the code (lower case, with a space instead of the dash).
    let typed = code.to_lowercase().replace('-', " ");
    let (status, claimed) = daemon.post_json("/api/claims", json!({ "code": typed })).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["state"], "active");
    assert!(claimed["claimedBy"].as_str().unwrap().starts_with("api@127.0.0.1"));
    assert!(claimed["claimedAt"].is_number());

    let credentials =
        device.next_on("provisioning/home/esp32-a1b2/reply", Duration::from_secs(5)).await.expect("credentials");
    assert!(!credentials.retain, "credentials are never retained");
    let credentials = credentials.json();
    assert_eq!(credentials["status"], "credentials");
    assert_eq!(credentials["username"], "esp32-a1b2");
    let password = credentials["password"].as_str().unwrap().to_string();
    assert!(password.len() >= 32, "at least 128 bits");

    // The code is used up.
    let (status, body) = daemon.post_json("/api/claims", json!({ "code": code })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("unknown_code")));

    // The device reconnects as itself and is confined to its own topics.
    device.client.disconnect().await.unwrap();
    let own = Credentials { username: "esp32-a1b2".into(), password };
    let mut device = Client::connect(options_as("esp32-a1b2", addr, &own)).await;
    let status = watcher.next_on("devices/home/esp32-a1b2/status", Duration::from_secs(5)).await.expect("online");
    assert_eq!(status.text(), "online");
    assert_eq!(
        device.subscribe_many(&["devices/home/esp32-a1b2/commands", "#"]).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce), SubscribeReasonCode::Failure]
    );
    device
        .client
        .publish("devices/home/esp32-a1b2/telemetry", QoS::AtLeastOnce, false, "{\"temperature\":21.5}")
        .await
        .unwrap();
    let telemetry =
        watcher.next_on("devices/home/esp32-a1b2/telemetry", Duration::from_secs(5)).await.expect("telemetry");
    assert_eq!(telemetry.json()["temperature"], 21.5);

    // Everything is in the audit log, newest first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let audit = daemon.get_json("/api/audit?device=esp32-a1b2").await;
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, vec!["connected_with_own_credentials", "claimed", "registered", "registered"]);
    assert_eq!(audit[1]["source"], "127.0.0.1");

    // Deactivation kicks the device; its password no longer works; history stays.
    let (status, deactivated) = daemon.post_json("/api/devices/esp32-a1b2/deactivate", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(deactivated["state"], "deactivated");
    assert!(device.wait_closed(Duration::from_secs(5)).await.is_some(), "kicked at once");
    let offline = watcher.next_on("devices/home/esp32-a1b2/status", Duration::from_secs(5)).await.expect("offline");
    assert_eq!(offline.text(), "offline");
    let refused = Client::try_connect(options_as("esp32-a1b2", addr, &own)).await;
    assert!(matches!(
        refused,
        Err(rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::NotAuthorized))
    ));

    // A deactivated device can register again and be claimed anew.
    let mut device = fresh_device(&daemon, "esp32-a1b2").await;
    let reply = send_registration(&mut device, "esp32-a1b2", &registration("esp32-a1b2")).await.json();
    assert_eq!(reply["status"], "pending");
    let (status, _) = daemon.post_json("/api/claims", json!({ "code": reply["claimCode"] })).await;
    assert_eq!(status, 200);
}

fn reply_time_floor() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_lock_the_source_out_and_expired_codes_say_so() {
    let daemon = Daemon::start_with_config("[devices]\nclaim_code_ttl = \"2s\"\n", &[]);
    let mut device = fresh_device(&daemon, "slow-device").await;
    let reply = send_registration(&mut device, "slow-device", &registration("slow-device")).await.json();
    let code = reply["claimCode"].as_str().unwrap().to_string();

    let (status, body) = daemon.post_json("/api/claims", json!({ "code": "not a code" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_code")));
    for left in [3, 2, 1] {
        let (status, body) = daemon.post_json("/api/claims", json!({ "code": "ZZZZZ-ZZZZZ" })).await;
        assert_eq!(status, 404, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(&format!("{left} attempts left")), "{body}");
    }
    let (status, body) = daemon.post_json("/api/claims", json!({ "code": "ZZZZZ-ZZZZZ" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_attempts")));
    // Locked out: even the right code is refused from this source for now.
    let (status, body) = daemon.post_json("/api/claims", json!({ "code": code })).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("try again in"), "{body}");
    let health = daemon.get_json("/api/health").await;
    assert!(health["lifecycle"]["claimLockouts"].as_u64().unwrap() >= 1, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_codes_are_refused_with_a_reason() {
    let daemon = Daemon::start_with_config("[devices]\nclaim_code_ttl = \"1s\"\n", &[]);
    let mut device = fresh_device(&daemon, "late-device").await;
    let reply = send_registration(&mut device, "late-device", &registration("late-device")).await.json();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = daemon.post_json("/api/claims", json!({ "code": reply["claimCode"] })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (410, Some("code_expired")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("claim-code"), "says how to get a new code: {body}");
    let (status, fresh) = daemon.post_json("/api/devices/late-device/claim-code", Value::Null).await;
    assert_eq!(status, 201);
    // The device's display gets the new code too.
    let pushed = device.next_on("provisioning/home/late-device/reply", Duration::from_secs(5)).await.unwrap().json();
    assert_eq!(pushed["claimCode"], fresh["claimCode"]);
    let (status, _) = daemon.post_json("/api/claims", json!({ "code": fresh["claimCode"] })).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_registrations_get_an_error_naming_the_field() {
    let daemon = Daemon::start(&[]);
    let mut device = fresh_device(&daemon, "broken-1").await;
    let mut body = registration("broken-1");
    body["capabilities"]["commands"][0]["parameters"] = json!({"type": "nonsense"});
    let reply = send_registration(&mut device, "broken-1", &body).await.json();
    assert_eq!(reply["status"], "error");
    assert_eq!(reply["code"], "invalid_registration");
    assert_eq!(reply["field"], "capabilities.commands[0].parameters");

    // The device id must be the client id the device connected with.
    let reply = send_registration(&mut device, "broken-1", &registration("someone-else")).await.json();
    assert_eq!(reply["field"], "deviceId");
    let reply = send_registration(&mut device, "broken-1", &json!("not an object")).await.json();
    assert_eq!(reply["field"], "(payload)");

    // HTTP registration answers the same way.
    let (status, reply) = daemon.post_json("/api/devices/register", json!({"deviceId": "x"})).await;
    assert_eq!(status, 400);
    assert_eq!(reply["field"], "name");
    let health = daemon.get_json("/api/health").await;
    assert_eq!(health["lifecycle"]["registrationsRejected"], 4, "{health}");
    assert_eq!(daemon.get_json("/api/devices").await.as_array().unwrap().len(), 0, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pairing_window_lets_new_devices_be_approved_with_one_click() {
    let daemon = Daemon::start(&[]);
    let mut early = fresh_device(&daemon, "early").await;
    send_registration(&mut early, "early", &registration("early")).await;

    let (status, pairing) = daemon.post_json("/api/pairing", json!({ "minutes": 60 })).await;
    assert_eq!(status, 200);
    assert_eq!(pairing["open"], true);
    let until = pairing["until"].as_i64().unwrap();
    assert!(until - reply_time_floor() <= 5 * 60 * 1000 + 1000, "capped at 5 minutes: {pairing}");

    let mut paired = fresh_device(&daemon, "paired").await;
    let reply = send_registration(&mut paired, "paired", &registration("paired")).await.json();
    assert_eq!(reply["pairingWindow"], true);
    let inbox = daemon.get_json("/api/devices?state=pending_claim").await;
    let paired_view = inbox.as_array().unwrap().iter().find(|d| d["id"] == "paired").unwrap();
    assert_eq!(paired_view["viaPairing"], true);

    let (status, approved) = daemon.post_json("/api/devices/paired/approve", Value::Null).await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["state"], "active");
    assert_eq!(
        paired.next_on("provisioning/home/paired/reply", Duration::from_secs(5)).await.unwrap().json()["status"],
        "credentials"
    );

    let (status, body) = daemon.post_json("/api/devices/early/approve", Value::Null).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("not_from_pairing")));
    let response = reqwest::Client::new().delete(daemon.http("/api/pairing")).send().await.unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["open"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_is_validated_stored_and_alerts_are_recorded() {
    let daemon = Daemon::start(&[]);
    let viewer = daemon.account("viewer", "service", &[]).await;
    let mut watcher = Client::connect(options_as("watcher", daemon.runtime.mqtt, &viewer)).await;
    watcher.subscribe_many(&["devices/home/sensor-9/telemetry", "gatehouse/home/alerts"]).await;
    let device = active_device(&daemon, "sensor-9").await;

    let telemetry = "devices/home/sensor-9/telemetry";
    for (payload, valid) in [
        (json!({"temperature": 20.5}), true),
        (json!({"temperature": "warm"}), false),       // wrong type
        (json!({"humidity": 40}), false),              // not declared
        (json!({"temperature": 21.5, "ts": 1}), true), // an unset device clock: reception time is used
        (json!("just a string"), false),
        (json!({"temperature": 22.5}), true),
    ] {
        device.client.publish(telemetry, QoS::AtLeastOnce, false, payload.to_string()).await.unwrap();
        let _ = valid;
    }
    let delivered = watcher.collect(3, Duration::from_secs(5)).await;
    let values: Vec<f64> = delivered.iter().map(|m| m.json()["temperature"].as_f64().unwrap()).collect();
    assert_eq!(values, vec![20.5, 21.5, 22.5], "only valid telemetry is delivered");
    assert!(watcher.next_on(telemetry, Duration::from_millis(500)).await.is_none());

    let health = daemon.get_json("/api/health").await;
    assert_eq!(health["mqtt"]["telemetryRejected"], 3, "{health}");
    let clients = daemon.get_json("/api/broker/clients").await;
    let me = clients.as_array().unwrap().iter().find(|c| c["clientId"] == "sensor-9").unwrap().clone();
    assert_eq!(me["invalidTelemetry"], 3);

    // Valid telemetry is stored and comes back as history (the declared fields by default).
    let history = gatehouse_tests::eventually(Duration::from_secs(5), async || {
        let h = daemon.get_json("/api/devices/sensor-9/readings?from=-1h&bucket=1h").await;
        (h["count"].as_array()?.iter().map(|c| c.as_i64().unwrap_or(0)).sum::<i64>() >= 2).then_some(h)
    })
    .await
    .expect("history of the LAN device");
    assert!(history["series"]["temperature"]["max"].as_array().unwrap().iter().any(|v| v == 22.5), "{history}");

    // Alerts: recorded, published, listed; malformed ones are counted.
    let alert = json!({"severity": "warning", "code": "door_open", "message": "Door open for 5 min"});
    device.client.publish("devices/home/sensor-9/alert", QoS::AtLeastOnce, false, alert.to_string()).await.unwrap();
    device
        .client
        .publish("devices/home/sensor-9/alert", QoS::AtLeastOnce, false, "{\"severity\":\"doom\"}")
        .await
        .unwrap();
    let published =
        watcher.next_on("gatehouse/home/alerts", Duration::from_secs(5)).await.expect("alert published").json();
    assert_eq!((published["deviceId"].as_str(), published["severity"].as_str()), (Some("sensor-9"), Some("warning")));
    let alerts = daemon.get_json("/api/alerts?device=sensor-9").await;
    assert_eq!(alerts.as_array().unwrap().len(), 1);
    assert_eq!(alerts[0]["code"], "door_open");
    assert_eq!(alerts[0]["state"], "active");
    let health = daemon.get_json("/api/health").await;
    assert_eq!(health["lifecycle"]["alertsRecorded"], 1);
    assert_eq!(health["lifecycle"]["alertsRejected"], 1);

    let device_view = daemon.get_json("/api/devices/sensor-9").await;
    assert_eq!(device_view["online"], true, "{device_view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_device_and_the_cli_go_through_the_whole_lifecycle() {
    use tokio::io::AsyncBufReadExt;
    let daemon = Daemon::start(&[]);
    let api = format!("http://{}", daemon.runtime.http);
    let viewer = daemon.account("viewer", "service", &[]).await;
    let mut watcher = Client::connect(options_as("watcher", daemon.runtime.mqtt, &viewer)).await;
    watcher.subscribe_many(&["devices/home/ref-1/telemetry"]).await;
    let state = daemon.data_dir.join("ref-1.json");
    let device = |count: &str| {
        let mut command = tokio::process::Command::new(gatehouse_tests::workspace_bin("gatehouse-device"));
        command
            .args([
                "--id",
                "ref-1",
                "--name",
                "Reference one",
                "--mqtt",
                &daemon.runtime.mqtt.to_string(),
                "--api",
                &api,
            ])
            .arg("--state")
            .arg(&state)
            .args(["--interval", "200ms", "--count", count, "--alert", "info"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        command.spawn().expect("start gatehouse-device")
    };
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(gatehouse_tests::gatehouse_bin())
            .args(args)
            .args(["--api", &api])
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let mut first = device("3");
    let mut lines = tokio::io::BufReader::new(first.stdout.take().unwrap()).lines();
    let code = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let event: Value = serde_json::from_str(&line).unwrap();
            if event["event"] == "pending" {
                return event["claimCode"].as_str().unwrap().to_string();
            }
        }
        panic!("the device stopped before showing a claim code");
    })
    .await
    .expect("a claim code");

    let (status, stdout, stderr) = cli(&["claim", &code]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stdout.contains("claimed ref-1"), "{stdout}");
    let exit = tokio::time::timeout(Duration::from_secs(20), first.wait()).await.expect("the device finishes").unwrap();
    assert!(exit.success(), "{exit:?}");
    let telemetry = watcher.collect(3, Duration::from_secs(5)).await;
    assert_eq!(telemetry.len(), 3, "three readings arrived");
    let mode = std::fs::metadata(&state).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600, "credentials are stored privately");
    }

    let (status, stdout, _) = cli(&["devices", "--json"]);
    assert_eq!(status, Some(0));
    let devices: Value = serde_json::from_str(&stdout).unwrap();
    let me = devices.as_array().unwrap().iter().find(|d| d["id"] == "ref-1").unwrap().clone();
    assert_eq!(me["state"], "active");
    assert!(me["claimedBy"].as_str().unwrap().starts_with("cli@"), "{me}");
    let alerts = daemon.get_json("/api/alerts?device=ref-1").await;
    assert_eq!(alerts[0]["code"], "started");

    // With stored credentials the device connects straight away.
    let mut again = device("1");
    let mut lines = tokio::io::BufReader::new(again.stdout.take().unwrap()).lines();
    let first_event: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(first_event["event"], "connected");
    assert!(tokio::time::timeout(Duration::from_secs(10), again.wait()).await.unwrap().unwrap().success());

    let (status, _, stderr) = cli(&["deactivate", "ref-1"]);
    assert_eq!(status, Some(0), "{stderr}");
    let mut refused = device("1");
    let exit = tokio::time::timeout(Duration::from_secs(10), refused.wait()).await.expect("refused promptly").unwrap();
    assert_eq!(exit.code(), Some(3), "a deactivated device's credentials stop working");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bluetooth_tags_are_adopted_with_offsets_or_blocked_without_claim_codes() {
    // Tag 1 of the seeded simulator is a bedroom at about 19 °C (tag 0 a living room at 21.5 °C).
    let daemon = Daemon::start(&["--simulate", "2", "--seed", "11"]);
    let viewer = daemon.account("viewer", "service", &[]).await;
    let mut watcher = Client::connect(options_as("watcher", daemon.runtime.mqtt, &viewer)).await;
    watcher.subscribe_many(&["devices/home/+/telemetry"]).await;
    let first = watcher.collect(4, Duration::from_secs(15)).await;
    let mut ids: Vec<String> = first.iter().map(|m| m.json()["deviceId"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2, "both tags heard: {ids:?}");
    let devices = daemon.get_json("/api/devices").await;
    assert!(devices.as_array().unwrap().iter().all(|d| d["state"] == "discovered"));
    let (adopted, blocked) = (ids[0].clone(), ids[1].clone());
    let before: f64 = first.iter().find(|m| m.json()["deviceId"] == adopted.as_str()).unwrap().json()["temperature"]
        .as_f64()
        .unwrap();

    let (status, device) = daemon
        .post_json(
            &format!("/api/devices/{adopted}/adopt"),
            json!({"name": "Living room", "room": "downstairs", "calibration": {"temperature": 10.0}}),
        )
        .await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(
        (device["state"].as_str(), device["name"].as_str(), device["room"].as_str()),
        (Some("active"), Some("Living room"), Some("downstairs"))
    );
    let (status, _) = daemon.post_json(&format!("/api/devices/{blocked}/block"), Value::Null).await;
    assert_eq!(status, 200);
    watcher.collect(100, Duration::from_millis(300)).await; // drain what was in flight

    let after = watcher.collect(4, Duration::from_secs(10)).await;
    assert!(after.len() >= 3, "the adopted tag keeps reporting");
    for message in &after {
        let reading = message.json();
        assert_eq!(reading["deviceId"], adopted.as_str(), "a blocked tag is not published");
        let t = reading["temperature"].as_f64().unwrap();
        assert!((t - before - 10.0).abs() < 1.0, "offset applied: {before} → {t}");
        // Derived values follow the corrected temperature.
        assert!(reading["dewPoint"].as_f64().unwrap() < t);
    }
    let health = daemon.get_json("/api/health").await;
    assert!(health["pipeline"]["rejectedBlocked"].as_u64().unwrap() > 0, "{health}");

    let (status, body) = daemon.post_json("/api/devices/nope/adopt", json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("device_not_found")));
    let (status, body) =
        daemon.post_json(&format!("/api/devices/{adopted}/adopt"), json!({"calibration": {"temperature": 99}})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_calibration")));

    let (status, _) = daemon.post_json(&format!("/api/devices/{blocked}/unblock"), Value::Null).await;
    assert_eq!(status, 200);
    let resumed = watcher.collect(20, Duration::from_secs(5)).await;
    assert!(resumed.iter().any(|m| m.json()["deviceId"] == blocked.as_str()), "unblocked tag reports again");
    let audit = daemon.get_json(&format!("/api/audit?device={blocked}")).await;
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, vec!["unblocked", "blocked"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_discovery_import_creates_feeds_and_removes_entities() {
    let daemon = Daemon::start(&[]);
    // A Tasmota-like device: its firmware publishes discovery configs and state with a service
    // account allowed to write its own state topics.
    let tasmota = daemon.account("tasmota", "service", &[("tasmota/#", "write")]).await;
    let plug = Client::connect(options_as("sonoff-th", daemon.runtime.mqtt, &tasmota)).await;
    let config = json!({
        "name": "Garage Temperature", "stat_t": "tasmota/tele/garage/SENSOR", "uniq_id": "garage_T",
        "dev": {"ids": ["garage01"], "name": "Garage", "mf": "Tasmota", "mdl": "Sonoff TH"},
        "unit_of_meas": "°C", "dev_cla": "temperature", "val_tpl": "{{ value_json['AM2301'].Temperature }}"
    });
    let humidity = json!({
        "name": "Garage Humidity", "stat_t": "tasmota/tele/garage/SENSOR",
        "dev": {"ids": ["garage01"]}, "unit_of_meas": "%", "val_tpl": "{{ value_json.AM2301.Humidity }}"
    });
    plug.client
        .publish("homeassistant/sensor/garage01/temperature/config", QoS::AtLeastOnce, true, config.to_string())
        .await
        .unwrap();
    plug.client
        .publish("homeassistant/sensor/garage01/humidity/config", QoS::AtLeastOnce, true, humidity.to_string())
        .await
        .unwrap();

    let device = gatehouse_tests::eventually(Duration::from_secs(5), async || {
        let d = daemon.get_json("/api/devices?kind=homeassistant").await;
        let d = d.as_array()?.first()?.clone();
        (d["capabilities"]["telemetry"].as_array()?.len() == 2).then_some(d)
    })
    .await
    .expect("the imported device with two entities");
    assert_eq!(device["id"], "ha-garage01");
    assert_eq!(device["state"], "discovered");
    assert_eq!((device["manufacturer"].as_str(), device["model"].as_str()), (Some("Tasmota"), Some("Sonoff TH")));

    for t in [18.5, 19.0] {
        let state = json!({"AM2301": {"Temperature": t, "Humidity": 60}});
        plug.client.publish("tasmota/tele/garage/SENSOR", QoS::AtLeastOnce, false, state.to_string()).await.unwrap();
    }
    let history = gatehouse_tests::eventually(Duration::from_secs(5), async || {
        let h = daemon.get_json("/api/devices/ha-garage01/readings?from=-1h&bucket=1h").await;
        (h["series"]["garage_temperature"]["max"][0].as_f64()? == 19.0).then_some(h)
    })
    .await
    .expect("state messages feed the device's telemetry");
    assert_eq!(history["series"]["garage_humidity"]["avg"][0], 60.0);

    // Adopted like a tag.
    let (status, adopted) = daemon.post_json("/api/devices/ha-garage01/adopt", json!({"room": "garage"})).await;
    assert_eq!((status, adopted["state"].as_str()), (200, Some("active")));

    // An empty retained config removes the entity; the last one removes the device.
    plug.client.publish("homeassistant/sensor/garage01/humidity/config", QoS::AtLeastOnce, true, "").await.unwrap();
    let one_left = gatehouse_tests::eventually(Duration::from_secs(5), async || {
        let d = daemon.get_json("/api/devices/ha-garage01").await;
        (d["capabilities"]["telemetry"].as_array()?.len() == 1).then_some(d)
    })
    .await;
    assert!(one_left.is_some(), "the humidity entity is gone");
    plug.client.publish("homeassistant/sensor/garage01/temperature/config", QoS::AtLeastOnce, true, "").await.unwrap();
    let gone = gatehouse_tests::eventually(Duration::from_secs(5), async || {
        let d = daemon.get_json("/api/devices?kind=homeassistant").await;
        d.as_array()?.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the device is removed with its last entity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_rotated_over_the_devices_own_channel() {
    use tokio::io::AsyncBufReadExt;
    let daemon = Daemon::start(&[]);
    let api = format!("http://{}", daemon.runtime.http);
    let state = daemon.data_dir.join("rot-1.json");
    let mut device = tokio::process::Command::new(gatehouse_tests::workspace_bin("gatehouse-device"))
        .args(["--id", "rot-1", "--mqtt", &daemon.runtime.mqtt.to_string(), "--api", &api])
        .arg("--state")
        .arg(&state)
        .args(["--interval", "200ms", "--count", "12"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(device.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut rotated = false;
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.next_line()).await.expect("device keeps talking")
    {
        let event: Value = serde_json::from_str(&line).unwrap();
        match event["event"].as_str().unwrap() {
            "pending" => {
                let (status, _) = daemon.post_json("/api/claims", json!({ "code": event["claimCode"] })).await;
                assert_eq!(status, 200);
            }
            "telemetry" if !rotated && event["n"] == 3 => {
                let old: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
                events.push(old["password"].as_str().unwrap().to_string());
                let (status, _) = daemon.post_json("/api/devices/rot-1/rotate-credentials", Value::Null).await;
                assert_eq!(status, 202);
                rotated = true;
            }
            _ => {}
        }
        events.push(event["event"].as_str().unwrap().to_string());
    }
    assert!(device.wait().await.unwrap().success());
    let after = events.iter().skip_while(|e| e.as_str() != "credentials_rotated").cloned().collect::<Vec<_>>();
    assert_eq!(after.get(1).map(String::as_str), Some("connected"), "reconnected with the new password: {events:?}");
    let old_password = events[events.iter().position(|e| e.len() == 40).unwrap()].clone();
    let new: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_ne!(new["password"].as_str().unwrap(), old_password);
    let old = Credentials { username: "rot-1".into(), password: old_password };
    assert!(
        matches!(
            Client::try_connect(options_as("rot-1", daemon.runtime.mqtt, &old)).await,
            Err(rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::NotAuthorized))
        ),
        "the old password stops working once the new one is used"
    );
    let audit = daemon.get_json("/api/audit?device=rot-1").await;
    assert!(audit.as_array().unwrap().iter().any(|e| e["action"] == "credentials_rotated"));
}
