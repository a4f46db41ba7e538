//! Settings changed in the web UI (site, retention, integrations). They are kept in
//! `<data dir>/settings.toml` and applied over the config file, the environment and the flags at
//! the next start: what a person last chose in the UI wins, and a restart applies it (the site
//! is part of every topic, so it cannot change under running devices).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{parse_optional_address, Config};
use crate::ruuvi_gateway::OutputMode;

pub const FILE: &str = "settings.toml";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UiSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// A duration such as `90d`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ruuvi_output: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ruuvi_output_mode: Option<OutputMode>,
    /// The remote receivers' HTTP ingest listener, or `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receivers_http_listen: Option<String>,
    /// Home Assistant MQTT discovery on or off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home_assistant: Option<bool>,
    /// Home Assistant's discovery prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home_assistant_prefix: Option<String>,
}

impl UiSettings {
    /// What was saved, if anything; an unreadable file is an error naming it.
    pub fn load(data_dir: &Path) -> Result<Option<UiSettings>, String> {
        let path = data_dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map(Some).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), String> {
        let text = toml::to_string(self).map_err(|e| e.to_string())?;
        let path = data_dir.join(FILE);
        let temp = data_dir.join(format!("{FILE}.tmp"));
        std::fs::write(&temp, text)
            .and_then(|()| std::fs::rename(&temp, &path))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `self` over `older`: fields set here replace those.
    pub fn merged_over(&self, older: &UiSettings) -> UiSettings {
        UiSettings {
            site: self.site.clone().or_else(|| older.site.clone()),
            retention: self.retention.clone().or_else(|| older.retention.clone()),
            ruuvi_output: self.ruuvi_output.or(older.ruuvi_output),
            ruuvi_output_mode: self.ruuvi_output_mode.or(older.ruuvi_output_mode),
            receivers_http_listen: self.receivers_http_listen.clone().or_else(|| older.receivers_http_listen.clone()),
            home_assistant: self.home_assistant.or(older.home_assistant),
            home_assistant_prefix: self.home_assistant_prefix.clone().or_else(|| older.home_assistant_prefix.clone()),
        }
    }

    /// Applies the settings to `config` and checks the result; the error names the setting.
    pub fn apply(&self, config: &mut Config) -> Result<(), String> {
        if let Some(site) = &self.site {
            config.site = site.trim().to_string();
        }
        if let Some(retention) = &self.retention {
            config.store.retention =
                humantime::parse_duration(retention.trim()).map_err(|e| format!("retention: `{retention}`: {e}"))?;
        }
        if let Some(enabled) = self.ruuvi_output {
            config.ruuvi_output.enabled = enabled;
        }
        if let Some(mode) = self.ruuvi_output_mode {
            config.ruuvi_output.mode = mode;
        }
        if let Some(listen) = &self.receivers_http_listen {
            config.receivers.http_listen =
                parse_optional_address(listen).map_err(|e| format!("receiversHttpListen: {e}"))?;
        }
        if let Some(enabled) = self.home_assistant {
            config.homeassistant.enabled = enabled;
        }
        if let Some(prefix) = &self.home_assistant_prefix {
            config.homeassistant.prefix = prefix.trim().to_string();
        }
        config.validate().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_merges_saves_and_refuses_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(UiSettings::load(dir.path()).unwrap(), None);
        let first = UiSettings { site: Some("cabin".into()), retention: Some("30d".into()), ..Default::default() };
        first.save(dir.path()).unwrap();
        let second = UiSettings {
            ruuvi_output: Some(true),
            home_assistant: Some(false),
            home_assistant_prefix: Some("ha".into()),
            ..Default::default()
        }
        .merged_over(&first);
        second.save(dir.path()).unwrap();
        let loaded = UiSettings::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded, second);
        let mut config = Config::default();
        loaded.apply(&mut config).unwrap();
        assert_eq!(
            (config.site.as_str(), config.store.retention.as_secs(), config.ruuvi_output.enabled),
            ("cabin", 30 * 86_400, true)
        );
        assert_eq!((config.homeassistant.enabled, config.homeassistant.prefix.as_str()), (false, "ha"));

        for (bad, mentions) in [
            (UiSettings { site: Some("Not OK".into()), ..Default::default() }, "site"),
            (UiSettings { retention: Some("soon".into()), ..Default::default() }, "retention"),
            (UiSettings { receivers_http_listen: Some("here".into()), ..Default::default() }, "receiversHttpListen"),
            (UiSettings { home_assistant_prefix: Some("ha/#".into()), ..Default::default() }, "homeassistant.prefix"),
        ] {
            let error = bad.apply(&mut Config::default()).unwrap_err();
            assert!(error.contains(mentions), "{error}");
        }
    }
}
