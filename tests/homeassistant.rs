//! Home Assistant MQTT discovery against the real daemon: an account with the `homeassistant`
//! role sees retained device configs for the gateway, adopted tags and a claimed reference device
//! (`gatehouse-device`); HA's birth message re-publishes them; a button press becomes a task that
//! succeeds on the device; removal publishes empty retained configs; bad commands are counted.

use std::time::Duration;

use gatehouse_tests::mqtt::{options_as, Client, Message};
use gatehouse_tests::{eventually, workspace_bin, Daemon};
use rumqttc::QoS;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

const GATEWAY_CONFIG: &str = "homeassistant/device/gatehouse-home/config";

fn config_topic(device_id: &str) -> String {
    format!("homeassistant/device/gatehouse_{device_id}/config")
}

async fn ha_client(daemon: &Daemon, client_id: &str, filters: &[&str]) -> Client {
    let ha = daemon.account(client_id, "homeassistant", &[]).await;
    let mut client = Client::connect(options_as(client_id, daemon.runtime.mqtt, &ha)).await;
    let codes = client.subscribe_many(filters).await;
    assert!(codes.iter().all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))), "{codes:?}");
    client
}

async fn expect_on(client: &mut Client, topic: &str, daemon: &Daemon) -> Message {
    client
        .next_on(topic, Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("nothing on {topic} within 15 s\n{}", daemon.log()))
}

/// Every component of a device config must carry the keys HA's device discovery requires.
fn components(config: &Value) -> serde_json::Map<String, Value> {
    assert_eq!(config["origin"]["name"], "Gatehouse", "{config}");
    assert!(config["origin"]["sw_version"].is_string() && config["origin"]["name"] == "Gatehouse");
    let components = config["components"].as_object().expect("components").clone();
    let mut unique = std::collections::HashSet::new();
    for (key, c) in &components {
        assert!(c["platform"].is_string(), "{key}");
        assert!(unique.insert(c["unique_id"].as_str().expect("unique_id").to_string()), "{key}");
        assert!(c["default_entity_id"].is_string(), "{key}");
        assert!(c.get("object_id").is_none(), "{key}: object_id is deprecated");
    }
    components
}

