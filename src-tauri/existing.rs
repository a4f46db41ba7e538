//! Finds a Gatehouse that already serves this machine (usually the headless daemon), so that
//! the app offers to use it instead of starting a second gateway whose ports would clash.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use gateway_core::config::Config;
use gateway_core::gateway::RuntimeInfo;

const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Where a gateway configured to listen on `listen` can be reached from this machine; `None`
/// for port 0 (a fresh port every start: nothing to collide with).
pub fn probe_address(listen: SocketAddr) -> Option<SocketAddr> {
    if listen.port() == 0 {
        return None;
    }
    let ip = if listen.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { listen.ip() };
    Some(SocketAddr::new(ip, listen.port()))
}

/// Whether a `/api/health` answer comes from a Gatehouse (not some other program on the port).
pub fn is_gatehouse_health(body: &serde_json::Value) -> bool {
    body.get("version").is_some_and(serde_json::Value::is_string)
        && body.get("mqtt").is_some_and(serde_json::Value::is_object)
        && body.get("bluetooth").is_some_and(serde_json::Value::is_object)
}

async fn answers(address: SocketAddr) -> bool {
    let client = match reqwest::Client::builder().timeout(PROBE_TIMEOUT).build() {
        Ok(client) => client,
        Err(_) => return false,
    };
    match client.get(format!("http://{address}/api/health")).send().await {
        Ok(response) => response.json::<serde_json::Value>().await.is_ok_and(|body| is_gatehouse_health(&body)),
        Err(_) => false,
    }
}

/// The URL of a Gatehouse already running for this configuration: one on the configured HTTP
/// address, or one that left its runtime file in the same data directory.
pub async fn find(config: &Config) -> Option<String> {
    let mut candidates = Vec::new();
    if let Some(address) = probe_address(config.http.listen) {
        candidates.push(address);
    }
    if let Some(runtime) = RuntimeInfo::read(&config.resolved_data_dir()) {
        if let Some(address) = probe_address(runtime.http) {
            candidates.push(address);
        }
    }
    for address in candidates {
        if answers(address).await {
            return Some(format!("http://{address}/"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn probe_addresses() {
        let table: [(&str, Option<&str>); 4] = [
            ("127.0.0.1:8080", Some("127.0.0.1:8080")),
            ("0.0.0.0:8080", Some("127.0.0.1:8080")),
            ("192.168.1.5:80", Some("192.168.1.5:80")),
            ("127.0.0.1:0", None),
        ];
        for (listen, expected) in table {
            let got = probe_address(listen.parse().unwrap());
            assert_eq!(got, expected.map(|e| e.parse().unwrap()), "{listen}");
        }
    }

    #[test]
    fn recognises_only_gatehouse_health() {
        let gatehouse =
            json!({"status": "ok", "version": "0.1.0", "mqtt": {"listen": "x"}, "bluetooth": {"state": "scanning"}});
        assert!(is_gatehouse_health(&gatehouse));
        for other in
            [json!({"status": "ok"}), json!({"version": 1, "mqtt": {}, "bluetooth": {}}), json!([]), json!(null)]
        {
            assert!(!is_gatehouse_health(&other), "{other}");
        }
    }
}
