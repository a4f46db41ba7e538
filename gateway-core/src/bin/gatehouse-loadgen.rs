//! `gatehouse-loadgen`: Gatehouse's embedded MQTT broker side by side with Mosquitto under the
//! same load, from real rumqttc clients over loopback TCP. Prints a Markdown report on stdout and
//! progress on stderr.
//!
//! The tool starts both brokers itself (one after the other, never at once), each with password
//! authentication for one account (`bench`, read/write on `bench/#`), and runs four scenarios:
//!
//! 1. throughput: 10 publishers → 1 subscriber as fast as possible, QoS 0 and QoS 1;
//! 2. latency at a fixed 10,000 msg/s (10 publishers × 1,000 msg/s), QoS 1;
//! 3. 1,000 devices publishing once per second each, QoS 1;
//! 4. memory per idle authenticated connection (5,000 of them).
//!
//! Every payload is 100 bytes and starts with its send time (u64 nanoseconds since the UNIX
//! epoch, little-endian), the publisher number (u32) and a sequence number (u32); the subscriber
//! computes the latency when it receives it and counts duplicates.
//!
//! Run with `make bench-broker`, which raises the open-file limit first; `--quick` divides message
//! counts and durations by 10 for a smoke run.

#[path = "support/bench.rs"]
mod bench;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeReasonCode,
};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;

const USERNAME: &str = "bench";
const PAYLOAD_LEN: usize = 100;
const PUBLISHERS: usize = 10;
const DEVICES: usize = 1_000;
const IDLE_CONNECTIONS: usize = 5_000;
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

#[derive(Parser)]
#[command(about = "Gatehouse's MQTT broker against Mosquitto under the same load; Markdown report on stdout")]
struct Cli {
    /// The gatehouse binary to benchmark.
    #[arg(long, value_name = "PATH", default_value = "target/release/gatehouse")]
    gatehouse: PathBuf,
    /// Benchmark one broker only.
    #[arg(long, value_parser = ["gatehouse", "mosquitto"])]
    only: Option<String>,
    /// Smoke run: message counts and durations divided by 10.
    #[arg(long)]
    quick: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    bench::run_main("gatehouse-loadgen", run(cli))
}

// ---------------------------------------------------------------------------------------------
// Scale

#[derive(Clone, Copy)]
struct Scale {
    quick: bool,
}

impl Scale {
    fn count(self, full: u64) -> u64 {
        if self.quick {
            full / 10
        } else {
            full
        }
    }
    fn duration(self, full: Duration) -> Duration {
        if self.quick {
            full / 10
        } else {
            full
        }
    }
    fn qos0_messages(self) -> u64 {
        self.count(200_000)
    }
    fn qos1_messages(self) -> u64 {
        self.count(100_000)
    }
    fn fixed_rate_seconds(self) -> u64 {
        self.count(10)
    }
    fn device_seconds(self) -> u64 {
        self.count(20)
    }
    fn drain(self) -> Duration {
        self.duration(Duration::from_secs(30))
    }
}

// ---------------------------------------------------------------------------------------------
// Main flow

async fn run(cli: Cli) -> Result<()> {
    let scale = Scale { quick: cli.quick };
    let command_line = command_line();
    let date = command_output("date", &["-u"]).unwrap_or_else(|e| format!("unknown ({e})"));
    let nproc = command_output("nproc", &[]).unwrap_or_else(|e| format!("unknown ({e})"));
    let mosquitto_version = mosquitto_version();
    let (soft_nofile, hard_nofile) = open_file_limits();
    eprintln!("gatehouse-loadgen: {command_line}");
    eprintln!("open-file limit {soft_nofile} (hard {hard_nofile}); {nproc} CPUs; {mosquitto_version}");
    if soft_nofile.parse::<u64>().is_ok_and(|n| n < 2 * IDLE_CONNECTIONS as u64 + 1_000) {
        eprintln!(
            "warning: the open-file limit ({soft_nofile}) is too low for {IDLE_CONNECTIONS} idle connections; \
             run `ulimit -n 65536` first (make bench-broker does)"
        );
    }

    let mut kinds = Vec::new();
    if cli.only.as_deref() != Some("mosquitto") {
        kinds.push(Kind::Gatehouse);
    }
    if cli.only.as_deref() != Some("gatehouse") {
        kinds.push(Kind::Mosquitto);
    }
    let mut columns: Vec<BrokerRun> = Vec::new();
    // Mosquitto gets the password Gatehouse generated (or a random one when Gatehouse is skipped).
    let mut password = None;
    for kind in kinds {
        let mut column = BrokerRun::new(kind.name());
        match kind {
            Kind::Gatehouse => eprintln!("\n== Gatehouse ({}) ==", cli.gatehouse.display()),
            Kind::Mosquitto => eprintln!("\n== Mosquitto =="),
        }
        match start_broker(kind, &cli.gatehouse, &mut password).await {
            Ok((mut broker, pw)) => {
                run_message_scenarios(&mut broker, &pw, scale, &mut column).await;
                column.logs.push(("scenarios 1–3", broker.log_summary(1)));
            }
            Err(error) => column.fatal = Some(format!("{error:#}")),
        }
        if column.fatal.is_none() {
            // A fresh process, so that memory the broker kept from the message scenarios (queues,
            // segments, allocator caches) neither inflates nor absorbs the connections' share.
            eprintln!("[{}] restarting the broker for the idle-connection scenario", kind.name());
            match start_broker(kind, &cli.gatehouse, &mut password).await {
                Ok((mut broker, pw)) => {
                    let target = Target::new(&broker, &pw);
                    column.idle = Some(scenario(&mut broker, "idle connections", idle_connections(&target)).await);
                    column.logs.push(("scenario 4", broker.log_summary(2)));
                }
                Err(error) => column.idle = Some(Err(format!("broker did not restart: {error:#}"))),
            }
        }
        columns.push(column);
    }

    let header = Header { date, nproc, mosquitto_version, command_line, soft_nofile, hard_nofile };
    print!("{}", report(&header, scale, &columns));
    for column in &columns {
        if let Some(fatal) = &column.fatal {
            eprintln!("{}: {fatal}", column.name);
        }
    }
    if columns.iter().all(|c| c.fatal.is_some()) {
        bail!("no broker could be benchmarked");
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Gatehouse,
    Mosquitto,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gatehouse => "Gatehouse",
            Kind::Mosquitto => "Mosquitto",
        }
    }
}

