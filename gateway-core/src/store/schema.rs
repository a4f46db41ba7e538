//! The SQLite schema as an ordered list of migrations, applied in one transaction each and
//! tracked with `PRAGMA user_version`. Also the table of measurement columns: the single place
//! that maps a reading's JSON field names to `readings` columns.

use rusqlite::Connection;

use crate::ruuvi::Measurement;

/// Append only: never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: devices and readings
    "CREATE TABLE devices (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        mac TEXT,
        name TEXT,
        state TEXT NOT NULL DEFAULT 'discovered',
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        last_rssi INTEGER,
        last_receiver TEXT,
        data_format INTEGER,
        last_reading TEXT
    );
    CREATE TABLE readings (
        device_pk INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        rssi INTEGER,
        temperature REAL, humidity REAL, pressure REAL,
        accel_x REAL, accel_y REAL, accel_z REAL,
        voltage REAL, tx_power REAL, movement_counter REAL, sequence REAL,
        pm1_0 REAL, pm2_5 REAL, pm4_0 REAL, pm10_0 REAL, co2 REAL, voc REAL, nox REAL, luminosity REAL
    );
    CREATE INDEX readings_device_ts ON readings(device_pk, ts);",
    // 2: MQTT identities (argon2id hashes only, never secrets)
    "CREATE TABLE identities (
        username TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        site TEXT NOT NULL,
        rules TEXT NOT NULL DEFAULT '[]',
        enabled INTEGER NOT NULL DEFAULT 1,
        description TEXT,
        created_at INTEGER NOT NULL,
        password_hash TEXT
    );",
    // 3: device lifecycle (registration, claiming), audit log, LAN telemetry, alerts
    "ALTER TABLE devices ADD COLUMN site TEXT;
    ALTER TABLE devices ADD COLUMN device_type TEXT;
    ALTER TABLE devices ADD COLUMN model TEXT;
    ALTER TABLE devices ADD COLUMN manufacturer TEXT;
    ALTER TABLE devices ADD COLUMN firmware TEXT;
    ALTER TABLE devices ADD COLUMN hardware TEXT;
    ALTER TABLE devices ADD COLUMN capabilities TEXT;
    ALTER TABLE devices ADD COLUMN registration_token_hash TEXT;
    ALTER TABLE devices ADD COLUMN registered_at INTEGER;
    ALTER TABLE devices ADD COLUMN via_pairing INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE devices ADD COLUMN claimed_by TEXT;
    ALTER TABLE devices ADD COLUMN claimed_at INTEGER;
    ALTER TABLE devices ADD COLUMN claimed_from TEXT;
    ALTER TABLE devices ADD COLUMN credentials_confirmed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE devices ADD COLUMN room TEXT;
    CREATE TABLE claim_codes (
        device_id TEXT PRIMARY KEY,
        code_hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        device_id TEXT,
        source TEXT,
        details TEXT
    );
    CREATE INDEX audit_device_ts ON audit(device_id, ts);
    CREATE TABLE telemetry (
        device_pk INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        field TEXT NOT NULL,
        value REAL
    );
    CREATE INDEX telemetry_device_field_ts ON telemetry(device_pk, field, ts);
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        device_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        severity TEXT NOT NULL,
        code TEXT,
        message TEXT NOT NULL,
        source TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'active',
        acknowledged_at INTEGER,
        acknowledged_by TEXT,
        details TEXT
    );
    CREATE INDEX alerts_device_ts ON alerts(device_id, ts);",
    // 4: per-tag calibration offsets
    "ALTER TABLE devices ADD COLUMN calibration TEXT;",
    // 5: entities of devices imported from Home Assistant discovery
    "ALTER TABLE devices ADD COLUMN integration TEXT;",
    // 6: a second, staged secret while a device's credentials are being rotated
    "ALTER TABLE identities ADD COLUMN next_password_hash TEXT;",
    // 7: tasks (commands to devices) and every transition they go through
    "CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        site TEXT NOT NULL,
        command TEXT NOT NULL,
        params TEXT NOT NULL,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        timeout_retries INTEGER NOT NULL DEFAULT 0,
        failure_retries INTEGER NOT NULL DEFAULT 0,
        retry_policy TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        ack_timeout_ms INTEGER NOT NULL,
        execution_timeout_ms INTEGER NOT NULL,
        next_attempt_at INTEGER,
        deadline_at INTEGER,
        progress INTEGER,
        message TEXT,
        result TEXT,
        created_by TEXT,
        retry_of TEXT
    );
    CREATE INDEX tasks_device_created ON tasks(device_id, created_at);
    CREATE INDEX tasks_state ON tasks(state);
    CREATE TABLE task_events (
        id INTEGER PRIMARY KEY,
        task_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        detail TEXT
    );
    CREATE INDEX task_events_task ON task_events(task_id, id);",
    // 8: gateway alert rules; rule alerts clear
    "ALTER TABLE alerts ADD COLUMN rule_id INTEGER;
    ALTER TABLE alerts ADD COLUMN cleared_at INTEGER;
    CREATE INDEX alerts_active ON alerts(state, rule_id);
    CREATE TABLE alert_rules (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        devices TEXT NOT NULL,
        field TEXT,
        condition TEXT NOT NULL,
        threshold REAL,
        clear_at REAL,
        for_ms INTEGER NOT NULL,
        severity TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    INSERT INTO alert_rules (name, devices, field, condition, threshold, clear_at, for_ms, severity, enabled, created_at)
    VALUES ('Ruuvi battery low', 'ruuvi-*', 'voltage', 'below', 2.5, 2.6, 300000, 'warning', 1, 0),
           ('Ruuvi tag silent', 'ruuvi-*', NULL, 'silent', NULL, NULL, 600000, 'warning', 1, 0);",
    // 9: desired device configuration and what the device reported applying
    "CREATE TABLE device_config (
        device_id TEXT PRIMARY KEY,
        desired TEXT NOT NULL,
        version INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        updated_by TEXT,
        sent_at INTEGER,
        reported_version INTEGER,
        reported_status TEXT,
        reported_message TEXT,
        reported_at INTEGER
    );",
    // 10: alert webhook deliveries waiting, and a retention pause, kept across restarts
    "CREATE TABLE webhook_outbox (
        id INTEGER PRIMARY KEY,
        delivery TEXT NOT NULL UNIQUE,
        hook TEXT NOT NULL,
        alert_id INTEGER NOT NULL,
        event TEXT NOT NULL,
        alert TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX webhook_outbox_hook ON webhook_outbox(hook, id);
    CREATE TABLE retention_pause (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        until INTEGER NOT NULL
    );",
];

