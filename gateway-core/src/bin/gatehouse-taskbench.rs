//! `gatehouse-taskbench`: task delivery end to end (issue 5). Starts `gatehouse run` as a child
//! process (temporary data directory, every listener on a free loopback port), registers and
//! claims N LAN devices through the real provisioning flow, connects them as themselves (one
//! rumqttc client each, all in this process; they answer every task at once), then submits tasks
//! through `POST /api/devices/{id}/tasks`, round-robin over the devices, as fast as the API takes
//! them (or at a fixed `--rate`). When every task is terminal it reads them back and reports, from
//! the gateway's own timestamps, tasks/s and the time from `queued` to `succeeded` (p50/p99/max),
//! with the daemon's RSS and CPU time. Markdown report on stdout, progress on stderr.
//!
//! Run with `make bench-tasks` (release build; `ARGS="--rate 500"` passes options; `--help` lists
//! them). Setup (argon2id for every device's credentials) is not part of the measurement.

#[path = "support/bench.rs"]
mod bench;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, Packet, Publish, QoS,
    SubscribeReasonCode,
};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

/// Devices claimed and connected at once: each costs the gateway two argon2id runs, of which it
/// does at most two at a time.
const SETUP_CONCURRENCY: usize = 6;
/// Longest wait for one step of a device's setup (CONNACK, SUBACK, a reply).
const SETUP_STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent reads when fetching the finished tasks back.
const READ_CONCURRENCY: usize = 8;
/// The states a task ends in.
const TERMINAL_COUNTERS: [&str; 6] = ["succeeded", "failed", "rejected", "timedOut", "expired", "canceled"];
/// All devices connect from 127.0.0.1, above the default limit of 64 connections per address.
const GATEHOUSE_CONFIG: &str = "[mqtt]\nmax_connections_per_address = 0\n";

#[derive(Parser)]
#[command(about = "Task delivery end to end through a real Gatehouse; Markdown report on stdout")]
struct Cli {
    /// The gatehouse binary to benchmark.
    #[arg(long, value_name = "PATH", default_value = "target/release/gatehouse")]
    gatehouse: PathBuf,
    /// LAN devices to register, claim and connect.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    devices: u64,
    /// Tasks to submit, round-robin over the devices.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    tasks: u64,
    /// Concurrent HTTP clients submitting tasks.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    submitters: u64,
    /// Submit at most this many tasks per second, evenly spaced (0: as fast as the API takes them).
    #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
    rate: f64,
    /// Leave Nagle's algorithm on for the devices' sockets (rumqttc's default). The bench devices
    /// set TCP_NODELAY otherwise: with Nagle, a device's answer waits for the gateway's delayed
    /// ACK of the PUBACK before it (up to 40 ms per task on Linux).
    #[arg(long)]
    nagle: bool,
    /// Give up waiting for the tasks to finish after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!("`{text}` is not a number ≥ 0")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    bench::run_main("gatehouse-taskbench", run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    eprintln!("gatehouse-taskbench: {command_line}");
    let daemon = Daemon::start(&cli.gatehouse).await?;
    let api = Api::new(daemon.http)?;
    let stats = Arc::new(DeviceStats::new());

    let setup_started = Instant::now();
    let devices = connect_devices(&daemon, &api, cli.devices as usize, !cli.nagle, &stats).await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    eprintln!("{} devices claimed and connected in {setup_seconds:.1} s", devices.len());
    // Let the last SUBSCRIBEs reach the dispatcher and the argon2 memory settle.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let memory_before = Memory::read(daemon.pid())?;
    let peak_reset = reset_peak_rss(daemon.pid());
    let setup_log_lines = daemon.log_text().lines().count();
    let cpu_before = Cpu::read(daemon.pid())?;
    let ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
    let load = Load { tasks: cli.tasks as usize, submitters: cli.submitters as usize, rate: cli.rate };
    let submitted = submit_tasks(&api, &ids, &load, stats.clock).await;
    eprintln!(
        "{} tasks accepted in {:.2} s ({} refused); waiting for them to finish",
        submitted.tasks.len(),
        submitted.seconds,
        submitted.failures.len()
    );
    let finished = wait_until_terminal(&api, submitted.tasks.len() as u64, cli.timeout).await?;
    let cpu = Cpu::read(daemon.pid())?.since(cpu_before);
    let memory_after = Memory::read(daemon.pid())?;

    let records = read_tasks(&api, &submitted.tasks).await?;
    let counters = api.get("/api/health").await.map(|h| h["tasks"].clone()).unwrap_or(Value::Null);
    close_devices(devices).await;
    let log = daemon.log_summary(setup_log_lines);

