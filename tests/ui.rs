//! The web UI in a real headless Chromium (Debian's `chromium`, driven by playwright-core from
//! `ui/e2e/ui.mjs`) against the real gateway with simulated tags and the reference LAN device:
//! live tiles, charts, the device list, claiming the device with its code, a command from the
//! generated form reaching `succeeded`, an alert rule firing. Screenshots of each page are saved
//! under `target/tmp/ui-screenshots/` for a person to look at.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gatehouse_tests::{require_tool, workspace_bin, Daemon};
use serde_json::Value;

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui")
}

#[test]
fn overview_device_page_device_list_claim_commands_and_alerts_work_in_chromium() {
    let (Some(node), Some(chromium)) = (require_tool("node"), require_tool("/usr/bin/chromium")) else { return };
    let ui = ui_dir();
    let built = ui.join("dist/index.html");
    let installed = ui.join("node_modules/playwright-core");
    if !built.is_file() || !installed.is_dir() {
        assert!(std::env::var_os("CI").is_none(), "the UI is not built; scripts/setup.sh test builds it");
        eprintln!("SKIPPED: build the UI first (make test does)");
        return;
    }
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
    let output = Command::new(node)
        .current_dir(&ui)
        .arg("e2e/ui.mjs")
        .arg(format!("http://{}", daemon.runtime.http))
        .arg(&screenshots)
        .arg(&claim_code)
        .env("CHROMIUM", chromium)
        .output()
        .expect("run node");
    let _ = device.kill();
    let _ = device.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "browser checks failed:\n{stdout}\n{stderr}\n{}", daemon.log());
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
    let (Some(node), Some(chromium)) = (require_tool("node"), require_tool("/usr/bin/chromium")) else { return };
    let ui = ui_dir();
    if !ui.join("dist/index.html").is_file() || !ui.join("node_modules/playwright-core").is_dir() {
        assert!(std::env::var_os("CI").is_none(), "the UI is not built; scripts/setup.sh test builds it");
        return;
    }
    let daemon = Daemon::start_with_config(
        "[http]\nrequire_login = true\n",
        &["--simulate", "2", "--ui-dir", ui.join("dist").to_str().unwrap()],
    );
    let code = std::fs::read_to_string(daemon.data_dir.join("setup-code")).expect("setup code");
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let output = Command::new(node)
        .current_dir(&ui)
        .arg("e2e/login.mjs")
        .arg(format!("http://{}", daemon.runtime.http))
        .arg(&screenshots)
        .arg(code.trim())
        .env("CHROMIUM", chromium)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser checks failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        daemon.log()
    );
}
