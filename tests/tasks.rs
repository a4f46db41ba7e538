//! Task delivery against the real daemon, with the reference device (`gatehouse-device`) running
//! as a process: every outcome, timeouts and retries, expiry, cancel, the offline queue, duplicate
//! answers, and a `kill -9` of the gateway with tasks in every unfinished state.

use std::time::Duration;

use gatehouse_tests::mqtt::{options_as, Client};
use gatehouse_tests::reference::Device;
use gatehouse_tests::{eventually, Daemon};
use serde_json::{json, Value};

async fn send(daemon: &Daemon, device: &str, body: Value) -> Value {
    let (status, task) = daemon.post_json(&format!("/api/devices/{device}/tasks"), body).await;
    assert_eq!(status, 201, "{task}");
    assert_eq!(task["id"].as_str().unwrap().len(), 36, "a UUID: {task}");
    task
}

/// Polls the task until it is in one of `states`.
async fn wait_for(daemon: &Daemon, task: &Value, states: &[&str], within: Duration) -> Value {
    let path = format!("/api/tasks/{}", task["id"].as_str().unwrap());
    let mut last = Value::Null;
    let found = eventually(within, async || {
        last = daemon.get_json(&path).await;
        states.contains(&last["state"].as_str().unwrap_or_default()).then(|| last.clone())
    })
    .await;
    found.unwrap_or_else(|| panic!("task never reached {states:?}; last seen: {last:#}"))
}

