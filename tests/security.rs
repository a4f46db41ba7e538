//! The security suite (issue 10, "Hardening"), against the real daemon over real sockets:
//! nobody connects anonymously on any listener; every role of docs/security.md against every
//! topic class of docs/protocol.md, publish and subscribe, asserted on live MQTT connections (one
//! table of expected allow/deny, checked by the broker's reason codes and by what a privileged
//! subscriber actually receives); client ids bound to identities; claim-code and admin-password
//! guessing locked out; no secret in the log or in clear on disk; the HTTP API refuses
//! unauthenticated and cross-origin requests; WebSockets refuse foreign origins; TLS 1.2 and 1.3
//! only; private keys and secret files readable by the gateway's user alone.
//!
//! docs/reliability.md lists what each test asserts and how to run the suite.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gatehouse_tests::device::{claim_device, fresh_device, provisioning, registration, send_registration};
use gatehouse_tests::mqtt::{options, options_as, tls_transport, Client, Message};
use gatehouse_tests::mqtt5::{options5, Client5, ConnectCode5, PubAck5, SubAck5};
use gatehouse_tests::secrets::Secrets;
use gatehouse_tests::{eventually, require_tool, wire, Credentials, Daemon};
use reqwest::header::{AUTHORIZATION, COOKIE, ORIGIN, SET_COOKIE};
use rumqttc::{ConnectReturnCode, ConnectionError, QoS, SubscribeReasonCode};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Creates an MQTT identity in `site` through the API (the support helper uses the default site).
async fn account_in(daemon: &Daemon, username: &str, role: &str, site: &str, rules: &[(&str, &str)]) -> Credentials {
    let rules: Vec<Value> = rules.iter().map(|(f, a)| json!({"filter": f, "access": a})).collect();
    let (status, body) = daemon
        .post_json("/api/broker/accounts", json!({"username": username, "role": role, "site": site, "rules": rules}))
        .await;
    assert_eq!(status, 201, "create account {username} in {site}: {body}");
    Credentials { username: username.into(), password: body["password"].as_str().unwrap().into() }
}

fn refused(result: &Result<Client, ConnectionError>) -> Option<ConnectReturnCode> {
    match result {
        Err(ConnectionError::ConnectionRefused(code)) => Some(*code),
        _ => None,
    }
}

async fn health(daemon: &Daemon) -> Value {
    daemon.get_json("/api/health").await
}

fn counter(health: &Value, pointer: &str) -> u64 {
    health.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("no counter {pointer} in {health}"))
}

async fn ca_pem(daemon: &Daemon, api: Option<&Api>) -> String {
    match api {
        Some(api) => api.send(reqwest::Method::GET, "/api/broker/ca.pem", None).await.2,
        None => reqwest::get(daemon.http("/api/broker/ca.pem")).await.unwrap().text().await.unwrap(),
    }
}

fn ws_options(client_id: &str, port: u16, secure: bool, ca: &str) -> rumqttc::MqttOptions {
    let url = if secure { format!("wss://localhost:{port}/mqtt") } else { format!("ws://127.0.0.1:{port}/mqtt") };
    let mut o = rumqttc::MqttOptions::new(client_id, url, port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_transport(if secure { tls_transport(ca, true) } else { rumqttc::Transport::ws() });
    o
}

fn tls_options(client_id: &str, port: u16, ca: &str) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(client_id, "localhost", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_transport(tls_transport(ca, false));
    o
}

/// The HTTP API with the local API token (`Authorization: Bearer`), as the CLI uses it; for
/// installs where a login is required.
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(daemon: &Daemon) -> Api {
        let token = std::fs::read_to_string(daemon.data_dir.join("api-token")).expect("api-token file");
        Api { base: daemon.http(""), token: token.trim().to_string(), http: reqwest::Client::new() }
    }

    /// (status, JSON body or null, raw body)
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value, String) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body, text) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {text}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, body, _) = self.send(reqwest::Method::POST, path, Some(body)).await;
        (status, body)
    }

    async fn account(&self, username: &str, role: &str) -> Credentials {
        let (status, body) =
            self.post("/api/broker/accounts", json!({"username": username, "role": role, "rules": []})).await;
        assert_eq!(status, 201, "{body}");
        Credentials { username: username.into(), password: body["password"].as_str().unwrap().into() }
    }
}

/// Whether `topic` matches the subscription `filter` (MQTT rules: `+` one level, `#` the rest,
/// a leading wildcard never matches `$` topics; `$share/<group>/` is stripped).
fn filter_matches(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map(|(_, f)| f).unwrap_or(""),
        None => filter,
    };
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The probe number carried in a test message (`{"temperature": <marker>}`).
fn marker(message: &Message) -> Option<u64> {
    serde_json::from_slice::<Value>(&message.payload).ok()?.get("temperature")?.as_u64()
}

fn probe_payload(marker: u64) -> String {
    format!("{{\"temperature\":{marker}}}")
}

/// Drains `client` for at most `within`, returning marker → topics it arrived on, for markers in
/// `range`; stops early (after a short grace period for strays) once every marker of `expected`
/// has arrived.
async fn receive_markers(
    client: &mut Client,
    range: std::ops::Range<u64>,
    expected: &BTreeSet<u64>,
    within: Duration,
) -> BTreeMap<u64, Vec<String>> {
    let mut seen: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let until = grace.unwrap_or(deadline).min(deadline);
        match tokio::time::timeout_at(until, client.messages.recv()).await {
            Ok(Some(message)) => {
                if let Some(m) = marker(&message).filter(|m| range.contains(m)) {
                    seen.entry(m).or_default().push(message.topic.clone());
                }
            }
            _ => break,
        }
        if grace.is_none() && expected.iter().all(|m| seen.contains_key(m)) {
            grace = Some(tokio::time::Instant::now() + Duration::from_millis(400));
        }
    }
    seen
}

