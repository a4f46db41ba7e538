//! LAN devices in tests: a factory-fresh device on the provisioning identity, its registration,
//! and a claimed device connected with its own credentials, all over real MQTT.

use std::time::Duration;

use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::{json, Value};

use crate::mqtt::{options_as, Client, Message};
use crate::{Credentials, Daemon};

pub async fn provisioning(daemon: &Daemon) -> Credentials {
    let p = daemon.get_json("/api/provisioning").await;
    assert_eq!(p["username"], "provision");
    Credentials { username: "provision".into(), password: p["password"].as_str().unwrap().into() }
}

pub fn registration(device_id: &str) -> Value {
    json!({
        "deviceId": device_id, "name": "Kitchen sensor", "type": "sensor", "model": "ESP32-C3",
        "manufacturer": "Acme", "firmware": "1.0.0", "hardware": "rev B",
        "registrationToken": format!("token-{device_id}-0123456789"),
        "capabilities": {
            "telemetry": [{"name": "temperature", "unit": "°C", "type": "number"}],
            "commands": [{"name": "reboot"}]
        }
    })
}

/// A factory-fresh device: connected with the shared provisioning identity, listening for replies.
pub async fn fresh_device(daemon: &Daemon, device_id: &str) -> Client {
    let provision = provisioning(daemon).await;
    let mut client = Client::connect(options_as(device_id, daemon.runtime.mqtt, &provision)).await;
    let codes = client.subscribe_many(&[&format!("provisioning/home/{device_id}/reply")]).await;
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    client
}

pub async fn send_registration(client: &mut Client, device_id: &str, body: &Value) -> Message {
    client
        .client
        .publish(format!("provisioning/home/{device_id}/register"), QoS::AtLeastOnce, false, body.to_string())
        .await
        .unwrap();
    client.next_on(&format!("provisioning/home/{device_id}/reply"), Duration::from_secs(10)).await.expect("a reply")
}

/// Registers and claims `device_id`; returns the credentials the gateway sent it.
pub async fn claim_device(daemon: &Daemon, device_id: &str) -> Credentials {
    let mut device = fresh_device(daemon, device_id).await;
    let reply = send_registration(&mut device, device_id, &registration(device_id)).await.json();
    let (status, _) = daemon.post_json("/api/claims", json!({ "code": reply["claimCode"] })).await;
    assert_eq!(status, 200);
    let credentials =
        device.next_on(&format!("provisioning/home/{device_id}/reply"), Duration::from_secs(5)).await.unwrap().json();
    device.client.disconnect().await.unwrap();
    Credentials { username: device_id.into(), password: credentials["password"].as_str().unwrap().into() }
}

/// Registers, claims and reconnects `device_id` with its own identity.
pub async fn active_device(daemon: &Daemon, device_id: &str) -> Client {
    let own = claim_device(daemon, device_id).await;
    Client::connect(options_as(device_id, daemon.runtime.mqtt, &own)).await
}