/// Starts a broker; returns it with the password of the `bench` account.
async fn start_broker(kind: Kind, gatehouse: &Path, password: &mut Option<String>) -> Result<(BrokerProcess, String)> {
    match kind {
        Kind::Gatehouse => {
            let (broker, pw) = start_gatehouse(gatehouse).await?;
            password.get_or_insert_with(|| pw.clone());
            Ok((broker, pw))
        }
        Kind::Mosquitto => {
            let pw = password.get_or_insert_with(|| hex::encode(rand::random::<[u8; 16]>())).clone();
            Ok((start_mosquitto(&pw).await?, pw))
        }
    }
}

/// Scenarios 1 to 3 against one broker process.
async fn run_message_scenarios(broker: &mut BrokerProcess, password: &str, scale: Scale, column: &mut BrokerRun) {
    let target = Target::new(broker, password);
    column.qos0 = Some(scenario(broker, "throughput QoS 0", throughput(&target, QoS::AtMostOnce, scale)).await);
    column.qos1 = Some(scenario(broker, "throughput QoS 1", throughput(&target, QoS::AtLeastOnce, scale)).await);
    let seconds = scale.fixed_rate_seconds();
    column.fixed_rate = Some(
        scenario(broker, "fixed 10,000 msg/s", paced(&target, PacedLoad::fixed_rate(seconds), scale.drain())).await,
    );
    let seconds = scale.device_seconds();
    column.devices =
        Some(scenario(broker, "1,000 devices", paced(&target, PacedLoad::devices(seconds), scale.drain())).await);
}