async fn health(daemon: &Daemon) -> Value {
    daemon.get_json("/api/health").await["homeassistant"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_and_adopted_tags_appear_in_home_assistant_and_go_when_ignored_or_blocked() {
    let daemon = Daemon::start(&["--simulate", "5", "--seed", "1"]);
    let mut ha = ha_client(&daemon, "ha", &["homeassistant/#"]).await;

    // The gateway itself, retained.
    let gateway = expect_on(&mut ha, GATEWAY_CONFIG, &daemon).await;
    assert!(gateway.retain, "configs are retained");
    let config = gateway.json();
    let parts = components(&config);
    assert_eq!(config["device"]["identifiers"], json!(["gatehouse-home"]));
    assert_eq!(parts["devices_online"]["state_topic"], "gatehouse/home/health");
    assert_eq!(config["availability"][0]["topic"], "gatehouse/home/status");

    // Tags heard are only `discovered`: nothing for them until they are adopted.
    let devices = eventually(Duration::from_secs(20), async || {
        let devices = daemon.get_json("/api/devices").await;
        let list = devices.as_array().unwrap();
        (list.len() == 5).then(|| list.clone())
    })
    .await
    .expect("five simulated tags");
    let tag = devices.iter().find(|d| d["kind"] == "ruuvi_tag").unwrap()["id"].as_str().unwrap().to_string();
    let air = devices.iter().find(|d| d["kind"] == "ruuvi_air").unwrap()["id"].as_str().unwrap().to_string();
    let unadopted: Vec<String> =
        devices.iter().map(|d| d["id"].as_str().unwrap().to_string()).filter(|id| *id != tag && *id != air).collect();
    let early = ha.collect(100, Duration::from_millis(500)).await;
    assert!(early.iter().all(|m| !m.topic.contains("ruuvi-")), "no config before adoption: {:?}", early[0].topic);

    let (status, body) =
        daemon.post_json(&format!("/api/devices/{tag}/adopt"), json!({"name": "Kitchen", "room": "Kitchen"})).await;
    assert_eq!(status, 200, "{body}");
    let config = expect_on(&mut ha, &config_topic(&tag), &daemon).await.json();
    let parts = components(&config);
    let mac = body["mac"].as_str().unwrap().to_ascii_lowercase();
    assert_eq!(config["device"]["connections"], json!([["mac", mac]]));
    assert_eq!(config["device"]["name"], "Kitchen");
    assert_eq!(config["device"]["manufacturer"], "Ruuvi Innovations Ltd");
    assert_eq!(config["device"]["model"], "RuuviTag");
    assert_eq!(config["device"]["via_device"], "gatehouse-home");
    assert_eq!(config["device"]["suggested_area"], "Kitchen");
    let topics: Vec<&str> =
        config["availability"].as_array().unwrap().iter().map(|a| a["topic"].as_str().unwrap()).collect();
    assert_eq!(topics, ["gatehouse/home/status".to_string(), format!("devices/home/{tag}/status")]);
    let temperature = &parts["temperature"];
    assert_eq!(temperature["platform"], "sensor");
    assert_eq!(temperature["device_class"], "temperature");
    assert_eq!(temperature["unit_of_measurement"], "°C");
    assert_eq!(temperature["state_class"], "measurement");
    assert_eq!(temperature["state_topic"], format!("devices/home/{tag}/telemetry"));
    assert_eq!(temperature["expire_after"], 60);
    assert_eq!(temperature["default_entity_id"], format!("sensor.{}_temperature", tag.replace('-', "_")));
    assert_eq!(parts["pressure"]["unit_of_measurement"], "hPa");
    assert!(parts["pressure"]["value_template"].as_str().unwrap().contains("/ 100"), "Pa → hPa");
    assert_eq!(parts["voltage"]["device_class"], "voltage");
    assert_eq!(parts["movement_counter"]["state_class"], "total_increasing");
    for diagnostic in ["rssi", "tx_power", "sequence", "movement_counter"] {
        assert_eq!(parts[diagnostic]["entity_category"], "diagnostic", "{diagnostic}");
    }
    // The state topic really carries what the templates read (pressure in Pa).
    let telemetry = format!("devices/home/{tag}/telemetry");
    ha.subscribe_many(&[telemetry.as_str()]).await;
    let reading = expect_on(&mut ha, &telemetry, &daemon).await.json();
    assert!(reading["pressure"].as_f64().unwrap() > 50_000.0, "{reading}");
    assert!(reading["temperature"].is_number());

    let (status, _) = daemon.post_json(&format!("/api/devices/{air}/adopt"), json!({})).await;
    assert_eq!(status, 200);
    let config = expect_on(&mut ha, &config_topic(&air), &daemon).await.json();
    let parts = components(&config);
    assert_eq!(config["device"]["model"], "Ruuvi Air");
    for (key, class, unit) in [
        ("co2", Some("carbon_dioxide"), Some("ppm")),
        ("pm25", Some("pm25"), Some("µg/m³")),
        ("voc_index", None, None),
        ("nox_index", None, None),
        ("illuminance", Some("illuminance"), Some("lx")),
    ] {
        assert_eq!(parts[key]["device_class"].as_str(), class, "{key}");
        assert_eq!(parts[key]["unit_of_measurement"].as_str(), unit, "{key}");
    }
    assert!(!parts.contains_key("movement_counter"), "an Air has no movement counter");

    // Home Assistant restarts: everything is published again (after a short random delay).
    ha.client.publish("homeassistant/status", QoS::AtLeastOnce, false, "online").await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 && tokio::time::Instant::now() < deadline {
        for message in ha.collect(1, Duration::from_millis(200)).await {
            if message.topic.ends_with("/config") && !message.payload.is_empty() {
                seen.insert(message.topic);
            }
        }
    }
    let expected: std::collections::HashSet<String> =
        [GATEWAY_CONFIG.to_string(), config_topic(&tag), config_topic(&air)].into();
    assert_eq!(seen, expected, "re-published after the birth message");
    assert_eq!(health(&daemon).await["birthMessages"], 1);

    // Ignoring and blocking remove them: empty retained configs.
    let (status, _) = daemon.post_json(&format!("/api/devices/{tag}/ignore"), Value::Null).await;
    assert_eq!(status, 200);
    let removal = expect_on(&mut ha, &config_topic(&tag), &daemon).await;
    assert!(removal.payload.is_empty(), "an empty config removes the device");
    let (status, _) = daemon.post_json(&format!("/api/devices/{air}/block"), Value::Null).await;
    assert_eq!(status, 200);
    assert!(expect_on(&mut ha, &config_topic(&air), &daemon).await.payload.is_empty());

    // A new subscriber finds the gateway's config retained, and nothing for the removed tags.
    let mut late = ha_client(&daemon, "ha-late", &["homeassistant/#"]).await;
    let retained = late.collect(100, Duration::from_secs(2)).await;
    let topics: Vec<&str> = retained.iter().map(|m| m.topic.as_str()).collect();
    assert!(topics.contains(&GATEWAY_CONFIG), "{topics:?}");
    for id in [&tag, &air].into_iter().chain(&unadopted) {
        assert!(!topics.contains(&config_topic(id).as_str()), "{id} is not in HA: {topics:?}");
    }
    let counts = health(&daemon).await;
    assert!(counts["configsPublished"].as_u64().unwrap() >= 6, "{counts}");
    assert_eq!(counts["configsRemoved"], 2, "{counts}");
}

/// The reference device as a process; its stdout events arrive on the channel.
async fn claimed_reference_device(
    daemon: &Daemon,
    id: &str,
) -> (tokio::process::Child, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let mut child = tokio::process::Command::new(workspace_bin("gatehouse-device"))
        .args(["--id", id, "--mqtt", &daemon.runtime.mqtt.to_string()])
        .args(["--api", &format!("http://{}", daemon.runtime.http), "--interval", "1h"])
        .arg("--state")
        .arg(daemon.data_dir.join(format!("{id}.json")))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start gatehouse-device");
    let stdout = child.stdout.take().unwrap();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(event) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(event);
            }
        }
    });
    let mut wait_for = async |name: &str| -> Value {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let event = events.recv().await.expect("device exited");
                if event["event"] == name {
                    return event;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{id}: no `{name}` within 30 s"))
    };
    let pending = wait_for("pending").await;
    let (status, body) = daemon.post_json("/api/claims", json!({ "code": pending["claimCode"] })).await;
    assert_eq!(status, 200, "{body}");
    wait_for("connected").await;
    (child, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_device_gets_sensors_and_buttons_that_become_tasks() {
    let daemon = Daemon::start(&[]);
    let mut ha = ha_client(&daemon, "ha", &["homeassistant/#", "gatehouse/home/ha/#"]).await;
    let (_device, _events) = claimed_reference_device(&daemon, "ref-1").await;

    let config = expect_on(&mut ha, &config_topic("ref-1"), &daemon).await.json();
    let parts = components(&config);
    assert_eq!(config["device"]["identifiers"], json!(["gatehouse_ref-1"]));
    assert_eq!(config["device"]["manufacturer"], "Gatehouse");
    assert_eq!(config["device"]["model"], "gatehouse-device");
    assert!(config["device"]["sw_version"].is_string());
    assert_eq!(config["device"]["via_device"], "gatehouse-home");
    // (component, platform, device class, unit)
    for (key, platform, class, unit) in [
        ("temperature", "sensor", Some("temperature"), Some("°C")),
        ("humidity", "sensor", Some("humidity"), Some("%")),
        ("door", "binary_sensor", None, None),
        ("command_reboot", "button", None, None),
        ("command_identify", "button", None, None),
    ] {
        assert_eq!(parts[key]["platform"], platform, "{key}");
        assert_eq!(parts[key]["device_class"].as_str(), class, "{key}");
        assert_eq!(parts[key]["unit_of_measurement"].as_str(), unit, "{key}");
    }
    assert!(!parts.contains_key("command_set_interval"), "a required integer parameter cannot be a button");
    assert_eq!(parts["temperature"]["state_topic"], "devices/home/ref-1/telemetry");
    let press_topic = parts["command_reboot"]["command_topic"].as_str().unwrap().to_string();
    let task_topic = parts["command_reboot"]["json_attributes_topic"].as_str().unwrap().to_string();
    assert_eq!(press_topic, "gatehouse/home/ha/ref-1/reboot/set");

    // A service account (Node-RED, a dashboard) reads but may not press.
    let viewer = daemon.account("viewer", "service", &[]).await;
    let nodered = Client::connect(options_as("nodered", daemon.runtime.mqtt, &viewer)).await;
    nodered.client.publish(press_topic.as_str(), QoS::AtLeastOnce, false, "PRESS").await.unwrap();

    // Home Assistant presses the button: a real task, acknowledged and finished by the device.
    ha.client.publish(press_topic.as_str(), QoS::AtLeastOnce, false, "PRESS").await.unwrap();
    let mut last = Value::Null;
    let task = eventually(Duration::from_secs(20), async || {
        last = daemon.get_json("/api/devices/ref-1/tasks").await;
        let tasks = last.as_array()?;
        tasks.iter().find(|t| t["command"] == "reboot" && t["state"] == "succeeded").cloned()
    })
    .await
    .unwrap_or_else(|| panic!("no succeeded reboot task: {last}\n{}", daemon.log()));
    assert_eq!(task["createdBy"], "homeassistant");
    assert_eq!(daemon.get_json("/api/devices/ref-1/tasks").await.as_array().unwrap().len(), 1, "only HA's press");
    let state = eventually(Duration::from_secs(10), async || {
        let message = ha.next_on(&task_topic, Duration::from_secs(1)).await?;
        (message.json()["state"] == "succeeded").then(|| message.json())
    })
    .await
    .expect("the task's final state on its attributes topic");
    assert_eq!(state["taskId"], task["id"]);

    // Bad input is counted and logged; nothing crashes and no task is made.
    let publish = |topic: &'static str, payload: &'static str| {
        let client = ha.client.clone();
        async move { client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap() }
    };
    publish("gatehouse/home/ha/ref-1/reboot/set", "{\"oops").await;
    publish("gatehouse/home/ha/ref-1/set_interval/set", "PRESS").await;
    publish("gatehouse/home/ha/nobody/reboot/set", "PRESS").await;
    let counts = eventually(Duration::from_secs(10), async || {
        let counts = health(&daemon).await;
        (counts["commandsMalformed"] == 1 && counts["commandsUnknown"] == 2).then_some(counts)
    })
    .await
    .expect("bad commands counted (commandsMalformed 1, commandsUnknown 2)");
    assert_eq!(counts["commandsAccepted"], 1, "{counts}");
    assert_eq!(counts["commandsReceived"], 4, "the service account's press never reached the gateway: {counts}");
    assert!(daemon.log().contains("malformed payload"), "a clear log line");
    assert_eq!(daemon.get_json("/api/devices/ref-1/tasks").await.as_array().unwrap().len(), 1);

    // Deactivation removes the device and its retained task state.
    let (status, body) = daemon.post_json("/api/devices/ref-1/deactivate", Value::Null).await;
    assert_eq!(status, 200, "{body}");
    let mut removed_config = false;
    let mut cleared_task = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(removed_config && cleared_task) && tokio::time::Instant::now() < deadline {
        for message in ha.collect(1, Duration::from_millis(200)).await {
            removed_config |= message.topic == config_topic("ref-1") && message.payload.is_empty();
            cleared_task |= message.topic == task_topic && message.payload.is_empty();
        }
    }
    assert!(removed_config, "empty retained config after deactivation");
    assert!(cleared_task, "retained task state cleared");
    assert_eq!(health(&daemon).await["configsRemoved"], 1);
}