/// POSTs each body on its own connection, all at the same moment (the connections are opened
/// first, then every request is written before any answer is read); returns the statuses.
async fn all_at_once(daemon: &Daemon, path: &str, bodies: Vec<Value>) -> Vec<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = daemon.runtime.http;
    let mut streams = Vec::new();
    for _ in &bodies {
        streams.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let requests: Vec<Vec<u8>> = bodies
        .iter()
        .map(|body| {
            let body = body.to_string();
            format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .collect();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(streams.len()));
    let tasks: Vec<_> = streams
        .into_iter()
        .zip(requests)
        .map(|(mut stream, request)| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                stream.write_all(&request).await.unwrap();
                let mut answer = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
                String::from_utf8_lossy(&answer).split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

/// Well-formed claim codes (Crockford base32, `XXXXX-XXXXX`) that are not `real`.
fn wrong_codes(real: &str, count: usize) -> Vec<String> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut codes = Vec::new();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while codes.len() < count {
        let mut symbols = String::new();
        for _ in 0..10 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            symbols.push(ALPHABET[(state >> 59) as usize] as char);
        }
        let code = format!("{}-{}", &symbols[..5], &symbols[5..]);
        if code != real.to_uppercase() && !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}

// ---------------------------------------------------------------------------------------------
// Who may connect

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_are_refused_on_every_listener() {
    let daemon = Daemon::start(&[]);
    let rt = daemon.runtime.clone();
    let viewer = daemon.account("viewer", "service", &[]).await;
    let ca = ca_pem(&daemon, None).await;
    let before = health(&daemon).await;

    let anonymous_tcp = options("anon-tcp", rt.mqtt);
    let anonymous_tls = tls_options("anon-tls", rt.mqtt_tls.port(), &ca);
    let anonymous_ws = ws_options("anon-ws", rt.mqtt_ws.port(), false, &ca);
    let anonymous_wss = ws_options("anon-wss", rt.mqtt_wss.port(), true, &ca);
    let empty_password = |mut o: rumqttc::MqttOptions| {
        o.set_credentials("viewer", "");
        o
    };
    let wrong_password = |mut o: rumqttc::MqttOptions| {
        o.set_credentials("viewer", "0".repeat(40));
        o
    };
    let mut attempts: Vec<(&str, rumqttc::MqttOptions)> = vec![
        ("TCP, no credentials", anonymous_tcp.clone()),
        ("TLS, no credentials", anonymous_tls.clone()),
        ("WebSocket, no credentials", anonymous_ws.clone()),
        ("secure WebSocket, no credentials", anonymous_wss.clone()),
        ("TCP, empty password", empty_password(anonymous_tcp.clone())),
        ("WebSocket, empty password", empty_password(anonymous_ws.clone())),
        ("TLS, wrong password", wrong_password(anonymous_tls)),
        ("secure WebSocket, wrong password", wrong_password(anonymous_wss)),
    ];
    let mut refusals = 0;
    for (what, options) in attempts.drain(..) {
        let result = Client::try_connect(options).await;
        assert_eq!(refused(&result), Some(ConnectReturnCode::NotAuthorized), "{what}: {:?}", result.err());
        refusals += 1;
    }

    // MQTT 5: reason code 0x87 "not authorized".
    match Client5::try_connect(options5("anon-v5", rt.mqtt, None)).await {
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(ConnectCode5::NotAuthorized)) => refusals += 1,
        other => panic!("MQTT 5 anonymous: {:?}", other.err()),
    }
    // A username without the password flag, and a password without a username (raw CONNECTs).
    let mut body = wire::string(b"MQTT");
    body.extend_from_slice(&[4, 0b1000_0010, 0, 30]);
    body.extend(wire::string(b"user-only"));
    body.extend(wire::string(b"viewer"));
    let user_only = wire::exchange(daemon.runtime.mqtt, &[wire::packet(0x10, &body)], Duration::from_secs(5)).await;
    assert_eq!(user_only.connack_code(), Some(5), "username only: {user_only:?}");
    assert!(user_only.closed, "closed after the refusal");
    refusals += 1;
    let mut body = wire::string(b"MQTT");
    body.extend_from_slice(&[4, 0b0100_0010, 0, 30]);
    body.extend(wire::string(b"password-only"));
    body.extend(wire::string(viewer.password.as_bytes()));
    let password_only = wire::exchange(daemon.runtime.mqtt, &[wire::packet(0x10, &body)], Duration::from_secs(5)).await;
    assert!(
        password_only.connack_code() == Some(5) || (password_only.closed && password_only.received.is_empty()),
        "a password without a username is refused: {password_only:?}"
    );
    if password_only.connack_code() == Some(5) {
        refusals += 1;
    }

    // The gateway's own client-id prefix is refused even with valid credentials, on every listener.
    for (what, mut o) in [
        ("TCP", options("gatehouse-gateway", rt.mqtt)),
        ("WebSocket", ws_options("gatehouse-gateway", rt.mqtt_ws.port(), false, &ca)),
        ("TLS", tls_options("gatehouse", rt.mqtt_tls.port(), &ca)),
    ] {
        o.set_credentials(viewer.username.clone(), viewer.password.clone());
        let result = Client::try_connect(o).await;
        assert_eq!(refused(&result), Some(ConnectReturnCode::BadClientId), "{what}: {:?}", result.err());
    }

    // With credentials, every listener works.
    for (what, mut o) in [
        ("TCP", options("ok-tcp", rt.mqtt)),
        ("TLS", tls_options("ok-tls", rt.mqtt_tls.port(), &ca)),
        ("WebSocket", ws_options("ok-ws", rt.mqtt_ws.port(), false, &ca)),
        ("secure WebSocket", ws_options("ok-wss", rt.mqtt_wss.port(), true, &ca)),
    ] {
        o.set_credentials(viewer.username.clone(), viewer.password.clone());
        assert!(Client::try_connect(o).await.is_ok(), "{what} with credentials");
    }

    let after = health(&daemon).await;
    let failures = counter(&after, "/mqtt/authFailures") - counter(&before, "/mqtt/authFailures");
    assert_eq!(failures, refusals, "every refused login is counted: {after}");
    assert!(counter(&after, "/mqtt/connectRefused") - counter(&before, "/mqtt/connectRefused") >= refusals + 3);
    let mut secrets = Secrets::new();
    secrets.add("viewer's password", &viewer.password);
    secrets.assert_not_logged(&daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_are_bound_to_identities() {
    let daemon = Daemon::start(&[]);
    let addr = daemon.runtime.mqtt;
    let device = daemon.account("dev-1", "device", &[]).await;
    let _other = daemon.account("dev-2", "device", &[]).await;
    let provision = provisioning(&daemon).await;
    let receiver = daemon.account("rgw-1", "receiver", &[]).await;
    let service = daemon.account("svc", "service", &[]).await;
    let ha = daemon.account("ha", "homeassistant", &[]).await;
    use ConnectReturnCode::{BadClientId, NotAuthorized, Success};
    let long = "x".repeat(65);
    let table: Vec<(&str, &Credentials, &str, ConnectReturnCode)> = vec![
        ("device as itself", &device, "dev-1", Success),
        ("device posing as another device", &device, "dev-2", NotAuthorized),
        ("device, id in another case", &device, "DEV-1", NotAuthorized),
        ("provisioning, a valid device id", &provision, "fresh-9", Success),
        ("provisioning, not a device id", &provision, "Fresh 9", NotAuthorized),
        ("provisioning, 65 characters", &provision, &long, NotAuthorized),
        ("provisioning, a taken device's id", &provision, "dev-2", BadClientId),
        ("provisioning, reserved prefix", &provision, "gatehouse-9", BadClientId),
        ("receiver as itself", &receiver, "rgw-1", Success),
        ("receiver with its MAC", &receiver, "AA:BB:CC:DD:EE:01", Success),
        ("receiver posing as a device", &receiver, "dev-1", NotAuthorized),
        ("service, any id", &service, "dashboard-7", Success),
        ("service, the gateway's id", &service, "gatehouse-gateway", BadClientId),
        ("service, a slash", &service, "a/b", BadClientId),
        ("service, a wildcard", &service, "a+b", BadClientId),
        ("service, a $ id", &service, "$SYS", BadClientId),
        ("homeassistant, any id", &ha, "homeassistant-1", Success),
    ];
    for (what, credentials, client_id, expected) in table {
        let result = Client::try_connect(options_as(client_id, addr, credentials)).await;
        let got = match &result {
            Ok(_) => Success,
            Err(ConnectionError::ConnectionRefused(code)) => *code,
            Err(other) => panic!("{what}: {other:?}"),
        };
        assert_eq!(got, expected, "{what} ({client_id})");
        if let Ok(client) = result {
            client.client.disconnect().await.unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The ACL matrix

/// The roles of docs/security.md, as columns of the tables below. `service+rules` is a service
/// account with the extra rules `devices/home/+/commands` = write and `ruuvi/#` = read.
const ROLES: [&str; 6] = ["device", "provisioning", "service", "service+rules", "homeassistant", "receiver"];
const Y: bool = true;
const N: bool = false;
const NONE: [bool; 6] = [N; 6];

/// PUBLISH: may each role publish on this topic? The device is `dev-1` (claimed, site `home`),
/// the provisioning client `fresh-1`; `dev-2` is another device, `dev-3` a device of site `lab`.
#[rustfmt::skip]
const PUBLISH: &[(&str, [bool; 6])] = &[
    //                                                            device prov  svc   svc+  ha    receiver
    // own device topics
    ("devices/home/dev-1/telemetry",                             [Y,     N,    N,    N,    N,    N]),
    ("devices/home/dev-1/status",                                [Y,     N,    N,    N,    N,    N]),
    ("devices/home/dev-1/alert",                                 [Y,     N,    N,    N,    N,    N]),
    ("devices/home/dev-1/command_response",                      [Y,     N,    N,    N,    N,    N]),
    ("devices/home/dev-1/config_reported",                       [Y,     N,    N,    N,    N,    N]),
    ("devices/home/dev-1/commands",                              [N,     N,    N,    Y,    N,    N]),
    ("devices/home/dev-1/config",                                NONE),
    ("devices/home/dev-1/credentials",                           NONE),
    // another device
    ("devices/home/dev-2/telemetry",                             NONE),
    ("devices/home/dev-2/status",                                NONE),
    ("devices/home/dev-2/commands",                              [N,     N,    N,    Y,    N,    N]),
    ("devices/home/fresh-1/telemetry",                           NONE),
    // another site
    ("devices/lab/dev-3/telemetry",                              NONE),
    ("devices/lab/dev-3/commands",                               NONE),
    ("devices/lab/dev-1/telemetry",                              NONE),
    // the gateway's topics
    ("gatehouse/home/status",                                    NONE),
    ("gatehouse/home/health",                                    NONE),
    ("gatehouse/home/alerts",                                    NONE),
    ("gatehouse/home/ha/dev-1/reboot/set",                       [N,     N,    N,    N,    Y,    N]),
    ("gatehouse/home/ha/dev-1/reboot/task",                      NONE),
    ("gatehouse/lab/ha/dev-3/reboot/set",                        NONE),
    ("gatehouse/home/receivers/ruuvi/AA:BB:CC:DD:EE:01/gw_status", NONE),
    // provisioning
    ("provisioning/home/fresh-1/register",                       [N,     Y,    N,    N,    N,    N]),
    ("provisioning/home/fresh-1/reply",                          NONE),
    ("provisioning/home/fresh-2/register",                       NONE),
    ("provisioning/lab/fresh-1/register",                        NONE),
    // Ruuvi Gateway input (and the gateway's Ruuvi-compatible output namespace)
    ("ruuvi/AA:BB:CC:DD:EE:01/C1:C2:C3:C4:C5:C6",                [N,     N,    N,    N,    N,    Y]),
    ("ruuvi/AA:BB:CC:DD:EE:01/gw_status",                        [N,     N,    N,    N,    N,    Y]),
    // Home Assistant discovery
    ("homeassistant/status",                                     [N,     N,    Y,    Y,    Y,    N]),
    ("homeassistant/sensor/acl-probe/config",                    [N,     N,    Y,    Y,    Y,    N]),
    // system and anything else
    ("$SYS/broker/uptime",                                       NONE),
    ("misc/anything",                                            NONE),
];

/// SUBSCRIBE: may each role subscribe to this filter? With a concrete topic the filter matches,
/// on which a privileged client publishes a probe (`None`: nobody can publish there).
#[rustfmt::skip]
const SUBSCRIBE: &[(&str, Option<&str>, [bool; 6])] = &[
    //                                      probe topic                                    device prov  svc   svc+  ha    receiver
    // own device topics
    ("devices/home/dev-1/commands",         Some("devices/home/dev-1/commands"),          [Y,     N,    N,    N,    N,    N]),
    ("devices/home/dev-1/config",           Some("devices/home/dev-1/config"),            [Y,     N,    N,    N,    N,    N]),
    ("devices/home/dev-1/credentials",      Some("devices/home/dev-1/credentials"),       [Y,     N,    N,    N,    N,    N]),
    ("devices/home/dev-1/telemetry",        Some("devices/home/dev-1/telemetry"),         [N,     N,    Y,    Y,    Y,    N]),
    ("devices/home/dev-1/status",           Some("devices/home/dev-1/status"),            [N,     N,    Y,    Y,    Y,    N]),
    ("devices/home/dev-1/alert",            Some("devices/home/dev-1/alert"),             [N,     N,    Y,    Y,    Y,    N]),
    ("devices/home/dev-1/command_response", Some("devices/home/dev-1/command_response"),  NONE),
    ("devices/home/dev-1/config_reported",  Some("devices/home/dev-1/config_reported"),   NONE),
    ("devices/home/dev-1/#",                Some("devices/home/dev-1/probe"),             NONE),
    ("devices/home/dev-1/+",                Some("devices/home/dev-1/probe"),             NONE),
    // another device, wildcards over devices
    ("devices/home/dev-2/commands",         Some("devices/home/dev-2/commands"),          NONE),
    ("devices/home/dev-2/telemetry",        Some("devices/home/dev-2/telemetry"),         [N,     N,    Y,    Y,    Y,    N]),
    ("devices/home/+/telemetry",            Some("devices/home/dev-2/telemetry"),         [N,     N,    Y,    Y,    Y,    N]),
    ("devices/home/+/status",               Some("devices/home/dev-2/status"),            [N,     N,    Y,    Y,    Y,    N]),
    ("devices/home/+/commands",             Some("devices/home/dev-2/commands"),          NONE),
    ("devices/home/+/credentials",          Some("devices/home/dev-2/credentials"),       NONE),
    ("devices/home/#",                      Some("devices/home/dev-2/config"),            NONE),
    // another site
    ("devices/+/dev-1/commands",            Some("devices/lab/dev-1/commands"),           NONE),
    ("devices/+/+/telemetry",               Some("devices/lab/dev-3/telemetry"),          NONE),
    ("devices/lab/dev-3/telemetry",         Some("devices/lab/dev-3/telemetry"),          NONE),
    ("devices/lab/+/telemetry",             Some("devices/lab/dev-3/telemetry"),          NONE),
    ("devices/lab/dev-1/commands",          Some("devices/lab/dev-1/commands"),           NONE),
    // the gateway's topics
    ("gatehouse/home/health",               Some("gatehouse/home/health"),                [N,     N,    Y,    Y,    Y,    N]),
    ("gatehouse/home/#",                    Some("gatehouse/home/probe"),                 [N,     N,    Y,    Y,    Y,    N]),
    ("gatehouse/home/ha/+/+/set",           Some("gatehouse/home/ha/dev-1/reboot/set"),   [N,     N,    Y,    Y,    Y,    N]),
    ("gatehouse/home/receivers/ruuvi/#",    Some("gatehouse/home/receivers/ruuvi/AA:BB:CC:DD:EE:01/gw_status"), [N, N, Y, Y, Y, N]),
    ("gatehouse/lab/#",                     Some("gatehouse/lab/probe"),                  NONE),
    ("gatehouse/+/health",                  Some("gatehouse/lab/health"),                 NONE),
    ("gatehouse/#",                         Some("gatehouse/lab/probe"),                  NONE),
    // provisioning
    ("provisioning/home/fresh-1/reply",     Some("provisioning/home/fresh-1/reply"),      [N,     Y,    N,    N,    N,    N]),
    ("provisioning/home/fresh-1/register",  Some("provisioning/home/fresh-1/register"),   NONE),
    ("provisioning/home/fresh-2/reply",     Some("provisioning/home/fresh-2/reply"),      NONE),
    ("provisioning/home/+/reply",           Some("provisioning/home/fresh-2/reply"),      NONE),
    ("provisioning/lab/fresh-1/reply",      Some("provisioning/lab/fresh-1/reply"),       NONE),
    // Ruuvi topics
    ("ruuvi/#",                             Some("ruuvi/AA:BB:CC:DD:EE:02/C1:C2:C3:C4:C5:C6"), [N, N,    N,    Y,    N,    N]),
    ("ruuvi/+/gw_status",                   Some("ruuvi/AA:BB:CC:DD:EE:02/gw_status"),    [N,     N,    N,    Y,    N,    N]),
    // Home Assistant discovery
    ("homeassistant/#",                     Some("homeassistant/sensor/acl-probe/config"), [N,    N,    Y,    Y,    Y,    N]),
    ("homeassistant/status",                Some("homeassistant/status"),                 [N,     N,    Y,    Y,    Y,    N]),
    // system topics, everything, leading wildcards, shared subscriptions
    ("$SYS/#",                              None,                                         NONE),
    ("$SYS/broker/uptime",                  None,                                         NONE),
    ("#",                                   Some("misc/probe"),                           NONE),
    ("+/+/+/telemetry",                     Some("devices/home/dev-2/telemetry"),         NONE),
    ("+/home/dev-1/commands",               Some("devices/home/dev-1/commands"),          NONE),
    // Shared subscriptions are refused for every role (rumqttd's router panicked on X + $share/g/X).
    ("$share/acl/devices/home/+/telemetry", Some("devices/home/dev-2/telemetry"),         NONE),
    ("$share/acl/devices/home/dev-1/commands", Some("devices/home/dev-1/commands"),       NONE),
    ("misc/#",                              Some("misc/probe"),                           NONE),
];

/// Every role × every topic class × publish/subscribe, on live connections. A publish cell is
/// checked twice: by the MQTT 5 PUBACK reason (success / "not authorized") and by whether a
/// privileged subscriber of each site receives the message (on the topic, or, for receivers,
/// under `gatehouse/home/receivers/`). A subscribe cell is checked three times: by the MQTT 5
/// SUBACK reason, by the MQTT 3.1.1 SUBACK code of a SUBSCRIBE of all filters at once, and by
/// which probe messages published by a privileged client the subscriber then actually gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_matrix_every_role_every_topic_class_publish_and_subscribe() {
    let daemon = Daemon::start(&[]);
    let addr = daemon.runtime.mqtt;
    let device = claim_device(&daemon, "dev-1").await;
    let _dev2 = daemon.account("dev-2", "device", &[]).await;
    let _dev3 = account_in(&daemon, "dev-3", "device", "lab", &[]).await;
    let provision = provisioning(&daemon).await;
    let service = daemon.account("svc", "service", &[]).await;
    let nodered =
        daemon.account("nodered", "service", &[("devices/home/+/commands", "write"), ("ruuvi/#", "read")]).await;
    let ha = daemon.account("ha", "homeassistant", &[]).await;
    let receiver = daemon.account("rgw-1", "receiver", &[]).await;
    let identities: [(&str, &Credentials); 6] = [
        ("dev-1", &device),
        ("fresh-1", &provision),
        ("svc-probe", &service),
        ("nodered-probe", &nodered),
        ("ha-probe", &ha),
        ("rgw-1", &receiver),
    ];

    // Privileged observers (and probe publishers): service accounts granted whole namespaces of
    // their site. `$SYS` cannot be granted to anyone.
    let home_rules = ["devices/home/#", "provisioning/home/#", "gatehouse/home/#", "ruuvi/#", "misc/#"];
    let spy_home_account = daemon.account("spy-home", "service", &home_rules.map(|f| (f, "readwrite"))).await;
    let lab_rules = ["devices/lab/#", "provisioning/lab/#", "gatehouse/lab/#"];
    let spy_lab_account = account_in(&daemon, "spy-lab", "service", "lab", &lab_rules.map(|f| (f, "readwrite"))).await;
    let mut spy_home = Client::connect(options_as("spy-home", addr, &spy_home_account)).await;
    let mut home_filters = home_rules.to_vec();
    home_filters.push("homeassistant/#");
    let codes = spy_home.subscribe_many(&home_filters).await;
    assert!(codes.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_))), "{codes:?}");
    let mut spy_lab = Client::connect(options_as("spy-lab", addr, &spy_lab_account)).await;
    let codes = spy_lab.subscribe_many(&lab_rules).await;
    assert!(codes.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_))), "{codes:?}");

    let mut mismatches: Vec<String> = Vec::new();
    let mut cells = 0usize;
    let mut checks = 0usize;
    for (r, role) in ROLES.iter().enumerate() {
        let (client_id, credentials) = identities[r];
        let connect = || Client5::connect(options5(client_id, addr, Some(credentials)));

        // Publish: the PUBACK reason of every cell, then what the observers received.
        let mut client = connect().await;
        let mut acks = Vec::new();
        let mut denied_in_a_row = 0;
        for (i, (topic, _)) in PUBLISH.iter().enumerate() {
            // Ten refused publishes in a row end the session (docs/security.md): start a new
            // one before that.
            if denied_in_a_row == 9 {
                client.disconnect().await;
                client = connect().await;
                denied_in_a_row = 0;
            }
            let ack = client.publish_acked(topic, probe_payload(100_000 + (r * 1000 + i) as u64)).await;
            if ack == Some(PubAck5::Success) {
                denied_in_a_row = 0;
            } else {
                denied_in_a_row += 1;
            }
            if ack.is_none() {
                client.disconnect().await;
                client = connect().await;
                denied_in_a_row = 0;
            }
            acks.push(ack);
        }
        client.disconnect().await;
        let range = (100_000 + r as u64 * 1000)..(100_000 + r as u64 * 1000 + 1000);
        let expected_markers: BTreeSet<u64> = PUBLISH
            .iter()
            .enumerate()
            .filter(|(_, (topic, allowed))| allowed[r] && !topic.starts_with('$'))
            .map(|(i, _)| range.start + i as u64)
            .collect();
        let mut observed =
            receive_markers(&mut spy_home, range.clone(), &expected_markers, Duration::from_secs(5)).await;
        for (m, topics) in
            receive_markers(&mut spy_lab, range.clone(), &BTreeSet::new(), Duration::from_millis(300)).await
        {
            observed.entry(m).or_default().extend(topics);
        }
        for (i, (topic, allowed)) in PUBLISH.iter().enumerate() {
            let expected = allowed[r];
            cells += 1;
            let ack = acks[i];
            let ack_ok = if expected { ack == Some(PubAck5::Success) } else { ack == Some(PubAck5::NotAuthorized) };
            checks += 1;
            if !ack_ok {
                mismatches.push(format!(
                    "PUBLISH {role:13} {topic}: expected {}, PUBACK {ack:?}",
                    if expected { "allowed" } else { "denied" }
                ));
            }
            if topic.starts_with('$') {
                continue;
            }
            checks += 1;
            let delivered = observed.get(&(range.start + i as u64)).cloned().unwrap_or_default();
            let want: Vec<String> = if !expected {
                vec![]
            } else if *role == "receiver" {
                vec![format!("gatehouse/home/receivers/{topic}")]
            } else {
                vec![topic.to_string()]
            };
            if delivered != want {
                mismatches
                    .push(format!("PUBLISH {role:13} {topic}: expected delivery on {want:?}, observed {delivered:?}"));
            }
        }

        // Subscribe: the MQTT 5 SUBACK reason of each filter, then probes on every filter.
        let mut client = connect().await;
        for (filter, _, allowed) in SUBSCRIBE {
            let expected = allowed[r];
            cells += 1;
            checks += 1;
            if filter.starts_with("$share/") {
                // Let the router settle the plain subscription to the same filter first (see the
                // MQTT 3.1.1 part below).
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let code = client.subscribe_one(filter).await;
            let ok = if expected { matches!(code, SubAck5::Success(_)) } else { code == SubAck5::NotAuthorized };
            if !ok {
                mismatches.push(format!(
                    "SUBSCRIBE {role:13} {filter}: expected {}, MQTT 5 SUBACK {code:?}",
                    if expected { "granted" } else { "not authorized" }
                ));
            }
        }
        // Collect what arrives on the subscriptions through a plain MQTT 3.1.1 observer? No:
        // the MQTT 5 client itself is the subscriber; its messages go to `client.messages`.
        let probe_base = 500_000 + r as u64 * 1000;
        for (i, (_, probe, _)) in SUBSCRIBE.iter().enumerate() {
            let Some(probe) = probe else { continue };
            let publisher = if probe.split('/').nth(1) == Some("lab") { &spy_lab } else { &spy_home };
            publisher
                .client
                .publish(*probe, QoS::AtLeastOnce, false, probe_payload(probe_base + i as u64))
                .await
                .unwrap();
        }
        let granted: Vec<&str> = SUBSCRIBE.iter().filter(|(_, _, a)| a[r]).map(|(f, _, _)| *f).collect();
        let expected_probes: BTreeSet<u64> = SUBSCRIBE
            .iter()
            .enumerate()
            .filter_map(|(i, (_, probe, _))| probe.map(|p| (i, p)))
            .filter(|(_, probe)| granted.iter().any(|f| filter_matches(f, probe)))
            .map(|(i, _)| probe_base + i as u64)
            .collect();
        let mut received: BTreeSet<u64> = BTreeSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut grace: Option<tokio::time::Instant> = None;
        loop {
            let until = grace.unwrap_or(deadline).min(deadline);
            match tokio::time::timeout_at(until, client.messages.recv()).await {
                Ok(Some(message)) => {
                    if let Some(m) = marker(&message).filter(|m| (probe_base..probe_base + 1000).contains(m)) {
                        received.insert(m);
                    }
                }
                _ => break,
            }
            if grace.is_none() && expected_probes.is_subset(&received) {
                grace = Some(tokio::time::Instant::now() + Duration::from_millis(400));
            }
        }
        for (i, (filter, probe, _)) in SUBSCRIBE.iter().enumerate() {
            let Some(probe) = probe else { continue };
            checks += 1;
            let m = probe_base + i as u64;
            if expected_probes.contains(&m) != received.contains(&m) {
                mismatches.push(format!(
                    "DELIVERY  {role:13} probe on {probe} (for {filter}): expected {}, {}",
                    if expected_probes.contains(&m) { "delivered" } else { "not delivered" },
                    if received.contains(&m) { "delivered" } else { "not delivered" },
                ));
            }
        }
        client.disconnect().await;

        // MQTT 3.1.1: one SUBSCRIBE with every filter gets one return code per filter, in order.
        let mut v4 = Client::connect(options_as(client_id, addr, credentials)).await;
        // Shared subscriptions go one at a time, after the rest: a plain and a shared
        // subscription to the same filter in one SUBSCRIBE crash rumqttd's router in debug
        // builds (bad_input.rs, `shared_and_plain_subscriptions_in_one_packet_…`).
        let (shared, plain): (Vec<_>, Vec<_>) = SUBSCRIBE.iter().partition(|(f, _, _)| f.starts_with("$share/"));
        let filters: Vec<&str> = plain.iter().map(|(f, _, _)| *f).collect();
        let mut codes = v4.subscribe_many(&filters).await;
        assert_eq!(codes.len(), filters.len(), "{role}: one return code per filter");
        for (filter, _, _) in &shared {
            tokio::time::sleep(Duration::from_millis(200)).await;
            codes.extend(v4.subscribe_many(&[filter]).await);
        }
        for ((filter, _, allowed), code) in plain.iter().chain(&shared).zip(&codes) {
            checks += 1;
            let ok = if allowed[r] {
                *code == SubscribeReasonCode::Success(QoS::AtLeastOnce)
            } else {
                *code == SubscribeReasonCode::Failure
            };
            if !ok {
                mismatches.push(format!("SUBSCRIBE {role:13} {filter}: MQTT 3.1.1 return code {code:?}"));
            }
        }
        v4.client.disconnect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!(
        "ACL matrix: {} roles × ({} publish topics + {} subscribe filters) = {cells} cells, {checks} checks",
        ROLES.len(),
        PUBLISH.len(),
        SUBSCRIBE.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} ACL checks differ from docs/security.md:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    let h = health(&daemon).await;
    assert!(counter(&h, "/mqtt/publishesDenied") > 0, "{h}");
    assert_eq!(counter(&h, "/mqtt/malformedPackets"), 0, "{h}");
    let mut secrets = Secrets::new();
    for (role, (_, credentials)) in ROLES.iter().zip(identities) {
        secrets.add(format!("{role} password"), &credentials.password);
    }
    secrets.add("observer password (home)", &spy_home_account.password);
    secrets.add("observer password (lab)", &spy_lab_account.password);
    secrets.assert_not_logged(&daemon);
}

// ---------------------------------------------------------------------------------------------
// Guessing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_code_guessing_is_locked_out() {
    let daemon = Daemon::start(&[]);
    let mut device = fresh_device(&daemon, "victim-1").await;
    let reply = send_registration(&mut device, "victim-1", &registration("victim-1")).await.json();
    let code = reply["claimCode"].as_str().unwrap().to_string();

    // Five wrong (well-formed) codes from one address: four say how many attempts are left, the
    // fifth locks the address out.
    let guesses = wrong_codes(&code, 8);
    for (i, guess) in guesses.iter().take(4).enumerate() {
        let (status, body) = daemon.post_json("/api/claims", json!({ "code": guess })).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("unknown_code")), "{body}");
        let left = 4 - i;
        assert!(body["error"]["message"].as_str().unwrap().contains(&format!("{left} attempts left")), "{body}");
    }
    let (status, body) = daemon.post_json("/api/claims", json!({ "code": guesses[4] })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_attempts")), "{body}");

    // Locked out: further guesses, malformed ones and even the right code are refused unseen.
    for attempt in [guesses[5].as_str(), "not a code", code.as_str(), &code.to_lowercase()] {
        let (status, body) = daemon.post_json("/api/claims", json!({ "code": attempt })).await;
        assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_attempts")), "{attempt}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("try again in"), "{body}");
    }
    let view = daemon.get_json("/api/devices/victim-1").await;
    assert_eq!(view["state"], "pending_claim", "the device was not claimed: {view}");
    assert!(
        device.next_on("provisioning/home/victim-1/reply", Duration::from_millis(500)).await.is_none(),
        "no credentials were sent"
    );
    let h = health(&daemon).await;
    assert_eq!(counter(&h, "/lifecycle/claimFailures"), 5, "{h}");
    assert_eq!(counter(&h, "/lifecycle/claimLockouts"), 1, "{h}");
    assert_eq!(counter(&h, "/lifecycle/claims"), 0, "{h}");
    let audit = daemon.get_json("/api/audit").await;
    let failed = audit.as_array().unwrap().iter().filter(|e| e["action"] == "claim_failed").count();
    assert_eq!(failed, 5, "every wrong code is audited: {audit}");

    let mut secrets = Secrets::new();
    secrets.add("claim code", &code);
    secrets.add("registration token", registration("victim-1")["registrationToken"].as_str().unwrap());
    secrets.assert_not_logged(&daemon);
    secrets.assert_not_stored(&daemon);
}