/// Runs one scenario unless the broker has exited, then pauses a second.
async fn scenario<T>(
    broker: &mut BrokerProcess,
    name: &str,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T, String> {
    if let Some(status) = broker.exited() {
        let message = format!("broker exited before this scenario ({status})");
        eprintln!("[{}] {name}: skipped: {message}", broker.name);
        return Err(message);
    }
    eprintln!("[{}] {name} ...", broker.name);
    let started = Instant::now();
    let result = work.await.map_err(|e| format!("{e:#}"));
    match &result {
        Ok(_) => eprintln!("[{}] {name}: done in {:.1} s", broker.name, started.elapsed().as_secs_f64()),
        Err(error) => eprintln!("[{}] {name}: FAILED: {error}", broker.name),
    }
    if let Some(status) = broker.exited() {
        eprintln!("[{}] broker exited during {name} ({status})", broker.name);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    result
}

// ---------------------------------------------------------------------------------------------
// Broker processes

struct BrokerProcess {
    name: &'static str,
    child: Child,
    port: u16,
    /// Gatehouse's HTTP API (for its per-client drop counters).
    http: Option<String>,
    log: PathBuf,
    // Dropped after the process is killed (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

impl BrokerProcess {
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(error) => Some(format!("cannot check: {error}")),
        }
    }

    /// Copies the log out of the temporary directory and summarises its warnings and errors.
    fn log_summary(&self, run: u32) -> LogSummary {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let kept = std::env::temp_dir().join(format!("gatehouse-loadgen-{}-{run}.log", self.name.to_lowercase()));
        let kept = match std::fs::write(&kept, &text) {
            Ok(()) => Some(kept),
            Err(_) => None,
        };
        let notable: Vec<&str> = text
            .lines()
            .filter(|line| {
                let lower = line.to_lowercase();
                lower.contains("warn") || lower.contains("error") || lower.contains("fail")
            })
            .collect();
        let mut distinct: Vec<String> = Vec::new();
        for line in &notable {
            let short = strip_log_prefix(line);
            if distinct.len() < 8 && !distinct.iter().any(|d| d == &short) {
                distinct.push(short);
            }
        }
        LogSummary { lines: text.lines().count(), notable: notable.len(), examples: distinct, kept }
    }
}

/// Drops the timestamp at the start of a log line so that repeated messages compare equal.
fn strip_log_prefix(line: &str) -> String {
    let trimmed = line.trim();
    let rest = match trimmed.split_once(' ') {
        Some((first, rest)) if first.chars().next().is_some_and(|c| c.is_ascii_digit()) => rest,
        _ => trimmed,
    };
    let mut short: String = rest.chars().take(240).collect();
    if rest.chars().count() > 240 {
        short.push('…');
    }
    short
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    if tail.is_empty() {
        "(log is empty)".into()
    } else {
        tail
    }
}

const GATEHOUSE_CONFIG: &str = "[mqtt]
publish_rate = 0.0
byte_rate = 0.0
max_connections_per_address = 0
flap_max_disconnects = 0
max_connections = 20000
segment_size = 8388608
segment_count = 4
";

async fn start_gatehouse(binary: &Path) -> Result<(BrokerProcess, String)> {
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-loadgen-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let config = dir.path().join("bench.toml");
    std::fs::write(&config, GATEHOUSE_CONFIG).context("cannot write bench.toml")?;
    let log = dir.path().join("gatehouse.log");
    let log_file = File::create(&log).context("cannot create the Gatehouse log file")?;
    let child = Command::new(binary)
        .arg("run")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--mqtt", "127.0.0.1:0", "--mqtt-tls", "off", "--mqtt-ws", "off", "--mqtt-wss", "off"])
        .args(["--http", "127.0.0.1:0", "--no-ble", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {}; build it with `cargo build --release -p gateway-core --bin gatehouse` \
                 or pass --gatehouse PATH",
                binary.display()
            )
        })?;
    let mut broker = BrokerProcess { name: "Gatehouse", child, port: 0, http: None, log, _dir: dir };

    let runtime_file = broker._dir.path().join("gatehouse.runtime.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    let runtime: Value = loop {
        if let Some(status) = broker.exited() {
            bail!("gatehouse exited during start-up ({status}); its log ends with:\n{}", log_tail(&broker.log));
        }
        // The file is written in one go but not atomically: retry until it parses.
        if let Ok(text) = std::fs::read_to_string(&runtime_file) {
            if let Ok(value) = serde_json::from_str::<Value>(&text) {
                break value;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "gatehouse did not write {} within 60 s; its log ends with:\n{}",
                runtime_file.display(),
                log_tail(&broker.log)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let field = |key: &str| -> Result<SocketAddr> {
        runtime
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("gatehouse.runtime.json has no `{key}` address: {runtime}"))?
            .parse()
            .with_context(|| format!("gatehouse.runtime.json: `{key}` is not an address"))
    };
    let mqtt = field("mqtt")?;
    let http = field("http")?;
    broker.port = mqtt.port();
    broker.http = Some(http.to_string());

    let client = http_client()?;
    let response = client
        .post(format!("http://{http}/api/broker/accounts"))
        .json(&json!({
            "username": USERNAME,
            "role": "service",
            "rules": [{"filter": "bench/#", "access": "readwrite"}],
        }))
        .send()
        .await
        .context("cannot reach Gatehouse's HTTP API to create the MQTT account")?;
    let status = response.status();
    let body: Value = response.json().await.context("account creation: the response is not JSON")?;
    if status.as_u16() != 201 {
        bail!("account creation answered {status}: {body}");
    }
    let password = body
        .get("password")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("account creation: no password in {body}"))?
        .to_string();
    eprintln!("gatehouse (pid {}) listening on mqtt://{mqtt}, http://{http}", broker.child.id());
    Ok((broker, password))
}

fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")
}

async fn start_mosquitto(password: &str) -> Result<BrokerProcess> {
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-loadgen-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    // Mosquitto started as root drops to the `mosquitto` user before it reads the password file.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
        listener.local_addr()?.port()
    };
    let passwd = dir.path().join("passwd");
    let output = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&passwd)
        .arg(USERNAME)
        .arg(password)
        .output()
        .context("cannot run mosquitto_passwd (install mosquitto; `./scripts/setup.sh test` does)")?;
    if !output.status.success() {
        bail!("mosquitto_passwd failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644))?;
    }
    let config = dir.path().join("mosquitto.conf");
    let text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nset_tcp_nodelay true\n\
         max_queued_messages 1000000\nmax_inflight_messages 100\npersistence false\n",
        passwd.display()
    );
    std::fs::write(&config, text).context("cannot write mosquitto.conf")?;
    let log = dir.path().join("mosquitto.log");
    let log_file = File::create(&log).context("cannot create the Mosquitto log file")?;
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("cannot start {MOSQUITTO}"))?;
    let mut broker = BrokerProcess { name: "Mosquitto", child, port, http: None, log, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = broker.exited() {
            bail!("mosquitto exited during start-up ({status}); its log ends with:\n{}", log_tail(&broker.log));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("mosquitto did not accept connections on port {port} within 20 s:\n{}", log_tail(&broker.log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("mosquitto (pid {}) listening on mqtt://127.0.0.1:{port}", broker.child.id());
    Ok(broker)
}

// ---------------------------------------------------------------------------------------------
// /proc helpers

fn open_file_limits() -> (String, String) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    for line in limits.lines() {
        if let Some(rest) = line.strip_prefix("Max open files") {
            let mut parts = rest.split_whitespace();
            let soft = parts.next().unwrap_or("?").to_string();
            let hard = parts.next().unwrap_or("?").to_string();
            return (soft, hard);
        }
    }
    ("?".into(), "?".into())
}

fn command_output(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program).args(args).output().with_context(|| format!("cannot run {program}"))?;
    let mut text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&output.stderr).trim().to_string();
    }
    Ok(text)
}

