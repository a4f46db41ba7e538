//! The secure LAN broker, tested with real clients over real sockets: rumqttc (v3.1.1 and v5,
//! TCP, TLS, WebSocket), Debian's mosquitto_pub/mosquitto_sub and Python paho-mqtt.

use std::process::Command;
use std::time::Duration;

use gatehouse_tests::mqtt::{options, options_as, tls_transport, tls_transport_with_identity, with_will, Client};
use gatehouse_tests::{eventually, require_tool, Credentials, Daemon};
use rumqttc::{ConnectReturnCode, ConnectionError, QoS, SubscribeReasonCode};
use tokio::io::AsyncWriteExt;

fn refused_not_authorized(result: Result<Client, ConnectionError>) -> bool {
    matches!(result, Err(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_and_wrong_credentials_are_refused_not_authorized() {
    let daemon = Daemon::start(&[]);
    let addr = daemon.runtime.mqtt;
    let ha = daemon.account("ha", "service", &[]).await;

    assert!(refused_not_authorized(Client::try_connect(options("anon", addr)).await), "anonymous");
    let wrong = Credentials { username: "ha".into(), password: "guess".into() };
    assert!(refused_not_authorized(Client::try_connect(options_as("w", addr, &wrong)).await), "wrong password");
    let nobody = Credentials { username: "nobody".into(), password: ha.password.clone() };
    assert!(refused_not_authorized(Client::try_connect(options_as("n", addr, &nobody)).await), "unknown user");
    assert!(Client::try_connect(options_as("ok", addr, &ha)).await.is_ok());

    if let Some(sub) = require_tool("mosquitto_sub") {
        let output = Command::new(sub)
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-t", "#", "-C", "1", "-W", "5"])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("not authorised"), "mosquitto_sub says: {stderr}");
    }
    if let Some(python) = require_tool("/usr/bin/python3") {
        for protocol in ["311", "5"] {
            let output = Command::new(&python)
                .arg(paho_script())
                .args(["127.0.0.1", &addr.port().to_string(), "ha", "guess", protocol, "connect"])
                .output()
                .unwrap();
            let code = String::from_utf8_lossy(&output.stdout).trim().to_string();
            // 5 = "not authorized" in MQTT 3.1.1, 135 (0x87) in MQTT 5.
            let expected = if protocol == "5" { "135" } else { "5" };
            assert_eq!(code, expected, "paho MQTT {protocol}: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
    let health = daemon.get_json("/api/health").await;
    assert!(health["mqtt"]["authFailures"].as_u64().unwrap() >= 3, "{health}");
    assert!(!daemon.log().contains(&ha.password), "secrets never appear in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_confined_to_their_own_topics() {
    let daemon = Daemon::start(&[]);
    let addr = daemon.runtime.mqtt;
    let d1 = daemon.account("d1", "device", &[]).await;
    let d2 = daemon.account("d2", "device", &[]).await;
    let viewer = daemon.account("viewer", "service", &[]).await;

    // A device's client id must be its device id.
    assert!(refused_not_authorized(Client::try_connect(options_as("d2", addr, &d1)).await), "d1 posing as d2");

    let mut a = Client::connect(options_as("d1", addr, &d1)).await;
    let mut b = Client::connect(options_as("d2", addr, &d2)).await;
    let mut watcher = Client::connect(options_as("watcher", addr, &viewer)).await;
    assert_eq!(
        b.subscribe_many(&["devices/home/d2/commands"]).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    assert_eq!(
        watcher.subscribe_many(&["devices/home/+/telemetry"]).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    // One SUBSCRIBE with allowed and refused filters gets a code per filter, in order.
    let codes = a
        .subscribe_many(&[
            "devices/home/d1/commands",
            "devices/home/d2/commands",
            "#",
            "devices/+/d1/commands",
            "devices/home/d1/config",
        ])
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
        ]
    );
    assert_eq!(a.subscribe_many(&["devices/home/d2/#"]).await, vec![SubscribeReasonCode::Failure]);

    // d1 cannot command d2 or fake d2's telemetry; its own telemetry goes through.
    a.client.publish("devices/home/d2/commands", QoS::AtLeastOnce, false, "reboot").await.unwrap();
    a.client.publish("devices/home/d2/telemetry", QoS::AtLeastOnce, false, "{\"fake\":1}").await.unwrap();
    a.client.publish("devices/home/d1/telemetry", QoS::AtLeastOnce, false, "{\"t\":1}").await.unwrap();
    let seen = watcher.next_on("devices/home/d1/telemetry", Duration::from_secs(5)).await.expect("own telemetry");
    assert_eq!(seen.text(), "{\"t\":1}");
    assert!(b.next_on("devices/home/d2/commands", Duration::from_secs(1)).await.is_none(), "d2 got no command from d1");
    assert!(watcher.messages.try_recv().is_err(), "no faked telemetry for d2");

    // Repeated refused publishes disconnect the client.
    for _ in 0..12 {
        let _ = a.client.publish("devices/home/d2/commands", QoS::AtMostOnce, false, "x").await;
    }
    assert!(a.wait_closed(Duration::from_secs(5)).await.is_some(), "disconnected after repeated denials");
    let clients = daemon.get_json("/api/broker/clients").await;
    assert!(clients.as_array().unwrap().iter().all(|c| c["clientId"] != "d1"), "{clients}");
    let health = daemon.get_json("/api/health").await;
    assert!(health["mqtt"]["publishesDenied"].as_u64().unwrap() >= 10, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_reads_telemetry_but_cannot_command_devices() {
    let daemon = Daemon::start(&["--simulate", "2", "--seed", "4"]);
    let addr = daemon.runtime.mqtt;
    let ha = daemon.account("ha", "service", &[]).await;
    let d1 = daemon.account("d1", "device", &[]).await;

    let mut device = Client::connect(options_as("d1", addr, &d1)).await;
    device.subscribe_many(&["devices/home/d1/commands"]).await;
    let mut service = Client::connect(options_as("ha-client", addr, &ha)).await;
    let codes = service
        .subscribe_many(&["devices/home/+/telemetry", "devices/home/+/commands", "devices/lab/+/telemetry"])
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure
        ]
    );
    let reading = service.collect(1, Duration::from_secs(15)).await;
    assert_eq!(reading.len(), 1, "telemetry from the simulated tags");
    assert!(reading[0].topic.ends_with("/telemetry"));

    service.client.publish("devices/home/d1/commands", QoS::AtLeastOnce, false, "{}").await.unwrap();
    assert!(device.next_on("devices/home/d1/commands", Duration::from_secs(1)).await.is_none());

    // Home Assistant discovery topics are read-write for service accounts.
    service.subscribe_many(&["homeassistant/#"]).await;
    service.client.publish("homeassistant/sensor/x/config", QoS::AtLeastOnce, true, "{}").await.unwrap();
    assert!(service.next_on("homeassistant/sensor/x/config", Duration::from_secs(5)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_availability_follows_its_connection_and_will() {
    let daemon = Daemon::start(&[]);
    let addr = daemon.runtime.mqtt;
    let d1 = daemon.account("d1", "device", &[]).await;
    let viewer = daemon.account("viewer", "service", &[]).await;

    let device = Client::connect(with_will(options_as("d1", addr, &d1), "devices/home/d1/status", "offline")).await;
    let mut watcher = Client::connect(options_as("watcher", addr, &viewer)).await;
    watcher.subscribe_many(&["devices/home/d1/status"]).await;
    let online = watcher.next_on("devices/home/d1/status", Duration::from_secs(5)).await.expect("retained status");
    assert!(online.retain && online.text() == "online", "{online:?}");

    device.kill();
    let offline = watcher.next_on("devices/home/d1/status", Duration::from_secs(5)).await.expect("offline");
    assert_eq!(offline.text(), "offline");

    // A device may not set its will on another device's topics.
    let _d2 = daemon.account("d2", "device", &[]).await;
    let spoof = with_will(options_as("d1", addr, &d1), "devices/home/d2/status", "offline");
    assert!(refused_not_authorized(Client::try_connect(spoof).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_rotation_end_live_sessions() {
    let daemon = Daemon::start(&[]);
    let addr = daemon.runtime.mqtt;
    let nr = daemon.account("nodered", "service", &[]).await;
    let mut live = Client::connect(options_as("nr-1", addr, &nr)).await;
    let (status, _) = daemon.post_json("/api/broker/accounts/nodered/disable", serde_json::Value::Null).await;
    assert_eq!(status, 200);
    assert!(live.wait_closed(Duration::from_secs(5)).await.is_some(), "disabled: kicked at once");
    assert!(refused_not_authorized(Client::try_connect(options_as("nr-2", addr, &nr)).await));

    daemon.post_json("/api/broker/accounts/nodered/enable", serde_json::Value::Null).await;
    let mut live = Client::connect(options_as("nr-3", addr, &nr)).await;
    let (status, rotated) = daemon.post_json("/api/broker/accounts/nodered/rotate", serde_json::Value::Null).await;
    assert_eq!(status, 200);
    assert!(live.wait_closed(Duration::from_secs(5)).await.is_some(), "rotated: kicked at once");
    assert!(refused_not_authorized(Client::try_connect(options_as("nr-4", addr, &nr)).await), "old secret");
    let new = Credentials { username: "nodered".into(), password: rotated["password"].as_str().unwrap().into() };
    let _ok = Client::connect(options_as("nr-5", addr, &new)).await;

    let response = reqwest::Client::new().delete(daemon.http("/api/broker/accounts/nodered")).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let health = daemon.get_json("/api/health").await;
    assert!(health["mqtt"]["sessionsRevoked"].as_u64().unwrap() >= 3, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_websocket_listeners_and_silent_clients_block_nobody() {
    // A long CONNECT/handshake timeout: if a silent client blocked the accept loop, the clients
    // below would wait 60 s.
    let daemon = Daemon::start_with_config("[mqtt]\nconnect_timeout = \"60s\"\n", &[]);
    let viewer = daemon.account("viewer", "service", &[("lab/#", "readwrite")]).await;
    let ca = reqwest::get(daemon.http("/api/broker/ca.pem")).await.unwrap().text().await.unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));

    let mut silent = Vec::new();
    for addr in [daemon.runtime.mqtt_tls, daemon.runtime.mqtt_ws, daemon.runtime.mqtt_wss, daemon.runtime.mqtt] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"").await.unwrap();
        silent.push(stream);
    }

    // TLS needs a host name from the certificate: `localhost` is always in it.
    let mut tls = rumqttc::MqttOptions::new("over-tls", "localhost", daemon.runtime.mqtt_tls.port());
    tls.set_credentials(viewer.username.clone(), viewer.password.clone()).set_transport(tls_transport(&ca, false));
    let mut over_tls =
        tokio::time::timeout(Duration::from_secs(10), Client::connect(tls)).await.expect("TLS connect not blocked");
    over_tls.subscribe_many(&["lab/#"]).await;

    let ws_url = format!("ws://127.0.0.1:{}/mqtt", daemon.runtime.mqtt_ws.port());
    let mut ws = rumqttc::MqttOptions::new("over-ws", ws_url, daemon.runtime.mqtt_ws.port());
    ws.set_credentials(viewer.username.clone(), viewer.password.clone()).set_transport(rumqttc::Transport::ws());
    let over_ws =
        tokio::time::timeout(Duration::from_secs(10), Client::connect(ws)).await.expect("WS connect not blocked");

    let wss_url = format!("wss://localhost:{}/mqtt", daemon.runtime.mqtt_wss.port());
    let mut wss = rumqttc::MqttOptions::new("over-wss", wss_url, daemon.runtime.mqtt_wss.port());
    wss.set_credentials(viewer.username.clone(), viewer.password.clone()).set_transport(tls_transport(&ca, true));
    let over_wss =
        tokio::time::timeout(Duration::from_secs(10), Client::connect(wss)).await.expect("WSS connect not blocked");

    over_ws.client.publish("lab/ws", QoS::AtLeastOnce, false, "via ws").await.unwrap();
    over_wss.client.publish("lab/wss", QoS::AtLeastOnce, false, "via wss").await.unwrap();
    let got = over_tls.collect(2, Duration::from_secs(5)).await;
    let mut texts: Vec<String> = got.iter().map(|m| m.text()).collect();
    texts.sort();
    assert_eq!(texts, vec!["via ws", "via wss"]);

    let clients = daemon.get_json("/api/broker/clients").await;
    let transports: Vec<&str> = clients.as_array().unwrap().iter().map(|c| c["transport"].as_str().unwrap()).collect();
    for transport in ["tls", "ws", "wss"] {
        assert!(transports.contains(&transport), "{clients}");
    }
    let first = &clients.as_array().unwrap()[0];
    assert_eq!(first["username"], "viewer");
    assert!(first["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_slow_a_spammer_without_losing_its_messages() {
    let daemon = Daemon::start_with_config("[mqtt]\npublish_rate = 20.0\npublish_burst = 10.0\n", &[]);
    let addr = daemon.runtime.mqtt;
    let lab = daemon.account("lab", "service", &[("lab/#", "readwrite")]).await;
    let mut sub = Client::connect(options_as("sub", addr, &lab)).await;
    sub.subscribe_many(&["lab/spam"]).await;
    let spammer = Client::connect(options_as("spammer", addr, &lab)).await;
    for i in 0..100 {
        spammer.client.publish("lab/spam", QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
    }
    // 20/s with a burst of 10: far fewer than 100 can arrive in the first second…
    let first_second = sub.collect(100, Duration::from_secs(1)).await;
    assert!(first_second.len() < 60, "rate limit engaged: {} in the first second", first_second.len());
    // …and every message arrives in the end, in order.
    let rest = sub.collect(100 - first_second.len(), Duration::from_secs(15)).await;
    let all: Vec<String> = first_second.iter().chain(&rest).map(|m| m.text()).collect();
    assert_eq!(all, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
    let clients = daemon.get_json("/api/broker/clients").await;
    let spammer_view = clients.as_array().unwrap().iter().find(|c| c["clientId"] == "spammer").unwrap().clone();
    assert!(spammer_view["throttled"].as_u64().unwrap() > 0, "{spammer_view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_messages_wait_for_a_persistent_session() {
    let daemon = Daemon::start(&[]);
    let addr = daemon.runtime.mqtt;
    let lab = daemon.account("lab", "service", &[("lab/#", "readwrite")]).await;
    let persistent = || {
        let mut o = options_as("keeper", addr, &lab);
        o.set_clean_session(false);
        o
    };
    let mut keeper = Client::connect(persistent()).await;
    keeper.subscribe_many(&["lab/queue"]).await;
    keeper.client.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let publisher = Client::connect(options_as("pub", addr, &lab)).await;
    for i in 0..20 {
        publisher.client.publish("lab/queue", QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut keeper = Client::connect(persistent()).await;
    let queued = keeper.collect(20, Duration::from_secs(10)).await;
    assert_eq!(queued.iter().map(|m| m.text()).collect::<Vec<_>>(), (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_clients_are_banned_and_connections_per_address_are_limited() {
    let daemon = Daemon::start_with_config(
        "[mqtt]\nflap_max_disconnects = 3\nflap_window = \"1m\"\nflap_ban = \"5m\"\nmax_connections_per_address = 6\n",
        &[],
    );
    let addr = daemon.runtime.mqtt;
    let lab = daemon.account("lab", "service", &[]).await;
    for _ in 0..4 {
        let client = Client::connect(options_as("flappy", addr, &lab)).await;
        client.client.disconnect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let banned = eventually(Duration::from_secs(5), async || {
        refused_not_authorized(Client::try_connect(options_as("flappy", addr, &lab)).await).then_some(())
    })
    .await;
    assert!(banned.is_some(), "the flapping client id is refused");
    assert!(Client::try_connect(options_as("steady", addr, &lab)).await.is_ok(), "other clients are not affected");

    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let health = eventually(Duration::from_secs(5), async || {
        let h = daemon.get_json("/api/health").await;
        (h["mqtt"]["addressLimitRefused"].as_u64().unwrap() >= 2).then_some(h)
    })
    .await
    .expect("connections beyond the per-address limit are refused");
    assert!(health["mqtt"]["flapBans"].as_u64().unwrap() >= 1, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_clients_get_reason_codes() {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode as V5Code, Packet as V5Packet, SubscribeReasonCode as V5Sub};
    use rumqttc::v5::mqttbytes::QoS as V5QoS;
    use rumqttc::v5::{AsyncClient, ConnectionError as V5Error, Event, MqttOptions};

    let daemon = Daemon::start(&[]);
    let addr = daemon.runtime.mqtt;
    let d1 = daemon.account("d1", "device", &[]).await;

    let mut bad = MqttOptions::new("d1", "127.0.0.1", addr.port());
    bad.set_credentials("d1", "wrong");
    let (_client, mut eventloop) = AsyncClient::new(bad, 10);
    match eventloop.poll().await {
        Err(V5Error::ConnectionRefused(V5Code::NotAuthorized)) => {}
        other => panic!("expected not authorized, got {other:?}"),
    }

    let mut good = MqttOptions::new("d1", "127.0.0.1", addr.port());
    good.set_credentials("d1", d1.password.clone());
    let (client, mut eventloop) = AsyncClient::new(good, 10);
    client.subscribe("#", V5QoS::AtLeastOnce).await.unwrap();
    client.subscribe("devices/home/d1/commands", V5QoS::AtLeastOnce).await.unwrap();
    let mut codes = Vec::new();
    while codes.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await.expect("events") {
            Ok(Event::Incoming(V5Packet::SubAck(ack))) => codes.extend(ack.return_codes),
            Ok(_) => {}
            Err(error) => panic!("{error}"),
        }
    }
    assert_eq!(codes, vec![V5Sub::NotAuthorized, V5Sub::Success(V5QoS::AtLeastOnce)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_topic_and_third_party_clients() {
    let daemon = Daemon::start_with_config("[mqtt]\nhealth_interval = \"1s\"\n", &["--simulate", "1", "--seed", "2"]);
    let addr = daemon.runtime.mqtt;
    let viewer = daemon.account("viewer", "service", &[("lab/#", "readwrite")]).await;
    let mut watcher = Client::connect(options_as("watcher", addr, &viewer)).await;
    watcher.subscribe_many(&["gatehouse/home/health"]).await;
    // The first message may be the retained report from before we connected; a fresh one follows.
    let mut json = serde_json::Value::Null;
    for _ in 0..5 {
        let health = watcher.next_on("gatehouse/home/health", Duration::from_secs(5)).await.expect("health topic");
        json = health.json();
        if json["clientsConnected"].as_i64().unwrap() >= 1 {
            break;
        }
    }
    assert!(json["clientsConnected"].as_i64().unwrap() >= 1, "{json}");
    assert!(json["uptimeSeconds"].is_number() && json["messagesPerSecond"].is_number());

    let port = addr.port().to_string();
    if let (Some(sub), Some(publish)) = (require_tool("mosquitto_sub"), require_tool("mosquitto_pub")) {
        let connection = ["-h", "127.0.0.1", "-p", &port, "-u", "viewer", "-P", &viewer.password, "-t", "lab/interop"];
        let reader = Command::new(sub)
            .args(connection)
            .args(["-C", "1", "-W", "10"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = Command::new(publish).args(connection).args(["-q", "1", "-m", "hello"]).status().unwrap();
        assert!(status.success(), "mosquitto_pub");
        let output = reader.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "hello");
    }
    if let Some(python) = require_tool("/usr/bin/python3") {
        let output = Command::new(python)
            .arg(paho_script())
            .args(["127.0.0.1", &port, "viewer", &viewer.password, "5", "subscribe", "devices/home/+/telemetry", "1"])
            .output()
            .unwrap();
        assert!(output.status.success(), "paho v5 subscribe: {}", String::from_utf8_lossy(&output.stderr));
        let line: serde_json::Value =
            serde_json::from_slice(output.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert!(line["topic"].as_str().unwrap().ends_with("/telemetry"));
    }
}

fn paho_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/paho_check.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_skipped_for_a_stalled_subscriber_are_counted_per_client() {
    use tokio::io::AsyncReadExt;
    // A small router window (2 × 4 KiB per filter) and no rate limit, so a stalled reader falls behind.
    let daemon = Daemon::start_with_config(
        "[mqtt]\nsegment_size = 4096\nsegment_count = 2\npublish_rate = 0.0\nbyte_rate = 0.0\n",
        &[],
    );
    let addr = daemon.runtime.mqtt;
    let lab = daemon.account("lab", "service", &[("lab/#", "readwrite")]).await;
    let mut stalled = stalled_subscriber(addr, "stalled", &lab, "lab/flood").await;
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::sleep(Duration::from_millis(300)).await;

    let publisher = Client::connect(options_as("flooder", addr, &lab)).await;
    let payload = vec![b'x'; 1000];
    for _ in 0..20_000 {
        publisher.client.publish("lab/flood", QoS::AtMostOnce, false, payload.clone()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Resume reading: the router moves the subscriber past what it no longer holds.
    let drained = tokio::spawn(async move {
        let mut total = 0usize;
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), stalled.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let clients = eventually(Duration::from_secs(10), async || {
        let clients = daemon.get_json("/api/broker/clients").await;
        let dropped = clients.as_array()?.iter().find(|c| c["clientId"] == "stalled")?["dropped"].as_u64()?;
        (dropped > 0).then_some(clients)
    })
    .await
    .expect("the skipped messages are counted for the stalled client");
    let flooder = clients.as_array().unwrap().iter().find(|c| c["clientId"] == "flooder").unwrap();
    assert_eq!(flooder["dropped"], 0, "only the lagging client lost messages");
    let health = daemon.get_json("/api/health").await;
    assert!(health["mqtt"]["droppedForSlowSubscribers"].as_u64().unwrap() > 0, "{health}");
    assert!(drained.await.unwrap() > 0);
}

/// Connects with raw TCP, subscribes to `filter` and stops reading after the CONNACK. CONNECT
/// and SUBSCRIBE go back to back, before the CONNACK: the broker must not leave the pipelined
/// SUBSCRIBE sitting in its read buffer.
async fn stalled_subscriber(
    addr: std::net::SocketAddr,
    client_id: &str,
    credentials: &Credentials,
    filter: &str,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncReadExt;
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&gatehouse_tests::raw::connect(client_id, 60, credentials)).await.unwrap();
    stalled.write_all(&gatehouse_tests::raw::subscribe(1, filter)).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let _ = stalled.read(&mut buf).await.unwrap();
    stalled
}

/// rumqttd keeps every filter's messages until its segments rotate. The filters that come with
/// each device (its commands, config, credentials) keep a small window, so the broker does not
/// grow by the default window (4 MiB) per device; shared filters keep the configured one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_own_filters_keep_a_small_window_and_shared_filters_the_configured_one() {
    let daemon = Daemon::start_with_config("[mqtt]\npublish_rate = 0.0\nbyte_rate = 0.0\n", &[]);
    let addr = daemon.runtime.mqtt;
    let device = daemon.account("d1", "device", &[]).await;
    let lab = daemon.account("lab", "service", &[("lab/#", "readwrite"), ("devices/home/d1/commands", "write")]).await;
    let stalled_device = stalled_subscriber(addr, "d1", &device, "devices/home/d1/commands").await;
    let stalled_service = stalled_subscriber(addr, "lab-reader", &lab, "lab/flood").await;
    let publisher = Client::connect(options_as("flooder", addr, &lab)).await;

    // A device that reads gets a message larger than its window whole, and a burst after it.
    let d2 = daemon.account("d2", "device", &[]).await;
    let lab2 = daemon.account("lab2", "service", &[("devices/home/d2/commands", "write")]).await;
    let mut reader = Client::connect(options_as("d2", addr, &d2)).await;
    reader.subscribe_many(&["devices/home/d2/commands"]).await;
    let sender = Client::connect(options_as("lab2", addr, &lab2)).await;
    let mut sent = vec![vec![b'L'; 15 * 1024]];
    sent.extend((0..3u8).map(|i| vec![b'0' + i; 200]));
    for payload in &sent {
        sender.client.publish("devices/home/d2/commands", QoS::AtLeastOnce, false, payload.clone()).await.unwrap();
    }
    for (i, payload) in sent.iter().enumerate() {
        let message = tokio::time::timeout(Duration::from_secs(5), reader.messages.recv()).await;
        let message = message.unwrap_or_else(|_| panic!("message {i} reached the device")).unwrap();
        assert_eq!(message.payload.len(), payload.len(), "message {i} whole");
        assert_eq!(&message.payload[..], &payload[..], "message {i} in order");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 2 MB on each: more than 2 × 4 KiB plus what the sockets buffer, less than 4 × 1 MiB.
    let payload = vec![b'x'; 1000];
    for _ in 0..2_000 {
        publisher.client.publish("devices/home/d1/commands", QoS::AtMostOnce, false, payload.clone()).await.unwrap();
        publisher.client.publish("lab/flood", QoS::AtMostOnce, false, payload.clone()).await.unwrap();
    }
    let dropped = |clients: &serde_json::Value, id: &str| {
        clients.as_array().and_then(|all| all.iter().find(|c| c["clientId"] == id)).and_then(|c| c["dropped"].as_u64())
    };
    let clients = eventually(Duration::from_secs(15), async || {
        let clients = daemon.get_json("/api/broker/clients").await;
        (dropped(&clients, "d1")? > 0).then_some(clients)
    })
    .await
    .expect("the device's stalled commands subscription fell out of its small window");
    assert_eq!(dropped(&clients, "lab-reader"), Some(0), "the shared filter kept all 2 MB: {clients:#}");
    drop((stalled_device, stalled_service));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_can_authenticate_with_a_client_certificate() {
    let daemon = Daemon::start(&[]);
    let _d9 = daemon.account("d9", "device", &[]).await;
    let (status, issued) = daemon.post_json("/api/broker/accounts/d9/certificate", serde_json::Value::Null).await;
    assert_eq!(status, 201, "{issued}");
    let (ca, cert, key) = (
        issued["ca"].as_str().unwrap(),
        issued["certificate"].as_str().unwrap(),
        issued["privateKey"].as_str().unwrap(),
    );
    let port = daemon.runtime.mqtt_tls.port();
    let with_cert = |client_id: &str| {
        let mut o = rumqttc::MqttOptions::new(client_id, "localhost", port);
        o.set_transport(tls_transport_with_identity(ca, false, Some((cert, key))));
        o
    };

    // No password: the certificate is the credential, and it binds the client id too.
    let mut device = Client::connect(with_cert("d9")).await;
    assert_eq!(
        device.subscribe_many(&["devices/home/d9/commands"]).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let clients = daemon.get_json("/api/broker/clients").await;
    let view = clients.as_array().unwrap().iter().find(|c| c["clientId"] == "d9").unwrap().clone();
    assert_eq!(view["authentication"], "certificate");
    assert_eq!(view["username"], "d9");
    assert!(refused_not_authorized(Client::try_connect(with_cert("d8")).await), "certificate for d9 used as d8");

    // Without a certificate, TLS still works but needs a password.
    let mut anonymous = rumqttc::MqttOptions::new("d9", "localhost", port);
    anonymous.set_transport(tls_transport(ca, false));
    assert!(refused_not_authorized(Client::try_connect(anonymous).await));

    // Deleting the identity revokes the certificate's access too.
    let response = reqwest::Client::new().delete(daemon.http("/api/broker/accounts/d9")).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(device.wait_closed(Duration::from_secs(5)).await.is_some());
    assert!(refused_not_authorized(Client::try_connect(with_cert("d9")).await));
}
