//! `gatehouse decode HEX...`: a debugging aid for tag owners. Prints one JSON object per argument
//! (decoded fields plus derived values); errors go to stderr and make the exit status non-zero.

use std::process::ExitCode;

use clap::Args;
use gateway_core::ruuvi;

#[derive(Args)]
pub struct DecodeArgs {
    /// Hex strings: raw advertisement bytes (`0201061BFF9904…`), manufacturer data (`9904…`) or a
    /// payload starting with the format byte (`05…`). Spaces, colons and a `0x` prefix are ignored.
    #[arg(required = true, value_name = "HEX")]
    inputs: Vec<String>,
}

pub fn decode(args: DecodeArgs) -> ExitCode {
    let mut failed = 0;
    for (index, input) in args.inputs.iter().enumerate() {
        match decode_one(input) {
            Ok(json) => println!("{json}"),
            Err(message) => {
                failed += 1;
                eprintln!("error: argument {} ({input}): {message}", index + 1);
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn decode_one(input: &str) -> Result<String, String> {
    let cleaned: String =
        input.trim().trim_start_matches("0x").chars().filter(|c| !matches!(c, ' ' | ':' | '-')).collect();
    let bytes = hex::decode(&cleaned).map_err(|e| format!("not hex ({e})"))?;
    let measurement = ruuvi::decode_any(&bytes).map_err(|e| format!("not a Ruuvi advertisement: {e}"))?;
    serde_json::to_string(&measurement).map_err(|e| e.to_string())
}
