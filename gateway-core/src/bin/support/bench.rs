//! What the benchmark binaries (`gatehouse-loadgen`, `gatehouse-taskbench`) share: starting their
//! async runtime and reporting a failure, and reading a process's CPU time and memory from /proc.
//! Included by each with `#[path = "support/bench.rs"] mod bench;`.

use std::future::Future;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// Runs `work` on a two-thread runtime; prints `name: error` and fails on an error.
pub fn run_main(name: &str, work: impl Future<Output = Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(work);
    // Thousands of client tasks may still be parked; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    // SAFETY: sysconf only reads a constant of the running system.
    *TICKS.get_or_init(|| {
        u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|t| *t > 0).unwrap_or(100)
    })
}

/// utime + stime of a process, in microseconds.
pub fn cpu_micros(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces: the first
    // of them is field 3 (state), so utime (14) and stime (15) are at indexes 11 and 12.
    let after = &stat[stat.rfind(')').ok_or_else(|| anyhow!("odd /proc/{pid}/stat: {stat}"))? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields.get(i).and_then(|f| f.parse().ok()).ok_or_else(|| anyhow!("odd /proc/{pid}/stat: {stat}"))
    };
    Ok((field(11)? + field(12)?) * 1_000_000 / clock_ticks_per_second())
}

/// Fields of `/proc/<pid>/status` in KiB, such as `VmRSS:` and `VmHWM:`, read together.
pub fn status_kib<const N: usize>(pid: u32, names: [&str; N]) -> Result<[u64; N]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let mut values = [0; N];
    for (value, name) in values.iter_mut().zip(names) {
        *value = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))?;
    }
    Ok(values)
}
