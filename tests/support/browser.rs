//! Debian's Chromium driven by the UI's playwright-core scripts (`ui/e2e/*.mjs`) against a
//! running daemon: each script prints `ok - …` per check and exits non-zero on a failed one.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{require_tool, Daemon};

pub fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui")
}

/// Node and Chromium, and the built UI with playwright-core installed.
pub struct Browser {
    pub node: PathBuf,
    pub chromium: PathBuf,
}

impl Browser {
    /// `None` (skip) outside CI when something is missing; in CI a missing piece fails the test.
    pub fn find() -> Option<Browser> {
        let (node, chromium) = (require_tool("node")?, require_tool("/usr/bin/chromium")?);
        let ui = ui_dir();
        if !ui.join("dist/index.html").is_file() || !ui.join("node_modules/playwright-core").is_dir() {
            assert!(std::env::var_os("CI").is_none(), "the UI is not built; scripts/setup.sh test builds it");
            eprintln!("SKIPPED: build the UI first (make test does)");
            return None;
        }
        Some(Browser { node, chromium })
    }

    /// Runs an e2e script against the daemon; `Err` carries its output and the daemon's log.
    pub fn run(&self, script: &str, daemon: &Daemon, screenshots: &Path, extra: &str) -> Result<(), String> {
        self.run_args(script, daemon, screenshots, &[extra])
    }

    pub fn run_args(&self, script: &str, daemon: &Daemon, screenshots: &Path, extra: &[&str]) -> Result<(), String> {
        let output = Command::new(&self.node)
            .current_dir(ui_dir())
            .arg(script)
            .arg(format!("http://{}", daemon.runtime.http))
            .arg(screenshots)
            .args(extra)
            .env("CHROMIUM", &self.chromium)
            .output()
            .expect("run node");
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("{stdout}");
        if output.status.success() {
            return Ok(());
        }
        Err(format!("browser checks failed:\n{stdout}\n{}\n{}", String::from_utf8_lossy(&output.stderr), daemon.log()))
    }
}
