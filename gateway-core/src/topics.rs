//! Every MQTT topic the gateway publishes or listens to, in one place. docs/protocol.md is the
//! specification of these topics and their payloads; keep the two in step.

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
        assert_eq!(
            super::telemetry("home", "ruuvi-cbb8334c884f"),
            "devices/home/ruuvi-cbb8334c884f/telemetry"
        );
        assert_eq!(super::device_status("lab", "x"), "devices/lab/x/status");
        assert_eq!(super::gateway_status("home"), "gatehouse/home/status");
    }
}
