//! The web UI in a real headless Chromium (Debian's `chromium`, driven by playwright-core from
//! `ui/e2e/ui.mjs`) against the real gateway with simulated tags and the reference LAN device:
//! live tiles, charts, the device list, claiming the device with its code, a command from the
//! generated form reaching `succeeded`, an alert rule firing. Screenshots of each page are saved
//! under `target/tmp/ui-screenshots/` for a person to look at.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use gatehouse_tests::browser::{ui_dir, Browser};
use gatehouse_tests::{workspace_bin, Daemon};
use serde_json::Value;

#[test]
fn overview_device_page_device_list_claim_commands_and_alerts_work_in_chromium() {
    let Some(browser) = Browser::find() else { return };
    let ui = ui_dir();
    // Tags that never fall silent, so that the live chart always gets readings.
    let config = "[simulator]\nsilence_every = \"3650d\"\ndrop_probability = 0.0\n";
    let daemon = Daemon::start_with_config(
        config,
        &["--simulate", "6", "--seed", "7", "--ui-dir", ui.join("dist").to_str().unwrap()],
    );
    // A LAN device waiting to be claimed: the browser claims it with the code it prints.
    let mut device = Command::new(workspace_bin("gatehouse-device"))
        .args(["--id", "ui-demo", "--name", "Hallway sensor", "--mqtt", &daemon.runtime.mqtt.to_string()])
        .args(["--api", &format!("http://{}", daemon.runtime.http), "--interval", "2s", "--state"])
        .arg(daemon.data_dir.join("ui-demo.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gatehouse-device");
    let mut lines = BufReader::new(device.stdout.take().unwrap()).lines();
    let claim_code = loop {
        let line = lines.next().expect("the device reports its claim code").expect("stdout");
        let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if event["event"] == "pending" {
            break event["claimCode"].as_str().expect("claimCode").to_string();
        }
    };
    // Keep reading, so the device never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let result = browser.run("e2e/ui.mjs", &daemon, &screenshots, &claim_code);
    let _ = device.kill();
    let _ = device.wait();
    result.unwrap_or_else(|failure| panic!("{failure}"));
    for page in [
        "overview.png",
        "overview-800x480-dark.png",
        "device.png",
        "devices.png",
        "claim.png",
        "commands.png",
        "alerts.png",
    ] {
        assert!(screenshots.join(page).is_file(), "screenshot {page} saved");
    }
}

#[test]
fn a_lan_facing_install_asks_for_the_setup_code_then_a_login_in_chromium() {
    let Some(browser) = Browser::find() else { return };
    let ui = ui_dir();
    let daemon = Daemon::start_with_config(
        "[http]\nrequire_login = true\n",
        &["--simulate", "2", "--ui-dir", ui.join("dist").to_str().unwrap()],
    );
    let code = std::fs::read_to_string(daemon.data_dir.join("setup-code")).expect("setup code");
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    browser.run("e2e/login.mjs", &daemon, &screenshots, code.trim()).unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn the_ui_shows_an_offline_banner_and_reconnects_when_the_gateway_comes_back() {
    let Some(browser) = Browser::find() else { return };
    let ui = ui_dir();
    let config = "[simulator]\nsilence_every = \"3650d\"\ndrop_probability = 0.0\n";
    let mut daemon = Daemon::start_with_config(
        config,
        &["--simulate", "3", "--seed", "5", "--ui-dir", ui.join("dist").to_str().unwrap()],
    );
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let mut node = Command::new(&browser.node)
        .current_dir(&ui)
        .arg("e2e/offline.mjs")
        .arg(format!("http://{}", daemon.runtime.http))
        .arg(&screenshots)
        .env("CHROMIUM", &browser.chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut transcript = String::new();
    let mut wait_for = |word: &str, transcript: &mut String| loop {
        match lines.next() {
            Some(Ok(line)) => {
                eprintln!("browser: {line}");
                transcript.push_str(&line);
                transcript.push('\n');
                if line == word {
                    return true;
                }
            }
            _ => return false,
        }
    };
    use std::io::Write as _;
    assert!(wait_for("READY", &mut transcript), "{transcript}");
    daemon.kill();
    writeln!(stdin, "DOWN").unwrap();
    assert!(wait_for("BANNER", &mut transcript), "{transcript}");
    daemon.start_again();
    writeln!(stdin, "UP").unwrap();
    let finished = wait_for("DONE", &mut transcript);
    drop(stdin);
    let status = node.wait().unwrap();
    println!("{transcript}");
    assert!(finished && status.success(), "browser checks failed:\n{transcript}\n{}", daemon.log());
}

#[test]
fn the_settings_page_shows_upstreams_tests_a_connection_saves_home_assistant_and_restores_a_backup() {
    let Some(browser) = Browser::find() else { return };
    let ui = ui_dir();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = format!(
        "[[upstream]]\nname = \"fleet\"\nurl = \"mqtt://{closed}\"\nreconnect_min = \"1s\"\nreconnect_max = \"2s\"\n"
    );
    let daemon =
        Daemon::start_with_config(&config, &["--simulate", "2", "--ui-dir", ui.join("dist").to_str().unwrap()]);
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    browser.run("e2e/settings.mjs", &daemon, &screenshots, "fleet").unwrap_or_else(|failure| panic!("{failure}"));
    let saved = std::fs::read_to_string(daemon.data_dir.join("settings.toml")).expect("settings saved");
    assert!(saved.contains("homeAssistant = false") && saved.contains("ha-test"), "{saved}");
    assert!(daemon.data_dir.join("restore-pending.db").is_file(), "the restore is staged");
    assert!(screenshots.join("settings.png").is_file());
}
