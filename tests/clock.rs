//! Steps of the gateway's own wall clock (NTP's first sync on a Pi without a real-time clock, a
//! person setting the time), injected into the real daemon with libfaketime: the daemon runs
//! with `LD_PRELOAD=libfaketime`, whose offset the test rewrites while it runs. Only the wall
//! clock moves (`FAKETIME_DONT_FAKE_MONOTONIC`), as with a real step. Checked: task timers keep
//! their remaining time (a step back does not delay a timeout by the step, a step forward does
//! not fire it early), silent tags go offline on time after a step back and tags still heard do
//! not flap offline after a step forward, a step far forward pauses retention instead of
//! deleting the history, and the step is visible in `/api/health`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_tests::mqtt::{options_as, Client};
use gatehouse_tests::reference::Device;
use gatehouse_tests::{eventually, require_tool, Credentials, Daemon};
use serde_json::{json, Value};

const HOUR_MS: i64 = 3_600_000;

/// libfaketime's preload library, wherever the architecture puts it (package libfaketime).
fn libfaketime() -> Option<PathBuf> {
    let found = std::fs::read_dir("/usr/lib")
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("faketime/libfaketime.so.1"))
        .find(|path| path.exists());
    match found {
        Some(path) => Some(path),
        None => require_tool("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
    }
}

/// A daemon whose wall clock is the real one plus the offset written to `offset_file`.
struct SteppedDaemon {
    daemon: Daemon,
    offset_file: tempfile::NamedTempFile,
}

impl SteppedDaemon {
    fn start(library: &Path, config: &str, extra: &[&str]) -> SteppedDaemon {
        let offset_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(offset_file.path(), "+0\n").unwrap();
        let daemon = Daemon::start_with_env(
            config,
            extra,
            &[
                ("LD_PRELOAD", library.to_str().unwrap()),
                ("FAKETIME_TIMESTAMP_FILE", offset_file.path().to_str().unwrap()),
                // Re-read the offset at most once a second (reading it on every call is slow).
                ("FAKETIME_CACHE_DURATION", "1"),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ],
        );
        SteppedDaemon { daemon, offset_file }
    }

    /// Sets the daemon's clock to the real time plus `offset_ms`; returns once the daemon
    /// reports a clock at that offset (libfaketime caches the offset for up to a second).
    async fn set_offset(&self, offset_ms: i64) {
        std::fs::write(self.offset_file.path(), format!("{:+}\n", offset_ms as f64 / 1000.0)).unwrap();
        let seen = eventually(Duration::from_secs(10), async || {
            let health = self.daemon.get_json("/api/health").await;
            let skew = health["clock"]["now"].as_i64()? - real_now_ms();
            ((skew - offset_ms).abs() < 1_500).then_some(())
        })
        .await;
        assert!(seen.is_some(), "the daemon's clock never took the offset {offset_ms} ms");
    }
}

fn real_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn send(daemon: &Daemon, device: &str, body: Value) -> Value {
    let (status, task) = daemon.post_json(&format!("/api/devices/{device}/tasks"), body).await;
    assert_eq!(status, 201, "{task}");
    task
}

async fn task_state(daemon: &Daemon, task: &Value) -> Value {
    daemon.get_json(&format!("/api/tasks/{}", task["id"].as_str().unwrap())).await
}

