//! Test support: runs the real `gatehouse` binary as a process with dynamic ports and a temporary
//! data directory, and gives tests real clients (MQTT over TCP, HTTP, SQLite) to talk to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod bluez;
pub mod browser;
pub mod desktop;
pub mod device;
pub mod mosquitto;
pub mod mqtt;
pub mod mqtt5;
pub mod raw;
pub mod reference;
pub mod secrets;
pub mod wire;

/// The `gatehouse` binary next to this test executable (target/<profile>/gatehouse).
pub fn gatehouse_bin() -> PathBuf {
    workspace_bin("gatehouse")
}

/// A binary of the workspace, built next to this test executable (target/<profile>/<name>).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} does not exist; build it first with `cargo build -p gateway-core --bins` (make test does)",
        bin.display()
    );
    bin
}

#[derive(Debug, Clone)]
pub struct Runtime {
    pub mqtt: std::net::SocketAddr,
    pub mqtt_tls: std::net::SocketAddr,
    pub mqtt_ws: std::net::SocketAddr,
    pub mqtt_wss: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    /// The remote receivers' HTTP ingest listener.
    pub ingest: std::net::SocketAddr,
}

/// MQTT credentials created through the API.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A running `gatehouse run` process on a temporary data directory. Killed (SIGKILL) on drop if
/// still running; its log is printed when the test panics.
pub struct Daemon {
    child: Option<Child>,
    pub runtime: Runtime,
    pub log_path: PathBuf,
    pub data_dir: PathBuf,
    args: Vec<String>,
    /// Listen on these addresses instead of fresh ports (a restart devices can find again).
    fixed: Option<Runtime>,
    /// The D-Bus system bus for the Bluetooth scanner; `None` runs with `--no-ble`.
    bluetooth_bus: Option<String>,
    /// Extra environment variables for the process (they override `RUST_LOG`).
    env: Vec<(String, String)>,
    _temp: tempfile::TempDir,
}

impl Daemon {
    /// Starts `gatehouse run --data-dir <temp> --no-ble <extra>` with every listener on a free
    /// loopback port.
    pub fn start(extra: &[&str]) -> Daemon {
        Daemon::start_with_config("", extra)
    }

    /// Like [`Daemon::start`], with `config_toml` written to a file and passed with `--config`.
    pub fn start_with_config(config_toml: &str, extra: &[&str]) -> Daemon {
        Daemon::start_full(config_toml, extra, None, &[])
    }

    /// Like [`Daemon::start_with_config`], with the Bluetooth scanner on, talking to the D-Bus
    /// system bus at `bus_address` (a fake BlueZ).
    pub fn start_with_bluetooth(config_toml: &str, extra: &[&str], bus_address: &str) -> Daemon {
        Daemon::start_full(config_toml, extra, Some(bus_address.to_string()), &[])
    }

    /// Like [`Daemon::start_with_config`], with extra environment variables for the process
    /// (`RUST_LOG` among them overrides the tests' default log filter).
    pub fn start_with_env(config_toml: &str, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::start_full(config_toml, extra, None, env)
    }

    /// Like [`Daemon::start_with_config`], in a data directory the caller prepared (a small
    /// filesystem mounted on it, a damaged database placed in it…).
    pub fn start_in(temp: tempfile::TempDir, config_toml: &str, extra: &[&str]) -> Daemon {
        Daemon::start_full_in(temp, config_toml, extra, None, &[])
    }

    fn start_full(config_toml: &str, extra: &[&str], bluetooth_bus: Option<String>, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_full_in(tempfile::tempdir().expect("temp dir"), config_toml, extra, bluetooth_bus, env)
    }

