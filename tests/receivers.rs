//! Remote receivers end to end: official Ruuvi Gateways posting to the HTTP ingest and
//! publishing to our broker, multi-receiver de-duplication with per-receiver RSSI, E1 preferred
//! over DF6, the motion state, and the Ruuvi-compatible MQTT output read by a real MQTT client.

use std::time::Duration;

use gatehouse_tests::mqtt::{options_as, Client};
use gatehouse_tests::{eventually, Credentials, Daemon};
use rumqttc::QoS;
use serde_json::{json, Value};

const TAG: &str = "CB:B8:33:4C:88:4F";
const TAG_ID: &str = "ruuvi-cbb8334c884f";
const KITCHEN_GW: &str = "C8:25:2D:8E:9C:2C";
const GARAGE_GW: &str = "D1:11:22:33:44:55";
const WAIT: Duration = Duration::from_secs(15);

/// Advertising data (flags + manufacturer data) of a RuuviTag, data format 5, the official
/// valid vector with a chosen measurement sequence and movement counter.
fn df5_ad(sequence: u16, movements: u8) -> String {
    format!("0201061BFF99040512FC5394C37C0004FFFC040CAC36{movements:02X}{sequence:04X}CBB8334C884F")
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A "custom server" post exactly as a Ruuvi Gateway sends it.
fn gateway_post(gw: &str, tags: Value) -> Value {
    json!({"data": {"coordinates": "", "timestamp": now_s(), "nonce": 2636366621u32, "gw_mac": gw, "tags": tags}})
}

async fn post_ingest(daemon: &Daemon, auth: Option<(&str, &str)>, body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/ruuvi", daemon.runtime.ingest))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some((user, secret)) = auth {
        request = request.basic_auth(user, Some(secret));
    }
    let response = request.send().await.expect("POST /ruuvi");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn basic(c: &Credentials) -> Option<(&str, &str)> {
    Some((c.username.as_str(), c.password.as_str()))
}

fn stored_rows(daemon: &Daemon, id: &str, sequence: u16) -> i64 {
    let db = rusqlite::Connection::open(daemon.database()).unwrap();
    db.query_row(
        "SELECT COUNT(*) FROM readings r JOIN devices d ON d.pk = r.device_pk WHERE d.id = ?1 AND r.sequence = ?2",
        rusqlite::params![id, sequence],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn ruuvi_gateways_feed_us_over_http_and_mqtt_and_each_measurement_is_stored_once() {
    let daemon = Daemon::start(&[]);
    let kitchen = daemon.account("kitchen-gw", "receiver", &[]).await;
    let garage = daemon.account("garage-gw", "receiver", &[]).await;
    let ha = daemon.account("ha", "service", &[]).await;

    // Refusals: no credentials, wrong secret, a non-receiver account, not the gateway's format.
    let good = gateway_post(KITCHEN_GW, json!({TAG: {"rssi": -71, "timestamp": now_s() - 2, "data": df5_ad(500, 1)}}));
    assert_eq!(post_ingest(&daemon, None, &good.to_string()).await.0, 401);
    assert_eq!(post_ingest(&daemon, Some(("kitchen-gw", "wrong")), &good.to_string()).await.0, 401);
    let (status, body) = post_ingest(&daemon, basic(&ha), &good.to_string()).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = post_ingest(&daemon, basic(&kitchen), "{\"tags\": 1}").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("data"), "the error says what is wrong: {body}");
    assert_eq!(daemon.device_or_null(TAG_ID).await, Value::Null, "nothing was accepted yet");

    // A real post, with one good tag and one broken entry that must not sink it.
    let ts = now_s() - 2;
    let post = gateway_post(
        KITCHEN_GW,
        json!({
            TAG: {"rssi": -71, "timestamp": ts, "ble_phy": "1M", "ble_chan": 37, "data": df5_ad(500, 1)},
            "E3:75:CF:37:4E:23": {"rssi": -80, "timestamp": ts, "data": "zz"},
        }),
    );
    let (status, body) = post_ingest(&daemon, basic(&kitchen), &post.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(body["rejected"][0]["tag"], "E3:75:CF:37:4E:23", "{body}");
    let tag = daemon.wait_for_sequence(TAG_ID, 500, WAIT).await;
    assert_eq!(tag["lastReceiver"], format!("ruuvi:{KITCHEN_GW}"));
    assert_eq!(tag["lastRssi"], -71);
    assert_eq!(tag["lastReading"]["ts"], ts * 1000, "the gateway's reception time is kept");
    assert_eq!(tag["lastReading"]["temperature"], 24.3);
    assert_eq!(tag["lastReading"]["pressure"], 100044.0);

    // The same measurement from a second gateway over MQTT (string timestamps, as the docs show).
    let garage_mqtt = Client::connect(options_as("garage-gw", daemon.runtime.mqtt, &garage)).await;
    let advert = json!({"gw_mac": GARAGE_GW, "rssi": -58, "aoa": [], "gwts": ts.to_string(), "ts": ts.to_string(),
                        "data": df5_ad(500, 1), "coords": ""});
    let topic = format!("ruuvi/{GARAGE_GW}/{TAG}");
    garage_mqtt.client.publish(&topic, QoS::AtLeastOnce, false, advert.to_string()).await.unwrap();
    garage_mqtt
        .client
        .publish(format!("ruuvi/{GARAGE_GW}/gw_status"), QoS::AtLeastOnce, true, r#"{"state":"online"}"#)
        .await
        .unwrap();
    let heard = eventually(Duration::from_secs(10), async || {
        let heard = daemon.get_json(&format!("/api/devices/{TAG_ID}/receivers")).await;
        (heard["receivers"].as_array()?.len() == 2).then_some(heard)
    })
    .await
    .expect("both receivers are listed for the tag");
    let receivers = heard["receivers"].as_array().unwrap();
    assert_eq!(receivers[0]["receiver"], format!("ruuvi:{GARAGE_GW}"), "the stronger receiver first: {heard}");
    assert_eq!(receivers[0]["rssi"], -58);
    assert_eq!(receivers[1]["receiver"], format!("ruuvi:{KITCHEN_GW}"));
    assert_eq!(receivers[1]["rssi"], -71);

    // A new measurement, then the store: sequence 500 once, though two receivers heard it.
    garage_mqtt
        .client
        .publish(&topic, QoS::AtLeastOnce, false, json!({"gw_mac": GARAGE_GW, "rssi": -57, "aoa": [], "gwts": now_s(), "ts": now_s(), "data": df5_ad(501, 1), "coords": ""}).to_string())
        .await
        .unwrap();
    daemon.wait_for_sequence(TAG_ID, 501, WAIT).await;
    let rows = eventually(Duration::from_secs(10), async || {
        let rows = (stored_rows(&daemon, TAG_ID, 500), stored_rows(&daemon, TAG_ID, 501));
        (rows == (1, 1)).then_some(rows)
    })
    .await;
    assert_eq!(rows, Some((1, 1)), "each measurement stored exactly once");
    let health = daemon.get_json("/api/health").await;
    assert_eq!(health["pipeline"]["duplicates"], 1, "{}", health["pipeline"]);
    let ingest = &health["receivers"];
    assert_eq!(ingest["httpUnauthorized"], 3, "{ingest}");
    assert_eq!(ingest["httpRejected"], 1, "{ingest}");
    assert_eq!(ingest["entriesRejected"], 1, "{ingest}");
    assert_eq!(ingest["mqttMessages"], 3, "{ingest}");

    let all = daemon.get_json("/api/receivers").await;
    let garage_summary = all["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["receiver"] == format!("ruuvi:{GARAGE_GW}"))
        .cloned()
        .expect("garage gateway listed");
    assert_eq!(garage_summary["account"], "garage-gw");
    assert_eq!(garage_summary["transport"], "mqtt");
    assert_eq!(garage_summary["online"], true);
    assert_eq!(garage_summary["kind"], "ruuvi_gateway");

    // Bearer NAME:SECRET works as well as Basic.
    let post = gateway_post(KITCHEN_GW, json!({TAG: {"rssi": -70, "timestamp": now_s(), "data": df5_ad(502, 1)}}));
    let response = reqwest::Client::new()
        .post(format!("http://{}/ruuvi", daemon.runtime.ingest))
        .bearer_auth(format!("{}:{}", kitchen.username, kitchen.password))
        .body(post.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    daemon.wait_for_sequence(TAG_ID, 502, WAIT).await;
}

#[tokio::test]
async fn receiver_accounts_reach_only_the_ruuvi_topics_and_bad_messages_are_counted() {
    let daemon = Daemon::start(&[]);
    let gw = daemon.account("attic-gw", "receiver", &[]).await;
    // A receiver may not use another name that could be a device's id (no session takeover).
    assert!(Client::try_connect(options_as("sensor-7", daemon.runtime.mqtt, &gw)).await.is_err());
    let mut client = Client::connect(options_as("attic-gw", daemon.runtime.mqtt, &gw)).await;
    let codes = client.subscribe_many(&["ruuvi/#", "devices/home/+/telemetry"]).await;
    assert!(codes.iter().all(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)), "{codes:?}");

    let topic = format!("ruuvi/{KITCHEN_GW}/{TAG}");
    // Decoded-only payloads carry no raw bytes to de-duplicate on; garbage is garbage.
    let decoded_only =
        json!({"gw_mac": KITCHEN_GW, "rssi": -60, "aoa": [], "ts": now_s(), "dataFormat": 5, "temperature": 20.0});
    client.client.publish(&topic, QoS::AtLeastOnce, false, decoded_only.to_string()).await.unwrap();
    client.client.publish(&topic, QoS::AtLeastOnce, false, "not json").await.unwrap();
    let corrupt = json!({"gw_mac": KITCHEN_GW, "rssi": -60, "aoa": [], "ts": now_s(), "data": "0201061BFF99040512FC", "coords": ""});
    client.client.publish(&topic, QoS::AtLeastOnce, false, corrupt.to_string()).await.unwrap();
    let good = json!({"gw_mac": KITCHEN_GW, "rssi": -60, "aoa": [], "ts": now_s(), "data": df5_ad(7, 0), "coords": ""});
    client.client.publish(&topic, QoS::AtLeastOnce, false, good.to_string()).await.unwrap();
    daemon.wait_for_sequence(TAG_ID, 7, WAIT).await;
    let health = daemon.get_json("/api/health").await;
    assert_eq!(health["receivers"]["mqttRejected"], 2, "{}", health["receivers"]);
    assert_eq!(health["pipeline"]["rejectedMalformed"], 1, "a truncated advertisement is counted by the pipeline");
    assert!(daemon.log().contains("set the gateway's MQTT format"), "the refusal says what to change");
}

#[tokio::test]
async fn a_ruuvi_air_heard_in_e1_drops_its_df6_twin_and_tags_report_motion() {
    let daemon = Daemon::start(&[]);
    let gw = daemon.account("kitchen-gw", "receiver", &[]).await;
    let air = "CB:B8:33:4C:88:4F";
    let e1 = "2BFF9904E1170C5668C79E0065007004BD11CA00C90A0213E0ACFFFFFFDECDEE01FFFFFFFFFFCBB8334C884F";
    let df6 = "17FF990406170C5668C79E007000C90501D9FFCD004C884F";
    let post = gateway_post(KITCHEN_GW, json!({air: {"rssi": -60, "timestamp": now_s(), "data": e1}}));
    assert_eq!(post_ingest(&daemon, basic(&gw), &post.to_string()).await.0, 200);
    let reading = daemon.wait_for_sequence(TAG_ID, 14_601_710, WAIT).await;
    assert_eq!(reading["lastReading"]["dataFormat"], 225);
    let post = gateway_post(KITCHEN_GW, json!({air: {"rssi": -60, "timestamp": now_s(), "data": df6}}));
    assert_eq!(post_ingest(&daemon, basic(&gw), &post.to_string()).await.0, 200);
    let superseded = eventually(Duration::from_secs(10), async || {
        let health = daemon.get_json("/api/health").await;
        (health["pipeline"]["supersededDf6"] == 1).then_some(())
    })
    .await;
    assert!(superseded.is_some(), "DF6 from a device heard in E1 is dropped and counted");
    assert_eq!(daemon.device_or_null(TAG_ID).await["lastReading"]["dataFormat"], 225);
    assert_eq!(
        daemon.device_or_null(TAG_ID).await["lastReading"].get("motion"),
        None,
        "a Ruuvi Air has no motion sensor"
    );

    // A RuuviTag: still, then its movement counter advances.
    let tag = "E3:75:CF:37:4E:23";
    let tag_ad = |sequence: u16, movements: u8| df5_ad(sequence, movements).replace("CBB8334C884F", "E375CF374E23");
    for (sequence, movements, expected) in [(10, 5, "stationary"), (11, 5, "stationary"), (12, 6, "moving")] {
        let post = gateway_post(
            KITCHEN_GW,
            json!({tag: {"rssi": -60, "timestamp": now_s(), "data": tag_ad(sequence, movements)}}),
        );
        assert_eq!(post_ingest(&daemon, basic(&gw), &post.to_string()).await.0, 200);
        let reading = daemon.wait_for_sequence("ruuvi-e375cf374e23", u64::from(sequence), WAIT).await;
        assert_eq!(reading["lastReading"]["motion"], expected, "sequence {sequence}");
    }
}

#[tokio::test]
async fn readings_are_republished_in_the_ruuvi_gateway_format_for_existing_consumers() {
    let config =
        "[ruuvi_output]\nenabled = true\nmode = \"ruuvi_raw_and_decoded\"\ngateway_id = \"aa:bb:cc:00:11:22\"\n";
    let daemon = Daemon::start_with_config(config, &[]);
    let bridge = daemon.account("ruuvibridge", "service", &[("ruuvi/#", "read")]).await;
    let gw = daemon.account("kitchen-gw", "receiver", &[]).await;
    let mut consumer = Client::connect(options_as("ruuvibridge", daemon.runtime.mqtt, &bridge)).await;
    consumer.subscribe_many(&["ruuvi/+/+"]).await;
    let status =
        consumer.next_on("ruuvi/AA:BB:CC:00:11:22/gw_status", Duration::from_secs(10)).await.expect("gw_status");
    assert!(status.retain, "gw_status is retained");
    assert_eq!(status.json(), json!({"state": "online"}));

    let ts = now_s() - 1;
    let data = df5_ad(900, 3);
    let post = gateway_post(KITCHEN_GW, json!({TAG: {"rssi": -66, "timestamp": ts, "data": data}}));
    assert_eq!(post_ingest(&daemon, basic(&gw), &post.to_string()).await.0, 200);
    let message = consumer
        .next_on(&format!("ruuvi/AA:BB:CC:00:11:22/{TAG}"), Duration::from_secs(10))
        .await
        .expect("tag message");
    assert!(!message.retain, "data messages are not retained");
    let text = message.text();
    assert!(text.starts_with(r#"{"gw_mac":"AA:BB:CC:00:11:22","rssi":-66,"aoa":[],"gwts":"#), "field order: {text}");
    let payload = message.json();
    assert_eq!(payload["ts"], ts);
    assert_eq!(payload["data"], data, "the raw advertisement, as received");
    assert_eq!(payload["dataFormat"], 5);
    assert_eq!(payload["temperature"], 24.3);
    assert_eq!(payload["measurementSequenceNumber"], 900);
    assert_eq!(payload["id"], TAG);
    assert_eq!(payload["coords"], "");
    // Messages the gateway itself publishes on ruuvi/… are not taken back in as receiver input.
    assert_eq!(daemon.get_json("/api/health").await["receivers"]["mqttMessages"], 0);

    // A receiver cannot pose as the gateway's output: its raw messages reach other clients only
    // under gatehouse/{site}/receivers/….
    let spoofer = Client::connect(options_as("AA:00:00:00:00:01", daemon.runtime.mqtt, &gw)).await;
    let spoof = "ruuvi/AA:BB:CC:00:11:22/gw_status".to_string();
    spoofer.client.publish(&spoof, QoS::AtLeastOnce, true, r#"{"state":"offline"}"#).await.unwrap();
    let mut watcher = Client::connect(options_as("watcher", daemon.runtime.mqtt, &bridge)).await;
    let bridge_all = daemon.account("diagnostics", "service", &[]).await;
    let mut diagnostics = Client::connect(options_as("diagnostics", daemon.runtime.mqtt, &bridge_all)).await;
    diagnostics.subscribe_many(&["gatehouse/home/receivers/#"]).await;
    watcher.subscribe_many(&["ruuvi/+/+"]).await;
    let retained = watcher.next_on(&spoof, Duration::from_secs(5)).await.expect("the retained gw_status");
    assert_eq!(retained.json(), json!({"state": "online"}), "the gateway's own status was not overwritten");
    let diverted = diagnostics
        .next_on(&format!("gatehouse/home/receivers/{spoof}"), Duration::from_secs(5))
        .await
        .expect("the receiver's message, in its own namespace");
    assert_eq!(diverted.text(), r#"{"state":"offline"}"#);
}
