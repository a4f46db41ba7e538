//! SQL for the device lifecycle: registrations, claim codes, activation and the audit log.
//! Runs on the store's admin connection (small, rare writes).

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::registration::Registration;
use crate::store::{device_from_row, DeviceRecord, DEVICE_SELECT};

pub fn device(conn: &Connection, id: &str) -> rusqlite::Result<Option<DeviceRecord>> {
    conn.prepare_cached(&format!("{DEVICE_SELECT} WHERE id = ?1"))?.query_row([id], device_from_row).optional()
}

/// The stored registration-token hash of a device.
pub fn token_hash(conn: &Connection, id: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT registration_token_hash FROM devices WHERE id = ?1", [id], |r| r.get(0))
        .optional()
        .map(Option::flatten)
}

/// Records (or refreshes) a registration as `pending_claim`.
pub fn save_registration(
    conn: &Connection,
    registration: &Registration,
    site: &str,
    token_hash: &str,
    via_pairing: bool,
    now: i64,
) -> rusqlite::Result<()> {
    let capabilities = serde_json::to_string(&registration.capabilities).unwrap_or_default();
    conn.execute(
        "INSERT INTO devices (id, kind, name, state, first_seen, last_seen, site, device_type, model, manufacturer, \
             firmware, hardware, capabilities, registration_token_hash, registered_at, via_pairing) \
         VALUES (?1, 'lan', ?2, 'pending_claim', ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?3, ?12) \
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, state = 'pending_claim', last_seen = excluded.last_seen, \
             site = excluded.site, device_type = excluded.device_type, model = excluded.model, \
             manufacturer = excluded.manufacturer, firmware = excluded.firmware, hardware = excluded.hardware, \
             capabilities = excluded.capabilities, registration_token_hash = excluded.registration_token_hash, \
             registered_at = excluded.registered_at, via_pairing = excluded.via_pairing, claimed_by = NULL, \
             claimed_at = NULL, claimed_from = NULL, credentials_confirmed = 0",
        params![
            registration.device_id,
            registration.name,
            now,
            site,
            registration.device_type,
            registration.model,
            registration.manufacturer,
            registration.firmware,
            registration.hardware,
            capabilities,
            token_hash,
            via_pairing
        ],
    )?;
    Ok(())
}

pub fn save_claim_code(
    conn: &Connection,
    device_id: &str,
    code_hash: &str,
    now: i64,
    expires_at: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO claim_codes (device_id, code_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(device_id) DO UPDATE SET code_hash = excluded.code_hash, created_at = excluded.created_at, \
             expires_at = excluded.expires_at",
        params![device_id, code_hash, now, expires_at],
    )?;
    Ok(())
}

/// (device id, expires at) for a code hash.
pub fn find_claim_code(conn: &Connection, code_hash: &str) -> rusqlite::Result<Option<(String, i64)>> {
    conn.query_row("SELECT device_id, expires_at FROM claim_codes WHERE code_hash = ?1", [code_hash], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
}

/// The stored code hash and expiry of a device's claim code.
pub fn claim_code_of(conn: &Connection, device_id: &str) -> rusqlite::Result<Option<(String, i64)>> {
    conn.query_row("SELECT code_hash, expires_at FROM claim_codes WHERE device_id = ?1", [device_id], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
}

/// Marks the device active, records who claimed it, and uses up its code.
pub fn activate(conn: &Connection, device_id: &str, actor: &str, source: &str, now: i64) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "UPDATE devices SET state = 'active', claimed_by = ?2, claimed_at = ?3, claimed_from = ?4, \
             credentials_confirmed = 0 WHERE id = ?1",
        params![device_id, actor, now, source],
    )?;
    tx.execute("DELETE FROM claim_codes WHERE device_id = ?1", [device_id])?;
    tx.commit()
}

pub fn set_state(conn: &Connection, device_id: &str, state: &str) -> rusqlite::Result<usize> {
    conn.execute("UPDATE devices SET state = ?2 WHERE id = ?1", params![device_id, state])
}

pub fn confirm_credentials(conn: &Connection, device_id: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE devices SET credentials_confirmed = 1 WHERE id = ?1 AND credentials_confirmed = 0",
        [device_id],
    )? > 0)
}

pub fn save_capabilities(conn: &Connection, device_id: &str, capabilities: &str) -> rusqlite::Result<usize> {
    conn.execute("UPDATE devices SET capabilities = ?2 WHERE id = ?1", params![device_id, capabilities])
}

pub fn update_details(
    conn: &Connection,
    device_id: &str,
    name: Option<&str>,
    room: Option<&str>,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE devices SET name = COALESCE(?2, name), room = COALESCE(?3, room) WHERE id = ?1",
        params![device_id, name, room],
    )
}

/// Removes a device; with `purge`, its history too.
pub fn delete(conn: &Connection, device_id: &str, purge: bool) -> rusqlite::Result<bool> {
    let tx = conn.unchecked_transaction()?;
    if purge {
        for table in ["readings", "telemetry"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE device_pk = (SELECT pk FROM devices WHERE id = ?1)"),
                [device_id],
            )?;
        }
        tx.execute("DELETE FROM alerts WHERE device_id = ?1", [device_id])?;
    }
    tx.execute("DELETE FROM claim_codes WHERE device_id = ?1", [device_id])?;
    let removed = tx.execute("DELETE FROM devices WHERE id = ?1", [device_id])? > 0;
    tx.commit()?;
    Ok(removed)
}

/// Active LAN devices and their declared capabilities.
pub fn active_capabilities(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare(
        "SELECT id, capabilities FROM devices WHERE kind = 'lan' AND state = 'active' AND capabilities IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    pub ts: i64,
    /// Who: `api@127.0.0.1`, `cli`, `device:esp32-a1b2`, `gateway`.
    pub actor: String,
    pub action: String,
    pub device_id: Option<String>,
    /// From where: an IP address or MQTT client address.
    pub source: Option<String>,
    pub details: Option<serde_json::Value>,
}

pub fn audit(
    conn: &Connection,
    ts: i64,
    actor: &str,
    action: &str,
    device_id: Option<&str>,
    source: Option<&str>,
    details: Option<&serde_json::Value>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit (ts, actor, action, device_id, source, details) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![ts, actor, action, device_id, source, details.map(|d| d.to_string())],
    )?;
    Ok(())
}

pub fn audit_list(conn: &Connection, device_id: Option<&str>, limit: i64) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, ts, actor, action, device_id, source, details FROM audit \
         WHERE ?1 IS NULL OR device_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![device_id, limit], |r| {
        let details: Option<String> = r.get(6)?;
        Ok(AuditEntry {
            id: r.get(0)?,
            ts: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            device_id: r.get(4)?,
            source: r.get(5)?,
            details: details.and_then(|d| serde_json::from_str(&d).ok()),
        })
    })?;
    rows.collect()
}
