//! Pure rules of the upstream bridge: which local topics a bridge forwards, what they are called
//! upstream, which are retained there, where task requests and answers travel, and how long to
//! wait before the next reconnect. No I/O, so every rule is table-tested.

use std::time::Duration;

use crate::config::UpstreamConfig;

/// Letters, digits, `-` and `_`: safe as an MQTT topic level, a client id and a file name.
pub fn is_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A host name made into a [`is_name`] (dots and other characters become `-`).
pub fn topic_safe(raw: &str) -> Option<String> {
    let cleaned: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c.to_ascii_lowercase() } else { '-' })
        .take(64)
        .collect();
    let cleaned = cleaned.trim_matches('-').to_string();
    is_name(&cleaned).then_some(cleaned)
}

/// `mqtt://host:port` or `mqtts://host:port`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

pub fn parse_url(url: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err("must start with mqtt:// or mqtts://".into());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '@', '?', '#']) {
        return Err("give only host and port (credentials go in username/password)".into());
    }
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed `[` in an IPv6 address")?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().map_err(|_| format!("`{port}` is not a port"))?,
            None if after.is_empty() => default_port,
            None => return Err("unexpected text after the IPv6 address".into()),
        };
        (host.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), port.parse().map_err(|_| format!("`{port}` is not a port"))?),
            None => (rest.to_string(), default_port),
        }
    };
    if host.is_empty() || port == 0 {
        return Err("needs a host and a non-zero port".into());
    }
    Ok(Endpoint { host, port, tls })
}

/// The prefix with `{gateway_id}` and `{site}` filled in.
pub fn resolve_prefix(template: &str, gateway_id: &str, site: &str) -> String {
    template.replace("{gateway_id}", gateway_id).replace("{site}", site)
}

/// The local topic filters a `forward` list stands for: named classes, or filters given as is.
pub fn local_filters(forward: &[String], site: &str) -> Result<Vec<String>, String> {
    let mut filters = Vec::new();
    for entry in forward {
        let expanded: Vec<String> = match entry.as_str() {
            "telemetry" => vec![format!("devices/{site}/+/telemetry")],
            "status" => vec![format!("devices/{site}/+/status"), format!("gatehouse/{site}/status")],
            "alerts" => vec![format!("gatehouse/{site}/alerts"), format!("devices/{site}/+/alert")],
            "health" => vec![format!("gatehouse/{site}/health")],
            filter if filter.contains('/') || filter == "#" => {
                check_filter(filter)?;
                vec![filter.to_string()]
            }
            other => {
                return Err(format!(
                    "`{other}` is neither telemetry, status, alerts, health nor a topic filter such as ruuvi/+/+"
                ))
            }
        };
        for filter in expanded {
            if !filters.contains(&filter) {
                filters.push(filter);
            }
        }
    }
    Ok(filters)
}

fn check_filter(filter: &str) -> Result<(), String> {
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let bad_hash = level.contains('#') && (*level != "#" || i + 1 != levels.len());
        let bad_plus = level.contains('+') && *level != "+";
        if bad_hash || bad_plus || level.contains('\0') {
            return Err(format!("`{filter}` is not a valid MQTT topic filter"));
        }
    }
    if filter.starts_with('$') {
        return Err(format!("`{filter}`: `$` topics are the broker's own and are not forwarded"));
    }
    Ok(())
}

/// Where a local topic goes upstream.
pub fn upstream_topic(prefix: &str, local_topic: &str) -> String {
    format!("{prefix}/{local_topic}")
}

/// Status and health topics are retained locally, so they are retained upstream too: a fleet
/// dashboard that connects later still sees the last state. Telemetry and alerts are events.
pub fn retained_upstream(local_topic: &str) -> bool {
    matches!(local_topic.rsplit('/').next(), Some("status" | "health"))
}

/// Where a fleet operator asks for a task.
pub fn commands_topic(prefix: &str) -> String {
    format!("{prefix}/tasks/create")
}

/// Every state of a task created from upstream (QoS 1, not retained).
pub fn task_state_topic(prefix: &str, task_id: &str) -> String {
    format!("{prefix}/tasks/{task_id}/state")
}

/// Requests that did not become a task, with the reason.
pub fn rejected_topic(prefix: &str) -> String {
    format!("{prefix}/tasks/rejected")
}

/// The bridge's own connection state upstream: `online`, or `offline` (its last will).
pub fn bridge_status_topic(prefix: &str) -> String {
    format!("{prefix}/bridge/status")
}

