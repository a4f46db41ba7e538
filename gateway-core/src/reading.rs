//! What flows from the pipeline to every consumer: one decoded measurement of one device, with
//! where and when it was received. Also the device id scheme.

use std::sync::Arc;

use serde::Serialize;

use crate::motion::MotionState;

use crate::ruuvi::{Mac, Measurement};

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Reading {
    /// Milliseconds since the Unix epoch at reception.
    pub ts: i64,
    pub device_id: String,
    pub mac: String,
    pub rssi: Option<i16>,
    /// Which receiver heard it first: `simulator`, `ble:<adapter>`, or `ruuvi:<gateway MAC>`.
    pub receiver: String,
    #[serde(flatten)]
    pub measurement: Measurement,
    /// `stationary`, `moved` or `moving`, for tags that report acceleration or movements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub motion: Option<MotionState>,
    /// The advertisement's AD structures as received (for the Ruuvi-compatible output).
    #[serde(skip)]
    pub raw: Arc<[u8]>,
}

/// `ruuvi-cbb8334c884f` for the tag with MAC CB:B8:33:4C:88:4F.
pub fn ruuvi_device_id(mac: &Mac) -> String {
    format!("ruuvi-{}", mac.compact())
}

/// `ruuvi_air` for data formats 6 and E1, `ruuvi_tag` for the rest.
pub fn ruuvi_kind(data_format: u8) -> &'static str {
    match data_format {
        0x06 | 0xE1 => "ruuvi_air",
        _ => "ruuvi_tag",
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
