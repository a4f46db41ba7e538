//! The upstream bridge against a real Mosquitto (Debian's package, loopback): telemetry, status
//! and alerts arrive upstream under the gateway's prefix; a task requested upstream runs on the
//! reference device and its states come back; with the upstream stopped, messages are buffered
//! durably and flushed in order when it returns; the buffer's bound drops the oldest and counts
//! them; "test connection" names the stage that failed; two gateways share one broker and a
//! consumer removes the readings both heard by the measurement sequence (docs/upstream.md).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use gatehouse_tests::device::{active_device, claim_device};
use gatehouse_tests::mosquitto::Mosquitto;
use gatehouse_tests::mqtt::{options, options_as, Client, Message};
use gatehouse_tests::reference::Device;
use gatehouse_tests::{eventually, Credentials, Daemon};
use rumqttc::{MqttOptions, QoS};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
const ACL: &str = "user gw1\ntopic readwrite fleet/gw1/#\n\nuser gw2\ntopic readwrite fleet/gw2/#\n\n\
                   user operator\ntopic readwrite fleet/#\n\nuser limited\ntopic read fleet/limited/#\n";
const USERS: &[(&str, &str)] =
    &[("gw1", "gw1-secret"), ("gw2", "gw2-secret"), ("operator", "operator-secret"), ("limited", "limited-secret")];

fn upstream_toml(name: &str, url: &str, user: &str, password: &str, extra: &str) -> String {
    let prefix = if extra.contains("prefix") { "" } else { "prefix = \"fleet/{gateway_id}\"\n" };
    format!(
        "[[upstream]]\nname = \"{name}\"\nurl = \"{url}\"\nusername = \"{user}\"\npassword = \"{password}\"\n\
         {prefix}reconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n{extra}\n"
    )
}

/// The fleet operator's client on the upstream broker: a persistent session, so messages sent
/// while it is away (its broker restarting) wait for it.
async fn operator(broker: &Mosquitto, client_id: &str, filters: &[&str]) -> Client {
    let mut options: MqttOptions = options(client_id, broker.addr);
    options.set_credentials("operator", "operator-secret");
    options.set_clean_session(false);
    let mut client = Client::connect(options).await;
    if !filters.is_empty() {
        let codes = client.subscribe_many(filters).await;
        assert!(codes.iter().all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))), "{codes:?}");
    }
    client
}

async fn upstream_report(daemon: &Daemon, name: &str) -> Value {
    let all = daemon.get_json("/api/upstreams").await;
    all["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == name).cloned().unwrap_or(Value::Null)
}

async fn wait_for_state(daemon: &Daemon, name: &str, state: &str) -> Value {
    let mut last = Value::Null;
    eventually(WAIT, async || {
        last = upstream_report(daemon, name).await;
        (last["status"]["state"] == state).then(|| last.clone())
    })
    .await
    .unwrap_or_else(|| panic!("upstream {name} never {state}; last: {last:#}"))
}

/// Messages until `done` says enough, or `within` passes.
async fn collect_until(
    client: &mut Client,
    within: Duration,
    mut done: impl FnMut(&[Message]) -> bool,
) -> Vec<Message> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, client.messages.recv()).await {
            Ok(Some(message)) => seen.push(message),
            _ => break,
        }
    }
    seen
}

async fn publish_telemetry(device: &Client, id: &str, range: std::ops::RangeInclusive<u32>) {
    for n in range {
        device
            .client
            .publish(
                format!("devices/home/{id}/telemetry"),
                QoS::AtLeastOnce,
                false,
                json!({"temperature": n}).to_string(),
            )
            .await
            .unwrap();
    }
}

/// The `temperature` counters in arrival order.
fn counters(messages: &[Message]) -> Vec<u32> {
    messages
        .iter()
        .filter(|m| m.topic.ends_with("/telemetry"))
        .map(|m| m.json()["temperature"].as_u64().unwrap() as u32)
        .collect()
}

