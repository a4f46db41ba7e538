//! `gatehouse run`: loads configuration (file, environment, flags), starts the gateway and runs
//! it until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use gateway_core::config::{Config, LogFormat};
use gateway_core::gateway::Gateway;

#[derive(Args)]
pub struct RunArgs {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for the database and generated files (default: the platform's data directory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// MQTT listener address; port 0 picks a free port (default 127.0.0.1:1883).
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
    /// LAN listener for remote Ruuvi Gateways' HTTP posts (default 0.0.0.0:8081), or `off`.
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
    gateway_core::config::parse_optional_address(text).map(Listener)
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

pub fn run(args: RunArgs) -> ExitCode {
    let mut config = match Config::load(args.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("gatehouse: {error}");
            return ExitCode::from(2);
        }
    };
    args.apply(&mut config);
    // What was last chosen in the web UI's settings page.
    match gateway_core::ui_settings::UiSettings::load(&config.resolved_data_dir()) {
        Ok(Some(settings)) => {
            if let Err(error) = settings.apply(&mut config) {
                eprintln!("gatehouse: a setting saved from the web UI is invalid ({error}); fix or delete the file");
                return ExitCode::from(2);
            }
        }
        Ok(None) => {}
        Err(error) => {
            eprintln!("gatehouse: cannot read the settings saved from the web UI: {error}");
            return ExitCode::from(2);
        }
    }
    if let Err(error) = config.validate() {
        eprintln!("gatehouse: {error}");
        return ExitCode::from(2);
    }
    if let Err(error) = gateway_core::logging::init(&config.log) {
        eprintln!("gatehouse: {error}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gatehouse: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let gateway = match Gateway::start(config).await {
            Ok(gateway) => gateway,
            Err(error) => {
                tracing::error!("{error:#}");
                return ExitCode::FAILURE;
            }
        };
        wait_for_signal(gateway.shutdown_token()).await;
        let fatal = gateway.fatal_error();
        gateway.shutdown().await;
        match fatal {
            Some(reason) => {
                eprintln!("gatehouse: {reason}");
                ExitCode::FAILURE
            }
            None => ExitCode::SUCCESS,
        }
    })
}

async fn wait_for_signal(stopped: tokio_util::sync::CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = stopped.cancelled() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received"),
        _ = stopped.cancelled() => {}
    }
}