fn mosquitto_version() -> String {
    // `mosquitto -h` prints its usage (first line: the version) and exits with status 3.
    match Command::new(MOSQUITTO).arg("-h").output() {
        Ok(output) => {
            let text = if output.stdout.is_empty() { output.stderr } else { output.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("mosquitto (unknown version)").trim().to_string()
        }
        Err(error) => format!("{MOSQUITTO} not runnable: {error}"),
    }
}

fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c)) {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Clients

struct Target {
    name: &'static str,
    port: u16,
    pid: u32,
    password: String,
    http: Option<String>,
}

impl Target {
    fn new(broker: &BrokerProcess, password: &str) -> Target {
        Target {
            name: broker.name,
            port: broker.port,
            pid: broker.child.id(),
            password: password.to_string(),
            http: broker.http.clone(),
        }
    }
}

fn next_client_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Connection errors seen by the event loops after CONNACK (each followed by a reconnect).
#[derive(Default)]
struct ClientErrors {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl ClientErrors {
    fn record(&self, who: &str, error: &ConnectionError) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().unwrap();
        if first.len() < 3 {
            let message = format!("{who}: {error}");
            eprintln!("  client error: {message}");
            first.push(message);
        }
    }
    fn summary(&self) -> String {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            "0".into()
        } else {
            format!("{count} ({})", self.first.lock().unwrap().join("; "))
        }
    }
}

/// A connected client whose event loop runs in a task; dropping it stops the task.
struct Conn {
    client: AsyncClient,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends DISCONNECT on every connection, gives the event loops a moment to write it, then stops them.
async fn close_all(mut conns: Vec<Conn>) {
    for conn in &conns {
        let _ = conn.client.try_disconnect();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    for conn in &mut conns {
        let _ = tokio::time::timeout_at(deadline, &mut conn.task).await;
    }
    drop(conns);
}

fn options(target: &Target, id: &str, keep_alive: Duration) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", target.port);
    options
        .set_credentials(USERNAME, target.password.clone())
        .set_keep_alive(keep_alive)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(100);
    options
}

/// Connects and polls until CONNACK.
async fn connect(target: &Target, id: &str, keep_alive: Duration, capacity: usize) -> Result<(AsyncClient, EventLoop)> {
    let (client, mut eventloop) = AsyncClient::new(options(target, id, keep_alive), capacity);
    let connected = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    })
    .await;
    match connected {
        Ok(Ok(())) => Ok((client, eventloop)),
        Ok(Err(error)) => Err(connect_error(target, id, error)),
        Err(_) => bail!("{id}: no CONNACK from {} within 20 s", target.name),
    }
}

fn connect_error(target: &Target, id: &str, error: ConnectionError) -> anyhow::Error {
    if let ConnectionError::Io(io) = &error {
        if matches!(io.raw_os_error(), Some(23 | 24)) {
            return anyhow!(
                "{id}: cannot connect to {}: {error}. Too many open files: raise the limit first \
                 (`ulimit -n 65536`; `make bench-broker` does)",
                target.name
            );
        }
    }
    anyhow!("{id}: cannot connect to {}: {error}", target.name)
}

