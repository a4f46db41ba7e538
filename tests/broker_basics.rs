//! The embedded broker with real MQTT clients over TCP: QoS 1 delivery, retained messages, will
//! messages on abrupt disconnect, client-id rules, malformed and oversized packets. The clients
//! use a service account allowed to read and write `lab/#`.

use std::time::Duration;

use gatehouse_tests::mqtt::{options_as, with_will, Client};
use gatehouse_tests::{raw, Daemon};
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_retained_and_will_messages() {
    let daemon = Daemon::start(&[]);
    let addr = daemon.runtime.mqtt;
    let lab = daemon.account("lab", "service", &[("lab/#", "readwrite")]).await;
    let options = |id: &str| options_as(id, addr, &lab);

    let mut sub = Client::connect(options("sub")).await;
    sub.client.subscribe("lab/#", QoS::AtLeastOnce).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let publisher = Client::connect(options("pub")).await;
    for i in 0..100 {
        publisher.client.publish("lab/counter", QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
    }
    let received = sub.collect(100, Duration::from_secs(10)).await;
    let values: Vec<String> = received.iter().map(|m| m.text()).collect();
    assert_eq!(values, (0..100).map(|i| i.to_string()).collect::<Vec<_>>(), "all 100, in order");
    assert!(received.iter().all(|m| m.qos == QoS::AtLeastOnce));

    publisher.client.publish("lab/retained", QoS::AtLeastOnce, true, "kept").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut late = Client::connect(options("late")).await;
    late.client.subscribe("lab/retained", QoS::AtLeastOnce).await.unwrap();
    let retained = late.next_on("lab/retained", Duration::from_secs(5)).await.expect("retained message");
    assert!(retained.retain);
    assert_eq!(retained.text(), "kept");

    // A device that loses power: its will is published; one that disconnects cleanly: no will.
    let dying = Client::connect(with_will(options("dying"), "lab/dying/status", "offline")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    dying.kill();
    let will = sub.next_on("lab/dying/status", Duration::from_secs(5)).await.expect("will published");
    assert_eq!(will.text(), "offline");

    let polite = Client::connect(with_will(options("polite"), "lab/polite/status", "offline")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    polite.client.disconnect().await.unwrap();
    assert!(sub.next_on("lab/polite/status", Duration::from_secs(2)).await.is_none(), "no will after DISCONNECT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_rules_and_bad_packets() {
    let daemon = Daemon::start(&[]);
    let addr = daemon.runtime.mqtt;
    let lab = daemon.account("lab", "service", &[("lab/#", "readwrite")]).await;
    let options = |id: &str| options_as(id, addr, &lab);

    // An empty id with a clean session gets one assigned; ids that impersonate the gateway are refused.
    assert!(Client::try_connect(options("")).await.is_ok());
    let refused = Client::try_connect(options("gatehouse-gateway")).await.err().expect("refused");
    assert!(
        matches!(refused, rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::BadClientId)),
        "{refused:?}"
    );

    // Garbage instead of CONNECT: the connection is closed and counted, the broker keeps working.
    let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), garbage.read(&mut buf)).await.expect("closed promptly");
    assert_eq!(read.unwrap(), 0, "connection closed without a reply");

    // An oversized publish (the default limit is 256 KiB) disconnects that client only.
    let mut big_options = options("big");
    big_options.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
    let big = Client::connect(big_options).await;
    big.client.publish("lab/big", QoS::AtMostOnce, false, vec![0u8; 512 * 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let health = daemon.get_json("/api/health").await;
    assert!(health["mqtt"]["malformedPackets"].as_u64().unwrap() >= 1, "{health}");
    assert!(health["mqtt"]["oversizedPackets"].as_u64().unwrap() >= 1, "{health}");
    assert!(health["mqtt"]["connectRefused"].as_u64().unwrap() >= 1, "{health}");

    let mut ok = Client::connect(options("still-fine")).await;
    ok.client.subscribe("lab/x", QoS::AtLeastOnce).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    ok.client.publish("lab/x", QoS::AtLeastOnce, false, "hi").await.unwrap();
    assert!(ok.next_on("lab/x", Duration::from_secs(5)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_dropped_after_one_and_a_half_keep_alives() {
    let daemon = Daemon::start(&[]);
    let lab = daemon.account("lab", "service", &[("lab/#", "readwrite")]).await;
    let mut stream = tokio::net::TcpStream::connect(daemon.runtime.mqtt).await.unwrap();
    stream.write_all(&raw::connect("quiet", 1, &lab)).await.unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    let started = std::time::Instant::now();
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.expect("dropped");
    assert_eq!(read.unwrap(), 0);
    assert!(started.elapsed() >= Duration::from_millis(1_400), "not before 1.5 × keep-alive");
}
