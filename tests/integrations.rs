//! Integrations other tools rely on, against the real daemon: Prometheus metrics (parsed with a
//! Prometheus text-format parser), online backup and validated restore, readings export.

use std::time::Duration;

use gatehouse_tests::{eventually, Daemon};

fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("the metrics parse as Prometheus text")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v))).map(|s| {
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        }
    })
}

#[tokio::test]
async fn metrics_parse_and_count_what_happens() {
    let daemon = Daemon::start(&["--simulate", "3", "--seed", "2"]);
    let scrape = eventually(Duration::from_secs(15), async || {
        let text = reqwest::get(daemon.http("/metrics")).await.ok()?.text().await.ok()?;
        let scrape = parse_metrics(&text);
        let all_online = value(&scrape, "gatehouse_devices_online", None)? == 3.0;
        (value(&scrape, "gatehouse_pipeline_readings_total", None)? > 0.0 && all_online).then_some(scrape)
    })
    .await
    .expect("readings and the three simulated tags are counted in /metrics");
    for name in [
        "gatehouse_mqtt_clients_connected",
        "gatehouse_mqtt_publishes_in_total",
        "gatehouse_ble_adverts_per_second",
        "gatehouse_ble_scan_restarts_total",
        "gatehouse_store_rows_written_total",
        "gatehouse_store_queue_depth",
        "gatehouse_store_database_bytes",
        "gatehouse_up",
    ] {
        assert!(value(&scrape, name, None).is_some(), "{name} is exported");
    }
    assert!(value(&scrape, "gatehouse_store_database_bytes", None).unwrap() > 0.0);
    assert!(value(&scrape, "gatehouse_http_requests_total", Some(("code", "2xx"))).unwrap() >= 1.0);

    // A refused request is counted too; tasks appear by state once there are some.
    let refused = reqwest::Client::new().get(daemon.http("/api/devices/nobody")).send().await.unwrap();
    assert_eq!(refused.status(), 404);
    let text = reqwest::get(daemon.http("/metrics")).await.unwrap().text().await.unwrap();
    assert!(value(&parse_metrics(&text), "gatehouse_http_requests_total", Some(("code", "4xx"))).unwrap() >= 1.0);
}

#[tokio::test]
async fn metrics_need_a_login_where_the_api_does() {
    let daemon = Daemon::start_with_config("[http]\nrequire_login = true\n", &[]);
    let anonymous = reqwest::get(daemon.http("/metrics")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let token = std::fs::read_to_string(daemon.data_dir.join("api-token")).unwrap();
    let scraped = reqwest::Client::new().get(daemon.http("/metrics")).bearer_auth(token.trim()).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
}

async fn usernames(daemon: &Daemon) -> Vec<String> {
    let accounts = daemon.get_json("/api/broker/accounts").await;
    accounts.as_array().unwrap().iter().filter_map(|a| a["username"].as_str().map(String::from)).collect()
}

#[tokio::test]
async fn backup_then_restore_round_trips_and_bad_files_are_refused() {
    let mut daemon = Daemon::start(&["--simulate", "2", "--seed", "5"]);
    daemon.account("kept-viewer", "service", &[]).await;
    eventually(Duration::from_secs(15), async || {
        let health = daemon.get_json("/api/health").await;
        (health["store"]["rowsWritten"].as_u64()? >= 6).then_some(())
    })
    .await
    .expect("some readings are stored");

    // The backup: a consistent SQLite file taken while the gateway writes.
    let response = reqwest::get(daemon.http("/api/backup")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-disposition"].to_str().unwrap().contains("attachment"));
    let bytes = response.bytes().await.unwrap();
    let file = daemon.data_dir.join("../backup-under-test.db");
    std::fs::write(&file, &bytes).unwrap();
    let (integrity, readings, identities) = {
        let conn = rusqlite::Connection::open_with_flags(&file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        let readings: i64 = conn.query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0)).unwrap();
        let identities: i64 =
            conn.query_row("SELECT COUNT(*) FROM identities WHERE username = 'kept-viewer'", [], |r| r.get(0)).unwrap();
        (integrity, readings, identities)
    };
    assert_eq!((integrity.as_str(), identities), ("ok", 1));
    assert!(readings > 0);

    // Changes after the backup are undone by the restore.
    daemon.account("after-backup", "service", &[]).await;

    // What is not an intact Gatehouse database is refused, and nothing is staged.
    let client = reqwest::Client::new();
    let refused =
        client.post(daemon.http("/api/restore")).body("not a database at all".repeat(50)).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "restore_invalid", "{body}");
    let mut truncated = bytes.to_vec();
    truncated.truncate(bytes.len() / 2);
    let refused = client.post(daemon.http("/api/restore")).body(truncated).send().await.unwrap();
    assert_eq!(refused.status(), 400, "half a database is refused");
    assert!(!daemon.data_dir.join("restore-pending.db").exists());

    let staged = client.post(daemon.http("/api/restore")).body(bytes.to_vec()).send().await.unwrap();
    assert_eq!(staged.status(), 202);
    let staged: serde_json::Value = staged.json().await.unwrap();
    assert_eq!(staged["backup"]["readings"].as_i64(), Some(readings), "{staged}");
    assert!(usernames(&daemon).await.contains(&"after-backup".to_string()), "nothing changes before the restart");

    daemon.kill_and_restart();
    let names = usernames(&daemon).await;
    assert!(names.contains(&"kept-viewer".to_string()) && !names.contains(&"after-backup".to_string()), "{names:?}");
    let kept_previous = std::fs::read_dir(&daemon.data_dir)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("gatehouse.db.before-restore-"));
    assert!(kept_previous, "the database before the restore is kept");
    assert!(!daemon.data_dir.join("restore-pending.db").exists(), "the restore is used once");
    std::fs::remove_file(file).unwrap();
}