/// Polls the event loop forever (rumqttc reconnects after an error), handing incoming publishes
/// to `on_publish`; stops after sending DISCONNECT.
fn spawn_event_loop(
    mut eventloop: EventLoop,
    who: String,
    errors: Arc<ClientErrors>,
    mut on_publish: impl FnMut(Publish) + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => on_publish(publish),
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(ConnectionError::RequestsDone) => break,
                Err(error) => {
                    errors.record(&who, &error);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Connects `count` clients named `<prefix><i>` (at most `concurrency` at once), each with its
/// event loop running.
async fn connect_many(
    target: &Target,
    prefix: &str,
    count: usize,
    concurrency: usize,
    keep_alive: Duration,
    capacity: usize,
    errors: &Arc<ClientErrors>,
) -> Result<Vec<Conn>> {
    let run = next_client_number();
    let semaphore = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let target = Arc::new(Target {
        name: target.name,
        port: target.port,
        pid: target.pid,
        password: target.password.clone(),
        http: None,
    });
    let mut conns: Vec<Option<Conn>> = (0..count).map(|_| None).collect();
    for i in 0..count {
        let permit = semaphore.clone().acquire_owned().await?;
        let target = target.clone();
        let errors = errors.clone();
        let id = format!("lg{run}-{prefix}{i}");
        tasks.spawn(async move {
            let _permit = permit;
            let (client, eventloop) = connect(&target, &id, keep_alive, capacity).await?;
            let task = spawn_event_loop(eventloop, id, errors, |_| {});
            Ok::<_, anyhow::Error>((i, Conn { client, task }))
        });
        // Surface a failure early instead of queueing thousands of doomed attempts.
        while let Some(done) = tasks.try_join_next() {
            let (i, conn) = done??;
            conns[i] = Some(conn);
        }
        if count >= 1_000 && (i + 1) % 1_000 == 0 {
            eprintln!("  {} connection attempts started", i + 1);
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (i, conn) = done??;
        conns[i] = Some(conn);
    }
    Ok(conns.into_iter().map(|c| c.expect("every client connected")).collect())
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn payload(publisher: u32, seq: u32) -> Vec<u8> {
    let mut payload = vec![0u8; PAYLOAD_LEN];
    payload[0..8].copy_from_slice(&unix_nanos().to_le_bytes());
    payload[8..12].copy_from_slice(&publisher.to_le_bytes());
    payload[12..16].copy_from_slice(&seq.to_le_bytes());
    payload
}

/// What the subscriber has seen.
struct Received {
    origin: Instant,
    count: AtomicU64,
    duplicates: AtomicU64,
    malformed: AtomicU64,
    /// Nanoseconds after `origin` of the latest message.
    last_nanos: AtomicU64,
    latencies_ns: Mutex<Vec<u64>>,
}

impl Received {
    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    fn last(&self) -> Option<Instant> {
        match self.last_nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.origin + Duration::from_nanos(n)),
        }
    }
}

/// Subscribes to `bench/#` and waits for the SUBACK.
async fn subscriber(target: &Target, qos: QoS, errors: &Arc<ClientErrors>) -> Result<(Conn, Arc<Received>)> {
    let id = format!("lg{}-sub", next_client_number());
    let (client, mut eventloop) = connect(target, &id, Duration::from_secs(30), 100).await?;
    client.subscribe("bench/#", qos).await.context("subscribe")?;
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(ack))) => return Ok(ack),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    })
    .await;
    let ack = match acked {
        Ok(Ok(ack)) => ack,
        Ok(Err(error)) => bail!("{id}: connection failed while subscribing: {error}"),
        Err(_) => bail!("{id}: no SUBACK from {} within 10 s", target.name),
    };
    if ack.return_codes.iter().any(|code| matches!(code, SubscribeReasonCode::Failure)) {
        bail!("{id}: {} refused the subscription to bench/#", target.name);
    }
    let received = Arc::new(Received {
        origin: Instant::now(),
        count: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        malformed: AtomicU64::new(0),
        last_nanos: AtomicU64::new(0),
        latencies_ns: Mutex::new(Vec::with_capacity(200_000)),
    });
    let state = received.clone();
    let mut seen: HashSet<u64> = HashSet::with_capacity(200_000);
    let task = spawn_event_loop(eventloop, id, errors.clone(), move |publish| {
        let now = unix_nanos();
        let p = &publish.payload;
        if p.len() != PAYLOAD_LEN {
            state.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sent = u64::from_le_bytes(p[0..8].try_into().unwrap());
        let publisher = u32::from_le_bytes(p[8..12].try_into().unwrap());
        let seq = u32::from_le_bytes(p[12..16].try_into().unwrap());
        if !seen.insert(((publisher as u64) << 32) | seq as u64) {
            state.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        state.latencies_ns.lock().unwrap().push(now.saturating_sub(sent));
        state.last_nanos.store((state.origin.elapsed().as_nanos() as u64).max(1), Ordering::Relaxed);
        state.count.fetch_add(1, Ordering::Relaxed);
    });
    Ok((Conn { client, task }, received))
}

/// Waits until the subscriber has `expected` messages or `drain` has passed since the last publish.
async fn drain(received: &Received, expected: u64, drain: Duration) {
    let last_publish = Instant::now();
    let mut last_report = Instant::now();
    while received.count() < expected && last_publish.elapsed() < drain {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!("  waiting: {} of {expected} received", received.count());
            last_report = Instant::now();
        }
    }
}

struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn latency(received: &Received) -> Option<Latency> {
    let mut values = std::mem::take(&mut *received.latencies_ns.lock().unwrap());
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let at = |pct: usize| values[(values.len() * pct / 100).min(values.len() - 1)] as f64 / 1e6;
    Some(Latency { p50_ms: at(50), p99_ms: at(99), max_ms: *values.last().unwrap() as f64 / 1e6 })
}