/// The lockout must hold for guesses sent all at once too: only as many codes as the lockout
/// allows may be tested, however many requests are in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_code_guesses_sent_in_parallel_are_locked_out_too() {
    let daemon = Daemon::start(&[]);
    let mut device = fresh_device(&daemon, "victim-2").await;
    let reply = send_registration(&mut device, "victim-2", &registration("victim-2")).await.json();
    let code = reply["claimCode"].as_str().unwrap().to_string();
    let guesses = wrong_codes(&code, 100);
    let answers = all_at_once(&daemon, "/api/claims", guesses.iter().map(|g| json!({ "code": g })).collect()).await;
    let tested = answers.iter().filter(|s| **s == 404).count();
    let locked = answers.iter().filter(|s| **s == 429).count();
    let h = health(&daemon).await;
    assert!(
        tested <= 4 && tested + locked == guesses.len(),
        "{tested} of {} parallel guesses were tested against the codes (404), {locked} locked out (429); \
         claimFailures = {}",
        guesses.len(),
        counter(&h, "/lifecycle/claimFailures")
    );
    let (status, _) = daemon.post_json("/api/claims", json!({ "code": code })).await;
    assert_eq!(status, 429);
    let mut secrets = Secrets::new();
    secrets.add("claim code", &code);
    secrets.assert_not_logged(&daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_password_guesses_sent_in_parallel_are_locked_out_too() {
    let daemon = Daemon::start_with_config("[http]\nrequire_login = true\n", &[]);
    let code = std::fs::read_to_string(daemon.data_dir.join("setup-code")).unwrap();
    let password = "a long admin password";
    let (status, _) =
        daemon.post_json("/api/auth/setup", json!({"password": password, "setupCode": code.trim()})).await;
    assert_eq!(status, 201);
    let guesses: Vec<Value> = (0..30).map(|i| json!({ "password": format!("guess number {i}") })).collect();
    let answers = all_at_once(&daemon, "/api/auth/login", guesses).await;
    let verified = answers.iter().filter(|s| **s == 401).count();
    let locked = answers.iter().filter(|s| **s == 429).count();
    assert!(
        verified <= 5 && verified + locked == 30,
        "{verified} of 30 parallel guesses were verified (401), {locked} locked out"
    );
    let (status, _) = daemon.post_json("/api/auth/login", json!({ "password": password })).await;
    assert_eq!(status, 429, "the right password is refused while locked out");
    let mut secrets = Secrets::new();
    secrets.add("admin password", password);
    (0..30).for_each(|i| secrets.add(format!("guess {i}"), &format!("guess number {i}")));
    secrets.assert_not_logged(&daemon);
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// Everything that handles a secret, on one daemon logging at debug level for every crate: the
/// admin password (set, wrong, right), sessions, the API token, MQTT passwords of every role
/// over TCP and WebSocket (right and wrong), rotations, the provisioning password, a device's
/// registration token, claim code and delivered credentials, a client certificate's key, the
/// HTTP ingest's Basic and Bearer credentials. None may appear in the log, and none may be
/// stored in clear outside the files that exist to hold it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_or_the_disk() {
    let mut daemon = Daemon::start_with_env("[http]\nrequire_login = true\n", &[], &[("RUST_LOG", "debug")]);
    let rt = daemon.runtime.clone();
    let mut secrets = Secrets::new();
    let api = Api::new(&daemon);
    secrets.add_kept_in("API token", &api.token, &["api-token"]);

    // The admin password: set with the setup code, a wrong one, the right one, sessions.
    let setup_code = std::fs::read_to_string(daemon.data_dir.join("setup-code")).unwrap().trim().to_string();
    let admin = "correct horse battery staple";
    let wrong_admin = "incorrect pony battery staple";
    secrets.add("admin password", admin);
    secrets.add("wrong admin password", wrong_admin);
    let http = reqwest::Client::new();
    let setup = http
        .post(daemon.http("/api/auth/setup"))
        .json(&json!({"password": admin, "setupCode": setup_code}))
        .send()
        .await
        .unwrap();
    assert_eq!(setup.status(), 201);
    let session = setup.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
    secrets.add("session cookie", session.split_once('=').unwrap().1);
    let wrong = http.post(daemon.http("/api/auth/login")).json(&json!({"password": wrong_admin})).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let login = http.post(daemon.http("/api/auth/login")).json(&json!({"password": admin})).send().await.unwrap();
    assert_eq!(login.status(), 200);
    let second = login.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
    secrets.add("second session cookie", second.split_once('=').unwrap().1);
    let listed = http.get(daemon.http("/api/devices")).header(COOKIE, &second).send().await.unwrap();
    assert_eq!(listed.status(), 200);

    // MQTT accounts of every role, over TCP and WebSocket, right and wrong passwords; a rotation.
    let ca = ca_pem(&daemon, Some(&api)).await;
    let mut accounts = Vec::new();
    for (name, role) in [("svc", "service"), ("hass", "homeassistant"), ("dev-m", "device"), ("rgw-1", "receiver")] {
        let credentials = api.account(name, role).await;
        secrets.add(format!("{role} password"), &credentials.password);
        let client_id =
            if role == "service" || role == "homeassistant" { format!("{name}-client") } else { name.into() };
        let tcp = Client::connect(options_as(&client_id, rt.mqtt, &credentials)).await;
        tcp.client.disconnect().await.unwrap();
        let mut ws = ws_options(&client_id, rt.mqtt_ws.port(), false, &ca);
        ws.set_credentials(name, credentials.password.clone());
        let ws = Client::connect(ws).await;
        ws.client.disconnect().await.unwrap();
        let guess = format!("{}-wrong", credentials.password);
        secrets.add(format!("wrong {role} password"), &guess);
        let wrong = Credentials { username: name.into(), password: guess };
        assert!(Client::try_connect(options_as(&client_id, rt.mqtt, &wrong)).await.is_err());
        accounts.push(credentials);
    }
    let (status, rotated) = api.post("/api/broker/accounts/svc/rotate", Value::Null).await;
    assert_eq!(status, 200);
    let rotated = rotated["password"].as_str().unwrap().to_string();
    secrets.add("rotated service password", &rotated);
    let svc = Credentials { username: "svc".into(), password: rotated };
    let _svc = Client::connect(options_as("svc-client", rt.mqtt, &svc)).await;
    let mut wss = ws_options("svc-wss", rt.mqtt_wss.port(), true, &ca);
    wss.set_credentials("svc", svc.password.clone());
    let _svc_wss = Client::connect(wss).await;

    // A client certificate: its private key is returned once and kept nowhere.
    let (status, issued) = api.post("/api/broker/accounts/dev-m/certificate", Value::Null).await;
    assert_eq!(status, 201, "{issued}");
    let key_line = issued["privateKey"].as_str().unwrap().lines().nth(1).unwrap().to_string();
    secrets.add("client certificate private key", &key_line);

    // The provisioning password, rotated; a device registers, is claimed, gets credentials,
    // connects, has them rotated, connects with the new ones.
    let first = api.get("/api/provisioning").await["password"].as_str().unwrap().to_string();
    secrets.add("provisioning password before its rotation", &first);
    let (status, rotated) = api.post("/api/provisioning/rotate", Value::Null).await;
    assert_eq!(status, 200, "{rotated}");
    let provisioning = api.get("/api/provisioning").await;
    let provision =
        Credentials { username: "provision".into(), password: provisioning["password"].as_str().unwrap().to_string() };
    secrets.add_kept_in("provisioning password", &provision.password, &["secrets/provisioning.secret"]);
    let mut fresh = Client::connect(options_as("sec-1", rt.mqtt, &provision)).await;
    fresh.subscribe_many(&["provisioning/home/sec-1/reply"]).await;
    let body = registration("sec-1");
    secrets.add("registration token", body["registrationToken"].as_str().unwrap());
    let reply = send_registration(&mut fresh, "sec-1", &body).await.json();
    let claim_code = reply["claimCode"].as_str().unwrap().to_string();
    secrets.add("claim code", &claim_code);
    secrets.add("claim code as typed", &claim_code.replace('-', ""));
    let (status, _) = api.post("/api/claims", json!({ "code": claim_code })).await;
    assert_eq!(status, 200);
    let delivered = fresh.next_on("provisioning/home/sec-1/reply", Duration::from_secs(5)).await.unwrap().json();
    let device = Credentials { username: "sec-1".into(), password: delivered["password"].as_str().unwrap().into() };
    secrets.add("device password", &device.password);
    fresh.client.disconnect().await.unwrap();
    let mut dev = Client::connect(options_as("sec-1", rt.mqtt, &device)).await;
    dev.subscribe_many(&["devices/home/sec-1/credentials"]).await;
    let (status, _) = api.post("/api/devices/sec-1/rotate-credentials", Value::Null).await;
    assert_eq!(status, 202);
    let new = dev.next_on("devices/home/sec-1/credentials", Duration::from_secs(5)).await.expect("new credentials");
    let new = Credentials { username: "sec-1".into(), password: new.json()["password"].as_str().unwrap().into() };
    secrets.add("rotated device password", &new.password);
    dev.client.disconnect().await.unwrap();
    let dev = Client::connect(options_as("sec-1", rt.mqtt, &new)).await;
    dev.client.publish("devices/home/sec-1/telemetry", QoS::AtLeastOnce, false, "{\"temperature\":1.5}").await.unwrap();

    // The HTTP ingest: Basic and Bearer, right and wrong.
    let receiver = &accounts[3];
    secrets.add_basic("receiver Basic", "rgw-1", &receiver.password);
    secrets.add_basic("wrong receiver Basic", "rgw-1", "not-the-secret-at-all");
    let ingest = format!("http://{}/ruuvi", rt.ingest);
    for (user, secret, expected) in
        [("rgw-1", receiver.password.as_str(), 400), ("rgw-1", "not-the-secret-at-all", 401)]
    {
        let answer = http.post(&ingest).basic_auth(user, Some(secret)).body("{}").send().await.unwrap();
        assert_eq!(answer.status().as_u16(), expected);
        let answer = http
            .post(&ingest)
            .header(AUTHORIZATION, format!("Bearer {user}:{secret}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), expected);
    }

    // The private keys and the claim-code key stay in their files.
    for key in ["tls/ca.key", "tls/server.key"] {
        let pem = std::fs::read_to_string(daemon.data_dir.join(key)).unwrap();
        secrets.add_kept_in(key, pem.lines().nth(1).unwrap(), &[key]);
    }
    let code_key = std::fs::read(daemon.data_dir.join("secrets/claim-code.key")).unwrap();
    secrets.add("claim-code key (hex)", &hex::encode(&code_key));

    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.stop();
    assert!(secrets.len() >= 25, "{} secrets checked", secrets.len());
    eprintln!("secrets: {} checked against the log and the data directory", secrets.len());
    secrets.assert_not_logged(&daemon);
    secrets.assert_not_stored(&daemon);
    assert!(daemon.log().contains("DEBUG"), "the log was written at debug level");
}

// ---------------------------------------------------------------------------------------------
// The HTTP API

/// Every route of the API router (gateway-core/src/api/mod.rs), with a method.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/devices"),
    ("POST", "/api/devices/register"),
    ("GET", "/api/devices/x"),
    ("PATCH", "/api/devices/x"),
    ("DELETE", "/api/devices/x"),
    ("POST", "/api/devices/x/approve"),
    ("POST", "/api/devices/x/claim-code"),
    ("POST", "/api/devices/x/deactivate"),
    ("POST", "/api/devices/x/rotate-credentials"),
    ("PUT", "/api/devices/x/capabilities"),
    ("POST", "/api/claims"),
    ("GET", "/api/devices/x/tasks"),
    ("POST", "/api/devices/x/tasks"),
    ("GET", "/api/devices/x/config"),
    ("PUT", "/api/devices/x/config"),
    ("GET", "/api/tasks/t"),
    ("POST", "/api/tasks/t/cancel"),
    ("POST", "/api/tasks/t/retry"),
    ("POST", "/api/devices/x/adopt"),
    ("POST", "/api/devices/x/ignore"),
    ("POST", "/api/devices/x/block"),
    ("POST", "/api/devices/x/unblock"),
    ("GET", "/api/pairing"),
    ("POST", "/api/pairing"),
    ("DELETE", "/api/pairing"),
    ("GET", "/api/provisioning"),
    ("POST", "/api/provisioning/rotate"),
    ("GET", "/api/audit"),
    ("GET", "/api/alerts"),
    ("POST", "/api/alerts/1/ack"),
    ("GET", "/api/alert-rules"),
    ("POST", "/api/alert-rules"),
    ("PUT", "/api/alert-rules/1"),
    ("DELETE", "/api/alert-rules/1"),
    ("GET", "/api/devices/x/readings"),
    ("GET", "/api/devices/x/receivers"),
    ("GET", "/api/receivers"),
    ("GET", "/api/live"),
    ("GET", "/api/broker/clients"),
    ("GET", "/api/broker/accounts"),
    ("POST", "/api/broker/accounts"),
    ("DELETE", "/api/broker/accounts/x"),
    ("POST", "/api/broker/accounts/x/rotate"),
    ("POST", "/api/broker/accounts/x/enable"),
    ("POST", "/api/broker/accounts/x/certificate"),
    ("POST", "/api/broker/accounts/x/disable"),
    ("GET", "/api/settings"),
    ("PUT", "/api/settings"),
    ("GET", "/api/export/database"),
    ("GET", "/api/backup"),
    ("POST", "/api/restore"),
    ("GET", "/api/devices/x/export"),
    ("GET", "/api/upstreams"),
    ("POST", "/api/upstreams/x/test"),
    ("GET", "/metrics"),
    ("GET", "/api/no-such-route"),
    ("POST", "/api/no-such-route"),
];

/// Routes open without a login: health, the CA certificate devices pin, the login routes
/// themselves, the web UI.
const OPEN: &[(&str, &str, u16)] = &[
    ("GET", "/api/health", 200),
    ("GET", "/api/broker/ca.pem", 200),
    ("GET", "/api/auth", 200),
    ("POST", "/api/auth/login", 400),
    ("POST", "/api/auth/setup", 400),
    ("POST", "/api/auth/logout", 200),
    ("GET", "/api/auth/launch?ticket=nope", 401),
    ("GET", "/", 200),
];

async fn call(
    daemon: &Daemon,
    method: &str,
    path: &str,
    headers: &[(reqwest::header::HeaderName, String)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new().request(method.clone(), daemon.http(path));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
        request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body("{}");
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.json().await.unwrap_or(Value::Null), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_needs_a_login_and_refuses_other_origins() {
    let daemon = Daemon::start_with_config("[http]\nrequire_login = true\n", &[]);
    let api = Api::new(&daemon);
    let own_origin = format!("http://{}", daemon.runtime.http);
    let mut failures = Vec::new();

    // No credentials, forged credentials: 401 login_required on every route.
    let forged: Vec<Vec<(reqwest::header::HeaderName, String)>> = vec![
        vec![],
        vec![(AUTHORIZATION, format!("Bearer {}", "0".repeat(64)))],
        vec![(AUTHORIZATION, format!("Bearer {}x", api.token))],
        vec![(AUTHORIZATION, format!("Basic {}", api.token))],
        vec![(COOKIE, format!("gatehouse_session={}", "a".repeat(64)))],
        vec![(COOKIE, format!("gatehouse_session={}", api.token))],
    ];
    for headers in &forged {
        for (method, path) in ROUTES {
            let (status, body, _) = call(&daemon, method, path, headers).await;
            if (status, body["error"]["code"].as_str()) != (401, Some("login_required")) {
                failures.push(format!("{method} {path} with {headers:?}: {status} {body}"));
            }
        }
    }
    for (method, path, expected) in OPEN {
        let (status, body, _) = call(&daemon, method, path, &[]).await;
        if status != *expected {
            failures.push(format!("open route {method} {path}: {status} {body} (expected {expected})"));
        }
    }
    let ca = reqwest::get(daemon.http("/api/broker/ca.pem")).await.unwrap().text().await.unwrap();
    if !ca.starts_with("-----BEGIN CERTIFICATE-----") || ca.contains("PRIVATE KEY") {
        failures.push(format!("the open CA download is not just the certificate: {ca}"));
    }

    // Authenticated but from another origin: every state-changing request is refused before it
    // reaches its handler, with any foreign origin; reads get no CORS headers.
    let foreign =
        ["http://evil.example", "null", "http://127.0.0.1:1", &format!("https://{}.evil.example", daemon.runtime.http)];
    for origin in foreign {
        for (method, path) in ROUTES {
            let headers = [(AUTHORIZATION, format!("Bearer {}", api.token)), (ORIGIN, origin.to_string())];
            let (status, body, response_headers) = call(&daemon, method, path, &headers).await;
            let changes_state = *method != "GET";
            if changes_state && (status, body["error"]["code"].as_str()) != (403, Some("foreign_origin")) {
                failures.push(format!("{method} {path} from {origin}: {status} {body}"));
            }
            if !changes_state && status == 403 && body["error"]["code"] == "foreign_origin" && *path != "/api/live" {
                failures.push(format!("{method} {path} from {origin}: a read was refused"));
            }
            if response_headers.contains_key("access-control-allow-origin") {
                failures.push(format!("{method} {path} from {origin}: CORS header {:?}", response_headers));
            }
        }
    }
    // A CORS preflight gets no permission either.
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, daemon.http("/api/broker/accounts"))
        .header(ORIGIN, "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!preflight.headers().contains_key("access-control-allow-origin"), "{:?}", preflight.headers());

    // The same requests from the gateway's own origin are let through (whatever the handler then
    // says about the placeholder ids).
    for (method, path) in ROUTES.iter().filter(|(m, _)| *m != "GET") {
        let headers = [(AUTHORIZATION, format!("Bearer {}", api.token)), (ORIGIN, own_origin.clone())];
        let (status, body, _) = call(&daemon, method, path, &headers).await;
        if status == 401 || (status == 403 && body["error"]["code"] == "foreign_origin") {
            failures.push(format!("{method} {path} from its own origin: {status} {body}"));
        }
    }
    assert!(failures.is_empty(), "{} refusals missing:\n{}", failures.len(), failures.join("\n"));
    let mut secrets = Secrets::new();
    secrets.add_kept_in("API token", &api.token, &["api-token"]);
    secrets.assert_not_logged(&daemon);
    secrets.assert_not_stored(&daemon);
    eprintln!(
        "HTTP API: {} routes × {} credential forgeries + {} foreign origins, {} open routes",
        ROUTES.len(),
        forged.len(),
        foreign.len(),
        OPEN.len()
    );

    // A loopback install needs no login but refuses other origins all the same.
    let open = Daemon::start(&[]);
    for (method, path) in ROUTES.iter().filter(|(m, _)| *m != "GET") {
        let (status, body, _) = call(&open, method, path, &[(ORIGIN, "http://evil.example".into())]).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("foreign_origin")), "{method} {path}");
    }
}

// ---------------------------------------------------------------------------------------------
// WebSockets and origins

async fn websocket_status(url: &str, origin: Option<&str>, cookie: Option<&str>, mqtt: bool) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().unwrap());
    }
    if let Some(cookie) = cookie {
        request.headers_mut().insert("cookie", cookie.parse().unwrap());
    }
    if mqtt {
        request.headers_mut().insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{url}: {other}"),
    }
}