    let run = Run {
        command_line,
        devices: cli.devices,
        load,
        nodelay: !cli.nagle,
        setup_seconds,
        submitted,
        finished,
        analysis: Analysis::of(&records),
        device_stats: stats.summary(),
        memory_before,
        memory_after,
        peak_reset,
        cpu,
        counters,
        log,
    };
    print!("{}", report(&run));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The daemon

struct Daemon {
    child: Child,
    mqtt: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
    // Dropped after the process is killed (fields drop after `Drop::drop`).
    dir: tempfile::TempDir,
}

impl Daemon {
    /// `gatehouse run` on a temporary data directory with every listener on a free loopback port;
    /// returns once it has written its runtime file.
    async fn start(binary: &Path) -> Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-taskbench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let config = dir.path().join("bench.toml");
        std::fs::write(&config, GATEHOUSE_CONFIG).context("cannot write bench.toml")?;
        let log = dir.path().join("gatehouse.log");
        let log_file = File::create(&log).context("cannot create the gatehouse log file")?;
        let child = Command::new(binary)
            .arg("run")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--mqtt", "127.0.0.1:0", "--mqtt-tls", "127.0.0.1:0"])
            .args(["--mqtt-ws", "127.0.0.1:0", "--mqtt-wss", "127.0.0.1:0"])
            .args(["--http", "127.0.0.1:0", "--no-ble", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("cannot share the log file")?)
            .stderr(log_file)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {}; build it with `cargo build --release -p gateway-core --bin gatehouse` \
                     or pass --gatehouse PATH",
                    binary.display()
                )
            })?;
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut daemon = Daemon { child, mqtt: unbound, http: unbound, log, dir };
        let runtime = daemon.wait_for_runtime_file().await?;
        daemon.mqtt = runtime_address(&runtime, "mqtt")?;
        daemon.http = runtime_address(&runtime, "http")?;
        eprintln!("gatehouse (pid {}) on mqtt://{}, http://{}", daemon.pid(), daemon.mqtt, daemon.http);
        Ok(daemon)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_for_runtime_file(&mut self) -> Result<Value> {
        let path = self.dir.path().join("gatehouse.runtime.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().context("cannot check the gatehouse process")? {
                bail!("gatehouse exited during start-up ({status}); its log ends with:\n{}", self.log_tail());
            }
            // Written in one go but not atomically: retry until it parses.
            if let Some(value) = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()) {
                return Ok(value);
            }
            if Instant::now() > deadline {
                bail!(
                    "gatehouse did not write {} within 60 s; its log ends with:\n{}",
                    path.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Keeps a copy of the log outside the temporary directory and sums up its warnings and errors
    /// during setup (the first `setup_lines` lines) and from the first task on.
    fn log_summary(&self, setup_lines: usize) -> LogSummary {
        let text = strip_ansi(&self.log_text());
        let kept = std::env::temp_dir().join("gatehouse-taskbench.log");
        let kept = std::fs::write(&kept, &text).ok().map(|()| kept);
        let lines: Vec<&str> = text.lines().collect();
        let split = setup_lines.min(lines.len());
        LogSummary { setup: Notable::of(&lines[..split], 2), tasks: Notable::of(&lines[split..], 5), kept }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime_address(runtime: &Value, key: &str) -> Result<SocketAddr> {
    runtime[key]
        .as_str()
        .ok_or_else(|| anyhow!("gatehouse.runtime.json has no `{key}` address: {runtime}"))?
        .parse()
        .with_context(|| format!("gatehouse.runtime.json: `{key}` is not an address"))
}

struct LogSummary {
    setup: Notable,
    tasks: Notable,
    kept: Option<PathBuf>,
}

/// The warnings and errors in some log lines: how many, and a few distinct ones.
struct Notable {
    count: usize,
    examples: Vec<String>,
}

impl Notable {
    fn of(lines: &[&str], keep: usize) -> Notable {
        let mut notable = Notable { count: 0, examples: Vec::new() };
        for line in lines.iter().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")) {
            notable.count += 1;
            // Without the timestamp, so that repeated messages compare equal.
            let short: String = line.split_once(' ').map_or(*line, |(_, rest)| rest).chars().take(200).collect();
            if notable.examples.len() < keep && !notable.examples.contains(&short) {
                notable.examples.push(short);
            }
        }
        notable
    }
}

/// Removes the colour escapes (`ESC [ … m`) the human log format writes even to a file.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HTTP API

#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(http: SocketAddr) -> Result<Api> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Api { client, base: format!("http://{http}") })
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let response =
            self.client.get(format!("{}{path}", self.base)).send().await.with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body: Value = response.json().await.with_context(|| format!("GET {path}: the answer is not JSON"))?;
        if !status.is_success() {
            bail!("GET {path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// POSTs JSON; returns the status code and the body (`null` when it is not JSON).
    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.with_context(|| format!("POST {path}: cannot read the answer"))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

// ---------------------------------------------------------------------------------------------
// Devices

/// Microseconds since the benchmark started, shared by the devices and the submitters.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn micros(self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// What the bench devices saw and did, summed over all of them.
struct DeviceStats {
    clock: Clock,
    envelopes: AtomicU64,
    redeliveries: AtomicU64,
    answers: AtomicU64,
    answer_errors: AtomicU64,
    connection_errors: AtomicU64,
    /// When the last `succeeded` answer was handed to the client ([`Clock`] µs).
    last_succeeded_us: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl DeviceStats {
    fn new() -> DeviceStats {
        DeviceStats {
            clock: Clock(Instant::now()),
            envelopes: AtomicU64::new(0),
            redeliveries: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            answer_errors: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
            last_succeeded_us: AtomicU64::new(0),
            first_errors: Mutex::new(Vec::new()),
        }
    }

    fn error(&self, counter: &AtomicU64, message: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
        if first.len() < 3 {
            eprintln!("  device error: {message}");
            first.push(message);
        }
    }

    fn summary(&self) -> DeviceSummary {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DeviceSummary {
            envelopes: get(&self.envelopes),
            redeliveries: get(&self.redeliveries),
            answers: get(&self.answers),
            answer_errors: get(&self.answer_errors),
            connection_errors: get(&self.connection_errors),
            last_succeeded_us: get(&self.last_succeeded_us),
            first_errors: self.first_errors.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

struct DeviceSummary {
    envelopes: u64,
    redeliveries: u64,
    answers: u64,
    answer_errors: u64,
    connection_errors: u64,
    last_succeeded_us: u64,
    first_errors: Vec<String>,
}

/// A claimed device connected as itself; its event loop runs in a task.
struct BenchDevice {
    id: String,
    client: AsyncClient,
    task: JoinHandle<()>,
}

/// What every device needs to know about the gateway.
struct Gateway {
    mqtt: SocketAddr,
    site: String,
    provisioning_password: String,
    api: Api,
    /// TCP_NODELAY on the devices' own connections.
    nodelay: bool,
}

/// Registers, claims and connects `count` devices (`bench-000`, …), a few at a time.
async fn connect_devices(
    daemon: &Daemon,
    api: &Api,
    count: usize,
    nodelay: bool,
    stats: &Arc<DeviceStats>,
) -> Result<Vec<BenchDevice>> {
    let provisioning = api.get("/api/provisioning").await.context("cannot read the provisioning credentials")?;
    let gateway = Arc::new(Gateway {
        mqtt: daemon.mqtt,
        site: provisioning["site"].as_str().unwrap_or("home").to_string(),
        provisioning_password: provisioning["password"]
            .as_str()
            .ok_or_else(|| anyhow!("no provisioning password in {provisioning}"))?
            .to_string(),
        api: api.clone(),
        nodelay,
    });
    let width = (count - 1).to_string().len().max(3);
    let semaphore = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut setups = JoinSet::new();
    for n in 0..count {
        let id = format!("bench-{n:0width$}");
        let (gateway, stats, semaphore) = (gateway.clone(), stats.clone(), semaphore.clone());
        setups.spawn(async move {
            let _permit = semaphore.acquire_owned().await.context("setup semaphore closed")?;
            let password = claim(&gateway, &id).await.with_context(|| format!("claiming {id}"))?;
            connect_as_device(&gateway, &id, password, stats).await.with_context(|| format!("connecting {id}"))
        });
    }
    let mut devices = Vec::with_capacity(count);
    while let Some(done) = setups.join_next().await {
        devices.push(done.context("a device setup task panicked")??);
        if devices.len() % 10 == 0 || devices.len() == count {
            eprintln!("  {}/{count} devices ready", devices.len());
        }
    }
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(devices)
}

fn registration(id: &str) -> Value {
    json!({
        "deviceId": id,
        "name": format!("Bench device {id}"),
        "type": "actuator",
        "model": "gatehouse-taskbench",
        "registrationToken": format!("taskbench-{id}-0123456789"),
        "capabilities": {
            "telemetry": [{"name": "temperature", "unit": "°C", "type": "number"}],
            "commands": [{"name": "reboot", "description": "Restart (answered at once)"}]
        }
    })
}

/// The provisioning flow of docs/protocol.md: register with the shared provisioning identity,
/// claim the code through the API, receive the device's own password.
async fn claim(gateway: &Gateway, id: &str) -> Result<String> {
    let mut options = MqttOptions::new(id, gateway.mqtt.ip().to_string(), gateway.mqtt.port());
    options.set_credentials("provision", gateway.provisioning_password.clone()).set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    poll_until(&mut eventloop, "CONNACK", |p| matches!(p, Packet::ConnAck(_)).then_some(())).await?;
    let reply_topic = format!("provisioning/{}/{id}/reply", gateway.site);
    client.subscribe(&reply_topic, QoS::AtLeastOnce).await.context("subscribe")?;
    expect_suback(&mut eventloop).await?;
    let register_topic = format!("provisioning/{}/{id}/register", gateway.site);
    client.publish(register_topic, QoS::AtLeastOnce, false, registration(id).to_string()).await.context("publish")?;

    let pending = next_reply(&mut eventloop, &reply_topic).await?;
    let code = match (pending["status"].as_str(), pending["claimCode"].as_str()) {
        (Some("pending"), Some(code)) => code.to_string(),
        _ => bail!("registration answered {pending}"),
    };
    let (status, body) = gateway.api.post("/api/claims", &json!({ "code": code })).await?;
    if status != 200 {
        bail!("POST /api/claims answered {status}: {body}");
    }
    let credentials = next_reply(&mut eventloop, &reply_topic).await?;
    let password = match (credentials["status"].as_str(), credentials["password"].as_str()) {
        (Some("credentials"), Some(password)) => password.to_string(),
        _ => bail!("expected credentials, got {credentials}"),
    };
    client.disconnect().await.context("disconnect")?;
    // Let the DISCONNECT go out before the device connects again with the same client id.
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    Ok(password)
}

/// Connects with the device's own identity, subscribes to its commands and starts answering.
async fn connect_as_device(
    gateway: &Gateway,
    id: &str,
    password: String,
    stats: Arc<DeviceStats>,
) -> Result<BenchDevice> {
    let mut options = MqttOptions::new(id, gateway.mqtt.ip().to_string(), gateway.mqtt.port());
    options.set_credentials(id, password).set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(gateway.nodelay);
    eventloop.set_network_options(network);
    poll_until(&mut eventloop, "CONNACK", |p| matches!(p, Packet::ConnAck(_)).then_some(())).await?;
    let topics = DeviceTopics {
        commands: format!("devices/{}/{id}/commands", gateway.site),
        responses: format!("devices/{}/{id}/command_response", gateway.site),
    };
    client.subscribe(&topics.commands, QoS::AtLeastOnce).await.context("subscribe")?;
    expect_suback(&mut eventloop).await?;
    let task = tokio::spawn(answer_tasks(id.to_string(), client.clone(), eventloop, topics, stats));
    Ok(BenchDevice { id: id.to_string(), client, task })
}

struct DeviceTopics {
    commands: String,
    responses: String,
}

/// The device's event loop: answers every task envelope at once (`delivered`, then `succeeded`),
/// de-duplicating on the task id as docs/protocol.md asks; re-subscribes after a reconnect.
async fn answer_tasks(
    id: String,
    client: AsyncClient,
    mut eventloop: EventLoop,
    topics: DeviceTopics,
    stats: Arc<DeviceStats>,
) {
    let mut finished: HashSet<String> = HashSet::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic == topics.commands => {
                answer(&id, &client, &topics.responses, &publish, &mut finished, &stats);
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Err(error) = client.try_subscribe(&topics.commands, QoS::AtLeastOnce) {
                    stats.error(&stats.connection_errors, format!("{id}: cannot re-subscribe: {error}"));
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => return,
            Err(error) => {
                stats.error(&stats.connection_errors, format!("{id}: {error}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn answer(
    id: &str,
    client: &AsyncClient,
    topic: &str,
    publish: &Publish,
    finished: &mut HashSet<String>,
    stats: &DeviceStats,
) {
    let envelope: Value = serde_json::from_slice(&publish.payload).unwrap_or_default();
    if envelope["v"] != 1 || envelope["type"] != "task" {
        return; // a cancel, or something this device does not understand
    }
    let (Some(task_id), Some(attempt)) = (envelope["taskId"].as_str(), envelope["attempt"].as_u64()) else {
        stats.error(&stats.answer_errors, format!("{id}: envelope without taskId/attempt: {envelope}"));
        return;
    };
    stats.envelopes.fetch_add(1, Ordering::Relaxed);
    let mut answers = Vec::with_capacity(2);
    if finished.insert(task_id.to_string()) {
        answers.push(json!({ "taskId": task_id, "attempt": attempt, "status": "delivered" }));
    } else {
        // Already done: answer the stored final answer again, never run it twice.
        stats.redeliveries.fetch_add(1, Ordering::Relaxed);
    }
    answers.push(json!({ "taskId": task_id, "attempt": attempt, "status": "succeeded", "result": {} }));
    for body in answers {
        // At most one task is in flight per device, so the request queue (64) cannot be full.
        match client.try_publish(topic, QoS::AtLeastOnce, false, body.to_string()) {
            Ok(()) => {
                stats.answers.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => stats.error(&stats.answer_errors, format!("{id}: cannot answer {task_id}: {error}")),
        }
    }
    stats.last_succeeded_us.fetch_max(stats.clock.micros(), Ordering::Relaxed);
}

/// Polls until `pick` accepts an incoming packet; fails on a connection error or after
/// [`SETUP_STEP_TIMEOUT`].
async fn poll_until<T>(eventloop: &mut EventLoop, what: &str, mut pick: impl FnMut(&Packet) -> Option<T>) -> Result<T> {
    let waited = tokio::time::timeout(SETUP_STEP_TIMEOUT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if let Some(value) = pick(&packet) {
                        return Ok(value);
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(error) => return Err(anyhow!("connection error while waiting for {what}: {error}")),
            }
        }
    })
    .await;
    waited.map_err(|_| anyhow!("no {what} within {} s", SETUP_STEP_TIMEOUT.as_secs()))?
}

async fn expect_suback(eventloop: &mut EventLoop) -> Result<()> {
    let codes = poll_until(eventloop, "SUBACK", |p| match p {
        Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await?;
    if codes != [SubscribeReasonCode::Success(QoS::AtLeastOnce)] {
        bail!("subscription refused: {codes:?}");
    }
    Ok(())
}

async fn next_reply(eventloop: &mut EventLoop, topic: &str) -> Result<Value> {
    let payload = poll_until(eventloop, "a provisioning reply", |p| match p {
        Packet::Publish(publish) if publish.topic == topic => Some(publish.payload.clone()),
        _ => None,
    })
    .await?;
    serde_json::from_slice(&payload).context("the provisioning reply is not JSON")
}

/// Sends DISCONNECT on every connection, gives the event loops a moment, then stops them.
async fn close_devices(devices: Vec<BenchDevice>) {
    for device in &devices {
        let _ = device.client.try_disconnect();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    for mut device in devices {
        if tokio::time::timeout_at(deadline, &mut device.task).await.is_err() {
            device.task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Submitting and waiting

struct Submitted {
    /// Ids of the accepted tasks, in no particular order.
    tasks: Vec<String>,
    /// Refused or failed requests, as messages.
    failures: Vec<String>,
    /// [`Clock`] µs when the first request was sent.
    first_request_us: u64,
    /// Wall-clock seconds from the first request to the last answer.
    seconds: f64,
}

/// How the tasks are submitted.
#[derive(Clone, Copy)]
struct Load {
    tasks: usize,
    /// Concurrent HTTP clients.
    submitters: usize,
    /// Tasks per second, evenly spaced; 0: as fast as the API answers.
    rate: f64,
}

/// Submits `load.tasks` reboot tasks, task `i` to device `i % devices`, from `load.submitters`
/// concurrent HTTP clients, each sending its next request as soon as the previous one is answered
/// (and, with a rate, not before task `i`'s turn at `i / rate` s).
async fn submit_tasks(api: &Api, devices: &[String], load: &Load, clock: Clock) -> Submitted {
    let next = Arc::new(AtomicUsize::new(0));
    let devices: Arc<[String]> = devices.into();
    let first_request_us = clock.micros();
    let started = Instant::now();
    let mut workers = JoinSet::new();
    let Load { tasks: count, submitters, rate } = *load;
    for _ in 0..submitters {
        let (api, next, devices) = (api.clone(), next.clone(), devices.clone());
        workers.spawn(async move {
            let mut accepted = Vec::new();
            let mut failures = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return (accepted, failures);
                }
                if rate > 0.0 {
                    let turn = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(turn.into()).await;
                }
                let device = &devices[i % devices.len()];
                match submit_one(&api, device).await {
                    Ok(task_id) => accepted.push(task_id),
                    Err(error) => failures.push(format!("{error:#}")),
                }
            }
        });
    }
    let mut submitted =
        Submitted { tasks: Vec::with_capacity(count), failures: Vec::new(), first_request_us, seconds: 0.0 };
    while let Some(done) = workers.join_next().await {
        match done {
            Ok((accepted, failures)) => {
                submitted.tasks.extend(accepted);
                submitted.failures.extend(failures);
            }
            Err(error) => submitted.failures.push(format!("a submitter panicked: {error}")),
        }
    }
    submitted.seconds = started.elapsed().as_secs_f64();
    submitted
}

async fn submit_one(api: &Api, device: &str) -> Result<String> {
    let path = format!("/api/devices/{device}/tasks");
    let (status, body) = api.post(&path, &json!({ "command": "reboot" })).await?;
    if status != 201 {
        bail!("POST {path} answered {status}: {body}");
    }
    body["id"].as_str().map(String::from).ok_or_else(|| anyhow!("POST {path}: no task id in {body}"))
}

struct Finished {
    /// Terminal tasks according to the gateway's counters when the wait ended.
    terminal: u64,
    timed_out: bool,
}

/// Polls `/api/health` (every 100 ms) until the gateway counts `expected` finished tasks.
async fn wait_until_terminal(api: &Api, expected: u64, timeout: Duration) -> Result<Finished> {
    let deadline = Instant::now() + timeout;
    let mut last_report = Instant::now();
    loop {
        let health = api.get("/api/health").await.context("cannot read the task counters")?;
        let terminal: u64 = TERMINAL_COUNTERS.iter().filter_map(|k| health["tasks"][*k].as_u64()).sum();
        if terminal >= expected {
            return Ok(Finished { terminal, timed_out: false });
        }
        if Instant::now() > deadline {
            eprintln!("  gave up after {} s: {terminal}/{expected} tasks finished", timeout.as_secs());
            return Ok(Finished { terminal, timed_out: true });
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!("  {terminal}/{expected} tasks finished");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the tasks back

/// One task as the gateway recorded it; times in ms since the epoch (the gateway's clock).
struct TaskRecord {
    state: String,
    created_at: i64,
    sent_at: Option<i64>,
    delivered_at: Option<i64>,
    succeeded_at: Option<i64>,
}

impl TaskRecord {
    fn from_json(task: &Value) -> Result<TaskRecord> {
        let state = task["state"].as_str().ok_or_else(|| anyhow!("a task without state: {task}"))?.to_string();
        let created_at = task["createdAt"].as_i64().ok_or_else(|| anyhow!("a task without createdAt: {task}"))?;
        let events = task["events"].as_array().cloned().unwrap_or_default();
        // The first time the task entered each state (a retry enters `sent` again).
        let first = |name: &str| events.iter().find(|e| e["state"] == name).and_then(|e| e["ts"].as_i64());
        Ok(TaskRecord {
            state,
            created_at,
            sent_at: first("sent"),
            delivered_at: first("delivered"),
            succeeded_at: first("succeeded"),
        })
    }
}

async fn read_tasks(api: &Api, tasks: &[String]) -> Result<Vec<TaskRecord>> {
    eprintln!("reading {} tasks back", tasks.len());
    let semaphore = Arc::new(Semaphore::new(READ_CONCURRENCY));
    let mut reads = JoinSet::new();
    for task_id in tasks {
        let (api, semaphore, path) = (api.clone(), semaphore.clone(), format!("/api/tasks/{task_id}"));
        reads.spawn(async move {
            let _permit = semaphore.acquire_owned().await.context("read semaphore closed")?;
            TaskRecord::from_json(&api.get(&path).await?)
        });
    }
    let mut records = Vec::with_capacity(tasks.len());
    while let Some(done) = reads.join_next().await {
        records.push(done.context("a read task panicked")??);
    }
    Ok(records)
}

// ---------------------------------------------------------------------------------------------
// Analysis

#[derive(Clone, Copy)]
struct Percentiles {
    p50: i64,
    p99: i64,
    max: i64,
}

impl Percentiles {
    /// Nearest-rank percentiles; `None` for no samples.
    fn of(mut samples: Vec<i64>) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        Some(Percentiles { p50: rank(0.50), p99: rank(0.99), max: samples[samples.len() - 1] })
    }

    fn cells(p: Option<Percentiles>) -> String {
        p.map_or("–".into(), |p| format!("{} / {} / {} ms", p.p50, p.p99, p.max))
    }
}

struct Analysis {
    read: usize,
    states: BTreeMap<String, usize>,
    /// Gateway clock: the first `createdAt` to the last `succeeded`, in ms.
    span_ms: Option<i64>,
    /// Gateway clock: the first to the last `createdAt`, in ms.
    intake_ms: Option<i64>,
    end_to_end: Option<Percentiles>,
    queued_to_sent: Option<Percentiles>,
    sent_to_delivered: Option<Percentiles>,
    delivered_to_succeeded: Option<Percentiles>,
}

impl Analysis {
    fn of(records: &[TaskRecord]) -> Analysis {
        let mut states = BTreeMap::new();
        for record in records {
            *states.entry(record.state.clone()).or_insert(0) += 1;
        }
        let first_created = records.iter().map(|r| r.created_at).min();
        let last_created = records.iter().map(|r| r.created_at).max();
        let last_succeeded = records.iter().filter_map(|r| r.succeeded_at).max();
        let gap = |from: fn(&TaskRecord) -> Option<i64>, to: fn(&TaskRecord) -> Option<i64>| {
            Percentiles::of(records.iter().filter_map(|r| Some(to(r)? - from(r)?)).collect())
        };
        Analysis {
            read: records.len(),
            states,
            span_ms: first_created.zip(last_succeeded).map(|(a, b)| b - a),
            intake_ms: first_created.zip(last_created).map(|(a, b)| b - a),
            end_to_end: gap(|r| Some(r.created_at), |r| r.succeeded_at),
            queued_to_sent: gap(|r| Some(r.created_at), |r| r.sent_at),
            sent_to_delivered: gap(|r| r.sent_at, |r| r.delivered_at),
            delivered_to_succeeded: gap(|r| r.delivered_at, |r| r.succeeded_at),
        }
    }

    fn succeeded(&self) -> usize {
        self.states.get("succeeded").copied().unwrap_or(0)
    }

    fn tasks_per_second(&self) -> Option<f64> {
        self.span_ms.map(|ms| self.succeeded() as f64 * 1000.0 / ms.max(1) as f64)
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

#[derive(Clone, Copy)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

impl Memory {
    fn read(pid: u32) -> Result<Memory> {
        let [rss_kib, hwm_kib] = bench::status_kib(pid, ["VmRSS:", "VmHWM:"])?;
        Ok(Memory { rss_kib, hwm_kib })
    }
}

/// Resets the process's peak RSS (VmHWM) to its current RSS, so that the peak after the run is
/// the task phase's and not setup's (argon2id uses 19 MiB per hash). Linux ≥ 4.0.
fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU time (user + system) of the daemon and of this process, in µs.
#[derive(Clone, Copy)]
struct Cpu {
    daemon_us: u64,
    bench_us: u64,
}

impl Cpu {
    fn read(daemon: u32) -> Result<Cpu> {
        Ok(Cpu { daemon_us: bench::cpu_micros(daemon)?, bench_us: bench::cpu_micros(std::process::id())? })
    }

    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            daemon_us: self.daemon_us.saturating_sub(earlier.daemon_us),
            bench_us: self.bench_us.saturating_sub(earlier.bench_us),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report

struct Run {
    command_line: String,
    devices: u64,
    load: Load,
    nodelay: bool,
    setup_seconds: f64,
    submitted: Submitted,
    finished: Finished,
    analysis: Analysis,
    device_stats: DeviceSummary,
    memory_before: Memory,
    memory_after: Memory,
    peak_reset: bool,
    cpu: Cpu,
    counters: Value,
    log: LogSummary,
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn check(met: bool) -> &'static str {
    if met {
        "✓"
    } else {
        "✗"
    }
}

fn report(run: &Run) -> String {
    let mut out = String::new();
    out.push_str("# Task delivery: end to end through Gatehouse\n\n");
    header(&mut out, run);
    out.push_str("| measure | value | goal |\n| --- | ---: | --- |\n");
    for (label, value, goal) in rows(run) {
        let _ = writeln!(out, "| {label} | {} | {goal} |", value.replace('|', "\\|"));
    }
    footer(&mut out, run);
    out
}

fn header(out: &mut String, run: &Run) {
    let _ = writeln!(out, "- Command: `{}`", run.command_line);
    let _ = writeln!(
        out,
        "- CPUs: {}; loopback only; the bench devices and HTTP clients (one process, 2 tokio workers) share \
         them with the daemon",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let pace = if run.load.rate > 0.0 { format!("paced at {} tasks/s", run.load.rate) } else { "unpaced".into() };
    let _ = writeln!(
        out,
        "- {} devices claimed and connected in {:.1} s (not measured); {} `reboot` tasks, round-robin over the \
         devices, from {} concurrent HTTP clients, {pace}",
        run.devices, run.setup_seconds, run.load.tasks, run.load.submitters
    );
    let _ = writeln!(
        out,
        "- Bench devices answer every task at once (`delivered`, then `succeeded`, QoS 1), {}",
        if run.nodelay { "with TCP_NODELAY" } else { "with Nagle's algorithm on (`--nagle`)" }
    );
    out.push_str(
        "- Latency = the gateway's `succeeded` event time − the task's `createdAt` (`queued`), in ms; \
         tasks/s = succeeded tasks ÷ (first `createdAt` → last `succeeded`), both from `GET /api/tasks/{id}`.\n\n",
    );
}

/// (measure, value, goal) rows of the report's table.
fn rows(run: &Run) -> Vec<(&'static str, String, String)> {
    let a = &run.analysis;
    let accepted = run.submitted.tasks.len();
    let tps = a.tasks_per_second();
    let p99 = a.end_to_end.map(|p| p.p99);
    let per_task =
        |us: u64| format!("{:.0} ms ({:.0} µs per task)", us as f64 / 1000.0, us as f64 / accepted.max(1) as f64);
    let intake = a
        .intake_ms
        .map_or("–".into(), |ms| format!("{ms} ms ({:.0} tasks/s)", accepted as f64 * 1000.0 / ms.max(1) as f64));
    let peak_label = if run.peak_reset {
        "daemon RSS after the tasks: VmRSS / VmHWM (peak of the task phase)"
    } else {
        "daemon RSS after the tasks: VmRSS / VmHWM (peak since start: could not reset it)"
    };
    vec![
        (
            "tasks/s, end to end (gateway clock)",
            tps.map_or("–".into(), |t| format!("{t:.0}")),
            format!("≥ 1,000 {}", check(tps.is_some_and(|t| t >= 1000.0))),
        ),
        (
            "queued → succeeded p50 / p99 / max",
            Percentiles::cells(a.end_to_end),
            format!("p99 < 50 ms {}", check(p99.is_some_and(|p| p < 50))),
        ),
        ("… queued → sent", Percentiles::cells(a.queued_to_sent), String::new()),
        ("… sent → delivered", Percentiles::cells(a.sent_to_delivered), String::new()),
        ("… delivered → succeeded", Percentiles::cells(a.delivered_to_succeeded), String::new()),
        ("first → last `createdAt` (API intake)", intake, String::new()),
        (
            "wall clock: first POST → last POST answered",
            format!("{:.0} ms", run.submitted.seconds * 1000.0),
            String::new(),
        ),
        ("wall clock: first POST → last `succeeded` sent by a device", wall_clock(run), String::new()),
        (
            "tasks succeeded / read back / accepted",
            format!("{} / {} / {accepted}", a.succeeded(), a.read),
            String::new(),
        ),
        ("tasks not succeeded", not_succeeded(run), "0".into()),
        ("POSTs refused or failed", failures(&run.submitted.failures), "0".into()),
        (
            "daemon RSS after setup: VmRSS / VmHWM",
            format!("{} / {}", mib(run.memory_before.rss_kib), mib(run.memory_before.hwm_kib)),
            String::new(),
        ),
        (peak_label, format!("{} / {}", mib(run.memory_after.rss_kib), mib(run.memory_after.hwm_kib)), String::new()),
        ("CPU, first POST → all finished: daemon", per_task(run.cpu.daemon_us), String::new()),
        ("CPU, first POST → all finished: bench (devices, HTTP clients)", per_task(run.cpu.bench_us), String::new()),
        ("bench devices: envelopes / redeliveries / answers", device_cells(&run.device_stats), String::new()),
        ("bench devices: answer / connection errors", device_errors(&run.device_stats), "0".into()),
    ]
}

fn footer(out: &mut String, run: &Run) {
    let _ = writeln!(out, "\nGateway task counters (`/api/health` `tasks`): `{}`\n", run.counters);
    let log = &run.log;
    let kept = log.kept.as_ref().map(|p| format!(" (kept at `{}`)", p.display())).unwrap_or_default();
    let _ = writeln!(
        out,
        "Daemon log{kept}, RUST_LOG=warn: {} warnings or errors during setup, {} from the first task on",
        log.setup.count, log.tasks.count
    );
    for (phase, notable) in [("setup", &log.setup), ("tasks", &log.tasks)] {
        for example in &notable.examples {
            let _ = writeln!(out, "- {phase}: `{}`", example.replace('`', "'"));
        }
    }
}

fn wall_clock(run: &Run) -> String {
    let last = run.device_stats.last_succeeded_us;
    if last <= run.submitted.first_request_us {
        return "–".into();
    }
    format!("{:.0} ms", (last - run.submitted.first_request_us) as f64 / 1000.0)
}

fn not_succeeded(run: &Run) -> String {
    let a = &run.analysis;
    let others: Vec<String> = a
        .states
        .iter()
        .filter(|(state, _)| state.as_str() != "succeeded")
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    let count = a.read - a.succeeded();
    let mut text = if others.is_empty() { count.to_string() } else { format!("{count} ({})", others.join(", ")) };
    if run.finished.timed_out {
        let _ = write!(text, "; gave up waiting with {} finished", run.finished.terminal);
    }
    text
}

fn failures(failures: &[String]) -> String {
    match failures.first() {
        None => "0".into(),
        Some(first) => format!("{} (first: {first})", failures.len()),
    }
}

fn device_cells(stats: &DeviceSummary) -> String {
    format!("{} / {} / {}", stats.envelopes, stats.redeliveries, stats.answers)
}

fn device_errors(stats: &DeviceSummary) -> String {
    let text = format!("{} / {}", stats.answer_errors, stats.connection_errors);
    if stats.first_errors.is_empty() {
        text
    } else {
        format!("{text} (first: {})", stats.first_errors.join("; "))
    }
}
