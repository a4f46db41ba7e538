//! `gatehouse accounts …`: MQTT identities of a running gateway (service accounts for Home
//! Assistant, Node-RED…, and manual device credentials). Passwords are printed once.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{block_on, Api, ApiArgs};

#[derive(Args)]
pub struct AccountsArgs {
    #[command(subcommand)]
    command: AccountsCommand,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// List identities.
    List,
    /// Create an identity and print its password (shown once).
    Create {
        name: String,
        /// service, receiver (a remote Ruuvi Gateway), device or provisioning.
        #[arg(long, default_value = "service")]
        role: String,
        /// Extra rule for a service account, FILTER=ACCESS (read, write or readwrite); repeatable.
        #[arg(long = "rule", value_name = "FILTER=ACCESS")]
        rules: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Replace the password (live sessions are disconnected) and print the new one.
    Rotate {
        name: String,
    },
    /// Refuse new connections and disconnect live sessions.
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    /// Delete the identity and disconnect its sessions.
    Delete {
        name: String,
    },
}

pub fn accounts(args: AccountsArgs) -> std::process::ExitCode {
    block_on(async move {
        let api = Api::connect(&args.api)?;
        match args.command {
            AccountsCommand::List => {
                let list = api.get("/api/broker/accounts").await?;
                for account in list.as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<13} site={:<10} {}",
                        account["username"].as_str().unwrap_or_default(),
                        account["role"].as_str().unwrap_or_default(),
                        account["site"].as_str().unwrap_or_default(),
                        if account["enabled"] == true { "enabled" } else { "DISABLED" }
                    );
                }
            }
            AccountsCommand::Create { name, role, rules, description } => {
                let rules = rules.iter().map(|r| parse_rule(r)).collect::<Result<Vec<_>, _>>()?;
                let body = json!({ "username": name, "role": role, "rules": rules, "description": description });
                let created = api.post("/api/broker/accounts", body).await?;
                print_secret(&created["account"]["username"], &created["password"]);
            }
            AccountsCommand::Rotate { name } => {
                let rotated = api.post(&format!("/api/broker/accounts/{name}/rotate"), Value::Null).await?;
                print_secret(&rotated["username"], &rotated["password"]);
            }
            AccountsCommand::Disable { name } => {
                api.post(&format!("/api/broker/accounts/{name}/disable"), Value::Null).await?;
                println!("{name} disabled; its sessions were disconnected");
            }
            AccountsCommand::Enable { name } => {
                api.post(&format!("/api/broker/accounts/{name}/enable"), Value::Null).await?;
                println!("{name} enabled");
            }
            AccountsCommand::Delete { name } => {
                api.delete(&format!("/api/broker/accounts/{name}")).await?;
                println!("{name} deleted; its sessions were disconnected");
            }
        }
        Ok(())
    })
}

fn parse_rule(text: &str) -> Result<Value, String> {
    let (filter, access) =
        text.rsplit_once('=').ok_or_else(|| format!("rule `{text}`: write FILTER=ACCESS, e.g. lab/#=readwrite"))?;
    if !matches!(access, "read" | "write" | "readwrite") {
        return Err(format!("rule `{text}`: access must be read, write or readwrite"));
    }
    Ok(json!({ "filter": filter, "access": access }))
}

fn print_secret(username: &Value, password: &Value) {
    println!("username: {}", username.as_str().unwrap_or_default());
    println!("password: {}", password.as_str().unwrap_or_default());
    eprintln!("(the password is shown only now; store it in the device or integration's settings)");
}