/// Where "test connection" checks that this account may publish and read back.
pub fn probe_topic(prefix: &str) -> String {
    format!("{prefix}/bridge/probe")
}

/// The delay before reconnect attempt `failures` (1 = after the first failure): doubling from
/// `min` to `max`, then "equal jitter" (half fixed, half random, `jitter` in 0..1) so a fleet
/// that lost its broker together does not come back in lockstep.
pub fn backoff(failures: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let base = min.saturating_mul(1u32 << exponent).min(max).max(min);
    let half = base / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// Everything about one `[[upstream]]` that can be checked without touching the network;
/// `Err((key, reason))`.
pub fn validate(config: &UpstreamConfig, site: &str) -> Result<(), (&'static str, String)> {
    if !is_name(&config.name) {
        return Err(("name", "use letters, digits, '-' and '_' only (it names the buffer file)".into()));
    }
    let endpoint = parse_url(&config.url).map_err(|reason| ("url", reason))?;
    let prefix = resolve_prefix(&config.prefix, "gateway", site);
    if prefix.is_empty()
        || prefix.starts_with('$')
        || prefix.contains(['+', '#', '\0'])
        || prefix.split('/').any(str::is_empty)
    {
        return Err((
            "prefix",
            "must be a topic prefix such as gatehouse/{gateway_id} (no wildcards or empty levels)".into(),
        ));
    }
    local_filters(&config.forward, site).map_err(|reason| ("forward", reason))?;
    if config.password.is_some() && config.password_file.is_some() {
        return Err(("password_file", "give either password or password_file, not both".into()));
    }
    if (config.password.is_some() || config.password_file.is_some()) && config.username.is_none() {
        return Err(("username", "a password needs a username".into()));
    }
    if config.client_cert.is_some() != config.client_key.is_some() {
        return Err(("client_cert", "client_cert and client_key go together".into()));
    }
    if !endpoint.tls && (config.ca_file.is_some() || config.client_cert.is_some()) {
        return Err(("url", "ca_file and client certificates need an mqtts:// URL".into()));
    }
    if config.client_id.as_ref().is_some_and(|id| id.is_empty() || id.len() > 128 || id.contains(['+', '#', '\0'])) {
        return Err(("client_id", "must have 1 to 128 characters and no wildcards".into()));
    }
    if config.buffer_max_bytes < 1024 {
        return Err(("buffer_max_bytes", "must be at least 1024".into()));
    }
    if config.buffer_max_age < Duration::from_secs(1) {
        return Err(("buffer_max_age", "must be at least 1s".into()));
    }
    if config.keep_alive < Duration::from_secs(5) {
        return Err(("keep_alive", "must be at least 5s".into()));
    }
    if config.reconnect_min.is_zero() || config.reconnect_max < config.reconnect_min {
        return Err(("reconnect_min", "needs 0 < reconnect_min <= reconnect_max".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let cases: &[(&str, Result<(&str, u16, bool), &str>)] = &[
            ("mqtt://broker.lan", Ok(("broker.lan", 1883, false))),
            ("mqtts://broker.lan", Ok(("broker.lan", 8883, true))),
            ("mqtt://127.0.0.1:18830", Ok(("127.0.0.1", 18830, false))),
            ("mqtts://[::1]:8884/", Ok(("::1", 8884, true))),
            ("mqtts://[::1]", Ok(("::1", 8883, true))),
            ("tcp://broker.lan", Err("must start with")),
            ("mqtt://user:pw@broker.lan", Err("only host and port")),
            ("mqtt://broker.lan:http", Err("not a port")),
            ("mqtt://:1883", Err("needs a host")),
            ("mqtt://broker.lan:0", Err("needs a host")),
        ];
        for (url, expected) in cases {
            match (parse_url(url), expected) {
                (Ok(endpoint), Ok((host, port, tls))) => {
                    assert_eq!((endpoint.host.as_str(), endpoint.port, endpoint.tls), (*host, *port, *tls), "{url}")
                }
                (Err(reason), Err(part)) => assert!(reason.contains(part), "{url}: {reason}"),
                (got, _) => panic!("{url}: got {got:?}, expected {expected:?}"),
            }
        }
        assert_eq!(parse_url("mqtts://[::1]:8884").unwrap().to_string(), "mqtts://[::1]:8884");
    }

    #[test]
    fn forward_classes_become_local_filters() {
        let cases: &[(&[&str], Result<&[&str], &str>)] = &[
            (&["telemetry"], Ok(&["devices/home/+/telemetry"])),
            (&["status"], Ok(&["devices/home/+/status", "gatehouse/home/status"])),
            (&["alerts", "alerts"], Ok(&["gatehouse/home/alerts", "devices/home/+/alert"])),
            (&["health", "ruuvi/+/+"], Ok(&["gatehouse/home/health", "ruuvi/+/+"])),
            (&["#"], Ok(&["#"])),
            (&["readings"], Err("neither")),
            (&["devices/#/x"], Err("not a valid")),
            (&["devices/a+/x"], Err("not a valid")),
            (&["$SYS/#"], Err("broker's own")),
        ];
        for (forward, expected) in cases {
            let forward: Vec<String> = forward.iter().map(|s| s.to_string()).collect();
            match (local_filters(&forward, "home"), expected) {
                (Ok(filters), Ok(want)) => assert_eq!(filters, *want, "{forward:?}"),
                (Err(reason), Err(part)) => assert!(reason.contains(part), "{forward:?}: {reason}"),
                (got, _) => panic!("{forward:?}: got {got:?}"),
            }
        }
    }

    #[test]
    fn topics_upstream() {
        let prefix = resolve_prefix("fleet/{site}/{gateway_id}", "pi-kitchen", "home");
        assert_eq!(prefix, "fleet/home/pi-kitchen");
        assert_eq!(
            upstream_topic(&prefix, "devices/home/esp-1/telemetry"),
            "fleet/home/pi-kitchen/devices/home/esp-1/telemetry"
        );
        for (topic, retained) in [
            ("devices/home/esp-1/status", true),
            ("gatehouse/home/status", true),
            ("gatehouse/home/health", true),
            ("devices/home/esp-1/telemetry", false),
            ("gatehouse/home/alerts", false),
            ("ruuvi/AA/status-x", false),
        ] {
            assert_eq!(retained_upstream(topic), retained, "{topic}");
        }
        assert_eq!(commands_topic("g/1"), "g/1/tasks/create");
        assert_eq!(task_state_topic("g/1", "t"), "g/1/tasks/t/state");
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_inside_the_upper_half() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let cases =
            [(1, 0.0, 500), (1, 1.0, 1000), (2, 0.0, 1000), (3, 0.5, 3000), (7, 1.0, 60_000), (40, 0.0, 30_000)];
        for (failures, jitter, millis) in cases {
            assert_eq!(backoff(failures, min, max, jitter), Duration::from_millis(millis), "{failures} {jitter}");
        }
        assert_eq!(backoff(0, min, max, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn names() {
        assert!(is_name("fleet_1-a"));
        assert!(!is_name("fleet/1") && !is_name("") && !is_name("a b"));
        assert_eq!(topic_safe("Pi.Kitchen.local\n").as_deref(), Some("pi-kitchen-local"));
        assert_eq!(topic_safe("..."), None);
    }

    fn config(extra: &str) -> UpstreamConfig {
        toml::from_str(&format!("name = \"fleet\"\nurl = \"mqtt://broker.lan\"\n{extra}")).expect("valid toml")
    }

    #[test]
    fn validation_names_the_key() {
        let cases = [
            ("", None),
            ("username = \"gw\"\npassword = \"pw\"", None),
            ("password = \"pw\"", Some("username")),
            ("username = \"gw\"\npassword = \"pw\"\npassword_file = \"/p\"", Some("password_file")),
            ("ca_file = \"/ca.pem\"", Some("url")),
            ("prefix = \"fleet/+/x\"", Some("prefix")),
            ("prefix = \"\"", Some("prefix")),
            ("forward = [\"nonsense\"]", Some("forward")),
            ("buffer_max_bytes = 10", Some("buffer_max_bytes")),
            ("reconnect_min = \"10s\"\nreconnect_max = \"1s\"", Some("reconnect_min")),
            ("keep_alive = \"1s\"", Some("keep_alive")),
            ("client_id = \"\"", Some("client_id")),
        ];
        for (extra, key) in cases {
            assert_eq!(validate(&config(extra), "home").err().map(|(k, _)| k), key, "{extra}");
        }
        let mut bad = config("");
        bad.name = "a/b".into();
        assert_eq!(validate(&bad, "home").err().map(|(k, _)| k), Some("name"));
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let config = config("username = \"gw\"\npassword = \"hunter2\"");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
