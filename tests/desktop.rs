//! The desktop app (`gatehouse-desktop`, Tauri 2) in a real WebKitGTK window under Xvfb, driven
//! with WebKitWebDriver, with a fake tray host and notification daemon on a private session bus
//! (see support/desktop.rs): the window shows the live overview signed in with a launch ticket,
//! a device is claimed from inside it, notifications are raised, the tray reflects and pauses
//! scanning, closing the window keeps the gateway running, Quit from the tray stops it cleanly,
//! a second launch hands over to the first, and a running headless daemon is offered instead of
//! a second gateway. Screenshots go to `target/tmp/desktop-screenshots/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_tests::desktop::{wait_until, DesktopSession, WebDriver};
use gatehouse_tests::{workspace_bin, Daemon};
use serde_json::Value;

fn ui_dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/dist")
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("desktop-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The app's flags for a test: fresh loopback ports, no Bluetooth, simulated tags.
fn app_args(data_dir: &Path, http: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--data-dir", data_dir.to_str().unwrap(), "--http", http, "--mqtt", "127.0.0.1:0"]
        .into_iter()
        .chain(["--mqtt-tls", "off", "--mqtt-ws", "off", "--mqtt-wss", "off", "--ingest", "off", "--no-ble"])
        .chain(["--ui-dir", ui_dist().to_str().unwrap()])
        .map(String::from)
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

struct AppRuntime {
    http: String,
    mqtt: String,
    pid: i32,
}

fn wait_for_runtime(data_dir: &Path, driver: &WebDriver) -> AppRuntime {
    let path = data_dir.join("gatehouse.runtime.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(json) = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
            return AppRuntime {
                http: json["http"].as_str().unwrap().to_string(),
                mqtt: json["mqtt"].as_str().unwrap().to_string(),
                pid: json["pid"].as_i64().unwrap() as i32,
            };
        }
        assert!(Instant::now() < deadline, "the app's gateway did not start:\n{}", driver.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the process runs (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

/// An MQTT CONNECT without credentials gets a CONNACK (refused, but answered).
fn mqtt_answers(address: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(address) else { return false };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let connect = [0x10, 0x0f, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 3, b'p', b'r', b'b'];
    if stream.write_all(&connect).is_err() {
        return false;
    }
    let mut answer = [0u8; 4];
    stream.read_exact(&mut answer).is_ok() && answer[0] == 0x20
}

async fn health(http: &str) -> Value {
    reqwest::get(format!("http://{http}/api/health")).await.expect("health").json().await.expect("health JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_tray_notifications_claim_close_and_quit() {
    let Some(desktop) = DesktopSession::start() else { return };
    let data_dir = desktop.dir.path().join("data");
    let config = desktop.dir.path().join("gatehouse.toml");
    // Tags that never fall silent, so the overview always has live values.
    std::fs::write(&config, "[simulator]\nsilence_every = \"3650d\"\ndrop_probability = 0.0\n").unwrap();
    let args =
        app_args(&data_dir, "127.0.0.1:0", &["--config", config.to_str().unwrap(), "--simulate", "10", "--seed", "7"]);
    let app = workspace_bin("gatehouse-desktop");
    let started = Instant::now();
    let driver = WebDriver::launch(&desktop, &app, &args).await;
    let runtime = wait_for_runtime(&data_dir, &driver);
    let base = format!("http://{}", runtime.http);

    // The window: the gateway's UI from the embedded server, signed in by the launch ticket.
    driver.wait_for("[data-testid=tile]", Duration::from_secs(30)).await;
    println!("first tile {} ms after launch", started.elapsed().as_millis());
    assert!(driver.url().await.starts_with(&format!("{base}/")), "window URL {}", driver.url().await);
    assert_eq!(driver.title().await, "Gatehouse");
    assert!(desktop.windows().contains("\"Gatehouse\""), "no X window titled Gatehouse:\n{}", desktop.windows());
    wait_until(Duration::from_secs(20), "ten simulated tags on the overview", || {
        futures_block(driver.find_all("[data-testid=tile][data-device^=ruuvi-]")).len() >= 10
    });
    let values = || async {
        driver.execute("return [...document.querySelectorAll('[data-testid=tile] [data-field]')].map(e => e.textContent).join('|')").await.unwrap()
    };
    let before = values().await;
    let mut changed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if values().await != before {
            changed = true;
            break;
        }
    }
    assert!(changed, "tile values change live");
    driver.screenshot(&screenshots().join("window-overview.png")).await;

    // The local API: the window's session works; other local clients need the api-token file;
    // other origins are refused.
    let client = reqwest::Client::new();
    let anonymous = client.get(format!("{base}/api/devices")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "another local process without the secret is refused");
    let token = std::fs::read_to_string(data_dir.join("api-token")).unwrap();
    let with_token = client.get(format!("{base}/api/devices")).bearer_auth(token.trim()).send().await.unwrap();
    assert_eq!(with_token.status(), 200);
    let foreign = client
        .post(format!("{base}/api/pairing"))
        .header("Origin", "http://evil.example")
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403, "cross-origin requests are refused");
    let reused = client.get(format!("{base}/api/auth/launch?ticket={}", "0".repeat(64))).send().await.unwrap();
    assert_eq!(reused.status(), 401, "an unknown launch ticket gets no session");

    // A LAN device asks to join: a desktop notification, then a claim from inside the window.
    let api_get = |path: &str| {
        let request = client.get(format!("{base}{path}")).bearer_auth(token.trim());
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let provisioning = api_get("/api/provisioning").await;
    let mut device = KillOnDrop(
        Command::new(workspace_bin("gatehouse-device"))
            .args(["--id", "desk-demo", "--name", "Desk sensor", "--mqtt", &runtime.mqtt, "--interval", "2s"])
            .args(["--provisioning-password", provisioning["password"].as_str().unwrap(), "--state"])
            .arg(desktop.dir.path().join("desk-demo.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gatehouse-device"),
    );
    let mut lines = BufReader::new(device.0.stdout.take().unwrap()).lines();
    let claim_code = loop {
        let line = lines.next().expect("the device reports its claim code").expect("stdout");
        let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if event["event"] == "pending" {
            break event["claimCode"].as_str().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    wait_until(Duration::from_secs(15), "a notification about the waiting device", || {
        desktop.notifications().contains("A new device is waiting")
    });
    driver.navigate(&format!("{base}/#/claim")).await;
    let field = driver.wait_for("[data-testid=claim-code]", Duration::from_secs(10)).await;
    driver.type_into(&field, &claim_code).await;
    let submit = driver.wait_for("[data-testid=claim-submit]", Duration::from_secs(5)).await;
    driver.click(&submit).await;
    let result = driver.wait_for("[data-testid=claim-result].ok", Duration::from_secs(15)).await;
    assert!(driver.text(&result).await.contains("now active"), "claim result: {}", driver.text(&result).await);
    let claimed = api_get("/api/devices/desk-demo").await;
    assert_eq!(claimed["state"], "active", "{claimed}");
    tokio::time::sleep(Duration::from_secs(1)).await; // one frame: WebDriver screenshots can lag
    driver.screenshot(&screenshots().join("window-claim.png")).await;
    desktop.screenshot(&screenshots().join("screen.png"));

    // The tray: registered with the tray host, devices online in the menu, pause and resume.
    wait_until(Duration::from_secs(20), "the tray menu with the devices online", || {
        desktop.tray_status().is_some_and(|s| {
            s["menu"].as_array().unwrap().iter().any(|e| {
                e["label"].as_str().unwrap_or("").strip_prefix("Devices online: ").and_then(|n| n.parse::<u32>().ok())
                    >= Some(10)
            })
        })
    });
    let tray = desktop.tray_status().unwrap();
    let labels: Vec<&str> = tray["menu"].as_array().unwrap().iter().map(|e| e["label"].as_str().unwrap()).collect();
    for wanted in ["Open Gatehouse", "Pause scanning", "Notifications", "Start at login", "Quit Gatehouse"] {
        assert!(labels.contains(&wanted), "tray menu {labels:?} lacks {wanted}");
    }
    assert!(desktop.tray_shows("tray-ok.png"), "the tray shows the ok icon: {tray}");
    assert!(!desktop.tray_shows("tray-alert.png"), "and not the alert icon");
    desktop.tray(&["click", "Pause scanning"]).unwrap();
    wait_until(Duration::from_secs(10), "the paused tray icon", || desktop.tray_shows("tray-paused.png"));
    tokio::time::sleep(Duration::from_secs(1)).await; // what was in flight
    let received = |h: &Value| h["pipeline"]["advertisements"].as_u64().unwrap();
    let paused_at = received(&health(&runtime.http).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(received(&health(&runtime.http).await), paused_at, "no advertisement is heard while paused");
    desktop.tray(&["click", "Pause scanning"]).unwrap();
    wait_until(Duration::from_secs(10), "advertisements again after resuming", || {
        received(&futures_block(health(&runtime.http))) > paused_at
    });
    wait_until(Duration::from_secs(10), "the ok tray icon again", || desktop.tray_shows("tray-ok.png"));

    // An alert: a notification, and the tray turns to the alert icon.
    let rule = serde_json::json!({
        "name": "Desk too warm", "devices": "ruuvi-*", "field": "temperature",
        "condition": "above", "threshold": -100, "clearAt": -101, "for": "1s", "severity": "warning"
    });
    let created =
        client.post(format!("{base}/api/alert-rules")).bearer_auth(token.trim()).json(&rule).send().await.unwrap();
    assert_eq!(created.status(), 201);
    wait_until(Duration::from_secs(20), "an alert notification", || {
        desktop.notifications().contains("Warning: ruuvi-")
    });
    wait_until(Duration::from_secs(10), "the alert tray icon", || desktop.tray_shows("tray-alert.png"));
    desktop.tray(&["click", "Notifications"]).unwrap();
    wait_until(Duration::from_secs(5), "the saved preference", || {
        std::fs::read_to_string(data_dir.join("desktop.json")).is_ok_and(|p| p.contains("\"notifications\": false"))
    });

    desktop.tray(&["click", "Start at login"]).unwrap();
    let autostart = desktop.home.join(".config/autostart/Gatehouse Desktop.desktop");
    wait_until(Duration::from_secs(5), "the autostart entry", || autostart.exists());
    let entry = std::fs::read_to_string(&autostart).unwrap();
    assert!(entry.contains("--minimized"), "{entry}");
    desktop.tray(&["click", "Start at login"]).unwrap();
    wait_until(Duration::from_secs(5), "the autostart entry to go", || !autostart.exists());

    // Closing the window keeps the gateway running in the tray.
    desktop.close_window("Gatehouse").unwrap();
    wait_until(Duration::from_secs(10), "the window to close", || !desktop.windows().contains("\"Gatehouse\""));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(alive(runtime.pid), "the app exited with its window:\n{}", driver.log());
    assert!(mqtt_answers(&runtime.mqtt), "the MQTT port answers with the window closed");
    assert_eq!(health(&runtime.http).await["status"], "ok");

    // A second launch hands over to the first (which opens its window again) and exits.
    let second = Command::new(&app)
        .args(app_args(&desktop.dir.path().join("second"), "127.0.0.1:0", &["--simulate", "1"]))
        .envs(desktop.env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("second launch");
    assert!(second.success(), "the second launch exits cleanly: {second}");
    assert!(!desktop.dir.path().join("second/gatehouse.runtime.json").exists(), "no second gateway started");
    wait_until(Duration::from_secs(15), "the first app's window again", || desktop.windows().contains("\"Gatehouse\""));

    // Quit from the tray stops the gateway cleanly.
    desktop.tray(&["click", "Quit Gatehouse"]).unwrap();
    wait_until(Duration::from_secs(20), "the app to exit", || !alive(runtime.pid));
    let log = driver.log();
    assert!(log.contains("Quit chosen from the tray"), "{log}");
    assert!(log.contains("stopped"), "the gateway shut down in order:\n{log}");
    assert!(!data_dir.join("gatehouse.runtime.json").exists(), "the runtime file is removed on a clean stop");
    assert!(!mqtt_answers(&runtime.mqtt), "the broker is gone");
    drop(device);
    assert!(!log.contains(token.trim()), "the API token never appears in the log");
    let window_state = desktop.home.join(".config/org.gatehouse.desktop/.window-state.json");
    assert!(window_state.exists(), "the window's size and place are kept for the next start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_a_running_daemon_instead_of_starting_a_second_gateway() {
    let Some(desktop) = DesktopSession::start() else { return };
    let daemon = Daemon::start(&["--simulate", "3", "--ui-dir", ui_dist().to_str().unwrap()]);
    let data_dir = desktop.dir.path().join("data");
    let args = app_args(&data_dir, &daemon.runtime.http.to_string(), &[]);
    let driver = WebDriver::launch(&desktop, &workspace_bin("gatehouse-desktop"), &args).await;

    let link = driver.wait_for("#existing-url", Duration::from_secs(30)).await;
    let daemon_url = format!("http://{}/", daemon.runtime.http);
    assert_eq!(driver.text(&link).await, daemon_url);
    // WebKitWebDriver's screenshot never returns for a page of the app's own tauri:// scheme:
    // the X screen is photographed instead.
    tokio::time::sleep(Duration::from_millis(500)).await;
    desktop.screenshot(&screenshots().join("window-existing-daemon.png"));
    assert!(!data_dir.join("gatehouse.runtime.json").exists(), "the app started no gateway of its own");

    let connect = driver.wait_for("#connect", Duration::from_secs(5)).await;
    driver.click(&connect).await;
    driver.wait_for("[data-testid=tile]", Duration::from_secs(30)).await;
    assert!(driver.url().await.starts_with(&daemon_url), "{}", driver.url().await);

    wait_until(Duration::from_secs(20), "the tray", || desktop.tray_status().is_some());
    desktop.tray(&["click", "Quit Gatehouse"]).unwrap();
    wait_until(Duration::from_secs(20), "the app to quit", || {
        driver.log().contains("Quit chosen from the tray") && !desktop.windows().contains("\"Gatehouse\"")
    });
    assert_eq!(daemon.get_json("/api/health").await["status"], "ok", "the daemon keeps running");
}

/// A helper process that must not outlive a failing test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a future to completion from synchronous polling code inside the test's runtime.
fn futures_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

/// Removes the installed package even when the test fails.
struct Installed(&'static str);

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", self.0]).stdout(Stdio::null()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deb_installs_and_the_installed_app_runs_the_gateway() {
    let bundles = workspace_bin("gatehouse-desktop").parent().unwrap().join("bundle/deb");
    let deb = std::fs::read_dir(&bundles)
        .ok()
        .and_then(|dir| dir.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "deb")));
    let in_ci = std::env::var_os("CI").is_some();
    let Some(deb) = deb else {
        assert!(!in_ci, "no .deb in {}; make test builds it (scripts/package-desktop.sh --debug)", bundles.display());
        eprintln!("SKIPPED: build the .deb first: scripts/package-desktop.sh --debug");
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        assert!(!in_ci, "installing the .deb needs root in CI");
        eprintln!("SKIPPED: installing the .deb needs root");
        return;
    }
    let Some(desktop) = DesktopSession::start() else { return };
    let status = Command::new("dpkg").arg("-i").arg(&deb).stdout(Stdio::null()).status().expect("dpkg");
    let _installed = Installed("gatehouse-desktop");
    assert!(status.success(), "dpkg -i {} failed", deb.display());
    for path in ["/usr/bin/gatehouse-desktop", "/usr/share/gatehouse-desktop/ui/index.html"] {
        assert!(Path::new(path).exists(), "the package installs {path}");
    }
    assert!(Path::new("/usr/share/applications/Gatehouse Desktop.desktop").exists(), "a menu entry");

    // The installed binary, with the UI it finds in /usr/share (no --ui-dir).
    let data_dir = desktop.dir.path().join("data");
    let args: Vec<String> = app_args(&data_dir, "127.0.0.1:0", &["--simulate", "2"])
        .into_iter()
        .filter(|a| a != "--ui-dir" && !a.ends_with("ui/dist"))
        .collect();
    let log = desktop.dir.path().join("installed.log");
    let mut app = KillOnDrop(
        Command::new("/usr/bin/gatehouse-desktop")
            .args(&args)
            .envs(desktop.env())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(desktop.dir.path().join("installed.err")).unwrap())
            .spawn()
            .expect("start the installed app"),
    );
    let runtime_file = data_dir.join("gatehouse.runtime.json");
    wait_until(Duration::from_secs(60), "the installed app's gateway", || runtime_file.exists());
    let runtime: Value = serde_json::from_str(&std::fs::read_to_string(&runtime_file).unwrap()).unwrap();
    let http = runtime["http"].as_str().unwrap();
    let page = reqwest::get(format!("http://{http}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<div id=\"app\">"), "the installed web UI is served");
    assert_eq!(health(http).await["status"], "ok");
    wait_until(Duration::from_secs(30), "the installed app's window", || desktop.windows().contains("\"Gatehouse\""));
    wait_until(Duration::from_secs(20), "the installed app's tray", || desktop.tray_status().is_some());
    desktop.tray(&["click", "Quit Gatehouse"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = app.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the installed app did not quit");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the installed app exits cleanly: {status}");
    assert!(!runtime_file.exists(), "and stops its gateway in order");
}

/// Memory (KiB) of a process and all its descendants (WebKit's web and network processes are
/// children of the app), as `(RSS, PSS)`: RSS counts the WebKit libraries once per process,
/// PSS shares them out, so the PSS sum is what the machine really spends.
fn tree_memory_kib(root: i32) -> (u64, u64) {
    let mut parents = std::collections::HashMap::<i32, Vec<i32>>::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let ppid = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)?.parse().ok());
        if let Some(ppid) = ppid {
            parents.entry(ppid).or_default().push(pid);
        }
    }
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (mut rss, mut pss) = (0, 0);
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        rss += field(&rollup, "Rss:");
        pss += field(&rollup, "Pss:");
        stack.extend(parents.get(&pid).cloned().unwrap_or_default());
    }
    (rss, pss)
}

/// The desktop budget of docs/benchmarks.md: cold start to the first tile and the first chart,
/// and the memory of the app with its window open and 10 simulated tags. Not a test: run with
/// `make bench-desktop` (release binary; GATEHOUSE_DESKTOP=path overrides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: make bench-desktop"]
async fn bench_desktop_budget() {
    let app = std::env::var_os("GATEHOUSE_DESKTOP")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/gatehouse-desktop"));
    assert!(app.exists(), "{} is missing: cargo build --release -p gatehouse-desktop", app.display());
    let Some(desktop) = DesktopSession::start() else { return };
    let data_dir = desktop.dir.path().join("data");
    let args = app_args(&data_dir, "127.0.0.1:0", &["--simulate", "10", "--seed", "3"]);
    let started = Instant::now();
    let driver = WebDriver::launch(&desktop, &app, &args).await;
    let session = started.elapsed();
    driver.wait_for("[data-testid=tile]", Duration::from_secs(30)).await;
    let first_tile = started.elapsed();
    driver.wait_for("[data-testid=tile] svg.spark polyline", Duration::from_secs(30)).await;
    let first_chart = started.elapsed();
    let runtime = wait_for_runtime(&data_dir, &driver);
    let mut samples = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples.push(tree_memory_kib(runtime.pid));
    }
    let app_only = std::fs::read_to_string(format!("/proc/{}/status", runtime.pid))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    println!("| binary | {} |", app.display());
    println!("| window ready (WebDriver session) | {} ms |", session.as_millis());
    println!("| cold start → first tile | {} ms |", first_tile.as_millis());
    println!("| cold start → first chart (sparkline) | {} ms |", first_chart.as_millis());
    let mib = |pick: fn(&(u64, u64)) -> u64| {
        samples.iter().map(|s| format!("{:.0}", pick(s) as f64 / 1024.0)).collect::<Vec<_>>().join(", ")
    };
    println!("| RSS, app + WebKit processes, 10 tags, window open (every 5 s for 30 s) | {} MiB |", mib(|s| s.0));
    println!("| PSS (shared libraries shared out), same samples | {} MiB |", mib(|s| s.1));
    println!("| RSS of the app process alone at the end | {app_only} |");
    for (what, pid) in [("app", runtime.pid)] {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let parts: Vec<&str> = rollup.lines().filter(|l| l.starts_with("Pss_")).collect();
        println!("| {what} process PSS by kind | {} |", parts.join("; "));
    }
    desktop.tray(&["click", "Quit Gatehouse"]).unwrap();
    wait_until(Duration::from_secs(20), "the app to quit", || !alive(runtime.pid));
}
