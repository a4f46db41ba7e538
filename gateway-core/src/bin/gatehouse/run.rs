//! `gatehouse run`: loads configuration (`launch::load_config`), starts the gateway and runs
//! it until SIGINT or SIGTERM.

use std::process::ExitCode;

use gateway_core::gateway::Gateway;
pub use gateway_core::launch::RunArgs;

pub fn run(args: RunArgs) -> ExitCode {
    let config = match gateway_core::launch::load_config(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("gatehouse: {error}");
            return ExitCode::from(2);
        }
    };
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
