//! Faults (issue 10): a full disk, a damaged or locked database at start, an upstream broker that
//! keeps going away. Each must end in a clear error and lose nothing: the broker keeps routing
//! while the disk is full, the store says why it cannot write (API and UI), saving resumes by
//! itself with nothing that was waiting lost, and a database that cannot be opened is never
//! overwritten.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gatehouse_tests::browser::Browser;
use gatehouse_tests::device::claim_device;
use gatehouse_tests::mosquitto::Mosquitto;
use gatehouse_tests::mqtt::{options, options_as, Client};
use gatehouse_tests::{eventually, gatehouse_bin, Daemon};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// A tmpfs of `size` mounted on `path`, unmounted on drop. `None` (skip) where mounting is not
/// allowed, except in CI, where that fails the test.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path).status();
        match status {
            Ok(status) if status.success() => Some(SmallDisk { path: path.to_path_buf() }),
            other => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "mounting a tmpfs failed in CI ({other:?}); the test needs root"
                );
                eprintln!("SKIPPED: cannot mount a tmpfs here ({other:?}); run as root");
                None
            }
        }
    }

    /// Writes zeros until the filesystem is full; returns the filler's path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let small = vec![0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Whether a PUBACK arrives on `eventloop` within `within` (false on a closed connection).
