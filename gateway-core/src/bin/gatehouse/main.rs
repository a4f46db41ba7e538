//! `gatehouse`: the headless gateway daemon and its command-line tools.

mod accounts;
mod backup;
mod client;
mod decode;
mod devices;
mod run;
mod tasks;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "Gatehouse: an IoT gateway for Ruuvi tags and LAN devices")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway: MQTT broker, Bluetooth/simulated tags, SQLite store and HTTP API.
    Run(run::RunArgs),
    /// Decode Ruuvi advertisements given as hex (raw AD bytes or a bare payload); one JSON object per line.
    Decode(decode::DecodeArgs),
    /// Manage MQTT identities of the running gateway (service accounts, device credentials).
    Accounts(accounts::AccountsArgs),
    /// List the devices of the running gateway.
    Devices(devices::ListArgs),
    /// Claim a device with the code it shows.
    Claim(devices::ClaimArgs),
    /// Open a pairing window: devices registering now can be approved without a code.
    Pair(devices::PairArgs),
    /// Deactivate a device: revoke its credentials and disconnect it (history is kept).
    Deactivate(devices::DeactivateArgs),
    /// Send a task (a declared command) to a device; --wait follows it to the end.
    Send(tasks::SendArgs),
    /// List a device's tasks.
    Tasks(tasks::ListArgs),
    /// Cancel a task that has not finished.
    Cancel(tasks::CancelArgs),
    /// Download a consistent backup of the running gateway's database.
    Backup(backup::BackupArgs),
    /// Restore a backup: checked, then used at the gateway's next start (the current database is kept).
    Restore(backup::RestoreArgs),
    /// Print a device's stored readings as CSV or JSON lines.
    Export(backup::ExportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Decode(args) => decode::decode(args),
        Command::Accounts(args) => accounts::accounts(args),
        Command::Devices(args) => devices::list(args),
        Command::Claim(args) => devices::claim(args),
        Command::Pair(args) => devices::pair(args),
        Command::Deactivate(args) => devices::deactivate(args),
        Command::Send(args) => tasks::send(args),
        Command::Tasks(args) => tasks::list(args),
        Command::Cancel(args) => tasks::cancel(args),
        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
        Command::Export(args) => backup::export(args),
    }
}