/// A WebSocket handshake sent to `addr` as if `url`'s host name resolved there (DNS rebinding).
async fn websocket_status_via(addr: std::net::SocketAddr, url: &str, origin: &str) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("origin", origin.parse().unwrap());
    request.headers_mut().insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{url}: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_rebinds_its_name_to_the_gateway_gets_nothing() {
    // A loopback install: no login, so the name a request was sent to is all that tells the
    // gateway's own pages from a page whose name now resolves to this machine.
    let daemon = Daemon::start(&[]);
    let http = daemon.runtime.http;
    let rebound = reqwest::Client::builder().resolve("rebind.example", http).build().unwrap();
    let page = format!("http://rebind.example:{}", http.port());
    for path in ["/api/devices", "/api/broker/accounts", "/metrics", "/"] {
        let response = rebound.get(format!("{page}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 403, "{path}");
        let body: Value = response.json().await.unwrap_or_default();
        assert_eq!(body["error"]["code"], "unknown_host", "{path}: {body}");
    }
    let rule = json!({ "name": "x", "devices": "*", "condition": "silent", "for": "1m" });
    let response = rebound.post(format!("{page}/api/alert-rules")).header("origin", &page).json(&rule).send().await;
    assert_eq!(response.unwrap().status(), 403, "a state change from the rebinding page's own origin");
    assert!(daemon.get_json("/api/alert-rules").await.as_array().unwrap().iter().all(|r| r["name"] != "x"));
    let ws = daemon.runtime.mqtt_ws;
    let status = websocket_status_via(ws, &format!("ws://rebind.example:{}/mqtt", ws.port()), &page).await;
    assert_eq!(status, 403, "the MQTT WebSocket from the rebinding page");
    assert!(daemon.log().contains("DNS rebinding?"), "the refusal says why");

    // The gateway's own names still work: its address, localhost.
    for base in [format!("http://{http}"), format!("http://localhost:{}", http.port())] {
        let response = reqwest::get(format!("{base}/api/devices")).await.unwrap();
        assert_eq!(response.status(), 200, "{base}");
    }
    let own_page = format!("http://127.0.0.1:{}", http.port());
    let status = websocket_status_via(ws, &format!("ws://127.0.0.1:{}/mqtt", ws.port()), &own_page).await;
    assert_eq!(status, 101, "the gateway's own page");

    // A LAN install (with a login) reached by a name nobody listed, such as the router's DNS:
    // its own pages may still log in (the session cookie never goes to another name).
    let lan = Daemon::start_with_config("[http]\nrequire_login = true\n", &[]);
    let client = reqwest::Client::builder().resolve("pi.fritz.box", lan.runtime.http).build().unwrap();
    let page = format!("http://pi.fritz.box:{}", lan.runtime.http.port());
    let login = json!({ "password": "not-the-password-42" });
    let response = client.post(format!("{page}/api/auth/login")).header("origin", &page).json(&login).send().await;
    let response = response.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    assert!(status != 403, "a login install's own page under an unlisted name: {status} {body}");

    // A name the owner gives the gateway in `http.host_names` is trusted.
    let named = Daemon::start_with_config("[http]\nhost_names = [\"rebind.example\"]\n", &[]);
    let client = reqwest::Client::builder().resolve("rebind.example", named.runtime.http).build().unwrap();
    let response = client.get(format!("http://rebind.example:{}/api/devices", named.runtime.http.port())).send().await;
    assert_eq!(response.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_websocket_refuses_foreign_origins() {
    let daemon = Daemon::start(&[]);
    let live = format!("ws://{}/api/live", daemon.runtime.http);
    let own = format!("http://{}", daemon.runtime.http);
    assert_eq!(websocket_status(&live, None, None, false).await, 101, "no Origin: not a browser");
    assert_eq!(websocket_status(&live, Some(&own), None, false).await, 101, "its own origin");
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1", "https://127.0.0.1.evil.example"] {
        assert_eq!(websocket_status(&live, Some(origin), None, false).await, 403, "{origin}");
    }

    // With a login required, a session is not enough from another origin.
    let daemon = Daemon::start_with_config("[http]\nrequire_login = true\n", &[]);
    let code = std::fs::read_to_string(daemon.data_dir.join("setup-code")).unwrap();
    let setup = reqwest::Client::new()
        .post(daemon.http("/api/auth/setup"))
        .json(&json!({"password": "a long admin password", "setupCode": code.trim()}))
        .send()
        .await
        .unwrap();
    let session = setup.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
    let live = format!("ws://{}/api/live", daemon.runtime.http);
    let own = format!("http://{}", daemon.runtime.http);
    assert_eq!(websocket_status(&live, Some(&own), Some(&session), false).await, 101);
    assert_eq!(websocket_status(&live, Some(&own), None, false).await, 401);
    assert_eq!(websocket_status(&live, Some("http://evil.example"), Some(&session), false).await, 403);
}

/// The MQTT WebSocket listeners: a browser page from any origin can open the WebSocket, but
/// MQTT then needs credentials that no browser holds on its own (no cookie, no ambient
/// authority), so a foreign page gets "not authorized" like any anonymous client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_websockets_refuse_pages_of_other_hosts_unless_listed_and_anonymous_pages_always() {
    // Default: browsers of pages from other hosts are refused at the handshake (counted);
    // the gateway's own host (its web UI on another port) and clients without an Origin
    // (devices, tools) are not.
    let daemon = Daemon::start(&[]);
    let url = format!("ws://127.0.0.1:{}/mqtt", daemon.runtime.mqtt_ws.port());
    let before = health(&daemon).await;
    assert_eq!(websocket_status(&url, Some("http://evil.example"), None, true).await, 403);
    assert_eq!(websocket_status(&url, Some("http://127.0.0.1.evil.example"), None, true).await, 403);
    assert_eq!(websocket_status(&url, Some("null"), None, true).await, 403);
    assert_eq!(websocket_status(&url, Some("http://127.0.0.1:8080"), None, true).await, 101);
    assert_eq!(websocket_status(&url, None, None, true).await, 101);
    let after = health(&daemon).await;
    let refused = counter(&after, "/mqtt/websocketOriginsRefused") - counter(&before, "/mqtt/websocketOriginsRefused");
    assert_eq!(refused, 3, "each refused page is counted");
    assert!(daemon.log().contains("origin=http://evil.example"), "the refused page is logged");

    // Listed pages may connect; "*" lets any page reach the MQTT layer, which still refuses
    // an anonymous CONNECT.
    let daemon = Daemon::start_with_config("[mqtt]\nwebsocket_origins = [\"https://dashboard.lan\"]\n", &[]);
    let url = format!("ws://127.0.0.1:{}/mqtt", daemon.runtime.mqtt_ws.port());
    assert_eq!(websocket_status(&url, Some("https://dashboard.lan"), None, true).await, 101);
    assert_eq!(websocket_status(&url, Some("http://evil.example"), None, true).await, 403);
    let daemon = Daemon::start_with_config("[mqtt]\nwebsocket_origins = [\"*\"]\n", &[]);
    let url = format!("ws://127.0.0.1:{}/mqtt", daemon.runtime.mqtt_ws.port());
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    request.headers_mut().insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let connect = wire::connect_with(b"MQTT", 4, b"browser-page", None);
    ws.send(WsMessage::Binary(connect.into())).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an answer");
    let bytes = match answer {
        Some(Ok(WsMessage::Binary(bytes))) => bytes.to_vec(),
        other => panic!("{other:?}"),
    };
    assert_eq!(bytes, vec![0x20, 0x02, 0x00, 0x05], "CONNACK not authorized");
    assert!(counter(&health(&daemon).await, "/mqtt/authFailures") >= 1);
}

/// A blocking TLS handshake with rustls restricted to `version`, trusting the gateway's CA (PEM)
/// for `localhost`: the version negotiated, or why the handshake failed.
fn rustls_handshake(
    addr: std::net::SocketAddr,
    ca: &str,
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<rustls::ProtocolVersion, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut socket = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).map_err(|e| e.to_string())?;
    }
    connection.protocol_version().ok_or_else(|| "no version negotiated".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listeners_speak_tls_1_2_and_1_3_only() {
    let daemon = Daemon::start(&[]);
    let viewer = daemon.account("viewer", "service", &[("lab/#", "readwrite")]).await;
    let ca = ca_pem(&daemon, None).await;
    let before = health(&daemon).await;
    let mut refused_handshakes = 0;
    for (listener, addr) in [("TLS", daemon.runtime.mqtt_tls), ("secure WebSocket", daemon.runtime.mqtt_wss)] {
        // TLS 1.0 and 1.1 ClientHellos are answered with a protocol_version alert (70) and the
        // connection is closed; the same hello as TLS 1.2 gets a ServerHello, so it is the
        // version that is refused, not the message.
        for (name, version) in [("TLS 1.0", 0x0301), ("TLS 1.1", 0x0302)] {
            let answer = wire::exchange(addr, &[wire::client_hello(version)], Duration::from_secs(5)).await;
            assert_eq!(wire::tls_alert(&answer.received), Some(70), "{listener}, {name}: {answer:?}");
            assert!(answer.closed, "{listener}, {name}: closed");
            refused_handshakes += 1;
        }
        let tls12 = wire::exchange(addr, &[wire::client_hello(0x0303)], Duration::from_millis(500)).await;
        assert_eq!(tls12.received.get(..3), Some(&[0x16, 0x03, 0x03][..]), "{listener}: a ServerHello for TLS 1.2");

        // rustls restricted to one version: both handshakes succeed.
        for (version, expected) in [
            (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
            (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        ] {
            let ca = ca.clone();
            let negotiated = tokio::task::spawn_blocking(move || rustls_handshake(addr, &ca, version)).await.unwrap();
            assert_eq!(negotiated, Ok(expected), "{listener}");
        }
    }
    // MQTT over TLS 1.2 only, end to end.
    {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut o = rumqttc::MqttOptions::new("tls12-client", "localhost", daemon.runtime.mqtt_tls.port());
        o.set_credentials("viewer", viewer.password.clone());
        o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(
            config,
        ))));
        let mut client = Client::connect(o).await;
        client.subscribe_many(&["lab/tls12"]).await;
        client.client.publish("lab/tls12", QoS::AtLeastOnce, false, "over TLS 1.2").await.unwrap();
        assert_eq!(client.next_on("lab/tls12", Duration::from_secs(5)).await.unwrap().text(), "over TLS 1.2");
    }

    // OpenSSL's client, allowed to offer the old versions (security level 0), is refused with
    // "protocol version" for TLS 1.0 and 1.1 and connects with TLS 1.2 and 1.3.
    if let Some(openssl) = require_tool("openssl") {
        let ca_file = daemon.data_dir.join("ca-under-test.pem");
        std::fs::write(&ca_file, &ca).unwrap();
        for (listener, addr) in [("TLS", daemon.runtime.mqtt_tls), ("secure WebSocket", daemon.runtime.mqtt_wss)] {
            for (flag, accepted) in [("-tls1", false), ("-tls1_1", false), ("-tls1_2", true), ("-tls1_3", true)] {
                let output = tokio::process::Command::new(&openssl)
                    .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost", flag])
                    .args(["-cipher", "DEFAULT:@SECLEVEL=0", "-msg", "-CAfile"])
                    .arg(&ca_file)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .await
                    .unwrap();
                let text =
                    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
                assert!(text.contains("ClientHello"), "{listener} {flag}: openssl sent no ClientHello:\n{text}");
                let version = match flag {
                    "-tls1_2" => "TLSv1.2",
                    "-tls1_3" => "TLSv1.3",
                    _ => "",
                };
                if accepted {
                    assert!(
                        text.contains(&format!("New, {version}, Cipher is"))
                            && text.contains("Verify return code: 0 (ok)"),
                        "{listener} {flag}:\n{text}"
                    );
                } else {
                    // rustls answers OpenSSL's old hellos (which carry no signature_algorithms)
                    // with a fatal handshake_failure or protocol_version alert.
                    assert!(!output.status.success(), "{listener} {flag}: connected:\n{text}");
                    assert!(text.contains("Cipher is (NONE)") && text.contains("Alert"), "{listener} {flag}:\n{text}");
                    refused_handshakes += 1;
                }
            }
        }
    }
    let after = eventually(Duration::from_secs(5), async || {
        let h = health(&daemon).await;
        (counter(&h, "/mqtt/handshakeFailures") - counter(&before, "/mqtt/handshakeFailures") >= refused_handshakes)
            .then_some(h)
    })
    .await;
    assert!(after.is_some(), "every refused handshake is counted ({refused_handshakes})");
    let mut secrets = Secrets::new();
    secrets.add("viewer password", &viewer.password);
    let key = std::fs::read_to_string(daemon.data_dir.join("tls/server.key")).unwrap();
    secrets.add_kept_in("server key", key.lines().nth(1).unwrap(), &["tls/server.key"]);
    secrets.assert_not_logged(&daemon);
    secrets.assert_not_stored(&daemon);
}

// ---------------------------------------------------------------------------------------------
// Files

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_files_and_the_ca_key_are_private() {
    let mut daemon = Daemon::start_with_config("[http]\nrequire_login = true\n", &[]);
    let dir = daemon.data_dir.clone();
    let check = |when: &str, files: &[&str]| {
        for dir_name in ["tls", "secrets"] {
            assert_eq!(mode(&dir.join(dir_name)), 0o700, "{when}: {dir_name}/");
        }
        for file in files {
            assert_eq!(mode(&dir.join(file)), 0o600, "{when}: {file}");
        }
    };
    let secret_files =
        ["tls/ca.key", "tls/server.key", "secrets/claim-code.key", "secrets/provisioning.secret", "api-token"];
    let mut first_start = secret_files.to_vec();
    first_start.push("setup-code");
    check("first start", &first_start);
    assert!(mode(&dir.join("tls/ca.crt")) & 0o400 != 0, "the CA certificate is public");

    // Setting the admin password, rotating the provisioning password, issuing a client
    // certificate: the new files are private, and no client key is kept.
    let api = Api::new(&daemon);
    let code = std::fs::read_to_string(dir.join("setup-code")).unwrap();
    let (status, _) = daemon
        .post_json("/api/auth/setup", json!({"password": "a long admin password", "setupCode": code.trim()}))
        .await;
    assert_eq!(status, 201);
    let (status, _) = api.post("/api/provisioning/rotate", Value::Null).await;
    assert_eq!(status, 200);
    let _ = api.account("dev-1", "device").await;
    let tls_before: BTreeSet<_> = std::fs::read_dir(dir.join("tls")).unwrap().map(|e| e.unwrap().file_name()).collect();
    let (status, _) = api.post("/api/broker/accounts/dev-1/certificate", Value::Null).await;
    assert_eq!(status, 201);
    let tls_after: BTreeSet<_> = std::fs::read_dir(dir.join("tls")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(tls_before, tls_after, "a client certificate's key is not kept");
    let mut configured = secret_files.to_vec();
    configured.push("admin-password");
    check("after setup and rotation", &configured);

    // A restart rewrites the API token and keeps everything private; directories and keys
    // loosened by hand (a restore, a careless copy) are tightened again, and the log says so.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("tls"), std::fs::Permissions::from_mode(0o755)).unwrap();
    for file in ["tls/ca.key", "secrets/claim-code.key", "admin-password"] {
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    daemon.restart();
    check("after a restart", &configured);
    assert!(daemon.log().contains("made private again"), "the tightening is logged");
    let token = std::fs::read_to_string(dir.join("api-token")).unwrap();
    assert_ne!(token.trim(), api.token, "a new API token at every start");
}

// ---------------------------------------------------------------------------------------------
// Tenants over the HTTP ingest

/// docs/api.md: "A receiver account may forward telemetry for any device of its site". A
/// receiver of site `lab` must not write the telemetry of site `home`'s devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_ingest_stays_inside_the_receivers_site() {
    let daemon = Daemon::start(&[]);
    let _device = claim_device(&daemon, "dev-1").await;
    let lab = account_in(&daemon, "lab-bridge", "receiver", "lab", &[]).await;
    let body = json!({"topic": "devices/home/dev-1/telemetry", "payload": {"temperature": 99.5}});
    let answer = reqwest::Client::new()
        .post(format!("http://{}/webhook", daemon.runtime.ingest))
        .basic_auth(&lab.username, Some(&lab.password))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let answer: Value = answer.json().await.unwrap_or(Value::Null);
    assert!(status == 400 || status == 403, "a lab receiver wrote home telemetry: {status} {answer}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let history = daemon.get_json("/api/devices/dev-1/readings?from=-1h&bucket=1h").await;
    assert!(history["count"].as_array().unwrap().is_empty(), "nothing was stored: {history}");
}

// ---------------------------------------------------------------------------------------------
// Sessions belong to identities

/// A client id is a session at the broker; a device's session must stay its own. Another
/// identity connecting with the device's client id must neither kick the device off nor, with
/// `clean_session = false`, inherit its subscriptions and queued messages (commands, config,
/// credentials), which it may not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_identity_cannot_take_over_a_devices_session() {
    let daemon = Daemon::start(&[]);
    let addr = daemon.runtime.mqtt;
    let device = daemon.account("dev-1", "device", &[]).await;
    let nodered = daemon.account("nodered", "service", &[("devices/home/+/commands", "write")]).await;
    let viewer = daemon.account("viewer", "service", &[]).await;
    let provision = provisioning(&daemon).await;
    let persistent = |credentials: &Credentials| {
        let mut o = options_as("dev-1", addr, credentials);
        o.set_clean_session(false);
        o
    };

    // The device keeps a persistent session subscribed to its commands, and goes away.
    let mut own = Client::connect(persistent(&device)).await;
    own.subscribe_many(&["devices/home/dev-1/commands"]).await;
    own.client.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let commander = Client::connect(options_as("nodered-1", addr, &nodered)).await;
    commander.client.publish("devices/home/dev-1/commands", QoS::AtLeastOnce, false, "{\"secret\":1}").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut findings = Vec::new();
    for (who, credentials) in [("a service account", &viewer), ("the provisioning identity", &provision)] {
        match Client::try_connect(persistent(credentials)).await {
            Err(_) => {}
            Ok(mut intruder) => {
                findings.push(format!("{who} connected with the device's client id"));
                if let Some(stolen) = intruder.next_on("devices/home/dev-1/commands", Duration::from_secs(2)).await {
                    findings.push(format!("{who} received the device's queued command {:?}", stolen.text()));
                }
                intruder.client.disconnect().await.unwrap();
            }
        }
    }
    // While the device is online, another identity connecting as it must not kick it off.
    let mut online = Client::connect(options_as("dev-1", addr, &device)).await;
    let intruder = Client::try_connect(options_as("dev-1", addr, &viewer)).await;
    if intruder.is_ok() {
        findings.push("a service account connected as the online device".into());
    }
    if online.wait_closed(Duration::from_secs(1)).await.is_some() {
        findings.push("the online device was disconnected by another identity using its client id".into());
    }
    assert!(findings.is_empty(), "{findings:#?}");
}

// ---------------------------------------------------------------------------------------------
// Home Assistant discovery import

/// The importer reads state topics with the gateway's own link: a discovery config (which any
/// service or homeassistant account may publish) must not make it read a device's commands,
/// credentials or a provisioning reply into the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_config_cannot_point_the_importer_at_private_topics() {
    let daemon = Daemon::start(&[]);
    let ha = daemon.account("hass", "homeassistant", &[]).await;
    let hass = Client::connect(options_as("hass", daemon.runtime.mqtt, &ha)).await;
    let config = |ident: &str, state_topic: &str| {
        json!({ "name": "Probe", "stat_t": state_topic, "dev": { "ids": [ident], "name": ident } }).to_string()
    };
    let before = counter(&health(&daemon).await, "/homeassistantImport/configsRejected");
    let private = [
        "devices/home/esp-1/commands",
        "devices/home/esp-1/credentials",
        "devices/home/esp-1/config",
        "provisioning/home/new-1/reply",
    ];
    for (i, topic) in private.iter().enumerate() {
        let payload = config(&format!("probe-{i}"), topic);
        hass.client
            .publish(format!("homeassistant/sensor/probe-{i}/x/config"), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    // The same config naming a topic any service may read is imported: the refusals above are
    // about the topic, not the config.
    let allowed = config("probe-ok", "devices/home/esp-1/telemetry");
    hass.client.publish("homeassistant/sensor/probe-ok/x/config", QoS::AtLeastOnce, false, allowed).await.unwrap();
    let imported = eventually(Duration::from_secs(10), async || {
        let device = daemon.device_or_null("ha-probe-ok").await;
        (!device.is_null()).then_some(device)
    })
    .await;
    assert!(imported.is_some(), "the config with a readable state topic is imported");
    let rejected = counter(&health(&daemon).await, "/homeassistantImport/configsRejected") - before;
    assert_eq!(rejected, private.len() as u64, "each config naming a private topic is refused and counted");
    for i in 0..private.len() {
        assert!(daemon.device_or_null(&format!("ha-probe-{i}")).await.is_null(), "probe-{i} was not imported");
    }
    assert!(daemon.log().contains("own namespace"), "the refusal says why");
}
