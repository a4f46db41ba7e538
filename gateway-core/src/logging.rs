//! Log output via `tracing`: human-readable by default (coloured at a terminal only), JSON lines
//! on request, to stderr.
//! `RUST_LOG` overrides the configured level. Also installs the layer that counts the messages
//! the broker's router skips for lagging subscribers (whatever the log level).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat};

pub fn init(config: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => {
            EnvFilter::try_new(&from_env).map_err(|e| format!("RUST_LOG={from_env}: {e}"))?
        }
        _ => {
            EnvFilter::try_new(&config.level).map_err(|e| format!("config key `log.level` ({}): {e}", config.level))?
        }
    };
    // Never colours into a log file or the journal, whose escape codes break grep and log
    // shippers; at a terminal, tracing-subscriber's default (which honours NO_COLOR).
    let mut human = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        human = human.with_ansi(false);
    }
    let output = match config.format {
        LogFormat::Human => human.boxed(),
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr).boxed()
        }
    };
    tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .with(crate::broker::drops::layer())
        .try_init()
        .map_err(|e| e.to_string())
}
