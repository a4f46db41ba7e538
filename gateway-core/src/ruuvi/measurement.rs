//! The decoded content of one Ruuvi advertisement, with the Ruuvi Gateway's JSON field names and
//! units (°C, %RH, Pa, g, V, dBm, µg/m³, ppm, lux) plus the derived values.

use serde::{Deserialize, Serialize};

use super::Field;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// 3, 5, 6, 197 (0xC5) or 225 (0xE1), as the Ruuvi Gateway reports it.
    pub data_format: u8,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub temperature: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub humidity: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub pressure: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub accel_x: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub accel_y: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub accel_z: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub movement_counter: Field<u32>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub voltage: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub tx_power: Field<i32>,
    #[serde(rename = "PM1.0", default, skip_serializing_if = "Field::is_absent")]
    pub pm1_0: Field<f64>,
    #[serde(rename = "PM2.5", default, skip_serializing_if = "Field::is_absent")]
    pub pm2_5: Field<f64>,
    #[serde(rename = "PM4.0", default, skip_serializing_if = "Field::is_absent")]
    pub pm4_0: Field<f64>,
    #[serde(rename = "PM10.0", default, skip_serializing_if = "Field::is_absent")]
    pub pm10_0: Field<f64>,
    #[serde(rename = "CO2", default, skip_serializing_if = "Field::is_absent")]
    pub co2: Field<f64>,
    #[serde(rename = "VOC", default, skip_serializing_if = "Field::is_absent")]
    pub voc: Field<u32>,
    #[serde(rename = "NOx", default, skip_serializing_if = "Field::is_absent")]
    pub nox: Field<u32>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub luminosity: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub measurement_sequence_number: Field<u32>,
    #[serde(rename = "flag_calibration_in_progress", default, skip_serializing_if = "Field::is_absent")]
    pub flag_calibration_in_progress: Field<bool>,
    #[serde(rename = "flag_button_pressed", default, skip_serializing_if = "Field::is_absent")]
    pub flag_button_pressed: Field<bool>,
    #[serde(rename = "flag_rtc_running_on_boot", default, skip_serializing_if = "Field::is_absent")]
    pub flag_rtc_running_on_boot: Field<bool>,
    /// The tag's MAC as carried in the payload (three bytes only in data format 6).
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub id: Field<String>,

    // Derived values (see `derived.rs`); absent when the format lacks their inputs.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub acceleration_total: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub acceleration_angle_from_x: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub acceleration_angle_from_y: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub acceleration_angle_from_z: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub equilibrium_vapor_pressure: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub absolute_humidity: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub dew_point: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub air_density: Field<f64>,
    /// Ruuvi Indoor Air Quality Score, 0–100 (Ruuvi Air only).
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub iaqs: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub iaqs_rating: Field<String>,
}