pub fn schema_version() -> usize {
    MIGRATIONS.len()
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "the database has schema version {found}, newer than this Gatehouse understands ({known}); \
         upgrade Gatehouse or restore a backup"
    )]
    TooNew { found: usize, known: usize },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

pub fn migrate(conn: &mut Connection) -> Result<(), MigrationError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let current = current.max(0) as usize;
    if current > MIGRATIONS.len() {
        return Err(MigrationError::TooNew { found: current, known: MIGRATIONS.len() });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "database schema migrated");
    }
    Ok(())
}

/// A numeric measurement column of `readings`.
pub struct Column {
    /// The field name in readings' JSON and in the history API.
    pub field: &'static str,
    pub column: &'static str,
    pub value: fn(&Measurement) -> Option<f64>,
}

pub const MEASUREMENT_COLUMNS: &[Column] = &[
    Column { field: "temperature", column: "temperature", value: |m| m.temperature.value() },
    Column { field: "humidity", column: "humidity", value: |m| m.humidity.value() },
    Column { field: "pressure", column: "pressure", value: |m| m.pressure.value() },
    Column { field: "accelX", column: "accel_x", value: |m| m.accel_x.value() },
    Column { field: "accelY", column: "accel_y", value: |m| m.accel_y.value() },
    Column { field: "accelZ", column: "accel_z", value: |m| m.accel_z.value() },
    Column { field: "voltage", column: "voltage", value: |m| m.voltage.value() },
    Column { field: "txPower", column: "tx_power", value: |m| m.tx_power.value().map(f64::from) },
    Column {
        field: "movementCounter",
        column: "movement_counter",
        value: |m| m.movement_counter.value().map(f64::from),
    },
    Column {
        field: "measurementSequenceNumber",
        column: "sequence",
        value: |m| m.measurement_sequence_number.value().map(f64::from),
    },
    Column { field: "PM1.0", column: "pm1_0", value: |m| m.pm1_0.value() },
    Column { field: "PM2.5", column: "pm2_5", value: |m| m.pm2_5.value() },
    Column { field: "PM4.0", column: "pm4_0", value: |m| m.pm4_0.value() },
    Column { field: "PM10.0", column: "pm10_0", value: |m| m.pm10_0.value() },
    Column { field: "CO2", column: "co2", value: |m| m.co2.value() },
    Column { field: "VOC", column: "voc", value: |m| m.voc.value().map(f64::from) },
    Column { field: "NOx", column: "nox", value: |m| m.nox.value().map(f64::from) },
    Column { field: "luminosity", column: "luminosity", value: |m| m.luminosity.value() },
];

/// The column of a history field; `rssi` is stored beside the measurement columns.
pub fn column_for_field(field: &str) -> Option<&'static str> {
    if field == "rssi" {
        return Some("rssi");
    }
    MEASUREMENT_COLUMNS.iter().find(|c| c.field == field).map(|c| c.column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_refuse_newer_databases() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version as usize, schema_version());
        conn.pragma_update(None, "user_version", 99).unwrap();
        let error = migrate(&mut conn).unwrap_err().to_string();
        assert!(error.contains("schema version 99"), "{error}");
    }

    #[test]
    fn every_measurement_column_exists_in_the_table() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        for column in MEASUREMENT_COLUMNS {
            conn.prepare(&format!("SELECT {} FROM readings", column.column)).unwrap();
            assert_eq!(column_for_field(column.field), Some(column.column));
        }
        assert_eq!(column_for_field("rssi"), Some("rssi"));
        assert_eq!(column_for_field("temperature; DROP TABLE readings"), None);
    }
}
