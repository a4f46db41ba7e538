//! Bluetooth tags (and devices imported from Home Assistant discovery) as devices: one that is
//! heard appears as `discovered`; the user adopts it
//! (name, room, calibration offsets), ignores it (kept, hidden from the main views) or blocks it
//! (its advertisements are dropped and counted). No claim code: a tag can only be heard.
//! The settings the pipeline needs on every advertisement are shared in memory ([`TagSettings`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use crate::ruuvi::{Field, Measurement};

/// Offsets added to a tag's values before derived values are computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// °C
    #[serde(default)]
    pub temperature: f64,
    /// %RH
    #[serde(default)]
    pub humidity: f64,
    /// Pa
    #[serde(default)]
    pub pressure: f64,
}

impl Calibration {
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            ("temperature", self.temperature, 20.0),
            ("humidity", self.humidity, 30.0),
            ("pressure", self.pressure, 5_000.0),
        ];
        for (name, value, limit) in checks {
            if !value.is_finite() || value.abs() > limit {
                return Err(format!("calibration.{name} must be within ±{limit}"));
            }
        }
        Ok(())
    }

    /// Applies the offsets to the values the tag reported (unavailable values stay unavailable).
    pub fn apply(&self, m: &mut Measurement) {
        let shift = |field: &mut Field<f64>, by: f64| {
            if let Field::Value(v) = field {
                *v += by;
            }
        };
        shift(&mut m.temperature, self.temperature);
        shift(&mut m.pressure, self.pressure);
        if let Field::Value(h) = &mut m.humidity {
            *h = (*h + self.humidity).clamp(0.0, 100.0);
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TagSetting {
    pub blocked: bool,
    pub calibration: Calibration,
}

/// device id → settings, read by the pipeline for every advertisement.
#[derive(Clone, Default)]
pub struct TagSettings {
    inner: Arc<RwLock<HashMap<String, TagSetting>>>,
}

impl TagSettings {
    pub fn load(conn: &Connection) -> rusqlite::Result<TagSettings> {
        let mut stmt = conn.prepare(
            "SELECT id, state, calibration FROM devices WHERE kind IN ('ruuvi_tag', 'ruuvi_air', 'homeassistant') \
             AND (state = 'blocked' OR calibration IS NOT NULL)",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?)))?;
        let settings = TagSettings::default();
        for row in rows {
            let (id, state, calibration) = row?;
            let calibration = calibration.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or_default();
            settings.set(&id, TagSetting { blocked: state == "blocked", calibration });
        }
        Ok(settings)
    }

    pub fn get(&self, device_id: &str) -> Option<TagSetting> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).get(device_id).copied()
    }

    pub fn set(&self, device_id: &str, setting: TagSetting) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if setting == TagSetting::default() {
            inner.remove(device_id);
        } else {
            inner.insert(device_id.to_string(), setting);
        }
    }
}

/// Persists a tag's state (`active` = adopted, `ignored`, `blocked`, `discovered`) and calibration.
pub fn save(conn: &Connection, device_id: &str, state: &str, calibration: &Calibration) -> rusqlite::Result<usize> {
    let json = (*calibration != Calibration::default()).then(|| serde_json::to_string(calibration).unwrap_or_default());
    conn.execute(
        "UPDATE devices SET state = ?2, calibration = ?3 WHERE id = ?1 AND kind IN ('ruuvi_tag', 'ruuvi_air', 'homeassistant')",
        params![device_id, state, json],
    )
}

pub fn calibration_of(conn: &Connection, device_id: &str) -> rusqlite::Result<Calibration> {
    let json: Option<String> =
        conn.query_row("SELECT calibration FROM devices WHERE id = ?1", [device_id], |r| r.get(0)).unwrap_or(None);
    Ok(json.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_shift_available_values_only_and_clamp_humidity() {
        let mut m = Measurement {
            temperature: Field::Value(20.0),
            humidity: Field::Value(99.0),
            pressure: Field::Unavailable,
            ..Measurement::default()
        };
        Calibration { temperature: -0.5, humidity: 2.0, pressure: 100.0 }.apply(&mut m);
        assert_eq!(m.temperature, Field::Value(19.5));
        assert_eq!(m.humidity, Field::Value(100.0));
        assert_eq!(m.pressure, Field::Unavailable);
        assert!(Calibration { temperature: 50.0, ..Default::default() }.validate().is_err());
        assert!(Calibration { humidity: f64::NAN, ..Default::default() }.validate().is_err());
        assert!(Calibration { pressure: -120.0, ..Default::default() }.validate().is_ok());
    }

    #[test]
    fn settings_round_trip_through_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_connection(&dir.path().join("t.db")).unwrap();
        conn.execute("INSERT INTO devices (id, kind, first_seen, last_seen) VALUES ('ruuvi-a', 'ruuvi_tag', 0, 0), ('ruuvi-b', 'ruuvi_tag', 0, 0)", []).unwrap();
        save(&conn, "ruuvi-a", "active", &Calibration { temperature: 1.0, ..Default::default() }).unwrap();
        save(&conn, "ruuvi-b", "blocked", &Calibration::default()).unwrap();
        let settings = TagSettings::load(&conn).unwrap();
        assert_eq!(settings.get("ruuvi-a").unwrap().calibration.temperature, 1.0);
        assert!(settings.get("ruuvi-b").unwrap().blocked);
        assert_eq!(calibration_of(&conn, "ruuvi-a").unwrap().temperature, 1.0);
    }
}