    fn start_full_in(
        temp: tempfile::TempDir,
        config_toml: &str,
        extra: &[&str],
        bluetooth_bus: Option<String>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !config_toml.is_empty() {
            let path = temp.path().join("gatehouse.toml");
            std::fs::write(&path, config_toml).expect("write config");
            args.push("--config".into());
            args.push(path.display().to_string());
        }
        let unbound: std::net::SocketAddr = ([0, 0, 0, 0], 0).into();
        let mut daemon = Daemon {
            child: None,
            runtime: Runtime {
                mqtt: unbound,
                mqtt_tls: unbound,
                mqtt_ws: unbound,
                mqtt_wss: unbound,
                http: unbound,
                ingest: unbound,
            },
            log_path: PathBuf::new(),
            data_dir: temp.path().to_path_buf(),
            args,
            fixed: None,
            bluetooth_bus,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            _temp: temp,
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        self.log_path = self.data_dir.join(format!("gatehouse-{}.log", unique()));
        let log = std::fs::File::create(&self.log_path).expect("log file");
        let runtime_file = self.data_dir.join("gatehouse.runtime.json");
        let _ = std::fs::remove_file(&runtime_file);
        let mut command = Command::new(gatehouse_bin());
        command.arg("run").arg("--data-dir").arg(&self.data_dir).args(self.listen_args());
        match &self.bluetooth_bus {
            Some(bus) => command.env("DBUS_SYSTEM_BUS_ADDRESS", bus),
            None => command.arg("--no-ble"),
        };
        let child = command
            .args(&self.args)
            .env("RUST_LOG", "info,gateway_core=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start gatehouse");
        self.child = Some(child);
        self.runtime = self.wait_for_runtime(&runtime_file);
    }

    fn listen_args(&self) -> Vec<String> {
        let any = "127.0.0.1:0".to_string();
        let [mqtt, tls, ws, wss, http, ingest] = match &self.fixed {
            Some(r) => [r.mqtt, r.mqtt_tls, r.mqtt_ws, r.mqtt_wss, r.http, r.ingest].map(|a| a.to_string()),
            None => [(); 6].map(|_| any.clone()),
        };
        [
            "--mqtt",
            &mqtt,
            "--mqtt-tls",
            &tls,
            "--mqtt-ws",
            &ws,
            "--mqtt-wss",
            &wss,
            "--http",
            &http,
            "--ingest",
            &ingest,
        ]
        .map(String::from)
        .to_vec()
    }

    fn wait_for_runtime(&mut self, path: &Path) -> Runtime {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(json) = serde_json::from_str::<Value>(&text) {
                    let addr = |value: &Value| value.as_str().and_then(|s| s.parse().ok());
                    let listeners = &json["mqttListeners"];
                    if let (Some(mqtt), Some(mqtt_tls), Some(mqtt_ws), Some(mqtt_wss), Some(http), Some(ingest)) = (
                        addr(&listeners["tcp"]),
                        addr(&listeners["tls"]),
                        addr(&listeners["ws"]),
                        addr(&listeners["wss"]),
                        addr(&json["http"]),
                        addr(&json["ingest"]),
                    ) {
                        return Runtime { mqtt, mqtt_tls, mqtt_ws, mqtt_wss, http, ingest };
                    }
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("gatehouse exited during start ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gatehouse did not write its runtime file within 30 s:\n{}", self.log());
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.runtime.http, path)
    }

    pub fn database(&self) -> PathBuf {
        self.data_dir.join("gatehouse.db")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = reqwest::get(self.http(path)).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_else(|e| panic!("GET {path}: body is not JSON: {e}"));
        assert!(status.is_success(), "GET {path}: {status} {body}");
        body
    }

    /// `GET /api/devices/{id}`, or `null` while the gateway does not know the device.
    pub async fn device_or_null(&self, id: &str) -> Value {
        let response = reqwest::get(self.http(&format!("/api/devices/{id}"))).await.expect("GET device");
        if response.status() == 404 {
            return Value::Null;
        }
        response.json().await.expect("device JSON")
    }

    /// Waits (at most `within`) until the device's latest reading has this measurement sequence;
    /// returns the device.
    pub async fn wait_for_sequence(&self, id: &str, sequence: u64, within: Duration) -> Value {
        let mut last = Value::Null;
        eventually(within, async || {
            last = self.device_or_null(id).await;
            (last["lastReading"]["measurementSequenceNumber"] == sequence).then(|| last.clone())
        })
        .await
        .unwrap_or_else(|| panic!("{id}: no reading with sequence {sequence}; device: {last}\n{}", self.log()))
    }

    /// POSTs JSON and returns the status and the body.
    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(self.http(path))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates an MQTT identity through the API. `rules`: extra (filter, access) pairs.
    pub async fn account(&self, username: &str, role: &str, rules: &[(&str, &str)]) -> Credentials {
        let rules: Vec<Value> = rules.iter().map(|(f, a)| serde_json::json!({"filter": f, "access": a})).collect();
        let (status, body) = self
            .post_json("/api/broker/accounts", serde_json::json!({"username": username, "role": role, "rules": rules}))
            .await;
        assert_eq!(status, 201, "create account {username}: {body}");
        Credentials { username: username.to_string(), password: body["password"].as_str().unwrap().to_string() }
    }

    /// Sends `signal` and waits for the exit status (at most `within`).
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon is running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal gatehouse");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gatehouse did not exit within {within:?} after {signal}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the daemon to exit by itself (at most `within`).
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("daemon is running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "gatehouse did not exit within {within:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Graceful stop with SIGTERM; asserts a clean exit.
    pub fn stop(&mut self) {
        let status = self.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
        assert!(status.success(), "gatehouse exited with {status}:\n{}", self.log());
    }

    /// Stops the daemon if it runs and starts it again on the same data directory (new ports).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }
}

impl Daemon {
    /// `kill -9`, then start again on the same data directory and the same ports, so running
    /// devices reconnect by themselves.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// `kill -9`, leaving it down until [`Daemon::start_again`].
    pub fn kill(&mut self) {
        self.stop_with(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5));
    }

    /// Starts a killed or stopped daemon again on the same data directory and the same ports.
    pub fn start_again(&mut self) {
        self.fixed = Some(self.runtime.clone());
        self.spawn();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- gatehouse log (last 60 lines, {}) ----", self.log_path.display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// An external tool the test needs. In CI (`CI` set) a missing tool fails the test; on a
/// developer machine the test is skipped with a note (`make test` installs everything).
pub fn require_tool(path: &str) -> Option<PathBuf> {
    let found = if path.contains('/') {
        Some(PathBuf::from(path)).filter(|p| p.exists())
    } else {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(path)).find(|p| p.exists()))
    };
    match found {
        Some(found) => Some(found),
        None if std::env::var_os("CI").is_some() => {
            panic!("{path} is required in CI; scripts/setup.sh test installs it")
        }
        None => {
            eprintln!("SKIPPED: {path} is not installed (run `make test`, which installs it)");
            None
        }
    }
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T>(timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