/// Gatehouse counts, per client, the messages its router skipped for a lagging subscriber, and
/// publishes it throttled or denied. Summed over the connected clients; `None` for Mosquitto.
async fn gatehouse_counters(target: &Target) -> Option<String> {
    let http = target.http.as_ref()?;
    let fetched = async {
        let clients: Value =
            http_client()?.get(format!("http://{http}/api/broker/clients")).send().await?.json().await?;
        let mut sums = [0u64; 3];
        for client in clients.as_array().into_iter().flatten() {
            for (sum, key) in sums.iter_mut().zip(["dropped", "throttled", "denied"]) {
                *sum += client.get(key).and_then(Value::as_u64).unwrap_or(0);
            }
        }
        Ok::<_, anyhow::Error>(sums)
    };
    Some(match fetched.await {
        Ok([dropped, throttled, denied]) => format!("{dropped} / {throttled} / {denied}"),
        Err(error) => format!("unavailable ({error:#})"),
    })
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: throughput

struct Throughput {
    sent: u64,
    received: u64,
    duplicates: u64,
    seconds: f64,
    latency: Option<Latency>,
    broker_cpu_us: u64,
    loadgen_cpu_us: u64,
    gatehouse_counters: Option<String>,
    errors: String,
}

async fn throughput(target: &Target, qos: QoS, scale: Scale) -> Result<Throughput> {
    let total = match qos {
        QoS::AtMostOnce => scale.qos0_messages(),
        _ => scale.qos1_messages(),
    };
    let errors = Arc::new(ClientErrors::default());
    let (sub, received) = subscriber(target, qos, &errors).await?;
    let publishers = connect_many(target, "p", PUBLISHERS, PUBLISHERS, Duration::from_secs(30), 100, &errors).await?;
    let per_publisher = total / PUBLISHERS as u64;
    let sent = Arc::new(AtomicU64::new(0));

    let broker_cpu0 = bench::cpu_micros(target.pid)?;
    let own_cpu0 = bench::cpu_micros(std::process::id())?;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, conn) in publishers.iter().enumerate() {
        let client = conn.client.clone();
        let sent = sent.clone();
        tasks.spawn(async move {
            let topic = format!("bench/p{i}");
            for seq in 0..per_publisher {
                client.publish(topic.clone(), qos, false, payload(i as u32, seq as u32)).await?;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, rumqttc::ClientError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?.context("publish")?;
    }
    let sent = sent.load(Ordering::Relaxed);
    eprintln!("  {sent} published in {:.2} s; draining", start.elapsed().as_secs_f64());
    drain(&received, sent, scale.drain()).await;
    let broker_cpu1 = bench::cpu_micros(target.pid)?;
    let own_cpu1 = bench::cpu_micros(std::process::id())?;
    let gatehouse_counters = gatehouse_counters(target).await;

    let end = received.last().unwrap_or(start);
    let result = Throughput {
        sent,
        received: received.count(),
        duplicates: received.duplicates.load(Ordering::Relaxed),
        seconds: end.saturating_duration_since(start).as_secs_f64(),
        latency: latency(&received),
        broker_cpu_us: broker_cpu1 - broker_cpu0,
        loadgen_cpu_us: own_cpu1 - own_cpu0,
        gatehouse_counters,
        errors: errors.summary(),
    };
    let mut conns = publishers;
    conns.push(sub);
    close_all(conns).await;
    if result.received == 0 {
        bail!("the subscriber received nothing of {sent} messages");
    }
    eprintln!(
        "  {} of {} received, {:.0} msg/s",
        result.received,
        result.sent,
        result.received as f64 / result.seconds.max(1e-9)
    );
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Scenarios 2 and 3: paced publishers

struct PacedLoad {
    prefix: &'static str,
    clients: usize,
    period: Duration,
    per_client: u64,
    connect_concurrency: usize,
}

impl PacedLoad {
    /// 10 publishers × 1,000 msg/s.
    fn fixed_rate(seconds: u64) -> PacedLoad {
        PacedLoad {
            prefix: "p",
            clients: PUBLISHERS,
            period: Duration::from_millis(1),
            per_client: 1_000 * seconds,
            connect_concurrency: PUBLISHERS,
        }
    }
    /// 1,000 devices × 1 msg/s.
    fn devices(seconds: u64) -> PacedLoad {
        PacedLoad {
            prefix: "d",
            clients: DEVICES,
            period: Duration::from_secs(1),
            per_client: seconds,
            connect_concurrency: 50,
        }
    }
    fn target_rate(&self) -> f64 {
        self.clients as f64 / self.period.as_secs_f64()
    }
}

struct Paced {
    target_rate: f64,
    sent: u64,
    received: u64,
    duplicates: u64,
    send_seconds: f64,
    latency: Option<Latency>,
    broker_cpu_pct: f64,
    loadgen_cpu_pct: f64,
    gatehouse_counters: Option<String>,
    errors: String,
}

async fn paced(target: &Target, load: PacedLoad, drain_time: Duration) -> Result<Paced> {
    let qos = QoS::AtLeastOnce;
    let errors = Arc::new(ClientErrors::default());
    let (sub, received) = subscriber(target, qos, &errors).await?;
    let connect_started = Instant::now();
    let clients = connect_many(
        target,
        load.prefix,
        load.clients,
        load.connect_concurrency,
        Duration::from_secs(30),
        100,
        &errors,
    )
    .await?;
    eprintln!("  {} clients connected in {:.2} s", load.clients, connect_started.elapsed().as_secs_f64());
    let sent = Arc::new(AtomicU64::new(0));

    let broker_cpu0 = bench::cpu_micros(target.pid)?;
    let own_cpu0 = bench::cpu_micros(std::process::id())?;
    // Start a little in the future so that every task is waiting when the first tick comes.
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = JoinSet::new();
    for (i, conn) in clients.iter().enumerate() {
        let client = conn.client.clone();
        let sent = sent.clone();
        let period = load.period;
        let count = load.per_client;
        // Phases spread evenly over one period.
        let phase = period.mul_f64(i as f64 / load.clients as f64);
        let topic = format!("bench/{}{i}", load.prefix);
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::from_std(start + phase), period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
            for seq in 0..count {
                ticks.tick().await;
                client.publish(topic.clone(), qos, false, payload(i as u32, seq as u32)).await?;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, rumqttc::ClientError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?.context("publish")?;
    }
    let send_seconds = start.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    let broker_cpu1 = bench::cpu_micros(target.pid)?;
    let own_cpu1 = bench::cpu_micros(std::process::id())?;
    eprintln!("  {sent} published in {send_seconds:.2} s; draining");
    drain(&received, sent, drain_time).await;
    let gatehouse_counters = gatehouse_counters(target).await;

    let result = Paced {
        target_rate: load.target_rate(),
        sent,
        received: received.count(),
        duplicates: received.duplicates.load(Ordering::Relaxed),
        send_seconds,
        latency: latency(&received),
        broker_cpu_pct: (broker_cpu1 - broker_cpu0) as f64 / 1e4 / send_seconds,
        loadgen_cpu_pct: (own_cpu1 - own_cpu0) as f64 / 1e4 / send_seconds,
        gatehouse_counters,
        errors: errors.summary(),
    };
    let mut conns = clients;
    conns.push(sub);
    close_all(conns).await;
    if result.received == 0 {
        bail!("the subscriber received nothing of {sent} messages");
    }
    eprintln!("  {} of {} received", result.received, result.sent);
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Scenario 4: idle connections

struct Idle {
    fresh_kib: u64,
    before_kib: u64,
    after_kib: u64,
    connect_seconds: f64,
    errors: String,
}

async fn idle_connections(target: &Target) -> Result<Idle> {
    let errors = Arc::new(ClientErrors::default());
    let fresh_kib = bench::status_kib(target.pid, ["VmRSS:"])?[0];
    // One connection first, alone: the first CONNECT of a username costs Gatehouse an argon2id run
    // (19 MiB) before its credential cache holds it, and a burst of them at once would be counted
    // as connection memory.
    let warm_up = connect_many(target, "w", 1, 1, Duration::from_secs(60), 10, &errors).await?;
    close_all(warm_up).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_kib = bench::status_kib(target.pid, ["VmRSS:"])?[0];
    let started = Instant::now();
    let conns = connect_many(target, "i", IDLE_CONNECTIONS, 100, Duration::from_secs(60), 10, &errors).await?;
    let connect_seconds = started.elapsed().as_secs_f64();
    eprintln!("  {IDLE_CONNECTIONS} connections in {connect_seconds:.2} s; waiting 3 s");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_kib = bench::status_kib(target.pid, ["VmRSS:"])?[0];
    let result = Idle { fresh_kib, before_kib, after_kib, connect_seconds, errors: errors.summary() };
    close_all(conns).await;
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Report

struct LogSummary {
    lines: usize,
    notable: usize,
    examples: Vec<String>,
    kept: Option<PathBuf>,
}

struct BrokerRun {
    name: &'static str,
    fatal: Option<String>,
    qos0: Option<Result<Throughput, String>>,
    qos1: Option<Result<Throughput, String>>,
    fixed_rate: Option<Result<Paced, String>>,
    devices: Option<Result<Paced, String>>,
    idle: Option<Result<Idle, String>>,
    logs: Vec<(&'static str, LogSummary)>,
}

impl BrokerRun {
    fn new(name: &'static str) -> BrokerRun {
        BrokerRun {
            name,
            fatal: None,
            qos0: None,
            qos1: None,
            fixed_rate: None,
            devices: None,
            idle: None,
            logs: Vec::new(),
        }
    }
}

struct Header {
    date: String,
    nproc: String,
    mosquitto_version: String,
    command_line: String,
    soft_nofile: String,
    hard_nofile: String,
}

fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn loss(sent: u64, received: u64) -> String {
    let lost = sent as i64 - received as i64;
    if sent == 0 {
        return "–".into();
    }
    format!("{} ({:.2} %)", lost, lost as f64 * 100.0 / sent as f64)
}

fn ms(latency: &Option<Latency>, pick: fn(&Latency) -> f64) -> String {
    latency.as_ref().map(|l| format!("{:.2}", pick(l))).unwrap_or_else(|| "–".into())
}

/// One Markdown table: a row label, then one cell per broker.
fn table<T>(
    out: &mut String,
    columns: &[BrokerRun],
    pick: impl Fn(&BrokerRun) -> Option<&Option<Result<T, String>>>,
    rows: &[(&str, &dyn Fn(&T) -> String)],
) {
    out.push_str("| |");
    for column in columns {
        let _ = write!(out, " {} |", column.name);
    }
    out.push_str("\n|---|");
    for _ in columns {
        out.push_str("---:|");
    }
    out.push('\n');
    for (label, cell) in rows {
        let _ = write!(out, "| {label} |");
        for column in columns {
            let text = match (&column.fatal, pick(column)) {
                (Some(_), _) => "broker did not start".to_string(),
                (None, Some(Some(Ok(value)))) => cell(value),
                (None, Some(Some(Err(error)))) => format!("FAILED: {}", error.replace('|', "\\|").replace('\n', " ")),
                (None, _) => "not run".to_string(),
            };
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out.push('\n');
}

fn report(header: &Header, scale: Scale, columns: &[BrokerRun]) -> String {
    let mut out = String::new();
    out.push_str("# MQTT broker load: Gatehouse vs Mosquitto\n\n");
    if scale.quick {
        out.push_str("**Quick run** (`--quick`): message counts and durations divided by 10; not for quoting.\n\n");
    }
    let _ = writeln!(out, "- Date: {}", header.date);
    let _ = writeln!(out, "- CPUs (`nproc`): {}", header.nproc);
    let _ = writeln!(out, "- Mosquitto: {}", header.mosquitto_version);
    let _ = writeln!(out, "- Command: `{}`", header.command_line);
    let _ = writeln!(out, "- Open-file limit: {} (hard {})", header.soft_nofile, header.hard_nofile);
    out.push_str(
        "- Setup: each broker runs alone on loopback TCP with username/password authentication, the load \
         generator (rumqttc 0.25, MQTT 3.1.1, one tokio runtime with 2 workers) on the same machine, so \
         both compete for the same CPUs. Payloads are 100 bytes; latency is publish call → subscriber \
         receipt. Gatehouse: rate limits, per-address limit and flap bans off, 4 × 8 MiB segments per \
         filter. Mosquitto: `max_queued_messages 1000000`, `max_inflight_messages 100`, no persistence.\n\n",
    );

    let throughput_rows: [(&str, &dyn Fn(&Throughput) -> String); 9] = [
        ("Delivered msg/s", &|t| int((t.received as f64 / t.seconds.max(1e-9)) as u64)),
        ("Sent / received", &|t| format!("{} / {}", int(t.sent), int(t.received))),
        ("Loss (sent − received)", &|t| loss(t.sent, t.received)),
        ("Latency p50 (ms)", &|t| ms(&t.latency, |l| l.p50_ms)),
        ("Latency p99 (ms)", &|t| ms(&t.latency, |l| l.p99_ms)),
        ("Broker CPU µs per delivered message", &|t| {
            format!("{:.1}", t.broker_cpu_us as f64 / t.received.max(1) as f64)
        }),
        ("Load generator CPU µs per message", &|t| {
            format!("{:.1}", t.loadgen_cpu_us as f64 / t.received.max(1) as f64)
        }),
        ("Duplicates; client connection errors", &|t| format!("{}; {}", t.duplicates, t.errors)),
        ("Gatehouse dropped / throttled / denied", &|t| t.gatehouse_counters.clone().unwrap_or_else(|| "n/a".into())),
    ];
    let _ = writeln!(
        out,
        "## 1a. Throughput, {PUBLISHERS} publishers → 1 subscriber, QoS 0 ({} messages)\n",
        int(scale.qos0_messages())
    );
    table(&mut out, columns, |c| Some(&c.qos0), &throughput_rows);
    let _ = writeln!(
        out,
        "## 1b. Throughput, {PUBLISHERS} publishers → 1 subscriber, QoS 1 ({} messages)\n",
        int(scale.qos1_messages())
    );
    table(&mut out, columns, |c| Some(&c.qos1), &throughput_rows);
    out.push_str(
        "Delivered msg/s = messages received ÷ time from the first publish to the last receipt. Publishers \
         send as fast as the client lets them, so latency here is mostly queueing.\n\n",
    );

    let paced_rows: [(&str, &dyn Fn(&Paced) -> String); 10] = [
        ("Target rate (msg/s)", &|p| int(p.target_rate as u64)),
        ("Achieved send rate (msg/s)", &|p| int((p.sent as f64 / p.send_seconds.max(1e-9)) as u64)),
        ("Sent / received", &|p| format!("{} / {}", int(p.sent), int(p.received))),
        ("Loss (sent − received)", &|p| loss(p.sent, p.received)),
        ("Latency p50 (ms)", &|p| ms(&p.latency, |l| l.p50_ms)),
        ("Latency p99 (ms)", &|p| ms(&p.latency, |l| l.p99_ms)),
        ("Latency max (ms)", &|p| ms(&p.latency, |l| l.max_ms)),
        ("Broker / load generator CPU (% of one core)", &|p| {
            format!("{:.1} / {:.1}", p.broker_cpu_pct, p.loadgen_cpu_pct)
        }),
        ("Duplicates; client connection errors", &|p| format!("{}; {}", p.duplicates, p.errors)),
        ("Gatehouse dropped / throttled / denied", &|p| p.gatehouse_counters.clone().unwrap_or_else(|| "n/a".into())),
    ];
    let _ = writeln!(
        out,
        "## 2. Latency at a fixed 10,000 msg/s, QoS 1, {} s ({PUBLISHERS} publishers × 1,000 msg/s)\n",
        scale.fixed_rate_seconds()
    );
    table(&mut out, columns, |c| Some(&c.fixed_rate), &paced_rows);
    let _ = writeln!(
        out,
        "## 3. {} devices × 1 msg/s, QoS 1, {} s (phases spread over the second)\n",
        int(DEVICES as u64),
        scale.device_seconds()
    );
    table(&mut out, columns, |c| Some(&c.devices), &paced_rows);

    let idle_rows: [(&str, &dyn Fn(&Idle) -> String); 6] = [
        ("Broker RSS, fresh process (KiB)", &|i| int(i.fresh_kib)),
        ("… after one warm-up connection = before (KiB)", &|i| int(i.before_kib)),
        ("… with the idle connections = after (KiB)", &|i| int(i.after_kib)),
        ("KiB per connection", &|i| {
            format!("{:.1}", (i.after_kib as f64 - i.before_kib as f64) / IDLE_CONNECTIONS as f64)
        }),
        ("Time to connect all (s; 100 at a time)", &|i| format!("{:.2}", i.connect_seconds)),
        ("Client connection errors", &|i| i.errors.clone()),
    ];
    let _ = writeln!(
        out,
        "## 4. Idle connections: broker RSS with {} authenticated connections (keep-alive 60 s)\n",
        int(IDLE_CONNECTIONS as u64)
    );
    table(&mut out, columns, |c| Some(&c.idle), &idle_rows);
    out.push_str(
        "Measured on a freshly started broker process (the message scenarios run on another), after one \
         warm-up connection (which fills Gatehouse's credential cache); KiB per connection = (after − \
         before) ÷ 5,000, RSS read 3 s after the last CONNACK.\n\n",
    );

    out.push_str("## Broker logs\n\n");
    for column in columns {
        if let Some(fatal) = &column.fatal {
            let _ = writeln!(out, "- {}: did not start: {}", column.name, fatal.replace('\n', " / "));
        }
        for (label, log) in &column.logs {
            let kept = log.kept.as_ref().map(|p| format!(", kept at `{}`", p.display())).unwrap_or_default();
            let _ = writeln!(
                out,
                "- {} ({label}): {} lines, {} mentioning warn/error/fail{kept}",
                column.name, log.lines, log.notable
            );
            for example in &log.examples {
                let _ = writeln!(out, "  - `{}`", example.replace('`', "'"));
            }
        }
    }
    out
}
