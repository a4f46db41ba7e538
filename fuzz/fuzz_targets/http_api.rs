//! The HTTP API's request parsing: paths, query parameters and JSON bodies, end to end.
//!
//! The input is `METHOD /path?query`, a newline, then the body. The first run starts a real
//! gateway in this process (`Gateway::start`: loopback listeners, a temporary data directory, a
//! web UI directory, no Bluetooth) with fixtures to reach past "unknown device": a Ruuvi tag with
//! a reading and a claimed LAN device with commands and a config schema. Each input is then sent
//! as a raw HTTP/1.1 request, so that axum's extractors (`Path`, `Query`, `Json`), each handler's
//! own checks (times, durations, limits, filters, names, calibration, pairing, alert rules,
//! tasks validated against the device's schemas, configurations, settings, account rules) and
//! what they store all see it exactly as they would from a client.
//!
//! Findings: a panic anywhere in the gateway (libFuzzer aborts on it, in any thread), a 500
//! answer, no answer within 20 s, and any answer that reveals a file outside the UI directory.
//! Routes that hash passwords (argon2, tens of ms each), copy or replace the whole database, or
//! tear down the fixtures are not sent (see `skipped`).
#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gatehouse_fuzz::split_once;
use gateway_core::config::Config;
use gateway_core::gateway::Gateway;
use gateway_core::pipeline::Advertisement;
use libfuzzer_sys::fuzz_target;

/// In a file next to the UI directory: no answer may ever contain it.
const OUTSIDE_MARKER: &str = "gatehouse-fuzz-outside-the-ui-directory";
const LAN_DEVICE: &str = "fuzz-esp32";

struct Fixture {
    http: SocketAddr,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(start)
}

fn start() -> Fixture {
    let root = Box::leak(Box::new(tempfile::tempdir().expect("temp dir"))).path().to_path_buf();
    let ui = root.join("ui");
    std::fs::create_dir_all(&ui).unwrap();
    std::fs::write(ui.join("index.html"), "<!doctype html><title>Gatehouse</title>").unwrap();
    std::fs::write(root.join("secret.txt"), OUTSIDE_MARKER).unwrap();
    let mut config = Config::default();
    config.data_dir = Some(root.join("data"));
    config.mqtt.listen = ([127, 0, 0, 1], 0).into();
    config.mqtt.tls_listen = None;
    config.mqtt.ws_listen = None;
    config.mqtt.wss_listen = None;
    config.http.listen = ([127, 0, 0, 1], 0).into();
    config.http.ui_dir = Some(ui);
    config.ble.enabled = false;
    config.simulator.tags = 0;

    let runtime = Box::leak(Box::new(
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime"),
    ));
    let gateway = runtime.block_on(Gateway::start(config)).expect("the gateway starts");
    let fixture = Fixture { http: gateway.runtime.http };

    // A Ruuvi tag (DF5 test vector) heard by the scanner.
    let data = hex("0201061BFF99040512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F");
    let advertisement = Advertisement {
        address: None,
        data,
        rssi: Some(-60),
        received_at: gateway_core::reading::now_ms(),
        measured_at: None,
        receiver: "fuzz".into(),
    };
    runtime.block_on(gateway.ingress.send(advertisement)).expect("the pipeline takes it");
    // A LAN device registered over HTTP and claimed with its code.
    let registration = format!(
        r#"{{"deviceId":"{LAN_DEVICE}","name":"Fuzz sensor","type":"sensor","registrationToken":"0123456789abcdef0123",
        "capabilities":{{"telemetry":[{{"name":"temperature","unit":"°C","type":"number"}},{{"name":"door","type":"boolean"}}],
        "commands":[{{"name":"reboot"}},{{"name":"set_interval","parameters":{{"type":"object",
        "properties":{{"seconds":{{"type":"integer","minimum":1,"maximum":86400}}}},"required":["seconds"]}}}},
        {{"name":"set_mode","parameters":{{"type":"object","properties":{{"mode":{{"enum":["eco","comfort"]}}}}}}}}],
        "config":{{"type":"object","properties":{{"interval":{{"type":"integer","minimum":1}},
        "label":{{"type":"string","maxLength":32,"pattern":"^[a-z]+$"}}}},"additionalProperties":false}}}}}}"#
    );
    let (status, body) = request(&fixture, "POST", "/api/devices/register", registration.as_bytes());
    assert_eq!(status, 202, "registration: {body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("registration reply");
    let code = reply["claimCode"].as_str().expect("a claim code");
    let (status, body) = request(&fixture, "POST", "/api/claims", format!(r#"{{"code":"{code}"}}"#).as_bytes());
    assert_eq!(status, 200, "claim: {body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while request(&fixture, "GET", "/api/devices/ruuvi-cbb8334c884f", b"").0 != 200 {
        assert!(Instant::now() < deadline, "the tag's reading never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::mem::forget(gateway);
    fixture
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// Routes not sent, as (method or `*`, path test): argon2 hashing, whole-database copies and
/// restores, and what would remove the fixtures for the rest of the run.
fn skipped(method: &str, path: &str) -> bool {
    let any = |suffixes: &[&str]| suffixes.iter().any(|s| path.ends_with(s));
    path.starts_with("/api/restore")
        || path.starts_with("/api/backup")
        || path.starts_with("/api/export/database")
        || path.starts_with("/api/provisioning")
        || (path.starts_with("/api/broker/accounts") && method != "GET")
        || any(&["/rotate-credentials", "/deactivate", "/claim-code"])
        || (path.starts_with("/api/devices/") && method == "DELETE")
}

/// Sends one request on a new connection; (status, body as text).
fn request(fixture: &Fixture, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(fixture.http).expect("the API listens");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut message = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        fixture.http,
        body.len()
    )
    .into_bytes();
    message.extend_from_slice(body);
    // The server may answer (and close) before reading a body it refuses.
    let _ = stream.write_all(&message);
    let mut answer = Vec::new();
    if let Err(error) = stream.read_to_end(&mut answer) {
        assert!(
            !matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "no answer within 20 s to {method} {target}"
        );
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fuzz_target!(|data: &[u8]| {
    let (line, body) = split_once(data, b'\n');
    let Ok(line) = std::str::from_utf8(line) else { return };
    let Some((method, target)) = line.split_once(' ') else { return };
    // What fits in a request line; anything else never reaches a handler.
    if method.is_empty()
        || method.len() > 10
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || target.bytes().any(|b| b <= b' ' || b == 0x7F)
    {
        return;
    }
    let path = target.split('?').next().unwrap_or_default();
    if skipped(method, path) {
        return;
    }
    let fixture = fixture();
    let (status, answer) = request(fixture, method, target, body);
    assert_ne!(status, 0, "no HTTP answer to {method} {target}");
    assert_ne!(status, 500, "{method} {target}: {answer}");
    assert!(!answer.contains(OUTSIDE_MARKER), "{method} {target} served a file outside the UI directory");
});
