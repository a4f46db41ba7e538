//! The durable queue of alert webhook deliveries. Each announced change of an alert (raised,
//! cleared, acknowledged) is written here for every hook that wants it, in the same transaction
//! as the change itself, so a gateway killed or stopped before a hook accepted the change sends
//! it after the restart. Delivery is at least once: a request in flight at a kill is sent again,
//! with the same `X-Gatehouse-Delivery` id. Rows go when delivered or given up.

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::bus::AlertRecord;
use crate::config::WebhookConfig;

/// A configured hook as the outbox knows it: by a key that does not reveal its URL (URLs often
/// carry a token) and the changes it wants.
#[derive(Debug, Clone)]
struct Hook {
    key: String,
    events: Vec<String>,
}

/// The configured hooks; an empty outbox queues nothing.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    hooks: Vec<Hook>,
}

/// The key of a hook's rows: the start of the SHA-256 of its URL.
pub fn hook_key(url: &str) -> String {
    hex::encode(&Sha256::digest(url.as_bytes())[..8])
}

impl Outbox {
    pub fn new(hooks: &[WebhookConfig]) -> Outbox {
        Outbox { hooks: hooks.iter().map(|h| Hook { key: hook_key(&h.url), events: h.events.clone() }).collect() }
    }

    /// Queues the change `alert` announces for every hook that wants it. Call it in the
    /// transaction that stores the change.
    pub fn enqueue(&self, conn: &Connection, alert: &AlertRecord) -> rusqlite::Result<usize> {
        let event = super::webhooks::event_name(alert);
        let wanted: Vec<&Hook> = self.hooks.iter().filter(|h| h.events.iter().any(|e| e == event)).collect();
        if wanted.is_empty() {
            return Ok(0);
        }
        let json = serde_json::to_string(alert).expect("an alert record serializes");
        let mut insert = conn.prepare_cached(
            "INSERT INTO webhook_outbox (hook, alert_id, event, alert, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for hook in &wanted {
            insert.execute(params![hook.key, alert.id, event, json, crate::reading::now_ms()])?;
        }
        Ok(wanted.len())
    }

    /// Deletes what is queued for hooks no longer configured; returns how many rows.
    pub fn forget_removed_hooks(&self, conn: &Connection) -> rusqlite::Result<usize> {
        let keys: Vec<&str> = self.hooks.iter().map(|h| h.key.as_str()).collect();
        let placeholders = vec!["?"; keys.len()].join(", ");
        let sql = if keys.is_empty() {
            "DELETE FROM webhook_outbox".to_string()
        } else {
            format!("DELETE FROM webhook_outbox WHERE hook NOT IN ({placeholders})")
        };
        conn.execute(&sql, rusqlite::params_from_iter(keys))
    }
}

/// A change waiting for one hook.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Also the `X-Gatehouse-Delivery` header, the same on every attempt and after a restart.
    pub id: i64,
    pub alert_id: i64,
    pub event: String,
    /// The alert as it was at the change (JSON).
    pub alert: String,
    /// Attempts made so far, across restarts.
    pub attempts: u32,
}

/// The oldest change waiting for `hook`.
pub fn next(conn: &Connection, hook: &str) -> rusqlite::Result<Option<Pending>> {
    conn.query_row(
        "SELECT id, alert_id, event, alert, attempts FROM webhook_outbox WHERE hook = ?1 ORDER BY id LIMIT 1",
        [hook],
        |r| Ok(Pending { id: r.get(0)?, alert_id: r.get(1)?, event: r.get(2)?, alert: r.get(3)?, attempts: r.get(4)? }),
    )
    .optional()
}

pub fn count_attempt(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.execute("UPDATE webhook_outbox SET attempts = attempts + 1 WHERE id = ?1", [id]).map(drop)
}

/// Delivered or given up.
pub fn remove(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM webhook_outbox WHERE id = ?1", [id]).map(drop)
}

