//! What the headless daemon and the desktop app share before the gateway starts: the `run`
//! command-line flags and how the configuration is put together from the file, the environment,
//! those flags and the settings saved from the web UI.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::config::{Config, LogFormat};

#[derive(Args)]
pub struct RunArgs {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for the database and generated files (default: the platform's data directory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// MQTT listener address; port 0 picks a free port (default 0.0.0.0:1883).
    #[arg(long, value_name = "ADDR")]
    mqtt: Option<SocketAddr>,
    /// MQTT over TLS listener, or "off" (default 0.0.0.0:8883).
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listener)]
    mqtt_tls: Option<Listener>,
    /// MQTT over WebSocket listener, or "off" (default 0.0.0.0:9001).
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listener)]
    mqtt_ws: Option<Listener>,
    /// MQTT over secure WebSocket listener, or "off" (default 0.0.0.0:9443).
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listener)]
    mqtt_wss: Option<Listener>,
    /// LAN listener for remote Ruuvi Gateways' HTTP posts, e.g. 0.0.0.0:8081 (default off), or `off`.
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listener)]
    ingest: Option<Listener>,
    /// HTTP API address; port 0 picks a free port (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Directory of the built web UI (default: found next to the binary, see docs/configuration.md).
    #[arg(long, value_name = "DIR")]
    ui_dir: Option<std::path::PathBuf>,
    /// Simulate N Ruuvi tags (every fifth one a Ruuvi Air).
    #[arg(long, value_name = "N")]
    simulate: Option<usize>,
    /// Seed for reproducible simulated tags.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Do not use Bluetooth.
    #[arg(long)]
    no_ble: bool,
    /// Log format: human or json.
    #[arg(long, value_name = "FORMAT", value_parser = ["human", "json"])]
    log_format: Option<String>,
}

/// A listener address, or `None` for "off".
#[derive(Clone, Copy, Debug)]
struct Listener(Option<SocketAddr>);

fn parse_listener(text: &str) -> Result<Listener, String> {
    crate::config::parse_optional_address(text).map(Listener)
}

impl RunArgs {
    fn apply(self, config: &mut Config) {
        if let Some(dir) = self.data_dir {
            config.data_dir = Some(dir);
        }
        if let Some(addr) = self.mqtt {
            config.mqtt.listen = addr;
        }
        if let Some(Listener(addr)) = self.mqtt_tls {
            config.mqtt.tls_listen = addr;
        }
        if let Some(Listener(addr)) = self.mqtt_ws {
            config.mqtt.ws_listen = addr;
        }
        if let Some(Listener(addr)) = self.mqtt_wss {
            config.mqtt.wss_listen = addr;
        }
        if let Some(Listener(addr)) = self.ingest {
            config.receivers.http_listen = addr;
        }
        if let Some(dir) = self.ui_dir {
            config.http.ui_dir = Some(dir);
        }
        if let Some(addr) = self.http {
            config.http.listen = addr;
        }
        if let Some(tags) = self.simulate {
            config.simulator.tags = tags;
        }
        if let Some(seed) = self.seed {
            config.simulator.seed = Some(seed);
        }
        if self.no_ble {
            config.ble.enabled = false;
        }
        if let Some(format) = self.log_format {
            config.log.format = if format == "json" { LogFormat::Json } else { LogFormat::Human };
        }
    }
}

/// The configuration a start uses: file (or defaults), `GATEHOUSE_*` environment, flags, then
/// what was last saved from the web UI's settings page; validated. The error is one sentence
/// for the person starting the gateway.
pub fn load_config(args: RunArgs) -> Result<Config, String> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
    args.apply(&mut config);
    match crate::ui_settings::UiSettings::load(&config.resolved_data_dir()) {
        Ok(Some(settings)) => settings
            .apply(&mut config)
            .map_err(|e| format!("a setting saved from the web UI is invalid ({e}); fix or delete the file"))?,
        Ok(None) => {}
        Err(e) => return Err(format!("cannot read the settings saved from the web UI: {e}")),
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}