#[tokio::test]
async fn readings_export_as_csv_and_json_lines_for_a_range() {
    let daemon = Daemon::start(&["--simulate", "1", "--seed", "9"]);
    let id = eventually(Duration::from_secs(15), async || {
        let devices = daemon.get_json("/api/devices").await;
        let device = devices.as_array()?.first()?.clone();
        let health = daemon.get_json("/api/health").await;
        (health["store"]["rowsWritten"].as_u64()? >= 4).then(|| device["id"].as_str().unwrap().to_string())
    })
    .await
    .expect("a tag with readings");

    let csv = reqwest::get(daemon.http(&format!("/api/devices/{id}/export"))).await.unwrap().text().await.unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("ts,rssi,temperature,humidity,pressure"), "{header}");
    let rows: Vec<&str> = lines.collect();
    assert!(rows.len() >= 3, "{csv}");
    let width = header.split(',').count();
    assert!(rows.iter().all(|r| r.split(',').count() == width), "every row has every column");
    let times: Vec<i64> = rows.iter().map(|r| r.split(',').next().unwrap().parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    // A range: from the second reading to (excluding) the last one.
    let (from, to) = (times[1], *times.last().unwrap());
    let url = daemon.http(&format!("/api/devices/{id}/export?format=json&from={from}&to={to}"));
    let json = reqwest::get(url).await.unwrap().text().await.unwrap();
    let objects: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!objects.is_empty());
    assert!(objects.iter().all(|o| o["ts"].as_i64().unwrap() >= from && o["ts"].as_i64().unwrap() < to));
    assert!(objects[0]["temperature"].is_number(), "{}", objects[0]);

    let bad = reqwest::get(daemon.http(&format!("/api/devices/{id}/export?format=xml"))).await.unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = reqwest::get(daemon.http("/api/devices/nobody/export")).await.unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn cli_backup_export_and_an_offline_restore() {
    let mut daemon = Daemon::start(&["--simulate", "1", "--seed", "4"]);
    daemon.account("cli-kept", "service", &[]).await;
    let out = daemon.data_dir.join("../cli-backup.db");
    let data_dir = daemon.data_dir.clone();
    let cli = |args: &[&str]| {
        std::process::Command::new(gatehouse_tests::gatehouse_bin())
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .output()
            .expect("run gatehouse")
    };
    let backup = cli(&["backup", "--out", out.to_str().unwrap()]);
    assert!(backup.status.success(), "{}", String::from_utf8_lossy(&backup.stderr));
    assert!(String::from_utf8_lossy(&backup.stdout).contains("backup written to"));
    let tag = eventually(Duration::from_secs(15), async || {
        daemon.get_json("/api/devices").await[0]["id"].as_str().map(String::from)
    })
    .await
    .expect("the simulated tag");
    let export = cli(&["export", &tag, "--format", "json"]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    assert!(String::from_utf8_lossy(&export.stdout)
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));

    // With the gateway stopped, `restore` checks the file and stages it for the next start.
    daemon.account("cli-after", "service", &[]).await;
    daemon.kill();
    std::fs::write(daemon.data_dir.join("../garbage.db"), "no").unwrap();
    let garbage = daemon.data_dir.join("../garbage.db");
    let refused = cli(&["restore", garbage.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not restored"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let restore = cli(&["restore", out.to_str().unwrap()]);
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    daemon.start_again();
    let names = usernames(&daemon).await;
    assert!(names.contains(&"cli-kept".to_string()) && !names.contains(&"cli-after".to_string()), "{names:?}");
}

/// One recorded webhook request: its head (lowercased) and body.
type Requests = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// How many of the first requests a test receiver answers 500; it may change during a test.
type Failures = std::sync::Arc<std::sync::atomic::AtomicUsize>;

/// A webhook receiver on loopback that answers 500 to the first `failures` requests, then 200.
async fn webhook_receiver(failures: usize) -> (std::net::SocketAddr, Requests) {
    let (address, requests, _) = webhook_receiver_with(failures, None).await;
    (address, requests)
}

/// Like [`webhook_receiver`], speaking TLS with `tls` when given.
async fn webhook_receiver_with(
    failures: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (std::net::SocketAddr, Requests, Failures) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests: Requests = Default::default();
    let seen = requests.clone();
    let failures = Failures::new(failures.into());
    let refusing = failures.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let failures = refusing.load(std::sync::atomic::Ordering::SeqCst);
            match &tls {
                Some(acceptor) => {
                    // A client that refuses the certificate ends the handshake: nothing recorded.
                    if let Ok(stream) = acceptor.accept(socket).await {
                        answer_webhook(stream, &seen, failures).await;
                    }
                }
                None => answer_webhook(socket, &seen, failures).await,
            }
        }
    });
    (address, requests, failures)
}

