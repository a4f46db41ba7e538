//! The Bluetooth scanner end to end: the real gateway with its real btleplug code, against a
//! fake BlueZ on a private D-Bus system bus (support/bluez.rs). Covers the event sequence
//! BlueZ produces (data on the first advertisement, RSSI in its own event), tags vanishing and
//! returning, an adapter power cycle, a bluetoothd restart, discovery stopped behind our back,
//! malformed data, no adapter at all, and giving up when D-Bus is gone.

use std::time::Duration;

use gatehouse_tests::bluez::FakeBluez;
use gatehouse_tests::{eventually, Daemon};
use serde_json::Value;

const TAG: &str = "CB:B8:33:4C:88:4F";
const TAG_ID: &str = "ruuvi-cbb8334c884f";
const RUUVI: u16 = 0x0499;
const WAIT: Duration = Duration::from_secs(20);

/// A data format 5 payload (the official "valid" vector) with the given temperature and
/// measurement sequence.
fn df5(temperature: f64, sequence: u16) -> Vec<u8> {
    let mut payload = hex("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F");
    let raw = (temperature / 0.005).round() as i16;
    payload[1..3].copy_from_slice(&raw.to_be_bytes());
    payload[16..18].copy_from_slice(&sequence.to_be_bytes());
    payload
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

async fn bluetooth(daemon: &Daemon) -> Value {
    daemon.get_json("/api/health").await["bluetooth"].clone()
}

async fn wait_for_state(daemon: &Daemon, state: &str) -> Value {
    let mut last = Value::Null;
    eventually(WAIT, async || {
        last = bluetooth(daemon).await;
        (last["state"] == state).then(|| last.clone())
    })
    .await
    .unwrap_or_else(|| panic!("scanner never reached state {state}; last: {last}\n{}", daemon.log()))
}

/// Waits until the tag's latest reading has `sequence`, and returns the device.
async fn wait_for_reading(daemon: &Daemon, sequence: u64) -> Value {
    daemon.wait_for_sequence(TAG_ID, sequence, WAIT).await
}

/// Advertises (repeating, as a tag does) until the scanner delivers the reading.
async fn advertise_until_read(bluez: &FakeBluez, daemon: &Daemon, temperature: f64, sequence: u16) -> Value {
    let mut last = Value::Null;
    eventually(Duration::from_secs(30), async || {
        bluez.advertise(TAG, RUUVI, &df5(temperature, sequence), -50);
        last = daemon.get_json(&format!("/api/devices/{TAG_ID}")).await;
        (last["lastReading"]["measurementSequenceNumber"] == u64::from(sequence)).then(|| last.clone())
    })
    .await
    .unwrap_or_else(|| panic!("sequence {sequence} never arrived; device: {last}\n{}", daemon.log()))
}

fn start(bluez: &FakeBluez, config: &str) -> Daemon {
    Daemon::start_with_bluetooth(config, &[], &bluez.address)
}

/// An adapter, the gateway scanning it with `config`, and a first reading (`sequence`) heard, so
/// that the tag counts as known.
async fn scanning_with_a_tag(bluez: &FakeBluez, config: &str, sequence: u16) -> Daemon {
    bluez.add_adapter();
    let daemon = start(bluez, config);
    wait_for_state(&daemon, "scanning").await;
    assert!(bluez.advertise(TAG, RUUVI, &df5(20.0, sequence), -60));
    wait_for_reading(&daemon, u64::from(sequence)).await;
    daemon
}

#[tokio::test]
async fn first_and_later_advertisements_arrive_with_their_rssi_and_bad_data_is_counted() {
    let Some(bluez) = FakeBluez::start() else { return };
    bluez.add_adapter();
    let daemon = start(&bluez, "");
    let status = wait_for_state(&daemon, "scanning").await;
    assert_eq!(status["adapter"], "hci0");
    assert_eq!(status["scanning"], true);

    // The first advertisement reaches btleplug only inside DeviceDiscovered.
    assert!(bluez.advertise(TAG, RUUVI, &df5(21.5, 100), -61));
    let device = wait_for_reading(&daemon, 100).await;
    assert_eq!(device["lastReading"]["temperature"], 21.5);
    assert_eq!(device["lastRssi"], -61);
    assert_eq!(device["lastReceiver"], "ble:hci0");
    assert_eq!(device["mac"], TAG);

    // Later ones as ManufacturerData changes, each with the RSSI of its own report.
    assert!(bluez.advertise(TAG, RUUVI, &df5(22.25, 101), -70));
    let device = wait_for_reading(&daemon, 101).await;
    assert_eq!(device["lastReading"]["temperature"], 22.25);
    assert_eq!(device["lastRssi"], -70);
    assert!(bluez.advertise(TAG, RUUVI, &df5(22.5, 102), -48));
    assert_eq!(wait_for_reading(&daemon, 102).await["lastRssi"], -48);

    // The same measurement again (tags send each one twice) is a duplicate, not a reading.
    assert!(bluez.advertise(TAG, RUUVI, &df5(22.5, 102), -49));
    // Ruuvi company id with a truncated payload and with an unknown format; another vendor.
    assert!(bluez.advertise(TAG, RUUVI, &[0x05, 0x12], -50));
    assert!(bluez.advertise(TAG, RUUVI, &[0x77; 24], -50));
    assert!(bluez.advertise("11:22:33:44:55:66", 0x004C, &[0x02, 0x15, 1, 2, 3], -40));
    assert!(bluez.advertise(TAG, RUUVI, &df5(23.0, 103), -52));
    wait_for_reading(&daemon, 103).await;

    let health = daemon.get_json("/api/health").await;
    let pipeline = &health["pipeline"];
    assert_eq!(pipeline["readings"], 4, "{pipeline}");
    assert_eq!(pipeline["duplicates"], 1, "{pipeline}");
    assert_eq!(pipeline["rejectedTooShort"], 1, "{pipeline}");
    assert_eq!(pipeline["rejectedUnsupportedFormat"], 1, "{pipeline}");
    let ble = &health["bluetooth"];
    assert_eq!(ble["advertisements"], 7, "{ble}");
    assert_eq!(ble["otherAdvertisements"], 1, "{ble}");
    assert_eq!(ble["tagsHeard"], 1, "{ble}");
    assert_eq!(ble["droppedQueueFull"], 0, "{ble}");
    assert_eq!(ble["state"], "scanning", "bad data did not disturb the scanner: {ble}");
    assert!(ble["lastAdvertAt"].as_i64().is_some(), "{ble}");
}

#[tokio::test]
async fn a_tag_that_vanishes_is_heard_again_when_it_returns() {
    let Some(bluez) = FakeBluez::start() else { return };
    let daemon = scanning_with_a_tag(&bluez, "", 1).await;

    // BlueZ forgets a temporary device unseen for 30 s; its return is a new DeviceDiscovered,
    // whose data must be read from the device's properties again.
    bluez.vanish(TAG);
    assert!(bluez.advertise(TAG, RUUVI, &df5(20.5, 2), -66));
    let device = wait_for_reading(&daemon, 2).await;
    assert_eq!(device["lastRssi"], -66);
    assert_eq!(device["lastReading"]["temperature"], 20.5);
}

#[tokio::test]
async fn scanning_resumes_after_an_adapter_power_cycle() {
    let Some(bluez) = FakeBluez::start() else { return };
    let daemon = scanning_with_a_tag(&bluez, "", 10).await;
    let starts_before = bluez.discovery_starts();

    bluez.set_powered(false);
    let status = wait_for_state(&daemon, "powered_off").await;
    assert!(status["message"].as_str().unwrap().contains("switched off"), "{status}");
    assert!(!bluez.advertise(TAG, RUUVI, &df5(20.0, 11), -60), "no discovery while the adapter is off");

    bluez.set_powered(true);
    let status = wait_for_state(&daemon, "scanning").await;
    assert_eq!(status["recoveries"]["powerCycles"], 1, "{status}");
    assert!(bluez.discovery_starts() > starts_before, "the scanner started discovery again");
    assert!(bluez.advertise(TAG, RUUVI, &df5(20.0, 12), -60), "discovery runs again");
    wait_for_reading(&daemon, 12).await;
}

#[tokio::test]
async fn the_watchdog_restarts_a_scan_that_bluetoothd_lost() {
    let Some(mut bluez) = FakeBluez::start() else { return };
    let daemon = scanning_with_a_tag(&bluez, "[ble]\nwatchdog = \"2s\"\n", 30).await;

    // A restarted bluetoothd knows no discovery session, and btleplug reports nothing at all.
    bluez.restart_bluetoothd();
    advertise_until_read(&bluez, &daemon, 20.5, 31).await;
    let status = bluetooth(&daemon).await;
    assert!(status["recoveries"]["scanRestarts"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(status["state"], "scanning", "{status}");

    // Discovery stopped behind our back (another client, a controller hiccup): the same way back.
    let restarts = status["recoveries"]["scanRestarts"].as_u64().unwrap();
    bluez.interrupt_discovery();
    assert!(!bluez.advertise(TAG, RUUVI, &df5(21.0, 32), -60));
    advertise_until_read(&bluez, &daemon, 21.0, 33).await;
    let status = bluetooth(&daemon).await;
    assert!(status["recoveries"]["scanRestarts"].as_u64().unwrap() > restarts, "{status}");
    assert!(daemon.log().contains("restarting the scan"), "every recovery is logged");
}

#[tokio::test]
async fn without_an_adapter_the_gateway_runs_and_says_bluetooth_is_unavailable() {
    let Some(bluez) = FakeBluez::start() else { return };
    let before = bluez.connection_count();
    let daemon = start(&bluez, "");
    let status = wait_for_state(&daemon, "unavailable").await;
    assert!(status["message"].as_str().unwrap().contains("no Bluetooth adapter found"), "{status}");
    assert_eq!(status["scanning"], false);
    assert_eq!(daemon.get_json("/api/health").await["status"], "ok", "the rest of the gateway works");
    // Retries (after 2 s, then 4 s) ask again over the same D-Bus connection, not a new one each.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(daemon.log().matches("no Bluetooth adapter found").count() >= 3, "it retried");
    assert_eq!(bluez.connection_count(), before + 1, "one connection for all the retries");

    // Plugging an adapter in later is picked up by the retry.
    bluez.add_adapter();
    wait_for_state(&daemon, "scanning").await;
    assert!(bluez.advertise(TAG, RUUVI, &df5(19.0, 40), -60));
    wait_for_reading(&daemon, 40).await;
}

#[tokio::test]
async fn a_wrong_adapter_name_is_reported_with_the_ones_that_exist() {
    let Some(bluez) = FakeBluez::start() else { return };
    bluez.add_adapter();
    let daemon = start(&bluez, "[ble]\nadapter = \"hci7\"\n");
    let status = wait_for_state(&daemon, "unavailable").await;
    let message = status["message"].as_str().unwrap();
    assert!(message.contains("hci7 not found") && message.contains("hci0"), "{status}");
}

#[tokio::test]
async fn with_d_bus_gone_the_scanner_gives_up_and_the_process_exits_with_an_error() {
    let Some(mut bluez) = FakeBluez::start() else { return };
    let mut daemon =
        scanning_with_a_tag(&bluez, "[ble]\nwatchdog = \"1s\"\nscan_restarts = 1\nmanager_restarts = 1\n", 50).await;

    bluez.kill_bus();
    let status = daemon.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "exit status 1 lets systemd restart the daemon");
    let log = daemon.log();
    assert!(log.contains("restarting the scan"), "{log}");
    assert!(log.contains("exiting so that the service manager restarts Gatehouse"), "{log}");
}

#[tokio::test]
async fn local_and_remote_receivers_give_the_same_readings_and_store_a_measurement_once() {
    let Some(bluez) = FakeBluez::start() else { return };
    bluez.add_adapter();
    let daemon = start(&bluez, "");
    wait_for_state(&daemon, "scanning").await;
    let gateway = daemon.account("kitchen-gw", "receiver", &[]).await;
    let post = async |sequence: u16, rssi: i16| {
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        // The Ruuvi Gateway sends the whole advertisement, flags included.
        let data =
            format!("0201061BFF9904{}", df5(22.0, sequence).iter().map(|b| format!("{b:02X}")).collect::<String>());
        let body = serde_json::json!({"data": {"coordinates": "", "timestamp": ts, "nonce": 1, "gw_mac": "C8:25:2D:8E:9C:2C",
            "tags": {TAG: {"rssi": rssi, "timestamp": ts, "data": data}}}});
        let response = reqwest::Client::new()
            .post(format!("http://{}/ruuvi", daemon.runtime.ingest))
            .basic_auth(&gateway.username, Some(&gateway.password))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    };

    // One measurement heard locally and by the remote gateway.
    assert!(bluez.advertise(TAG, RUUVI, &df5(22.0, 700), -50));
    wait_for_reading(&daemon, 700).await;
    post(700, -75).await;
    // One only remotely, one only locally: same sensor values, so the same reading.
    post(701, -75).await;
    wait_for_reading(&daemon, 701).await;
    assert!(bluez.advertise(TAG, RUUVI, &df5(22.0, 702), -50));
    wait_for_reading(&daemon, 702).await;

    let heard = daemon.get_json(&format!("/api/devices/{TAG_ID}/receivers")).await;
    let receivers: Vec<(String, i64)> = heard["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["receiver"].as_str().unwrap().to_string(), r["rssi"].as_i64().unwrap()))
        .collect();
    assert_eq!(receivers, [("ble:hci0".to_string(), -50), ("ruuvi:C8:25:2D:8E:9C:2C".to_string(), -75)], "{heard}");
    assert_eq!(daemon.get_json("/api/health").await["pipeline"]["duplicates"], 1);

    let rows = eventually(WAIT, async || {
        let db = rusqlite::Connection::open(daemon.database()).ok()?;
        let mut stmt = db
            .prepare(
                "SELECT sequence, temperature, humidity, pressure, accel_x, accel_y, accel_z, voltage, tx_power, \
                 movement_counter FROM readings ORDER BY sequence",
            )
            .ok()?;
        let rows: Vec<Vec<Option<f64>>> =
            stmt.query_map([], |r| (0..10).map(|i| r.get(i)).collect()).ok()?.collect::<Result<_, _>>().ok()?;
        (rows.len() == 3).then_some(rows)
    })
    .await
    .expect("three measurements stored, the shared one once");
    assert_eq!(rows.iter().map(|r| r[0]).collect::<Vec<_>>(), [Some(700.0), Some(701.0), Some(702.0)]);
    assert_eq!(rows[1][1..], rows[2][1..], "remote (701) and local (702) decode to the same values");
    assert_eq!(rows[0][1..], rows[2][1..]);
}

#[tokio::test]
async fn when_tags_fall_silent_the_scan_is_restarted_but_the_gateway_stays_up() {
    let Some(bluez) = FakeBluez::start() else { return };
    let mut daemon =
        scanning_with_a_tag(&bluez, "[ble]\nwatchdog = \"1s\"\nscan_restarts = 1\nmanager_restarts = 1\n", 60).await;

    // The only tag's battery dies: BlueZ is fine and answers every call, so this is no reason
    // to take the broker, the store and the API down.
    let status = eventually(Duration::from_secs(30), async || {
        let status = bluetooth(&daemon).await;
        (status["recoveries"]["scanRestarts"].as_u64()? >= 3 && status["recoveries"]["newManagers"] == 1)
            .then_some(status)
    })
    .await
    .unwrap_or_else(|| panic!("the ladder did not run:\n{}", daemon.log()));
    assert_eq!(status["state"], "recovering", "{status}");
    assert!(status["message"].as_str().unwrap().contains("no Ruuvi data"), "{status}");
    assert_eq!(daemon.get_json("/api/health").await["status"], "ok");

    // The tag comes back: scanning, and the ladder starts over.
    advertise_until_read(&bluez, &daemon, 20.5, 61).await;
    assert_eq!(bluetooth(&daemon).await["state"], "scanning");
    daemon.stop();
}

#[tokio::test]
async fn an_adapter_switched_off_for_long_stays_off_and_nothing_escalates() {
    let Some(bluez) = FakeBluez::start() else { return };
    let daemon =
        scanning_with_a_tag(&bluez, "[ble]\nwatchdog = \"1s\"\nscan_restarts = 1\nmanager_restarts = 1\n", 70).await;
    bluez.set_powered(false);
    let restarts = wait_for_state(&daemon, "powered_off").await["recoveries"]["scanRestarts"].clone();
    let starts = bluez.discovery_starts();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = bluetooth(&daemon).await;
    assert_eq!(status["state"], "powered_off", "the watchdog rests while the adapter is off: {status}");
    assert_eq!(status["recoveries"]["scanRestarts"], restarts, "{status}");
    assert_eq!(bluez.discovery_starts(), starts, "nobody switched the adapter back on behind the user's back");
}