/// Keeps the newest `max` changes waiting for `hook`; returns how many older ones were dropped.
pub fn trim(conn: &Connection, hook: &str, max: usize) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM webhook_outbox WHERE hook = ?1 AND id NOT IN \
         (SELECT id FROM webhook_outbox WHERE hook = ?1 ORDER BY id DESC LIMIT ?2)",
        params![hook, max as i64],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str, events: &[&str]) -> WebhookConfig {
        let mut config: WebhookConfig = toml::from_str(&format!("url = \"{url}\"")).unwrap();
        config.events = events.iter().map(|e| e.to_string()).collect();
        config
    }

    fn alert(id: i64, state: &str, acknowledged_at: Option<i64>) -> AlertRecord {
        AlertRecord {
            id,
            device_id: "d".into(),
            site: "home".into(),
            ts: 1,
            severity: "warning".into(),
            code: None,
            message: "m".into(),
            source: "device".into(),
            details: None,
            state: state.into(),
            rule_id: None,
            cleared_at: (state == "cleared").then_some(2),
            acknowledged_at,
            acknowledged_by: None,
        }
    }

    fn database() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_connection(&dir.path().join("t.db")).unwrap();
        (dir, conn)
    }

    #[test]
    fn each_hook_gets_the_changes_it_wants_in_order() {
        let (_dir, conn) = database();
        let outbox = Outbox::new(&[hook("http://a/x", &["raised", "cleared"]), hook("http://b/y", &["acknowledged"])]);
        let (a, b) = (hook_key("http://a/x"), hook_key("http://b/y"));
        assert_eq!(outbox.enqueue(&conn, &alert(7, "active", None)).unwrap(), 1);
        assert_eq!(outbox.enqueue(&conn, &alert(7, "cleared", None)).unwrap(), 1);
        assert_eq!(outbox.enqueue(&conn, &alert(7, "cleared", Some(3))).unwrap(), 1);

        let first = next(&conn, &a).unwrap().unwrap();
        assert_eq!((first.alert_id, first.event.as_str(), first.attempts), (7, "raised", 0));
        let record: serde_json::Value = serde_json::from_str(&first.alert).unwrap();
        assert_eq!(record["state"], "active");
        count_attempt(&conn, first.id).unwrap();
        assert_eq!(next(&conn, &a).unwrap().unwrap().attempts, 1, "attempts are kept");
        remove(&conn, first.id).unwrap();
        assert_eq!(next(&conn, &a).unwrap().unwrap().event, "cleared");
        assert_eq!(next(&conn, &b).unwrap().unwrap().event, "acknowledged");
        assert_eq!(next(&conn, "nobody").unwrap(), None);
    }

    #[test]
    fn the_oldest_are_dropped_beyond_the_bound_and_removed_hooks_are_forgotten() {
        let (_dir, conn) = database();
        let outbox = Outbox::new(&[hook("http://a/x", &["raised"]), hook("http://b/y", &["raised"])]);
        for id in 1..=5 {
            outbox.enqueue(&conn, &alert(id, "active", None)).unwrap();
        }
        let a = hook_key("http://a/x");
        assert_eq!(trim(&conn, &a, 3).unwrap(), 2);
        assert_eq!(next(&conn, &a).unwrap().unwrap().alert_id, 3, "the oldest two went");
        assert_eq!(trim(&conn, &a, 3).unwrap(), 0);

        let only_a = Outbox::new(&[hook("http://a/x", &["raised"])]);
        assert_eq!(only_a.forget_removed_hooks(&conn).unwrap(), 5, "b's five");
        assert_eq!(next(&conn, &hook_key("http://b/y")).unwrap(), None);
        assert_eq!(Outbox::default().forget_removed_hooks(&conn).unwrap(), 3, "no hooks: nothing is kept");
    }

    #[test]
    fn keys_do_not_reveal_the_url() {
        let key = hook_key("https://hooks.slack.com/services/T000/B000/XXXXSECRET");
        assert_eq!(key.len(), 16);
        assert!(!key.contains("SECRET") && key.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(key, hook_key("https://hooks.slack.com/services/T000/B000/OTHER"));
    }
}