async fn answer_webhook<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut socket: S,
    seen: &Requests,
    failures: usize,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let (head, body) = loop {
        let n = socket.read(&mut buffer).await.unwrap_or(0);
        if n == 0 {
            break (String::new(), Vec::new());
        }
        data.extend_from_slice(&buffer[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while data.len() < end + 4 + length {
                let n = socket.read(&mut buffer).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buffer[..n]);
            }
            break (head, data[end + 4..].to_vec());
        }
    };
    let count = {
        let mut all = seen.lock().unwrap();
        all.push((head, body));
        all.len()
    };
    let status = if count <= failures { "500 Internal Server Error" } else { "200 OK" };
    let _ = socket
        .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
        .await;
    let _ = socket.shutdown().await;
}

/// A rule that raises an alert on every simulated tag at once (temperature above -100 °C).
async fn raise_an_alert_every_second(daemon: &Daemon) {
    let rule = serde_json::json!({
        "name": "Always", "devices": "ruuvi-*", "field": "temperature",
        "condition": "above", "threshold": -100, "clearAt": -101, "for": "1s", "severity": "warning"
    });
    let (status, created) = daemon.post_json("/api/alert-rules", rule).await;
    assert_eq!(status, 201, "{created}");
}

/// A private CA and a `localhost` server certificate it signed: (CA PEM, acceptor).
fn private_tls() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server =
        CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&server_key, &issuer).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![server.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
        )
        .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

#[tokio::test]
async fn alert_webhooks_are_signed_and_retried_until_accepted() {
    let (address, requests) = webhook_receiver(2).await;
    let config = format!(
        "[simulator]\nsilence_every = \"3650d\"\ndrop_probability = 0.0\n\n[[alerts.webhooks]]\nurl = \"http://{address}/hook\"\nsecret = \"s3cret\"\nevents = [\"raised\"]\n"
    );
    let daemon = Daemon::start_with_config(&config, &["--simulate", "1", "--seed", "3"]);
    raise_an_alert_every_second(&daemon).await;

    // Two refusals, then the third attempt is accepted (1 s and 2 s apart).
    let delivered = eventually(Duration::from_secs(20), async || {
        let all = requests.lock().unwrap().clone();
        (all.len() >= 3).then_some(all)
    })
    .await
    .expect("the webhook is retried until accepted");
    let bodies: Vec<&Vec<u8>> = delivered.iter().map(|(_, body)| body).collect();
    assert!(bodies[..3].iter().all(|b| *b == bodies[0]), "each retry sends the same alert");
    let (head, body) = &delivered[2];
    assert!(head.contains("x-gatehouse-attempt: 3"), "{head}");
    let payload: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(payload["event"], "alert.raised");
    assert!(payload["alert"]["deviceId"].as_str().unwrap().starts_with("ruuvi-"), "{payload}");
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"s3cret").unwrap();
    mac.update(body);
    let expected = format!("x-gatehouse-signature: sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert!(head.lines().any(|l| l == expected), "the body is signed with the shared secret:\n{head}");

    let counted = eventually(Duration::from_secs(5), async || {
        let health = daemon.get_json("/api/health").await;
        let webhooks = health["alertWebhooks"].clone();
        (webhooks["delivered"].as_u64()? >= 1).then_some(webhooks)
    })
    .await
    .expect("deliveries are counted");
    assert!(counted["failedAttempts"].as_u64().unwrap() >= 2, "{counted}");
}

