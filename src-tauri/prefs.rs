//! The desktop app's own preferences (what the tray menu toggles), kept next to the gateway's
//! data in `desktop.json`. Start-at-login is not stored here: the autostart entry itself is the
//! truth.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FILE: &str = "desktop.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Prefs {
    /// Desktop notifications for alerts and devices waiting to be claimed.
    pub notifications: bool,
}

impl Default for Prefs {
    fn default() -> Self {
        Prefs { notifications: true }
    }
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

impl Prefs {
    /// The saved preferences; defaults when there are none or the file is unreadable (said in the log).
    pub fn load(data_dir: &Path) -> Prefs {
        match std::fs::read_to_string(path(data_dir)) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|error| {
                tracing::warn!(%error, "{FILE} is unreadable; using default desktop preferences");
                Prefs::default()
            }),
            Err(_) => Prefs::default(),
        }
    }

    /// Written whole to a temporary file and renamed, so a crash never leaves half a file.
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        let temp = data_dir.join(format!("{FILE}.tmp"));
        std::fs::write(&temp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(temp, path(data_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_round_trip_and_unreadable_file() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        assert_eq!(Prefs::load(dir), Prefs { notifications: true });
        Prefs { notifications: false }.save(dir).unwrap();
        assert_eq!(Prefs::load(dir), Prefs { notifications: false });
        std::fs::write(dir.join(FILE), "{not json").unwrap();
        assert_eq!(Prefs::load(dir), Prefs::default());
    }
}