async fn wait_state(daemon: &Daemon, task: &Value, state: &str, within: Duration) -> Value {
    let mut last = Value::Null;
    let found = eventually(within, async || {
        last = task_state(daemon, task).await;
        (last["state"] == state).then(|| last.clone())
    })
    .await;
    found.unwrap_or_else(|| panic!("task never reached {state} within {within:?}; last seen: {last:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_timers_keep_their_remaining_time_across_clock_steps() {
    let Some(library) = libfaketime() else { return };
    let gateway = SteppedDaemon::start(&library, "", &[]);
    let daemon = &gateway.daemon;
    // Never acknowledges a reboot: only the gateway's ack timer can end such a task.
    let _deaf = Device::claimed(daemon, "deaf", &["reboot=ignore"]).await;
    let _other = Device::claimed(daemon, "other", &[]).await;

    // Back one hour while a 4 s ack window runs: the task still times out after about 4 s, not
    // an hour later.
    let back = send(
        daemon,
        "deaf",
        json!({ "command": "reboot", "ackTimeout": "4s", "retries": { "timedOut": 0, "failed": 0 } }),
    )
    .await;
    wait_state(daemon, &back, "sent", Duration::from_secs(10)).await;
    gateway.set_offset(-HOUR_MS).await;
    let back = wait_state(daemon, &back, "timed_out", Duration::from_secs(20)).await;
    let step = back["events"].as_array().unwrap().iter().find(|e| e["state"] == "clock_step").cloned();
    let step = step.unwrap_or_else(|| panic!("the step is in the task's history: {back:#}"));
    let step_ms = step["detail"]["stepMs"].as_i64().unwrap();
    assert!((step_ms + HOUR_MS).abs() < 2_000, "recorded step {step_ms} ms");

    let health = daemon.get_json("/api/health").await;
    assert!(health["clock"]["steps"].as_u64().unwrap() >= 1, "{:#}", health["clock"]);
    let last = health["clock"]["lastStepMs"].as_i64().unwrap();
    assert!((last + HOUR_MS).abs() < 2_000, "{:#}", health["clock"]);
    let metrics = reqwest::get(daemon.http("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gatehouse_clock_steps_total 1"), "{metrics}");

    // Forward two hours (from -1 h to +1 h) while a 30 s ack window runs, with other tasks
    // keeping the dispatcher busy: the window is not over at the step.
    let forward = send(
        daemon,
        "deaf",
        json!({ "command": "reboot", "ackTimeout": "30s", "expiresIn": "10m", "retries": { "timedOut": 0, "failed": 0 } }),
    )
    .await;
    let sent = wait_state(daemon, &forward, "sent", Duration::from_secs(10)).await;
    let expires_before = sent["expiresAt"].as_i64().unwrap();
    gateway.set_offset(HOUR_MS).await;
    for _ in 0..3 {
        let busy = send(daemon, "other", json!({ "command": "identify" })).await;
        wait_state(daemon, &busy, "succeeded", Duration::from_secs(10)).await;
    }
    let still = task_state(daemon, &forward).await;
    assert_eq!(still["state"], "sent", "a step forward fired the ack timer early: {still:#}");
    // The expiry the person chose moved with the clock: ten minutes from the request, still.
    let moved = still["expiresAt"].as_i64().unwrap() - expires_before;
    assert!((moved - 2 * HOUR_MS).abs() < 3_000, "expiresAt moved by {moved} ms");
    wait_state(daemon, &forward, "timed_out", Duration::from_secs(60)).await;

    // The dispatcher's memory and the database agree: after a restart, the same times.
    let stored: i64 = rusqlite::Connection::open(daemon.database())
        .unwrap()
        .query_row("SELECT expires_at FROM tasks WHERE id = ?1", [forward["id"].as_str().unwrap()], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, still["expiresAt"].as_i64().unwrap());
}

/// Tags heard through a Ruuvi Gateway's HTTP post, so that the test decides when each is heard.
async fn post_tags(ingest: SocketAddr, receiver: &Credentials, tags: &[(&str, u16)]) -> u16 {
    let tags: serde_json::Map<String, Value> = tags
        .iter()
        .map(|(mac, sequence)| {
            let compact: String = mac.chars().filter(|c| *c != ':').collect();
            let data = format!("0201061BFF99040512FC5394C37C0004FFFC040CAC3600{sequence:04X}{compact}");
            (mac.to_string(), json!({ "rssi": -60, "timestamp": real_now_ms() / 1000, "data": data }))
        })
        .collect();
    let body = json!({ "data": { "coordinates": "", "timestamp": real_now_ms() / 1000, "nonce": 1,
                                 "gw_mac": "C8:25:2D:8E:9C:2C", "tags": tags } });
    let response = reqwest::Client::new()
        .post(format!("http://{ingest}/ruuvi"))
        .basic_auth(&receiver.username, Some(&receiver.password))
        .json(&body)
        .send()
        .await;
    response.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_is_timed_in_real_time_across_clock_steps() {
    let Some(library) = libfaketime() else { return };
    let gateway = SteppedDaemon::start(&library, "[devices]\noffline_after = \"8s\"\n", &[]);
    let daemon = &gateway.daemon;
    let receiver = daemon.account("kitchen-gw", "receiver", &[]).await;
    let watcher = daemon.account("watcher", "service", &[]).await;
    let mut statuses = Client::connect(options_as("watcher", daemon.runtime.mqtt, &watcher)).await;
    statuses.subscribe_many(&["devices/home/+/status", "gatehouse/home/alerts"]).await;
    const HEARD: &str = "CB:B8:33:4C:88:4F";
    const SILENT: &str = "CB:B8:33:4C:88:50";
    let (heard_id, silent_id) = ("ruuvi-cbb8334c884f", "ruuvi-cbb8334c8850");
    for id in [heard_id, silent_id] {
        let rule = json!({ "name": format!("{id} silent"), "devices": id, "condition": "silent", "for": "10s" });
        let (status, created) = daemon.post_json("/api/alert-rules", rule).await;
        assert_eq!(status, 201, "{created}");
    }

    // Both heard, then only HEARD keeps being heard (every second) while the clock jumps
    // forward an hour: nothing may say HEARD is offline or silent at the step; SILENT goes
    // offline about 8 s and raises its alert about 10 s after it was last heard.
    assert_eq!(post_tags(daemon.runtime.ingest, &receiver, &[(HEARD, 1), (SILENT, 1)]).await, 200);
    let online = eventually(Duration::from_secs(10), async || {
        let devices = daemon.get_json("/api/devices").await;
        let all = devices.as_array()?.iter().filter(|d| d["online"] == true).count();
        (all == 2).then_some(())
    })
    .await;
    assert!(online.is_some(), "both tags online: {:#}", daemon.get_json("/api/devices").await);
    let keep_posting = {
        let (ingest, receiver) = (daemon.runtime.ingest, receiver.clone());
        tokio::spawn(async move {
            for sequence in 2u16.. {
                post_tags(ingest, &receiver, &[(HEARD, sequence)]).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let silent_at = real_now_ms();
    gateway.set_offset(HOUR_MS).await;
    let (mut offline, mut alerts) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(18);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, statuses.messages.recv()).await {
        let after = real_now_ms() - silent_at;
        if message.topic.ends_with("/alerts") {
            let alert = message.json();
            if alert["state"] == "active" {
                alerts.push((alert["deviceId"].as_str().unwrap_or_default().to_string(), after));
            }
        } else if message.text() == "offline" {
            offline.push((message.topic.clone(), after));
        }
    }
    assert!(
        offline.iter().all(|(topic, _)| !topic.contains(heard_id)),
        "a tag heard every second was reported offline at the step: {offline:?}"
    );
    assert!(alerts.iter().all(|(id, _)| id != heard_id), "a tag heard every second raised a silence alert: {alerts:?}");
    let silent_offline = offline.iter().find(|(topic, _)| topic.contains(silent_id));
    let (_, after) = silent_offline.unwrap_or_else(|| panic!("the silent tag went offline: {offline:?}"));
    assert!(*after >= 6_000, "the silent tag went offline {after} ms after it was last heard (offline_after 8 s)");
    let silent_alert = alerts.iter().find(|(id, _)| id == silent_id);
    let (_, after) = silent_alert.unwrap_or_else(|| panic!("the silent tag raised its alert: {alerts:?}"));
    assert!(*after >= 8_000, "the silence alert came {after} ms after the tag was last heard (rule: 10 s)");
    keep_posting.abort();

    // Back two hours: HEARD falls silent now and must go offline about 8 s later, not after
    // the two hours its last sighting was "in the future".
    let silent_at = real_now_ms();
    gateway.set_offset(-HOUR_MS).await;
    let topic_suffix = format!("/{heard_id}/status");
    let went = eventually(Duration::from_secs(20), async || match statuses.messages.try_recv() {
        Ok(message) if message.topic.ends_with(&topic_suffix) && message.text().contains("offline") => Some(()),
        _ => None,
    })
    .await;
    assert!(went.is_some(), "the tag that fell silent never went offline after the step back");
    assert!(real_now_ms() - silent_at >= 6_000);
}

/// Readings stored with a time before `before_ms`.
fn stored_readings(daemon: &Daemon, before_ms: i64) -> i64 {
    let db = rusqlite::Connection::open(daemon.database()).unwrap();
    db.query_row("SELECT COUNT(*) FROM readings WHERE ts < ?1", [before_ms], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_far_forward_pauses_retention_instead_of_erasing_the_history() {
    let Some(library) = libfaketime() else { return };
    // Retention of a day, looked at every second: three days forward, every reading stored
    // so far would be deleted at once if the clock were trusted.
    let config = "[store]\nretention = \"1d\"\nretention_interval = \"1s\"\n";
    let gateway = SteppedDaemon::start(&library, config, &[]);
    let daemon = &gateway.daemon;
    let receiver = daemon.account("kitchen-gw", "receiver", &[]).await;
    const TAG: &str = "CB:B8:33:4C:88:51";
    for sequence in 1..=3 {
        assert_eq!(post_tags(daemon.runtime.ingest, &receiver, &[(TAG, sequence)]).await, 200);
    }
    const DAY_MS: i64 = 24 * HOUR_MS;
    let before_step = real_now_ms() + DAY_MS;
    let stored =
        eventually(Duration::from_secs(10), async || (stored_readings(daemon, before_step) == 3).then_some(()));
    assert!(stored.await.is_some(), "3 readings stored before the step: {}", stored_readings(daemon, before_step));

    gateway.set_offset(3 * DAY_MS).await;
    // Readings keep coming (each batch is a turn of the writer, where retention runs).
    let mut sequence = 4;
    let paused = eventually(Duration::from_secs(10), async || {
        post_tags(daemon.runtime.ingest, &receiver, &[(TAG, sequence)]).await;
        sequence += 1;
        let store = daemon.get_json("/api/health").await["store"].clone();
        store["retentionPausedUntil"].as_i64().map(|until| (until, store))
    })
    .await;
    let (until, store) = paused.expect("retention paused after the step forward");
    let expected = real_now_ms() + 3 * DAY_MS + DAY_MS;
    assert!((until - expected).abs() < 60_000, "paused for a day from the new time: {store:#}");
    for _ in 0..4 {
        post_tags(daemon.runtime.ingest, &receiver, &[(TAG, sequence)]).await;
        sequence += 1;
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let store = daemon.get_json("/api/health").await["store"].clone();
    assert_eq!(store["rowsDeletedByRetention"], 0, "{store:#}");
    assert_eq!(stored_readings(daemon, before_step), 3, "the readings from before the step are kept");
    assert!(stored_readings(daemon, i64::MAX) >= 3 + 4, "and those after it stored");
    assert!(daemon.log().contains("deleting old readings is paused"), "the pause is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_with_its_clock_far_ahead_keeps_the_history() {
    let Some(library) = libfaketime() else { return };
    let config = "[store]\nretention = \"1d\"\nretention_interval = \"1s\"\n";
    let mut gateway = SteppedDaemon::start(&library, config, &[]);
    let receiver = gateway.daemon.account("kitchen-gw", "receiver", &[]).await;
    const TAG: &str = "CB:B8:33:4C:88:52";
    for sequence in 1..=3 {
        assert_eq!(post_tags(gateway.daemon.runtime.ingest, &receiver, &[(TAG, sequence)]).await, 200);
    }
    const DAY_MS: i64 = 24 * HOUR_MS;
    let before_start = real_now_ms() + DAY_MS;
    let stored = eventually(Duration::from_secs(10), async || {
        (stored_readings(&gateway.daemon, before_start) == 3).then_some(())
    });
    assert!(stored.await.is_some(), "3 readings stored");

    // Stopped, and started again with the clock three days ahead (a bad real-time clock at
    // boot): no step is seen while running, but every stored reading looks older than a day.
    gateway.daemon.stop();
    std::fs::write(gateway.offset_file.path(), format!("+{}\n", 3 * DAY_MS / 1000)).unwrap();
    gateway.daemon.start_again();
    let daemon = &gateway.daemon;
    let mut sequence = 4;
    let paused = eventually(Duration::from_secs(10), async || {
        post_tags(daemon.runtime.ingest, &receiver, &[(TAG, sequence)]).await;
        sequence += 1;
        let store = daemon.get_json("/api/health").await["store"].clone();
        store["retentionPausedUntil"].as_i64().map(|_| store)
    })
    .await;
    let store = paused.expect("retention paused at the start");
    for _ in 0..4 {
        post_tags(daemon.runtime.ingest, &receiver, &[(TAG, sequence)]).await;
        sequence += 1;
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert_eq!(daemon.get_json("/api/health").await["store"]["rowsDeletedByRetention"], 0, "{store:#}");
    assert_eq!(stored_readings(daemon, before_start), 3, "the readings from before the start are kept");
    assert!(daemon.log().contains("every stored reading is older than the retention"), "the pause is logged");

    // Restarted during the pause, the clock still ahead: devices were seen "recently" now, so
    // only the saved pause keeps the history.
    gateway.daemon.stop();
    gateway.daemon.start_again();
    let daemon = &gateway.daemon;
    for _ in 0..5 {
        post_tags(daemon.runtime.ingest, &receiver, &[(TAG, sequence)]).await;
        sequence += 1;
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let store = daemon.get_json("/api/health").await["store"].clone();
    assert!(store["retentionPausedUntil"].as_i64().is_some(), "still paused after the restart: {store:#}");
    assert_eq!(store["rowsDeletedByRetention"], 0, "{store:#}");
    assert_eq!(stored_readings(daemon, before_start), 3, "kept across the restart");
}