/// The value of `name` in a recorded request head (lowercased).
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

#[tokio::test]
async fn alert_webhooks_waiting_when_the_gateway_is_killed_are_sent_after_the_restart() {
    // Refuses everything until the test says otherwise.
    let (address, requests, failures) = webhook_receiver_with(usize::MAX, None).await;
    let config = format!(
        "[simulator]\nsilence_every = \"3650d\"\ndrop_probability = 0.0\n\n[[alerts.webhooks]]\nurl = \"http://{address}/hook\"\nevents = [\"raised\"]\nmax_attempts = 50\n"
    );
    let mut daemon = Daemon::start_with_config(&config, &["--simulate", "1", "--seed", "3"]);
    raise_an_alert_every_second(&daemon).await;
    let refused = eventually(Duration::from_secs(20), async || {
        let all = requests.lock().unwrap().clone();
        (all.len() >= 2).then_some(all)
    })
    .await
    .expect("the alert is sent and refused twice");
    let delivery = header(&refused[0].0, "x-gatehouse-delivery").expect("a delivery id").to_string();
    let first: serde_json::Value = serde_json::from_slice(&refused[0].1).unwrap();
    assert_eq!(first["delivery"], delivery.as_str(), "the id is in the signed body too");
    let alert_id = first["alert"]["id"].clone();

    daemon.kill();
    let (waiting, attempts): (i64, i64) = rusqlite::Connection::open(daemon.database())
        .unwrap()
        .query_row("SELECT COUNT(*), MAX(attempts) FROM webhook_outbox", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(waiting, 1, "the undelivered change is in the database");
    // Counted before each request: none made is left uncounted.
    assert!(attempts >= 2, "{attempts} attempts recorded, 2 seen by the receiver");
    let sent_before_restart = requests.lock().unwrap().len();
    failures.store(0, std::sync::atomic::Ordering::SeqCst);
    daemon.start_again();

    let accepted = eventually(Duration::from_secs(20), async || {
        let all = requests.lock().unwrap().clone();
        (all.len() > sent_before_restart).then(|| all[sent_before_restart].clone())
    })
    .await
    .expect("the alert waiting at the kill is sent after the restart");
    let (head, body) = accepted;
    assert_eq!(header(&head, "x-gatehouse-delivery"), Some(delivery.as_str()), "the same delivery id:\n{head}");
    let attempt: usize = header(&head, "x-gatehouse-attempt").unwrap().parse().unwrap();
    assert!(attempt > 2, "the attempts before the kill count: attempt {attempt}");
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((payload["event"].as_str(), &payload["alert"]["id"]), (Some("alert.raised"), &alert_id));

    let health = eventually(Duration::from_secs(5), async || {
        let webhooks = daemon.get_json("/api/health").await["alertWebhooks"].clone();
        (webhooks["delivered"] == 1).then_some(webhooks)
    })
    .await
    .expect("the delivery is counted");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(requests.lock().unwrap().len(), sent_before_restart + 1, "sent once after the restart: {health}");
    let left: i64 = rusqlite::Connection::open(daemon.database())
        .unwrap()
        .query_row("SELECT COUNT(*) FROM webhook_outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "delivered changes leave the queue");
}

#[tokio::test]
async fn webhook_ingest_takes_telemetry_another_broker_forwards() {
    let daemon = Daemon::start(&[]);
    let _device = gatehouse_tests::device::active_device(&daemon, "esp-webhook").await;
    let receiver = daemon.account("emqx-bridge", "receiver", &[]).await;
    let viewer = daemon.account("viewer", "service", &[]).await;
    let url = format!("http://{}/webhook", daemon.runtime.ingest);
    let client = reqwest::Client::new();
    // EMQX's default `${*}` body: the payload as a JSON string.
    let body = serde_json::json!([
        {"clientid": "esp-webhook", "topic": "devices/home/esp-webhook/telemetry", "payload": "{\"temperature\": 22.5}", "qos": 1},
        {"topic": "devices/home/esp-webhook/telemetry", "payload": "{\"temperature\": \"hot\"}"},
        {"topic": "devices/home/nobody/telemetry", "payload": "{\"temperature\": 1}"},
        {"topic": "devices/lab/esp-webhook/telemetry", "payload": "{\"temperature\": 1}"}
    ]);

    let anonymous = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong_role =
        client.post(&url).basic_auth(&viewer.username, Some(&viewer.password)).json(&body).send().await.unwrap();
    assert_eq!(wrong_role.status(), 403);

    let answer =
        client.post(&url).basic_auth(&receiver.username, Some(&receiver.password)).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(answer["accepted"], 1, "{answer}");
    let reasons: Vec<&str> =
        answer["rejected"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons.len(), 3, "{answer}");
    assert!(
        reasons[0].contains("temperature") && reasons[1].contains("nobody") && reasons[2].contains("site `lab`"),
        "{reasons:?}"
    );

    let stored = eventually(Duration::from_secs(10), async || {
        let csv = reqwest::get(daemon.http("/api/devices/esp-webhook/export")).await.ok()?.text().await.ok()?;
        csv.lines().any(|l| l.ends_with(",temperature,22.5")).then_some(csv)
    })
    .await;
    assert!(stored.is_some(), "the forwarded value is stored like MQTT telemetry");
    let health = daemon.get_json("/api/health").await;
    assert_eq!(health["receivers"]["webhookMessages"], 1, "{}", health["receivers"]);
    assert_eq!(health["receivers"]["webhookRejected"], 3, "{}", health["receivers"]);

    let garbage =
        client.post(&url).basic_auth(&receiver.username, Some(&receiver.password)).body("{{nope").send().await.unwrap();
    assert_eq!(garbage.status(), 400);
}

#[tokio::test]
async fn alert_webhooks_reach_https_endpoints_and_refuse_untrusted_certificates() {
    let (ca_pem, acceptor) = private_tls();
    let (trusted, trusted_requests, _) = webhook_receiver_with(0, Some(acceptor.clone())).await;
    let (untrusted, untrusted_requests, _) = webhook_receiver_with(0, Some(acceptor)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let config = format!(
        "[simulator]\nsilence_every = \"3650d\"\ndrop_probability = 0.0\n\n\
         [[alerts.webhooks]]\nurl = \"https://localhost:{}/hook/T0KEN-IN-PATH\"\nca_file = \"{}\"\nevents = [\"raised\"]\n\n\
         [[alerts.webhooks]]\nurl = \"https://localhost:{}/other/T0KEN-IN-PATH\"\nevents = [\"raised\"]\nmax_attempts = 2\n",
        trusted.port(),
        ca_file.display(),
        untrusted.port()
    );
    let daemon = Daemon::start_with_config(&config, &["--simulate", "1", "--seed", "3"]);
    raise_an_alert_every_second(&daemon).await;

    let delivered = eventually(Duration::from_secs(20), async || {
        let all = trusted_requests.lock().unwrap().clone();
        (!all.is_empty()).then_some(all)
    })
    .await
    .expect("the https webhook trusting the private CA is delivered");
    let payload: serde_json::Value = serde_json::from_slice(&delivered[0].1).unwrap();
    assert_eq!(payload["event"], "alert.raised");
    assert!(delivered[0].0.starts_with("post /hook/t0ken-in-path http/1.1"), "{}", delivered[0].0);

    // Without the CA the certificate is refused: no request reaches the server, attempts counted.
    let counted = eventually(Duration::from_secs(20), async || {
        let webhooks = daemon.get_json("/api/health").await["alertWebhooks"].clone();
        (webhooks["givenUp"].as_u64()? >= 1).then_some(webhooks)
    })
    .await
    .expect("the untrusted endpoint is given up after its attempts");
    assert_eq!(counted["delivered"], 1, "{counted}");
    assert!(untrusted_requests.lock().unwrap().is_empty());
    let log = daemon.log();
    assert!(log.contains("UnknownIssuer") || log.contains("unknown issuer"), "the log says why");
    assert!(!log.contains("T0KEN-IN-PATH"), "webhook URLs (tokens in the path) stay out of the log");
}
