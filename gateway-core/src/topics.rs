//! Every MQTT topic the gateway publishes or listens to, in one place. docs/protocol.md is the
//! specification of these topics and their payloads; keep the two in step.

/// Sub-topics a device publishes under `devices/{site}/{id}/`.
pub const DEVICE_PUBLISHES: &[&str] = &["telemetry", "status", "alert", "command_response", "config_reported"];
/// Sub-topics a device subscribes to under `devices/{site}/{id}/`.
pub const DEVICE_SUBSCRIBES: &[&str] = &["commands", "config", "credentials"];

/// Top-level topic namespaces whose second level is the site (tenant).
/// What remote Ruuvi Gateways publish: `ruuvi/<gw MAC>/<tag MAC>` and `ruuvi/<gw MAC>/gw_status`
/// (the Ruuvi Gateway's default prefix). Also where the Ruuvi-compatible output goes.
pub const RUUVI_GATEWAY_TOPICS: &str = "ruuvi/+/+";

pub const SITE_SCOPED_ROOTS: &[&str] = &["devices", "gatehouse", "provisioning"];

/// `devices/{site}/{device_id}/{leaf}`.
pub fn device_topic(site: &str, device_id: &str, leaf: &str) -> String {
    format!("devices/{site}/{device_id}/{leaf}")
}

/// Where a factory-fresh device (connected with the provisioning identity and client id
/// `{client_id}`) sends its registration.
pub fn provisioning_request(site: &str, client_id: &str) -> String {
    format!("provisioning/{site}/{client_id}/register")
}

/// Where the gateway answers a provisioning client.
pub fn provisioning_reply(site: &str, client_id: &str) -> String {
    format!("provisioning/{site}/{client_id}/reply")
}

/// Alerts raised by devices or gateway rules: JSON, not retained.
pub fn gateway_alerts(site: &str) -> String {
    format!("gatehouse/{site}/alerts")
}

/// The gateway's periodic health report: JSON, retained.
pub fn gateway_health(site: &str) -> String {
    format!("gatehouse/{site}/health")
}

/// Decoded measurements of a device: JSON, QoS 0, not retained.
pub fn telemetry(site: &str, device_id: &str) -> String {
    format!("devices/{site}/{device_id}/telemetry")
}

/// Availability of a device: `online` or `offline`, retained.
pub fn device_status(site: &str, device_id: &str) -> String {
    format!("devices/{site}/{device_id}/status")
}

/// Availability of the gateway itself: `online` or `offline`, retained.
pub fn gateway_status(site: &str) -> String {
    format!("gatehouse/{site}/status")
}

pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";

/// Client ids starting with this are reserved for the gateway's own in-process links.
pub const RESERVED_CLIENT_PREFIX: &str = "gatehouse";

#[cfg(test)]
mod tests {
    #[test]
    fn topic_shapes() {
        assert_eq!(super::telemetry("home", "ruuvi-cbb8334c884f"), "devices/home/ruuvi-cbb8334c884f/telemetry");
        assert_eq!(super::device_status("lab", "x"), "devices/lab/x/status");
        assert_eq!(super::gateway_status("home"), "gatehouse/home/status");
    }
}
