//! A desktop session for the desktop app's tests: an X display (Xvfb), a private session D-Bus
//! with a notification daemon and a tray host (python-dbusmock, `fixtures/sni_watcher.py`), a
//! throwaway HOME, and WebKitWebDriver to drive the app's real WebKitGTK window (W3C WebDriver
//! over HTTP, as tauri-driver does on Linux). Nothing here is the app: only its surroundings.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PYTHON: &str = "/usr/bin/python3";

pub struct DesktopSession {
    pub dir: tempfile::TempDir,
    /// Killed in reverse order on drop.
    children: Vec<Child>,
    pub display: String,
    pub bus: String,
    pub home: PathBuf,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

fn name_owned(address: &str, name: &str) -> bool {
    let Ok(mut channel) = dbus::channel::Channel::open_private(address) else { return false };
    if channel.register().is_err() {
        return false;
    }
    let conn = dbus::blocking::Connection::from(channel);
    let proxy = conn.with_proxy("org.freedesktop.DBus", "/org/freedesktop/DBus", Duration::from_secs(2));
    let answer: Result<(bool,), _> = proxy.method_call("org.freedesktop.DBus", "NameHasOwner", (name,));
    answer.is_ok_and(|(owned,)| owned)
}

pub fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl DesktopSession {
    /// `None` (skip) when a tool is missing outside CI; in CI that panics.
    pub fn start() -> Option<DesktopSession> {
        for tool in ["Xvfb", "dbus-daemon", "WebKitWebDriver", "xwininfo", "import"] {
            crate::require_tool(tool)?;
        }
        let has_dbusmock =
            Command::new(PYTHON).args(["-c", "import dbusmock, Xlib"]).status().is_ok_and(|s| s.success());
        if !has_dbusmock {
            assert!(std::env::var_os("CI").is_none(), "python3-dbusmock and python3-xlib are required in CI");
            eprintln!("SKIPPED: python3-dbusmock or python3-xlib is not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let mut session =
            DesktopSession { children: Vec::new(), display: String::new(), bus: String::new(), home, dir };

        // -displayfd picks a free display number and prints it.
        let mut xvfb = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Xvfb");
        let mut line = String::new();
        BufReader::new(xvfb.stdout.take().unwrap()).read_line(&mut line).expect("Xvfb prints its display");
        session.display = format!(":{}", line.trim());
        session.children.push(xvfb);

        let socket = session.dir.path().join("session_bus");
        let bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the session bus");
        session.children.push(bus);
        session.bus = format!("unix:path={}", socket.display());
        wait_until(Duration::from_secs(10), "the session bus", || socket.exists());

        let notify_log = session.dir.path().join("notifications.log");
        let notifyd = Command::new(PYTHON)
            .args(["-m", "dbusmock", "--session", "--template", "notification_daemon", "-l"])
            .arg(&notify_log)
            .env("DBUS_SESSION_BUS_ADDRESS", &session.bus)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the notification daemon");
        session.children.push(notifyd);
        let watcher = Command::new(PYTHON)
            .args(["-m", "dbusmock", "--session", "--template"])
            .arg(fixture("sni_watcher.py"))
            .env("DBUS_SESSION_BUS_ADDRESS", &session.bus)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the tray host");
        session.children.push(watcher);
        let bus = session.bus.clone();
        wait_until(Duration::from_secs(15), "the fake notification daemon and tray host", || {
            name_owned(&bus, "org.freedesktop.Notifications") && name_owned(&bus, "org.kde.StatusNotifierWatcher")
        });
        Some(session)
    }

    /// The environment of everything started in this session (the app included).
    pub fn env(&self) -> Vec<(String, String)> {
        let home = self.home.display().to_string();
        vec![
            ("DISPLAY".into(), self.display.clone()),
            ("DBUS_SESSION_BUS_ADDRESS".into(), self.bus.clone()),
            ("HOME".into(), home.clone()),
            ("XDG_CONFIG_HOME".into(), format!("{home}/.config")),
            ("XDG_DATA_HOME".into(), format!("{home}/.local/share")),
            ("XDG_CACHE_HOME".into(), format!("{home}/.cache")),
            // Private temp files (the tray icon's PNGs among them).
            ("TMPDIR".into(), self.dir.path().join("tmp").display().to_string()),
            // No accessibility bus: it would outlive the test.
            ("NO_AT_BRIDGE".into(), "1".into()),
        ]
    }

    /// What the notification daemon was asked to show (dbusmock's call log).
    pub fn notifications(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("notifications.log")).unwrap_or_default()
    }

    /// Runs a Python fixture with one environment variable; `Err` holds what it printed.
    fn run_fixture(&self, script: &str, args: &[&str], env: (&str, &str)) -> Result<String, String> {
        let output =
            Command::new(PYTHON).arg(fixture(script)).args(args).env(env.0, env.1).output().expect("run a fixture");
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)))
        }
    }

    /// Runs `fixtures/tray.py` (reads or clicks the tray icon as a tray host would).
    pub fn tray(&self, args: &[&str]) -> Result<String, String> {
        self.run_fixture("tray.py", args, ("DBUS_SESSION_BUS_ADDRESS", &self.bus))
    }

    pub fn tray_status(&self) -> Option<Value> {
        self.tray(&["status"]).ok().and_then(|s| serde_json::from_str(&s).ok())
    }

    /// Whether the tray currently shows `icon` (a file of the repository's `icons/`), compared
    /// pixel by pixel with what the tray host was given.
    pub fn tray_shows(&self, icon: &str) -> bool {
        let Some(status) = self.tray_status() else { return false };
        let shown = status["icon"].as_str().unwrap_or_default().to_string();
        let expected = Path::new(env!("CARGO_MANIFEST_DIR")).join("../icons").join(icon);
        let pixels = |path: &Path| {
            Command::new("convert")
                .arg(path)
                .arg("rgba:-")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| o.stdout)
        };
        matches!((pixels(Path::new(&shown)), pixels(&expected)), (Some(a), Some(b)) if a == b)
    }

    /// Top-level X windows with their titles.
    pub fn windows(&self) -> String {
        let output =
            Command::new("xwininfo").args(["-root", "-tree"]).env("DISPLAY", &self.display).output().expect("xwininfo");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Closes the app's window as a window manager's close button would (WebDriver's "close
    /// window" would end its session and kill the app instead).
    pub fn close_window(&self, title: &str) -> Result<String, String> {
        self.run_fixture("close_window.py", &[title], ("DISPLAY", &self.display))
    }

    /// The whole screen, as a person would see it.
    pub fn screenshot(&self, path: &Path) {
        let status = Command::new("import")
            .args(["-window", "root"])
            .arg(path)
            .env("DISPLAY", &self.display)
            .status()
            .expect("import");
        assert!(status.success(), "screenshot failed");
    }
}

impl Drop for DesktopSession {
    fn drop(&mut self) {
        while let Some(mut child) = self.children.pop() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// WebKitWebDriver with one session: the app it launched and its window.
pub struct WebDriver {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    log: PathBuf,
}

impl WebDriver {
    /// Starts WebKitWebDriver, which starts `app` with `args` in the desktop session.
    pub async fn launch(desktop: &DesktopSession, app: &Path, args: &[String]) -> WebDriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = desktop.dir.path().join(format!("app-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let driver = Command::new("WebKitWebDriver")
            .arg(format!("--port={port}"))
            .arg("--host=127.0.0.1")
            .envs(desktop.env())
            // What tauri-driver sets: lets wry allow automation of its WebKit context.
            .env("TAURI_WEBVIEW_AUTOMATION", "true")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start WebKitWebDriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "webkitgtk:browserOptions": {"binary": app, "args": args}
        }}});
        let deadline = Instant::now() + Duration::from_secs(60);
        let session = loop {
            match http.post(format!("{base}/session")).json(&capabilities).send().await {
                Ok(response) => {
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    match body["value"]["sessionId"].as_str() {
                        Some(id) => break id.to_string(),
                        None => panic!(
                            "WebKitWebDriver refused the session: {body}\n{}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        ),
                    }
                }
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(error) => panic!("WebKitWebDriver did not answer: {error}"),
            }
        };
        WebDriver { http, base, session, driver, log }
    }

    /// Everything the driver and the app printed (the app's tracing log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let ok = response.status().is_success();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if ok {
            Ok(body["value"].clone())
        } else {
            Err(body["value"].to_string())
        }
    }

    pub async fn title(&self) -> String {
        self.call(reqwest::Method::GET, "/title", None).await.unwrap_or_default().as_str().unwrap_or("").to_string()
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None).await.unwrap_or_default().as_str().unwrap_or("").to_string()
    }

    pub async fn navigate(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await.expect("navigate");
    }

    /// Element ids matching a CSS selector (empty when none).
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let found =
            self.call(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        found
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.as_object()?.values().next()?.as_str().map(String::from))
            .collect()
    }

    /// Waits for an element; panics with the page's URL when it does not come.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(first) = self.find_all(css).await.into_iter().next() {
                return first;
            }
            if Instant::now() > deadline {
                let text = self.execute("return document.body.innerText").await.unwrap_or_default();
                panic!(
                    "`{css}` did not appear on {}; the page says:\n{text}\n---- app log ----\n{}",
                    self.url().await,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn text(&self, element: &str) -> String {
        let value = self.call(reqwest::Method::GET, &format!("/element/{element}/text"), None).await;
        value.ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    }

    pub async fn attribute(&self, element: &str, name: &str) -> Option<String> {
        let value = self.call(reqwest::Method::GET, &format!("/element/{element}/attribute/{name}"), None).await;
        value.ok().and_then(|v| v.as_str().map(String::from))
    }

    pub async fn click(&self, element: &str) {
        self.call(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await.expect("click");
    }

    pub async fn type_into(&self, element: &str, text: &str) {
        self.call(reqwest::Method::POST, &format!("/element/{element}/clear"), Some(json!({}))).await.expect("clear");
        self.call(reqwest::Method::POST, &format!("/element/{element}/value"), Some(json!({"text": text})))
            .await
            .expect("type");
    }

    pub async fn execute(&self, script: &str) -> Result<Value, String> {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// The window's content as PNG.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let value = self.call(reqwest::Method::GET, "/screenshot", None).await.expect("screenshot");
        let png = base64::engine::general_purpose::STANDARD.decode(value.as_str().unwrap_or("")).expect("base64");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
