//! The walking skeleton end to end: the real `gatehouse` process with simulated tags, a real MQTT
//! client on the broker, the HTTP API, the SQLite file, restart and graceful shutdown.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use gatehouse_tests::mqtt::{options_as, Client};
use gatehouse_tests::{eventually, Daemon};
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_tags_flow_through_broker_store_and_api_and_survive_restart() {
    let mut daemon = Daemon::start(&["--simulate", "5", "--seed", "1"]);
    let viewer = daemon.account("viewer", "service", &[]).await;

    // A real MQTT client receives decoded readings from all five tags.
    let mut sub = Client::connect(options_as("test-subscriber", daemon.runtime.mqtt, &viewer)).await;
    sub.client.subscribe("devices/home/+/telemetry", QoS::AtLeastOnce).await.unwrap();
    let mut per_device: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while per_device.len() < 5 || per_device.values().any(|r| r.len() < 3) {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, sub.messages.recv()).await else {
            panic!("telemetry from only {} devices: {:?}", per_device.len(), per_device.keys());
        };
        let reading = message.json();
        let device_id = message.topic.split('/').nth(2).unwrap().to_string();
        assert_eq!(reading["deviceId"], device_id.as_str(), "topic and payload agree");
        assert!(device_id.starts_with("ruuvi-"), "{device_id}");
        per_device.entry(device_id).or_default().push(reading);
    }
    assert_eq!(per_device.len(), 5);
    for (device, readings) in &per_device {
        for r in readings {
            assert!(matches!(r["dataFormat"].as_u64(), Some(5) | Some(225)), "{device}: {r}");
            let t = r["temperature"].as_f64().expect("temperature");
            assert!((-30.0..50.0).contains(&t), "{device}: temperature {t}");
            assert!(r["pressure"].as_f64().unwrap() > 90_000.0, "pressure in Pa");
            assert!(r["dewPoint"].is_number(), "derived values are published");
            assert!(r["ts"].as_i64().unwrap() > 1_600_000_000_000, "ts in ms");
            assert_eq!(r["receiver"], "simulator");
        }
    }
    // Ruuvi Air tags publish air quality; with 5 tags, one is an Air (every fifth).
    let airs: Vec<_> = per_device.values().filter(|r| r[0]["dataFormat"] == 225).collect();
    assert_eq!(airs.len(), 1, "one Ruuvi Air among five simulated tags");
    assert!(airs[0][0]["CO2"].is_number() && airs[0][0]["iaqs"].is_number());

    // Availability is retained: a client connecting later still sees every tag online.
    let mut late = Client::connect(options_as("late-subscriber", daemon.runtime.mqtt, &viewer)).await;
    late.client.subscribe("devices/home/+/status", QoS::AtLeastOnce).await.unwrap();
    let statuses = late.collect(5, Duration::from_secs(10)).await;
    assert_eq!(statuses.len(), 5, "retained status of every device");
    assert!(statuses.iter().all(|m| m.retain && m.text() == "online"), "{statuses:?}");

    // The HTTP API lists the five devices and returns bucketed history.
    let devices = daemon.get_json("/api/devices").await;
    let listed: HashSet<String> =
        devices.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(listed, per_device.keys().cloned().collect::<HashSet<_>>());
    assert!(devices.as_array().unwrap().iter().all(|d| d["online"] == true && d["lastReading"].is_object()));

    let device_id = per_device.keys().next().unwrap().clone();
    // Readings are committed in batches (by default every 250 ms): wait for the store to catch up.
    let history = eventually(Duration::from_secs(10), async || {
        let h = daemon.get_json(&format!("/api/devices/{device_id}/readings?from=-10m&bucket=1s")).await;
        (h["ts"].as_array().unwrap().len() >= 3).then_some(h)
    })
    .await
    .expect("history has at least three buckets");
    let buckets = history["ts"].as_array().unwrap().len();
    assert_eq!(history["bucketMs"], 1000);
    let temps = &history["series"]["temperature"];
    for i in 0..buckets {
        let (min, avg, max) =
            (temps["min"][i].as_f64().unwrap(), temps["avg"][i].as_f64().unwrap(), temps["max"][i].as_f64().unwrap());
        assert!(min <= avg && avg <= max, "bucket {i}: {min} {avg} {max}");
    }
    let total_before: i64 = history["count"].as_array().unwrap().iter().map(|c| c.as_i64().unwrap()).sum();

    // After a restart the history is still there.
    daemon.restart();
    let history = daemon.get_json(&format!("/api/devices/{device_id}/readings?from=-10m&bucket=1h")).await;
    let total_after: i64 = history["count"].as_array().unwrap().iter().map(|c| c.as_i64().unwrap()).sum();
    assert!(total_after >= total_before, "history survived the restart: {total_before} then {total_after}");
    let devices = daemon.get_json("/api/devices").await;
    assert_eq!(devices.as_array().unwrap().len(), 5, "devices survived the restart");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_advertisements_are_stored_once_and_every_published_reading_is_stored() {
    let mut daemon = Daemon::start(&["--simulate", "5", "--seed", "7"]);
    let viewer = daemon.account("viewer", "service", &[]).await;
    let mut sub = Client::connect(options_as("dedup-subscriber", daemon.runtime.mqtt, &viewer)).await;
    sub.client.subscribe("devices/home/+/telemetry", QoS::AtLeastOnce).await.unwrap();

    // Wait until the simulator has produced duplicates (it receives ~25 % of adverts 2–3 times).
    let health = eventually(Duration::from_secs(30), async || {
        let h = daemon.get_json("/api/health").await;
        (h["pipeline"]["duplicates"].as_u64().unwrap() >= 10).then_some(h)
    })
    .await
    .expect("the simulator produced duplicate advertisements");
    assert!(health["pipeline"]["readings"].as_u64().unwrap() > 0);

    // Graceful shutdown commits everything that was published.
    daemon.stop();
    let published = sub.collect(usize::MAX, Duration::from_millis(200)).await;
    assert!(published.len() > 10, "telemetry was published");
    let mut published_keys = HashSet::new();
    for message in &published {
        let r = message.json();
        let key = (
            r["deviceId"].as_str().unwrap().to_string(),
            r["dataFormat"].as_i64().unwrap(),
            r["measurementSequenceNumber"].as_i64().unwrap(),
        );
        assert!(published_keys.insert(key.clone()), "published twice: {key:?}");
    }

    let db = rusqlite::Connection::open(daemon.database()).unwrap();
    let duplicates: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM (SELECT device_pk, sequence FROM readings GROUP BY device_pk, sequence HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(duplicates, 0, "no measurement stored twice");
    let mut stmt = db
        .prepare("SELECT d.id, CAST(r.sequence AS INTEGER) FROM readings r JOIN devices d ON d.pk = r.device_pk")
        .unwrap();
    let stored: HashSet<(String, i64)> =
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
    for (device, _, seq) in &published_keys {
        assert!(stored.contains(&(device.clone(), *seq)), "published reading {device}/{seq} is stored");
    }
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    assert!(!daemon.data_dir.join("gatehouse.runtime.json").exists(), "runtime file removed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_websocket_streams_readings_and_refuses_foreign_origins() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let daemon = Daemon::start(&["--simulate", "2", "--seed", "3"]);
    let url = format!("ws://{}/api/live", daemon.runtime.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("WebSocket connects");
    let reading = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(message)) = ws.next().await {
            let json: serde_json::Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
            if json["type"] == "reading" {
                return json;
            }
        }
        panic!("stream ended");
    })
    .await
    .expect("a reading within 20 s");
    assert!(reading["data"]["deviceId"].as_str().unwrap().starts_with("ruuvi-"));

    let mut request = url.clone().into_client_request().unwrap();
    request.headers_mut().insert("Origin", "http://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("a foreign origin must be refused, got {:?}", other.map(|(_, r)| r.status())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_json_with_an_actionable_message() {
    let daemon = Daemon::start(&[]);
    let cases = [
        ("/api/devices/nope", 404, "device_not_found"),
        ("/api/nothing-here", 404, "not_found"),
        ("/api/devices?online=maybe", 400, "invalid_filter"),
    ];
    for (path, status, code) in cases {
        let response = reqwest::get(daemon.http(path)).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 10, "{path}: {body}");
    }
    let health = daemon.get_json("/api/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["bluetooth"]["state"], "disabled");
}

#[test]
fn bad_configuration_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(&config, "[store]\nretention = \"forever\"\n").unwrap();
    let output = std::process::Command::new(gatehouse_tests::gatehouse_bin())
        .args(["run", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("store.retention"), "{stderr}");

    let output = std::process::Command::new(gatehouse_tests::gatehouse_bin())
        .args(["run", "--data-dir"])
        .arg(dir.path())
        .env("GATEHOUSE_MQTT_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("mqtt.listen"));
}
