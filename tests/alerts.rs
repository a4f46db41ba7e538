//! Gateway alert rules against the real daemon: a claimed LAN device sends telemetry over MQTT;
//! rules raise alerts only after their duration, hold them inside the hysteresis band, clear them
//! past it, watch for silence; alerts are published on `gatehouse/{site}/alerts`, streamed live
//! and acknowledged through the API.

use std::time::Duration;

use gatehouse_tests::device::{active_device, claim_device};
use gatehouse_tests::mqtt::{options_as, Client};
use gatehouse_tests::Daemon;
use rumqttc::QoS;
use serde_json::{json, Value};

async fn temperature(device: &Client, id: &str, value: f64) {
    let payload = json!({ "temperature": value }).to_string();
    device.client.publish(format!("devices/home/{id}/telemetry"), QoS::AtLeastOnce, false, payload).await.unwrap();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The next alert published for `device`.
async fn next_alert(watcher: &mut Client, device: &str, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = watcher.next_on("gatehouse/home/alerts", left).await?;
        let alert = message.json();
        if alert["deviceId"] == device {
            return Some(alert);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_rules_wait_for_their_duration_and_clear_past_the_hysteresis_band() {
    use futures_util::StreamExt;
    let daemon = Daemon::start(&[]);
    let viewer = daemon.account("viewer", "service", &[]).await;
    let mut watcher = Client::connect(options_as("watcher", daemon.runtime.mqtt, &viewer)).await;
    watcher.subscribe_many(&["gatehouse/home/alerts"]).await;
    let (mut live, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/live", daemon.runtime.http)).await.expect("live socket");

    let rule = json!({
        "name": "Kitchen too warm", "devices": "esp-*", "field": "temperature",
        "condition": "above", "threshold": 30, "clearAt": 29, "for": "1s", "severity": "critical"
    });
    let (status, created) = daemon.post_json("/api/alert-rules", rule.clone()).await;
    assert_eq!(status, 201, "{created}");
    let (status, again) = daemon.post_json("/api/alert-rules", rule).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("rule_exists")));
    let bad = json!({ "name": "bad", "field": "temperature", "condition": "above", "threshold": 30, "clearAt": 31 });
    let (status, refused) = daemon.post_json("/api/alert-rules", bad).await;
    assert_eq!(status, 400);
    assert!(refused["error"]["message"].as_str().unwrap().contains("clearAt"), "{refused}");
    let rules = daemon.get_json("/api/alert-rules").await;
    let names: Vec<&str> = rules.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"Ruuvi battery low") && names.contains(&"Ruuvi tag silent"), "defaults: {names:?}");

    let device = active_device(&daemon, "esp-kitchen").await;
    let breach_started = now_ms();
    temperature(&device, "esp-kitchen", 31.0).await;
    let raised = next_alert(&mut watcher, "esp-kitchen", Duration::from_secs(10)).await.expect("an alert");
    assert_eq!(raised["state"], "active");
    assert_eq!(raised["severity"], "critical");
    assert_eq!(raised["ruleId"], created["id"]);
    assert_eq!(raised["source"], "rule:Kitchen too warm");
    assert!(raised["message"].as_str().unwrap().contains("temperature 31 above 30 for 1s"), "{raised}");
    assert!(raised["ts"].as_i64().unwrap() >= breach_started + 1_000, "raised only after the condition held 1 s");

    // 29.5 is inside the band: still active. 28.5 is past it: cleared.
    temperature(&device, "esp-kitchen", 29.5).await;
    temperature(&device, "esp-kitchen", 30.5).await;
    assert!(next_alert(&mut watcher, "esp-kitchen", Duration::from_millis(1500)).await.is_none(), "no flapping");
    temperature(&device, "esp-kitchen", 28.5).await;
    let cleared = next_alert(&mut watcher, "esp-kitchen", Duration::from_secs(5)).await.expect("cleared");
    assert_eq!((cleared["id"].clone(), cleared["state"].as_str()), (raised["id"].clone(), Some("cleared")));
    assert!(cleared["clearedAt"].as_i64().is_some());

    // Acknowledged by a person; the change is published too.
    let id = raised["id"].as_i64().unwrap();
    let (status, acked) = daemon.post_json(&format!("/api/alerts/{id}/ack"), json!({})).await;
    assert_eq!(status, 200, "{acked}");
    assert!(acked["acknowledgedBy"].as_str().unwrap().starts_with("api@"), "{acked}");
    let published = next_alert(&mut watcher, "esp-kitchen", Duration::from_secs(5)).await.unwrap();
    assert!(published["acknowledgedAt"].is_i64());
    let (status, _) = daemon.post_json("/api/alerts/999999/ack", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(daemon.get_json("/api/alerts?device=esp-kitchen&unacknowledged=true").await, json!([]));

    // A rule's active alerts clear when the rule is deleted.
    temperature(&device, "esp-kitchen", 35.0).await;
    let second = next_alert(&mut watcher, "esp-kitchen", Duration::from_secs(10)).await.expect("raised again");
    assert_eq!(second["state"], "active");
    let active = daemon.get_json("/api/alerts?state=active").await;
    assert_eq!(active.as_array().unwrap().len(), 1, "{active:#}");
    let response = reqwest::Client::new()
        .delete(daemon.http(&format!("/api/alert-rules/{}", created["id"])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let gone = next_alert(&mut watcher, "esp-kitchen", Duration::from_secs(5)).await.expect("cleared with its rule");
    assert_eq!((gone["id"].clone(), gone["state"].as_str()), (second["id"].clone(), Some("cleared")));

    // Streamed to the UI as it happened.
    let mut states = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(message)) = live.next().await {
            let event: Value = serde_json::from_str(message.to_text().unwrap_or("{}")).unwrap_or_default();
            if event["type"] == "alert" && event["data"]["id"] == raised["id"] {
                states.push(event["data"]["state"].as_str().unwrap().to_string());
            }
        }
    })
    .await;
    assert_eq!(&states[..2], ["active", "cleared"], "{states:?}");
    let health = daemon.get_json("/api/health").await;
    assert_eq!(health["alerts"]["raised"], 2);
    assert_eq!(health["alerts"]["cleared"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_raises_an_alert_that_its_next_message_clears() {
    let mut daemon = Daemon::start(&[]);
    let viewer = daemon.account("viewer", "service", &[]).await;
    let credentials = claim_device(&daemon, "esp-porch").await;
    let device = Client::connect(options_as("esp-porch", daemon.runtime.mqtt, &credentials)).await;
    temperature(&device, "esp-porch", 12.0).await;
    let rule = json!({ "name": "Porch silent", "devices": "esp-porch", "condition": "silent", "for": "2s" });
    let (status, created) = daemon.post_json("/api/alert-rules", rule).await;
    assert_eq!(status, 201, "{created}");

    let mut watcher = Client::connect(options_as("watcher", daemon.runtime.mqtt, &viewer)).await;
    watcher.subscribe_many(&["gatehouse/home/alerts"]).await;
    let raised = next_alert(&mut watcher, "esp-porch", Duration::from_secs(10)).await.expect("silence noticed");
    assert_eq!(raised["state"], "active");
    assert!(raised["message"].as_str().unwrap().contains("no reading for 2s"), "{raised}");

    // An active alert survives a restart without being raised twice.
    drop(watcher);
    drop(device);
    daemon.restart();
    let mut watcher = Client::connect(options_as("watcher", daemon.runtime.mqtt, &viewer)).await;
    watcher.subscribe_many(&["gatehouse/home/alerts"]).await;
    assert!(next_alert(&mut watcher, "esp-porch", Duration::from_secs(3)).await.is_none(), "not raised again");
    let device = Client::connect(options_as("esp-porch", daemon.runtime.mqtt, &credentials)).await;
    temperature(&device, "esp-porch", 12.5).await;
    let cleared = next_alert(&mut watcher, "esp-porch", Duration::from_secs(5)).await.expect("cleared");
    assert_eq!((cleared["id"].clone(), cleared["state"].as_str()), (raised["id"].clone(), Some("cleared")));
}