/// First occurrences in order, and how many arrived twice (QoS 1 redelivery after a lost ack).
fn first_occurrences(values: &[u32]) -> (Vec<u32>, usize) {
    let mut seen = HashSet::new();
    let firsts: Vec<u32> = values.iter().copied().filter(|v| seen.insert(*v)).collect();
    (firsts.clone(), values.len() - firsts.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_telemetry_status_and_alerts_and_runs_tasks_requested_upstream() {
    let broker = Mosquitto::start(USERS, ACL, false);
    let mut watch = operator(&broker, "watch-1", &["fleet/#"]).await;
    let config = format!("gateway_id = \"gw1\"\n{}", upstream_toml("fleet", &broker.url(), "gw1", "gw1-secret", ""));
    let daemon = Daemon::start_with_config(&config, &[]);
    wait_for_state(&daemon, "fleet", "connected").await;

    // The gateway's retained status goes up retained, and the bridge announces itself.
    let status = watch.next_on("fleet/gw1/gatehouse/home/status", WAIT).await.expect("gateway status upstream");
    assert_eq!((status.text().as_str(), status.retain), ("online", false), "live copy, retained at the broker");
    let mut late = operator(&broker, "late-1", &["fleet/gw1/gatehouse/home/status", "fleet/gw1/bridge/status"]).await;
    let retained = late.collect(2, Duration::from_secs(5)).await;
    assert!(
        retained.iter().all(|m| m.retain && m.text() == "online"),
        "{:?}",
        retained.iter().map(|m| (&m.topic, m.text())).collect::<Vec<_>>()
    );
    assert_eq!(retained.len(), 2);

    // Telemetry of a LAN device, then a device alert.
    let device = active_device(&daemon, "esp-up-1").await;
    publish_telemetry(&device, "esp-up-1", 1..=3).await;
    let got = collect_until(&mut watch, WAIT, |seen| counters(seen).len() >= 3).await;
    assert_eq!(counters(&got), vec![1, 2, 3]);
    let telemetry = got.iter().find(|m| m.topic.ends_with("/telemetry")).unwrap();
    assert_eq!(telemetry.topic, "fleet/gw1/devices/home/esp-up-1/telemetry");
    device
        .client
        .publish(
            "devices/home/esp-up-1/alert",
            QoS::AtLeastOnce,
            false,
            json!({"severity": "warning", "message": "door open", "code": "door"}).to_string(),
        )
        .await
        .unwrap();
    let alert = watch.next_on("fleet/gw1/gatehouse/home/alerts", WAIT).await.expect("alert upstream");
    assert_eq!(alert.json()["message"], "door open", "{}", alert.text());

    // A task requested upstream runs on the reference device; every state comes back with the ref.
    let reference = Device::claimed(&daemon, "ref-up-1", &[]).await;
    let request = json!({"device": "ref-up-1", "command": "set_interval", "params": {"seconds": 10}, "ref": "op-42"});
    let operator_client = operator(&broker, "operator-1", &[]).await;
    operator_client
        .client
        .publish("fleet/gw1/tasks/create", QoS::AtLeastOnce, false, request.to_string())
        .await
        .unwrap();
    let states = collect_until(&mut watch, WAIT, |seen| {
        seen.iter().any(|m| m.topic.ends_with("/state") && m.json()["state"] == "succeeded")
    })
    .await;
    let states: Vec<Value> = states.iter().filter(|m| m.topic.ends_with("/state")).map(Message::json).collect();
    assert!(states.iter().all(|s| s["ref"] == "op-42" && s["device"] == "ref-up-1"), "{states:#?}");
    let names: Vec<&str> = states.iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(names.first(), Some(&"queued"), "{names:?}");
    assert_eq!(names.last(), Some(&"succeeded"), "{names:?}");
    let task_id = states[0]["taskId"].as_str().unwrap().to_string();
    let task = daemon.get_json(&format!("/api/tasks/{task_id}")).await;
    assert_eq!(task["state"], "succeeded", "{task:#}");
    assert_eq!(task["createdBy"], "upstream:fleet#op-42");

    // The same ref again (a QoS 1 redelivery, a retrying script) makes no second task; it answers
    // with the task's state. A malformed request and a refused one are answered on `rejected`.
    operator_client
        .client
        .publish("fleet/gw1/tasks/create", QoS::AtLeastOnce, false, request.to_string())
        .await
        .unwrap();
    let again = watch.next_on(&format!("fleet/gw1/tasks/{task_id}/state"), WAIT).await.expect("state again");
    assert_eq!(again.json()["state"], "succeeded");
    operator_client.client.publish("fleet/gw1/tasks/create", QoS::AtLeastOnce, false, "{not json").await.unwrap();
    let rejected = watch.next_on("fleet/gw1/tasks/rejected", WAIT).await.expect("rejection");
    assert!(rejected.json()["error"].as_str().unwrap().contains("not JSON"), "{}", rejected.text());
    let unknown = json!({"device": "ref-up-1", "command": "self_destruct", "ref": "op-43"});
    operator_client
        .client
        .publish("fleet/gw1/tasks/create", QoS::AtLeastOnce, false, unknown.to_string())
        .await
        .unwrap();
    let rejected = watch.next_on("fleet/gw1/tasks/rejected", WAIT).await.expect("rejection");
    assert_eq!(rejected.json()["ref"], "op-43");
    assert!(rejected.json()["error"].as_str().unwrap().contains("self_destruct"), "{}", rejected.text());
    let tasks = daemon.get_json("/api/devices/ref-up-1/tasks").await;
    assert_eq!(tasks.as_array().map(Vec::len), Some(1), "{tasks:#}");
    assert_eq!(reference.executions().len(), 1);

    let report = upstream_report(&daemon, "fleet").await;
    assert_eq!(report["stats"]["commandsReceived"], 4, "{report:#}");
    assert_eq!(report["stats"]["commandsAccepted"], 1, "{report:#}");
    assert_eq!(report["stats"]["commandsDuplicate"], 1, "{report:#}");
    assert_eq!(report["stats"]["commandsRejected"], 2, "{report:#}");
    assert!(report["counters"]["delivered"].as_u64().unwrap() >= 8, "{report:#}");
    assert_eq!(report["counters"]["droppedSize"], 0);
    assert!(!report.to_string().contains("gw1-secret"));
    let metrics = reqwest::get(daemon.http("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gatehouse_upstream_connected{upstream=\"fleet\"} 1"), "{metrics}");

    // Stopping the gateway says `offline` upstream, retained.
    drop(late);
    let mut daemon = daemon;
    daemon.stop();
    let mut after = operator(&broker, "after-1", &["fleet/gw1/bridge/status"]).await;
    let last = after.next_on("fleet/gw1/bridge/status", WAIT).await.expect("bridge status");
    assert_eq!(last.text(), "offline");
    assert!(!daemon.log().contains("gw1-secret"), "the upstream password is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffers_while_the_upstream_is_down_and_delivers_everything_in_order() {
    let mut broker = Mosquitto::start(USERS, ACL, true);
    let topic = "fleet/gw1/devices/home/esp-buf/telemetry";
    let mut watch = operator(&broker, "watch-buf", &[topic]).await;
    let config = format!(
        "gateway_id = \"gw1\"\n{}",
        upstream_toml("fleet", &broker.url(), "gw1", "gw1-secret", "forward = [\"telemetry\"]")
    );
    let mut daemon = Daemon::start_with_config(&config, &[]);
    wait_for_state(&daemon, "fleet", "connected").await;
    let credentials = claim_device(&daemon, "esp-buf").await;
    let device = Client::connect(options_as("esp-buf", daemon.runtime.mqtt, &credentials)).await;

    publish_telemetry(&device, "esp-buf", 1..=50).await;
    let before = collect_until(&mut watch, WAIT, |seen| first_occurrences(&counters(seen)).0.len() >= 50).await;
    assert_eq!(first_occurrences(&counters(&before)).0, (1..=50).collect::<Vec<_>>());

    broker.stop();
    drop(watch);
    publish_telemetry(&device, "esp-buf", 51..=250).await;
    let mut waiting = Value::Null;
    eventually(WAIT, async || {
        waiting = upstream_report(&daemon, "fleet").await;
        let buffered = waiting["buffer"]["messages"].as_u64() >= Some(200);
        (buffered && waiting["status"]["lastError"]["stage"] == "tcp").then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("200 messages never buffered, or no TCP error reported: {waiting:#}"));
    assert_ne!(waiting["status"]["state"], "connected", "{waiting:#}");

    // A restart of the gateway while the upstream is down keeps the buffer (it is on disk).
    daemon.restart();
    let device = Client::connect(options_as("esp-buf", daemon.runtime.mqtt, &credentials)).await;
    let kept = upstream_report(&daemon, "fleet").await;
    assert!(kept["buffer"]["messages"].as_u64() >= Some(200), "{kept:#}");
    publish_telemetry(&device, "esp-buf", 251..=260).await;

    broker.start_again();
    let mut watch = operator(&broker, "watch-buf", &[]).await;
    let after = collect_until(&mut watch, Duration::from_secs(40), |seen| {
        first_occurrences(&counters(seen)).0.last() == Some(&260)
    })
    .await;
    let values = counters(&after);
    // Acknowledgements of the last messages before the outage may not have been committed.
    let (firsts, repeated) = first_occurrences(&values.into_iter().filter(|v| *v > 50).collect::<Vec<_>>());
    assert_eq!(firsts, (51..=260).collect::<Vec<_>>(), "every buffered message, in order");
    assert!(repeated <= 64, "{repeated} repeated: more than one window of unacknowledged messages");
    let drained = wait_for_state(&daemon, "fleet", "connected").await;
    eventually(WAIT, async || (upstream_report(&daemon, "fleet").await["buffer"]["messages"] == 0).then_some(()))
        .await
        .expect("the buffer empties");
    assert_eq!(drained["counters"]["droppedSize"], 0);
    assert_eq!(drained["counters"]["droppedAge"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buffer_bound_drops_the_oldest_messages_and_counts_them() {
    let mut broker = Mosquitto::start(USERS, ACL, true);
    let watch = operator(&broker, "watch-bound", &["fleet/gw1/devices/home/+/telemetry"]).await;
    drop(watch);
    broker.stop();
    let extra = "forward = [\"telemetry\"]\nbuffer_max_bytes = 4096";
    let config = format!("gateway_id = \"gw1\"\n{}", upstream_toml("fleet", &broker.url(), "gw1", "gw1-secret", extra));
    let daemon = Daemon::start_with_config(&config, &[]);
    let device = active_device(&daemon, "esp-bound").await;
    publish_telemetry(&device, "esp-bound", 1..=100).await;
    let mut report = Value::Null;
    eventually(WAIT, async || {
        report = upstream_report(&daemon, "fleet").await;
        (report["stats"]["localMessages"] == 100 && report["counters"]["buffered"] == 100).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("100 messages never reached the buffer: {report:#}"));
    let kept = report["buffer"]["messages"].as_u64().unwrap();
    let dropped = report["counters"]["droppedSize"].as_u64().unwrap();
    assert!(report["buffer"]["bytes"].as_u64().unwrap() <= 4096, "{report:#}");
    assert!(dropped > 0 && kept > 0, "{report:#}");
    assert_eq!(kept + dropped, 100, "{report:#}");
    let metrics = reqwest::get(daemon.http("/metrics")).await.unwrap().text().await.unwrap();
    let line = format!("gatehouse_upstream_dropped_total{{upstream=\"fleet\",reason=\"size\"}} {dropped}");
    assert!(metrics.lines().any(|l| l == line), "no `{line}` in\n{metrics}");

    broker.start_again();
    let mut watch = operator(&broker, "watch-bound", &[]).await;
    let got = collect_until(&mut watch, WAIT, |seen| first_occurrences(&counters(seen)).0.last() == Some(&100)).await;
    let (firsts, _) = first_occurrences(&counters(&got));
    let newest: Vec<u32> = ((100 - kept as u32 + 1)..=100).collect();
    assert_eq!(firsts, newest, "the newest {kept} arrive, in order; the {dropped} oldest were dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_connection_names_the_stage_that_failed() {
    let broker = Mosquitto::start(USERS, ACL, false);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let tls_gateway = Daemon::start(&[]);
    let ca = tls_gateway.data_dir.join("tls/ca.crt");
    let config = [
        "gateway_id = \"gw1\"".to_string(),
        upstream_toml("good", &broker.url(), "gw1", "gw1-secret", ""),
        upstream_toml("nodns", "mqtt://no-such-host.invalid:1883", "gw1", "x", ""),
        upstream_toml("closed", &format!("mqtt://{closed}"), "gw1", "x", ""),
        upstream_toml("notls", &format!("mqtts://{}", broker.addr), "gw1", "x", ""),
        upstream_toml(
            "untrusted",
            &format!("mqtts://localhost:{}", tls_gateway.runtime.mqtt_tls.port()),
            "gw1",
            "x",
            "",
        ),
        upstream_toml(
            "trusted",
            &format!("mqtts://localhost:{}", tls_gateway.runtime.mqtt_tls.port()),
            "gw1",
            "wrong",
            &format!("ca_file = \"{}\"", ca.display()),
        ),
        upstream_toml("badauth", &broker.url(), "gw1", "wrong", ""),
        upstream_toml("noacl", &broker.url(), "limited", "limited-secret", "prefix = \"fleet/other\""),
    ]
    .join("\n");
    let daemon = Daemon::start_with_config(&config, &[]);
    let expectations: &[(&str, Option<&str>, &str)] = &[
        ("good", None, "may publish under `fleet/gw1/…`"),
        ("nodns", Some("dns"), "cannot resolve"),
        ("closed", Some("tcp"), "is the broker running"),
        ("notls", Some("tls"), "TLS"),
        ("untrusted", Some("tls"), "ca_file"),
        ("trusted", Some("auth"), "check the username and password"),
        ("badauth", Some("auth"), "check the username and password"),
        // Mosquitto grants a denied subscription on MQTT 3.1.1 and drops the messages, so the
        // probe's echo is what finds it.
        ("noacl", Some("acl"), "never came back"),
    ];
    let client = reqwest::Client::new();
    for (name, failed, message) in expectations {
        let response = client.post(daemon.http(&format!("/api/upstreams/{name}/test"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let report: Value = response.json().await.unwrap();
        assert_eq!(report["failed"].as_str(), *failed, "{name}: {report:#}");
        assert_eq!(report["ok"], failed.is_none(), "{name}: {report:#}");
        let last = report["checks"].as_array().unwrap().last().unwrap();
        assert!(last["message"].as_str().unwrap().contains(message), "{name}: {report:#}");
        if failed.is_none() {
            let stages: Vec<&str> =
                report["checks"].as_array().unwrap().iter().map(|c| c["stage"].as_str().unwrap()).collect();
            assert_eq!(stages, ["dns", "tcp", "auth", "acl"], "{report:#}");
        }
        assert!(!report.to_string().contains("gw1-secret"));
    }
    let unknown = client.post(daemon.http("/api/upstreams/nope/test")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    // The live links report the same stages.
    for (name, stage) in [("nodns", "dns"), ("closed", "tcp"), ("badauth", "auth"), ("untrusted", "tls")] {
        let mut last = Value::Null;
        eventually(WAIT, async || {
            last = upstream_report(&daemon, name).await;
            (last["status"]["lastError"]["stage"] == stage).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{name}: live error stage never {stage}: {last:#}"));
        assert_eq!(last["status"]["state"], "waiting", "{last:#}");
    }
    wait_for_state(&daemon, "good", "connected").await;
}

const RUUVI_GW: &str = "C8:25:2D:8E:9C:2C";

fn df5_ad(mac_tail: u8, sequence: u16) -> String {
    format!("0201061BFF99040512FC5394C37C0004FFFC040CAC3642{sequence:04X}CBB8334C88{mac_tail:02X}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_broker_and_the_consumer_removes_readings_both_heard() {
    let broker = Mosquitto::start(USERS, ACL, false);
    let mut consumer = operator(&broker, "consumer", &["fleet/+/devices/home/+/telemetry"]).await;
    let mut gateways = Vec::new();
    for (id, secret) in [("gw1", "gw1-secret"), ("gw2", "gw2-secret")] {
        let config = format!(
            "gateway_id = \"{id}\"\n{}",
            upstream_toml("fleet", &broker.url(), id, secret, "forward = [\"telemetry\"]")
        );
        let daemon = Daemon::start_with_config(&config, &[]);
        wait_for_state(&daemon, "fleet", "connected").await;
        let receiver: Credentials = daemon.account("kitchen-gw", "receiver", &[]).await;
        gateways.push((daemon, receiver));
    }
    // Both gateways hear the same three tags; each measurement (sequence) is posted to both.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut expected = HashSet::new();
    for sequence in 100..105u16 {
        let mut tags = serde_json::Map::new();
        for tail in [0x4F, 0x50, 0x51] {
            let mac = format!("CB:B8:33:4C:88:{tail:02X}");
            tags.insert(mac.clone(), json!({"rssi": -60, "timestamp": now, "data": df5_ad(tail, sequence)}));
            expected.insert((mac, sequence as u64));
        }
        let post = json!({"data": {"coordinates": "", "timestamp": now, "nonce": 1, "gw_mac": RUUVI_GW, "tags": tags}});
        for (daemon, receiver) in &gateways {
            let response = reqwest::Client::new()
                .post(format!("http://{}/ruuvi", daemon.runtime.ingest))
                .basic_auth(&receiver.username, Some(&receiver.password))
                .json(&post)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    let got = consumer.collect(expected.len() * 2, WAIT).await;
    assert_eq!(got.len(), expected.len() * 2, "each gateway forwards every reading");
    let mut by_gateway: BTreeMap<String, usize> = BTreeMap::new();
    for message in &got {
        *by_gateway.entry(message.topic.split('/').nth(1).unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(by_gateway, BTreeMap::from([("gw1".to_string(), 15), ("gw2".to_string(), 15)]));
    // The consumer's side (docs/upstream.md): one reading per tag MAC and measurement sequence.
    let unique: HashSet<(String, u64)> = got
        .iter()
        .map(Message::json)
        .map(|r| (r["mac"].as_str().unwrap().to_string(), r["measurementSequenceNumber"].as_u64().unwrap()))
        .collect();
    assert_eq!(unique, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_over_tls_with_a_client_certificate_into_another_gatehouse() {
    // The upstream is a second Gatehouse: its TLS listener, its CA, a certificate it issued.
    let upstream = Daemon::start(&[]);
    upstream.account("gw1-up", "service", &[("fleet/gw1/#", "readwrite")]).await;
    let reader = upstream.account("fleet-reader", "service", &[("fleet/#", "read")]).await;
    let (status, issued) = upstream.post_json("/api/broker/accounts/gw1-up/certificate", Value::Null).await;
    assert_eq!(status, 201, "{issued}");
    let files = tempfile::tempdir().unwrap();
    for (name, key) in [("ca.pem", "ca"), ("gw1.crt", "certificate"), ("gw1.key", "privateKey")] {
        std::fs::write(files.path().join(name), issued[key].as_str().unwrap()).unwrap();
    }
    let mut watch = Client::connect(options_as("fleet-reader", upstream.runtime.mqtt, &reader)).await;
    watch.subscribe_many(&["fleet/gw1/devices/home/+/telemetry"]).await;

    let config = format!(
        "gateway_id = \"gw1\"\n[[upstream]]\nname = \"hq\"\nurl = \"mqtts://localhost:{}\"\nclient_id = \"gw1-up\"\n\
         ca_file = \"{dir}/ca.pem\"\nclient_cert = \"{dir}/gw1.crt\"\nclient_key = \"{dir}/gw1.key\"\n\
         prefix = \"fleet/{{gateway_id}}\"\nforward = [\"telemetry\"]\ncommands = false\nreconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n",
        upstream.runtime.mqtt_tls.port(),
        dir = files.path().display()
    );
    let daemon = Daemon::start_with_config(&config, &[]);
    let connected = wait_for_state(&daemon, "hq", "connected").await;
    assert_eq!(connected["clientCertificate"], true);
    let clients = upstream.get_json("/api/broker/clients").await;
    let bridge = clients.as_array().unwrap().iter().find(|c| c["clientId"] == "gw1-up").cloned().unwrap_or_default();
    assert_eq!(bridge["authentication"], "certificate", "{clients:#}");

    let device = active_device(&daemon, "esp-tls").await;
    publish_telemetry(&device, "esp-tls", 1..=5).await;
    let got = collect_until(&mut watch, WAIT, |seen| counters(seen).len() >= 5).await;
    assert_eq!(counters(&got), vec![1, 2, 3, 4, 5]);
    assert_eq!(got[0].topic, "fleet/gw1/devices/home/esp-tls/telemetry");

    let response = reqwest::Client::new().post(daemon.http("/api/upstreams/hq/test")).send().await.unwrap();
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["ok"], true, "{report:#}");
    let stages: Vec<&str> = report["checks"].as_array().unwrap().iter().map(|c| c["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["dns", "tcp", "tls", "auth", "acl"], "{report:#}");
    assert!(report["checks"][3]["message"].as_str().unwrap().contains("client certificate"), "{report:#}");
    // The live bridge comes back after the test borrowed its client id, and keeps forwarding.
    wait_for_state(&daemon, "hq", "connected").await;
    publish_telemetry(&device, "esp-tls", 6..=6).await;
    let more = collect_until(&mut watch, WAIT, |seen| counters(seen).contains(&6)).await;
    assert!(counters(&more).contains(&6));
}