async fn puback_within(eventloop: &mut rumqttc::EventLoop, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

async fn health(daemon: &Daemon) -> Value {
    daemon.get_json("/api/health").await
}

fn rows_between(daemon: &Daemon, from: i64, to: i64) -> i64 {
    let db = rusqlite::Connection::open(daemon.database()).unwrap();
    db.query_row("SELECT COUNT(*) FROM readings WHERE ts >= ?1 AND ts < ?2", [from, to], |row| row.get(0)).unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_saving_but_not_the_broker_and_saving_resumes_with_nothing_lost() {
    let temp = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(temp.path(), "24m") else { return };
    let ui = gatehouse_tests::browser::ui_dir();
    let config = "[simulator]\nsilence_every = \"3650d\"\ndrop_probability = 0.0\n[log]\nlevel = \"info\"\n";
    let mut daemon = Daemon::start_in(
        temp,
        config,
        &["--simulate", "5", "--seed", "2", "--ui-dir", ui.join("dist").to_str().unwrap()],
    );
    let meter = claim_device(&daemon, "meter").await;
    let watcher_account = daemon.account("watcher", "service", &[("devices/home/#", "read")]).await;
    let mut watcher = Client::connect(options_as("watcher", daemon.runtime.mqtt, &watcher_account)).await;
    watcher.subscribe_many(&["devices/home/+/telemetry"]).await;
    eventually(WAIT, async || (health(&daemon).await["store"]["rowsWritten"].as_u64() > Some(5)).then_some(()))
        .await
        .expect("readings are stored before the disk fills");

    let filler = disk.fill();
    let full_from = now_ms();
    let mut degraded = Value::Null;
    eventually(WAIT, async || {
        degraded = health(&daemon).await;
        (degraded["status"] == "degraded").then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the store never reported the full disk: {degraded:#}"));
    let error = degraded["store"]["lastError"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("full"), "the error says why: {error}");
    assert!(degraded["store"]["writeErrors"].as_u64() > Some(0));

    // The broker keeps routing: tag readings reach a subscriber, and so does QoS 0 telemetry.
    while watcher.messages.try_recv().is_ok() {}
    let tag = watcher.collect(3, Duration::from_secs(10)).await;
    assert_eq!(tag.len(), 3, "tag readings are still routed while the disk is full");
    let (device, mut eventloop) = AsyncClient::new(options_as("meter", daemon.runtime.mqtt, &meter), 10);
    device
        .publish("devices/home/meter/telemetry", QoS::AtMostOnce, false, json!({"temperature": 1}).to_string())
        .await
        .unwrap();
    // A QoS 1 message is routed at once, but its PUBACK waits until it is stored.
    device
        .publish("devices/home/meter/telemetry", QoS::AtLeastOnce, false, json!({"temperature": 2}).to_string())
        .await
        .unwrap();
    let early_ack = puback_within(&mut eventloop, Duration::from_secs(3)).await;
    assert!(!early_ack, "no PUBACK while the message cannot be stored");
    let routed = watcher.next_on("devices/home/meter/telemetry", Duration::from_secs(5)).await;
    assert!(routed.is_some(), "device telemetry is still routed while the disk is full");

    // The UI says that readings are not being saved.
    if let Some(browser) = Browser::find() {
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
        browser
            .run_args("e2e/banner.mjs", &daemon, &shots, &["store-error", "present"])
            .unwrap_or_else(|f| panic!("{f}"));
    }

    // Space comes back: saving resumes by itself, the held PUBACK is sent, nothing waiting is lost.
    std::fs::remove_file(&filler).unwrap();
    let free_from = now_ms();
    let acked = puback_within(&mut eventloop, WAIT).await;
    assert!(acked, "the PUBACK comes once the message is stored");
    let mut recovered = Value::Null;
    eventually(WAIT, async || {
        recovered = health(&daemon).await;
        (recovered["status"] == "ok" && recovered["store"]["queueDepth"] == 0).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("saving never resumed: {recovered:#}"));
    // The error is over, not only hidden while nothing waits: with readings queued again it
    // must not read as degraded.
    assert!(recovered["store"]["lastError"].is_null(), "{recovered:#}");
    assert!(recovered["store"]["writeErrors"].as_u64().unwrap() > 0, "the failures stay counted");
    assert!(
        rows_between(&daemon, full_from, free_from) > 0,
        "readings from while the disk was full were kept and saved"
    );
    let db = rusqlite::Connection::open(daemon.database()).unwrap();
    let stored: f64 = db
        .query_row(
            "SELECT t.value FROM telemetry t JOIN devices d ON d.pk = t.device_pk WHERE d.id = 'meter' AND t.value = 2",
            [],
            |row| row.get(0),
        )
        .expect("the QoS 1 message sent during the outage is stored");
    assert_eq!(stored, 2.0);
    if let Some(browser) = Browser::find() {
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
        browser
            .run_args("e2e/banner.mjs", &daemon, &shots, &["store-error", "absent"])
            .unwrap_or_else(|f| panic!("{f}"));
    }
    daemon.stop();
    drop(daemon);
    drop(disk);
}

/// `gatehouse run` on `data_dir` with free ports; its exit status and output.
/// Killed after 30 s: a start that should have been refused must not hang the test.
fn run_once(data_dir: &Path) -> (std::process::ExitStatus, String) {
    let log = data_dir.join("refused-start.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(gatehouse_bin())
        .args([
            "run",
            "--no-ble",
            "--mqtt",
            "127.0.0.1:0",
            "--mqtt-tls",
            "off",
            "--mqtt-ws",
            "off",
            "--mqtt-wss",
            "off",
        ])
        .args(["--http", "127.0.0.1:0", "--ingest", "off", "--data-dir"])
        .arg(data_dir)
        .env("NO_COLOR", "1")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

fn digest(path: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_locked_database_stops_the_start_with_advice_and_is_never_overwritten() {
    // Damaged: random bytes where the database should be.
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("gatehouse.db");
    let garbage: Vec<u8> = (0..65_536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&database, &garbage).unwrap();
    let before = digest(&database);
    let (status, output) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || run_once(&dir)
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains("is damaged or is not a Gatehouse database") && output.contains("gatehouse restore"),
        "{output}"
    );
    assert_eq!(digest(&database), before, "the damaged file is left exactly as it was");

    // Locked: a real database with a device, held by another program's exclusive lock.
    let mut daemon = Daemon::start(&[]);
    daemon.account("kept", "service", &[]).await;
    daemon.stop();
    let database = daemon.database();
    let holder = rusqlite::Connection::open(&database).unwrap();
    // In WAL mode an exclusive transaction still lets readers in: a rollback journal locks all out.
    holder.execute_batch("PRAGMA journal_mode = DELETE;").unwrap();
    // Read before locking: closing any descriptor of the file drops this process's POSIX locks.
    let before = digest(&database);
    holder.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let (status, output) = tokio::task::spawn_blocking({
        let dir = daemon.data_dir.clone();
        move || run_once(&dir)
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("locked") && output.contains("another Gatehouse"), "{output}");
    holder.execute_batch("ROLLBACK;").unwrap();
    drop(holder);
    assert_eq!(digest(&database), before, "nothing was written while it was locked");
    daemon.start_again();
    let accounts = daemon.get_json("/api/broker/accounts").await;
    assert!(accounts.to_string().contains("\"kept\""), "the data is all there once the lock is gone: {accounts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_broker_that_keeps_going_away_gets_every_message_in_order() {
    let acl = "user gw1\ntopic readwrite fleet/gw1/#\n\nuser operator\ntopic readwrite fleet/#\n";
    let mut broker = Mosquitto::start(&[("gw1", "gw1-secret"), ("operator", "operator-secret")], acl, true);
    let mut operator_options = options("flap-watch", broker.addr);
    operator_options.set_credentials("operator", "operator-secret");
    operator_options.set_clean_session(false);
    let mut watch = Client::connect(operator_options.clone()).await;
    watch.subscribe_many(&["fleet/gw1/devices/home/+/telemetry"]).await;
    // Away (its session kept, messages queued for it) until the end.
    watch.kill();
    let config = format!(
        "gateway_id = \"gw1\"\n[[upstream]]\nname = \"fleet\"\nurl = \"{}\"\nusername = \"gw1\"\npassword = \"gw1-secret\"\n\
         prefix = \"fleet/{{gateway_id}}\"\nforward = [\"telemetry\"]\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n",
        broker.url()
    );
    let daemon = Daemon::start_with_config(&config, &[]);
    let meter = claim_device(&daemon, "flapper").await;
    let device = Client::connect(options_as("flapper", daemon.runtime.mqtt, &meter)).await;
    // Ten outages of the upstream while the device keeps sending.
    let mut sent = 0u32;
    let send_twenty = async |sent: &mut u32| {
        for _ in 0..20 {
            *sent += 1;
            let body = json!({"temperature": *sent}).to_string();
            device.client.publish("devices/home/flapper/telemetry", QoS::AtLeastOnce, false, body).await.unwrap();
        }
    };
    for _ in 0..10 {
        send_twenty(&mut sent).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.stop();
        send_twenty(&mut sent).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.start_again();
    }
    let mut watch = Client::connect(operator_options).await;
    let mut values = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while values.iter().max() != Some(&sent) && tokio::time::Instant::now() < deadline {
        if let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(5), watch.messages.recv()).await {
            values.push(message.json()["temperature"].as_u64().unwrap() as u32);
        }
    }
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<u32> = values.iter().copied().filter(|v| seen.insert(*v)).collect();
    assert_eq!(firsts, (1..=sent).collect::<Vec<_>>(), "every message arrived, first copies in order");
    let report = daemon.get_json("/api/upstreams").await["upstreams"][0].clone();
    assert_eq!(report["counters"]["droppedSize"], 0, "{report:#}");
    assert!(report["stats"]["connects"].as_u64() >= Some(10), "{report:#}");
    println!(
        "{sent} messages over 10 upstream outages: {} arrived, {} repeated (QoS 1)",
        values.len(),
        values.len() - firsts.len()
    );
}