/// The stored state transitions of a task, in order (notes such as `resent` left out).
fn transitions(task: &Value) -> Vec<String> {
    const STATES: &[&str] = &[
        "queued",
        "sent",
        "delivered",
        "in_progress",
        "succeeded",
        "failed",
        "rejected",
        "timed_out",
        "expired",
        "canceled",
    ];
    task["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["state"].as_str())
        .filter(|s| STATES.contains(s))
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_succeed_fail_or_are_rejected_and_bad_parameters_never_leave_the_gateway() {
    use futures_util::StreamExt;
    let daemon = Daemon::start(&[]);
    let (mut live, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/live", daemon.runtime.http)).await.expect("live socket");
    let spy = daemon.account("spy", "service", &[("devices/home/+/commands", "read")]).await;
    let mut watcher = Client::connect(options_as("spy", daemon.runtime.mqtt, &spy)).await;
    watcher.subscribe_many(&["devices/home/+/commands"]).await;
    let device = Device::claimed(&daemon, "ref-1", &["reboot=fail", "identify=reject"]).await;

    let ok = send(&daemon, "ref-1", json!({ "command": "set_interval", "params": { "seconds": 10 } })).await;
    assert!(["queued", "sent"].contains(&ok["state"].as_str().unwrap()), "{ok}");
    assert_eq!(ok["attempt"], 1);
    let ok = wait_for(&daemon, &ok, &["succeeded"], Duration::from_secs(10)).await;
    assert_eq!(ok["result"], json!({ "interval": 10 }), "the device's result is stored");
    assert_eq!(transitions(&ok), ["queued", "sent", "delivered", "succeeded"]);
    let stamps: Vec<i64> = ok["events"].as_array().unwrap().iter().map(|e| e["ts"].as_i64().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "timestamped in order: {stamps:?}");

    let failed = send(&daemon, "ref-1", json!({ "command": "reboot" })).await;
    let failed = wait_for(&daemon, &failed, &["failed", "succeeded", "rejected"], Duration::from_secs(10)).await;
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["message"], "reboot failed (simulated)");

    let rejected = send(&daemon, "ref-1", json!({ "command": "identify", "params": { "seconds": 3 } })).await;
    let rejected = wait_for(&daemon, &rejected, &["failed", "succeeded", "rejected"], Duration::from_secs(10)).await;
    assert_eq!(rejected["state"], "rejected");
    assert!(rejected["message"].as_str().unwrap().contains("not accepted"), "{rejected}");

    // Refused before queueing, with the schema's words.
    let refusals = [
        (json!({ "command": "set_interval", "params": { "seconds": "ten" } }), 400, "invalid_params", "/seconds"),
        (json!({ "command": "set_interval", "params": {} }), 400, "invalid_params", "seconds"),
        (json!({ "command": "identify", "params": { "seconds": 999 } }), 400, "invalid_params", "/seconds"),
        (json!({ "command": "self_destruct" }), 400, "unknown_command", "reboot"),
        (json!({ "command": "reboot", "ackTimeout": "1ms" }), 400, "invalid_request", "ackTimeout"),
        (json!({ "command": "reboot", "priority": 1 }), 400, "invalid_body", "priority"),
        (
            json!({ "command": "reboot", "params": { "blob": "x".repeat(20_000) } }),
            400,
            "invalid_request",
            "16384 bytes",
        ),
    ];
    for (body, status, code, mentions) in refusals {
        let (got, answer) = daemon.post_json("/api/devices/ref-1/tasks", body.clone()).await;
        assert_eq!((got, answer["error"]["code"].as_str().unwrap_or_default()), (status, code), "{body} → {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(mentions), "{body} → {answer}");
    }
    let (status, _) = daemon.post_json("/api/devices/nobody/tasks", json!({ "command": "reboot" })).await;
    assert_eq!(status, 404);

    // The device ran each of the three tasks exactly once, and saw nothing else.
    let executions = device.executions();
    assert_eq!(executions.len(), 3, "{executions:?}");
    assert!(executions.values().all(|&n| n == 1), "{executions:?}");
    let commands = watcher.collect(3, Duration::from_secs(5)).await;
    assert_eq!(commands.len(), 3);
    assert!(commands.iter().all(|m| !m.retain), "commands are never retained");
    let envelope = commands[0].json();
    assert_eq!(envelope["v"], 1);
    assert_eq!(envelope["type"], "task");
    assert_eq!(envelope["taskId"], ok["id"]);
    assert_eq!(envelope["command"], "set_interval");
    assert_eq!(envelope["ackTimeoutMs"], 30_000, "30 s default ack timeout");
    assert!(envelope["expiresAt"].as_i64().unwrap() > envelope["createdAt"].as_i64().unwrap());
    assert!(watcher.collect(1, Duration::from_millis(500)).await.is_empty(), "refused tasks were never sent");
    let mut late = Client::connect(options_as("spy-late", daemon.runtime.mqtt, &spy)).await;
    late.subscribe_many(&["devices/home/ref-1/commands"]).await;
    assert!(late.collect(1, Duration::from_millis(500)).await.is_empty(), "nothing retained on the command topic");

    let failed_only = daemon.get_json("/api/devices/ref-1/tasks?state=failed").await;
    assert_eq!(failed_only.as_array().unwrap().len(), 1);
    assert_eq!(failed_only[0]["command"], "reboot");
    assert_eq!(daemon.get_json("/api/devices/ref-1/tasks").await.as_array().unwrap().len(), 3);

    // Every state change was streamed to the UI.
    let mut streamed = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(message)) = live.next().await {
            let event: Value = serde_json::from_str(message.to_text().unwrap_or("{}")).unwrap_or_default();
            if event["type"] == "task" && event["data"]["id"] == ok["id"] {
                streamed.push(event["data"]["state"].as_str().unwrap().to_string());
            }
        }
    })
    .await;
    assert_eq!(streamed, ["queued", "sent", "delivered", "succeeded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_acknowledgement_is_retried_with_the_same_task_id() {
    let daemon = Daemon::start(&[]);
    let device = Device::claimed(&daemon, "ref-2", &["reboot=ignore-once"]).await;
    let task = send(
        &daemon,
        "ref-2",
        json!({ "command": "reboot", "ackTimeout": "1s", "retries": { "timedOut": 2, "failed": 0 } }),
    )
    .await;
    let task = wait_for(&daemon, &task, &["succeeded", "timed_out", "failed"], Duration::from_secs(20)).await;
    assert_eq!(task["state"], "succeeded", "{task:#}");
    assert_eq!(task["attempt"], 2);
    assert_eq!(transitions(&task), ["queued", "sent", "queued", "sent", "delivered", "succeeded"]);
    let retry = task["events"].as_array().unwrap().iter().find(|e| e["detail"]["retryInMs"].is_number()).unwrap();
    assert_eq!(retry["detail"]["after"], "AckTimeout");
    assert_eq!(device.executions()[task["id"].as_str().unwrap()], 1);

    // A device that never answers: each attempt times out, then the task is `timed_out`.
    let deaf = Device::claimed(&daemon, "ref-2b", &["reboot=ignore"]).await;
    let never = send(
        &daemon,
        "ref-2b",
        json!({ "command": "reboot", "ackTimeout": "1s", "retries": { "timedOut": 1, "failed": 0 } }),
    )
    .await;
    let never = wait_for(&daemon, &never, &["timed_out", "succeeded"], Duration::from_secs(20)).await;
    assert_eq!(transitions(&never), ["queued", "sent", "queued", "sent", "timed_out"]);
    assert_eq!(never["attempt"], 2);
    assert!(deaf.executions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_finishes_times_out_and_a_late_answer_is_ignored() {
    let daemon = Daemon::start(&[]);
    let device = Device::claimed(&daemon, "ref-3", &["reboot=hang", "identify=duplicate"]).await;
    let hung = send(
        &daemon,
        "ref-3",
        json!({ "command": "reboot", "executionTimeout": "1s", "retries": { "timedOut": 0, "failed": 0 } }),
    )
    .await;
    let hung = wait_for(&daemon, &hung, &["timed_out", "succeeded", "failed"], Duration::from_secs(15)).await;
    assert_eq!(hung["state"], "timed_out");
    assert_eq!(transitions(&hung), ["queued", "sent", "delivered", "timed_out"]);
    assert!(hung["events"].as_array().unwrap().iter().any(|e| e["state"] == "cancel_sent"), "told to stop: {hung:#}");

    // The next task waited for the hung one (one at a time, in order) and then ran.
    let twice = send(&daemon, "ref-3", json!({ "command": "identify" })).await;
    let twice = wait_for(&daemon, &twice, &["succeeded", "failed"], Duration::from_secs(10)).await;
    assert_eq!(twice["state"], "succeeded");
    let ignored = eventually(Duration::from_secs(5), async || {
        let task = daemon.get_json(&format!("/api/tasks/{}", twice["id"].as_str().unwrap())).await;
        task["events"].as_array().unwrap().iter().find(|e| e["state"] == "ignored_response").cloned()
    })
    .await
    .expect("the duplicate answer is recorded");
    assert_eq!(ignored["detail"]["status"], "succeeded");
    let health = daemon.get_json("/api/health").await;
    assert!(health["tasks"]["ignoredResponses"].as_u64().unwrap() >= 1, "{:#}", health["tasks"]);
    assert_eq!(health["tasks"]["timedOut"], 1);
    assert!(device.executions().values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_for_an_offline_device_wait_expire_or_are_canceled() {
    let daemon = Daemon::start(&[]);
    let mut device = Device::claimed(&daemon, "ref-4", &[]).await;
    device.power_off().await;
    eventually(Duration::from_secs(10), async || {
        let devices = daemon.get_json("/api/devices").await;
        let me = devices.as_array().unwrap().iter().find(|d| d["id"] == "ref-4").cloned()?;
        (me["online"] == false).then_some(())
    })
    .await
    .expect("the gateway sees the device go offline");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let first = send(&daemon, "ref-4", json!({ "command": "set_interval", "params": { "seconds": 5 } })).await;
    let short = send(&daemon, "ref-4", json!({ "command": "reboot", "expiresIn": "1s" })).await;
    let canceled = send(&daemon, "ref-4", json!({ "command": "identify" })).await;
    let second = send(&daemon, "ref-4", json!({ "command": "set_interval", "params": { "seconds": 6 } })).await;
    let (status, body) =
        daemon.post_json(&format!("/api/tasks/{}/cancel", canceled["id"].as_str().unwrap()), json!({})).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("canceled")), "{body}");
    let (status, body) =
        daemon.post_json(&format!("/api/tasks/{}/cancel", canceled["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("task_finished")),
        "terminal states are final: {body}"
    );
    let short = wait_for(&daemon, &short, &["expired"], Duration::from_secs(10)).await;
    assert_eq!(transitions(&short), ["queued", "expired"]);
    assert_eq!(daemon.get_json(&format!("/api/tasks/{}", first["id"].as_str().unwrap())).await["state"], "queued");

    // Back online: the waiting tasks are delivered, in the order they were sent.
    let mut device = Device::spawn(&daemon, "ref-4", &[]);
    device.expect("connected").await;
    let started_first = device.expect("task_started").await;
    let started_second = device.expect("task_started").await;
    assert_eq!(started_first["taskId"], first["id"]);
    assert_eq!(started_second["taskId"], second["id"]);
    for task in [&first, &second] {
        assert_eq!(wait_for(&daemon, task, &["succeeded"], Duration::from_secs(10)).await["state"], "succeeded");
    }
    let executions = device.executions();
    assert_eq!(executions.keys().cloned().collect::<Vec<_>>().len(), 2, "expired and canceled tasks never ran");

    // Retry makes a new task from a finished one.
    let (status, retried) =
        daemon.post_json(&format!("/api/tasks/{}/retry", short["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(status, 201, "{retried}");
    assert_eq!(retried["retryOf"], short["id"]);
    assert_ne!(retried["id"], short["id"]);
    assert_eq!(wait_for(&daemon, &retried, &["succeeded"], Duration::from_secs(10)).await["command"], "reboot");
    let (status, _) = daemon.post_json(&format!("/api/tasks/{}/retry", first["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(status, 409, "a succeeded task is not retried");

    // A deactivated device will never run what waits for it: those tasks end at once.
    device.power_off().await;
    let orphan = send(&daemon, "ref-4", json!({ "command": "reboot" })).await;
    let (status, _) = daemon.post_json("/api/devices/ref-4/deactivate", json!({})).await;
    assert_eq!(status, 200);
    let orphan = wait_for(&daemon, &orphan, &["canceled"], Duration::from_secs(5)).await;
    let last = orphan["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["detail"]["reason"], "device deactivated", "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_restarts_mid_task_reports_it_instead_of_running_it_twice() {
    let daemon = Daemon::start(&[]);
    let mut device = Device::claimed(&daemon, "ref-5", &["reboot=crash"]).await;
    let task = send(&daemon, "ref-5", json!({ "command": "reboot" })).await;
    device.expect("task_started").await;
    let exit = tokio::time::timeout(Duration::from_secs(10), device.child.wait()).await.unwrap().unwrap();
    assert_eq!(exit.code(), Some(9), "the device crashed after its acknowledgement");
    wait_for(&daemon, &task, &["delivered"], Duration::from_secs(10)).await;

    let device = Device::spawn(&daemon, "ref-5", &[]);
    let task = wait_for(&daemon, &task, &["failed", "succeeded"], Duration::from_secs(15)).await;
    assert_eq!(task["state"], "failed");
    assert!(task["message"].as_str().unwrap().contains("interrupted"), "{task}");
    assert_eq!(device.executions()[task["id"].as_str().unwrap()], 1, "never executed twice");
    assert!(task["events"].as_array().unwrap().iter().any(|e| e["state"] == "resent"), "resent on reconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_tasks_in_every_unfinished_state_loses_nothing_and_runs_nothing_twice() {
    let mut daemon = Daemon::start(&[]);
    let slow = Device::claimed(&daemon, "slow", &["reboot=slow:6"]).await;
    let hang = Device::claimed(&daemon, "hang", &["reboot=hang"]).await;
    let deaf = Device::claimed(&daemon, "deaf", &["reboot=ignore-once"]).await;

    let in_progress = send(&daemon, "slow", json!({ "command": "reboot", "executionTimeout": "20s" })).await;
    let queued = send(&daemon, "slow", json!({ "command": "identify" })).await;
    let delivered = send(
        &daemon,
        "hang",
        json!({ "command": "reboot", "executionTimeout": "8s", "retries": { "timedOut": 0, "failed": 0 } }),
    )
    .await;
    let sent = send(&daemon, "deaf", json!({ "command": "reboot", "ackTimeout": "20s" })).await;
    wait_for(&daemon, &in_progress, &["in_progress"], Duration::from_secs(10)).await;
    wait_for(&daemon, &delivered, &["delivered"], Duration::from_secs(10)).await;
    wait_for(&daemon, &sent, &["sent"], Duration::from_secs(10)).await;
    assert_eq!(daemon.get_json(&format!("/api/tasks/{}", queued["id"].as_str().unwrap())).await["state"], "queued");

    daemon.kill_and_restart();

    let done = |task: &Value, states: &'static [&'static str]| {
        let (daemon, task) = (&daemon, task.clone());
        async move { wait_for(daemon, &task, states, Duration::from_secs(40)).await }
    };
    assert_eq!(done(&in_progress, &["succeeded", "failed", "timed_out"]).await["state"], "succeeded");
    assert_eq!(done(&queued, &["succeeded", "failed", "timed_out"]).await["state"], "succeeded");
    assert_eq!(done(&sent, &["succeeded", "failed", "timed_out"]).await["state"], "succeeded");
    let delivered = done(&delivered, &["succeeded", "failed", "timed_out"]).await;
    assert_eq!(delivered["state"], "timed_out", "the hung task ends by its execution timer");
    for task in [&in_progress, &queued, &sent] {
        let stored = daemon.get_json(&format!("/api/tasks/{}", task["id"].as_str().unwrap())).await;
        assert_eq!(stored["attempt"], 1, "same task id, same attempt: {stored:#}");
    }

    // Each device ran each of its tasks exactly once.
    for (device, count) in [(&slow, 2), (&hang, 1), (&deaf, 1)] {
        let executions = device.executions();
        assert_eq!(executions.len(), count, "{}: {executions:?}", device.id);
        assert!(executions.values().all(|&n| n == 1), "{}: {executions:?}", device.id);
    }
    let health = daemon.get_json("/api/health").await;
    assert!(health["tasks"]["resent"].as_u64().unwrap() >= 3, "{:#}", health["tasks"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_a_task_and_prints_its_transitions_until_it_ends() {
    let daemon = Daemon::start(&[]);
    let _device = Device::claimed(&daemon, "ref-cli", &["reboot=slow:2", "identify=fail"]).await;
    let api = format!("http://{}", daemon.runtime.http);
    let cli = |args: &[&str]| {
        let (api, args) = (api.clone(), args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        async move {
            let output = tokio::process::Command::new(gatehouse_tests::gatehouse_bin())
                .args(&args)
                .args(["--api", &api])
                .output()
                .await
                .unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };

    let (status, stdout, stderr) =
        cli(&["send", "ref-cli", "set_interval", "--params", r#"{"seconds": 7}"#, "--wait"]).await;
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    let states: Vec<&str> =
        stdout.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|w| !w.contains(':')).collect();
    assert_eq!(states, ["queued", "sent", "delivered", "succeeded"], "{stdout}");
    assert!(stdout.contains(r#"result: {"interval":7}"#), "{stdout}");

    let (status, stdout, _) = cli(&["send", "ref-cli", "reboot", "--wait"]).await;
    assert_eq!(status, Some(0), "{stdout}");
    assert!(stdout.contains("in_progress"), "progress is shown: {stdout}");

    let (status, stdout, stderr) = cli(&["send", "ref-cli", "identify", "--wait"]).await;
    assert_eq!(status, Some(1), "{stdout}");
    assert!(stderr.contains("failed: identify failed (simulated)"), "{stderr}");

    let (status, _, stderr) = cli(&["send", "ref-cli", "set_interval", "--params", r#"{"seconds": 0}"#]).await;
    assert_eq!(status, Some(1));
    assert!(stderr.contains("/seconds"), "the schema error is shown: {stderr}");
    let (status, _, stderr) = cli(&["send", "ref-cli", "reboot", "--params", "not json"]).await;
    assert_eq!(status, Some(1));
    assert!(stderr.contains("--params is not JSON"), "{stderr}");

    let (status, stdout, _) = cli(&["tasks", "ref-cli"]).await;
    assert_eq!(status, Some(0));
    assert_eq!(stdout.lines().count(), 4, "a header and three tasks: {stdout}");
}

/// PUTs a desired configuration; returns the status and the answer.
async fn put_config(daemon: &Daemon, device: &str, config: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .put(daemon.http(&format!("/api/devices/{device}/config")))
        .json(&config)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn config_reported(daemon: &Daemon, device: &str, version: i64) -> Value {
    let mut last = Value::Null;
    eventually(Duration::from_secs(10), async || {
        last = daemon.get_json(&format!("/api/devices/{device}/config")).await;
        (last["reported"]["version"] == version).then(|| last.clone())
    })
    .await
    .unwrap_or_else(|| panic!("version {version} never reported; last: {last:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_configuration_reaches_the_device_now_or_when_it_returns() {
    let daemon = Daemon::start(&[]);
    let spy = daemon.account("spy", "service", &[("devices/home/+/config", "read")]).await;
    let mut watcher = Client::connect(options_as("spy", daemon.runtime.mqtt, &spy)).await;
    watcher.subscribe_many(&["devices/home/+/config"]).await;
    let mut device = Device::claimed(&daemon, "ref-cfg", &[]).await;
    let (status, _) = daemon.post_json("/api/devices/ref-cfg/config", json!({})).await;
    assert_eq!(status, 405, "PUT, not POST");
    let missing = reqwest::get(daemon.http("/api/devices/ref-cfg/config")).await.unwrap();
    assert_eq!(missing.status(), 404, "nothing set yet");

    let (status, view) = put_config(&daemon, "ref-cfg", json!({ "interval": 60, "label": "hall" })).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["version"], 1);
    let view = config_reported(&daemon, "ref-cfg", 1).await;
    assert_eq!(view["reported"]["status"], "applied");
    assert_eq!(view["inSync"], true);
    assert_eq!(device.expect("config").await["report"]["status"], "applied");
    let sent = watcher.collect(1, Duration::from_secs(5)).await;
    assert!(!sent[0].retain, "config is never retained");
    assert_eq!(
        sent[0].json(),
        json!({ "v": 1, "version": 1, "config": { "interval": 60, "label": "hall" }, "updatedAt": view["updatedAt"] })
    );

    // Checked against the schema the device declared; nothing is stored or sent when it fails.
    for (bad, mentions) in [
        (json!({ "interval": "often" }), "/interval"),
        (json!({ "interval": 0 }), "/interval"),
        (json!({ "colour": "red" }), "colour"),
        (json!([1, 2]), "JSON object"),
    ] {
        let (status, answer) = put_config(&daemon, "ref-cfg", bad.clone()).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_config")), "{bad}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(mentions), "{bad} → {answer}");
    }
    assert_eq!(daemon.get_json("/api/devices/ref-cfg/config").await["version"], 1);

    // Changed while the device is off: delivered when it subscribes again.
    device.power_off().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, view) = put_config(&daemon, "ref-cfg", json!({ "interval": 30 })).await;
    assert_eq!((status, view["version"].as_i64()), (200, Some(2)));
    assert_eq!(view["inSync"], false);
    assert_eq!(view["reported"]["version"], 1);
    let _device = Device::spawn(&daemon, "ref-cfg", &[]);
    let view = config_reported(&daemon, "ref-cfg", 2).await;
    assert_eq!((view["inSync"].as_bool(), view["desired"].clone()), (Some(true), json!({ "interval": 30 })));

    // The device may refuse a valid configuration; the reason is shown and it stays out of sync.
    let (status, _) = put_config(&daemon, "ref-cfg", json!({ "interval": 1 })).await;
    assert_eq!(status, 200);
    let view = config_reported(&daemon, "ref-cfg", 3).await;
    assert_eq!(view["reported"]["status"], "rejected");
    assert!(view["reported"]["message"].as_str().unwrap().contains("minimum"), "{view}");
    assert_eq!(view["inSync"], false);
    let health = daemon.get_json("/api/health").await;
    assert_eq!(health["deviceConfig"]["updated"], 3, "{:#}", health["deviceConfig"]);
}
