//! The web UI in a real headless Chromium (Debian's `chromium`, driven by playwright-core from
//! `ui/e2e/ui.mjs`) against the real gateway with simulated tags. Screenshots of each page are
//! saved under `target/tmp/ui-screenshots/` for a person to look at.

use std::path::{Path, PathBuf};
use std::process::Command;

use gatehouse_tests::{require_tool, Daemon};

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui")
}

#[test]
fn overview_device_page_and_device_list_work_in_chromium() {
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
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let output = Command::new(node)
        .current_dir(&ui)
        .arg("e2e/ui.mjs")
        .arg(format!("http://{}", daemon.runtime.http))
        .arg(&screenshots)
        .env("CHROMIUM", chromium)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "browser checks failed:\n{stdout}\n{stderr}\n{}", daemon.log());
    for page in ["overview.png", "overview-800x480-dark.png", "device.png", "devices.png"] {
        assert!(screenshots.join(page).is_file(), "screenshot {page} saved");
    }
}
