//! The durable queue of alert webhook deliveries. Each announced change of an alert (raised,
//! cleared, acknowledged) is written here for every hook that wants it, in the same transaction
//! as the change itself, so a gateway killed or stopped before a hook accepted the change sends
//! it after the restart. Delivery is at least once: a request in flight at a kill is sent again,
//! with the same `X-Gatehouse-Delivery` id. Rows go when delivered or given up.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::webhooks::WebhookStats;
use crate::bus::AlertRecord;
use crate::config::WebhookConfig;

/// Changes waiting per hook; beyond it the oldest are dropped (counted).
pub const QUEUE_MAX: usize = 1000;

/// A configured hook as the outbox knows it: by a key that does not reveal its URL (URLs often
/// carry a token) and the changes it wants.
#[derive(Debug, Clone)]
struct Hook {
    key: String,
    events: Vec<String>,
}

/// Queues alert changes for the configured hooks; with none, it queues nothing.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    hooks: Vec<Hook>,
    stats: Arc<WebhookStats>,
}

/// The key of a hook's rows: the start of the SHA-256 of its URL.
pub fn hook_key(url: &str) -> String {
    hex::encode(&Sha256::digest(url.as_bytes())[..8])
}

impl Outbox {
    pub fn new(hooks: &[WebhookConfig], stats: Arc<WebhookStats>) -> Outbox {
        let hooks = hooks.iter().map(|h| Hook { key: hook_key(&h.url), events: h.events.clone() }).collect();
        Outbox { hooks, stats }
    }

    /// Queues the change `alert` announces for every hook that wants it, keeping each hook's
    /// queue at [`QUEUE_MAX`]. Call it in the transaction that stores the change; returns how
    /// many older changes were dropped, for [`Outbox::count_dropped`] once that commits.
    pub fn enqueue(&self, conn: &Connection, alert: &AlertRecord) -> rusqlite::Result<usize> {
        let event = super::webhooks::event_name(alert);
        let json = serde_json::to_string(alert).expect("an alert record serializes");
        let mut dropped = 0;
        for hook in self.hooks.iter().filter(|h| h.events.iter().any(|e| e == event)) {
            // Receivers drop repeats by this id, so it must never come back (row ids do, once
            // the queue is empty).
            let delivery = hex::encode(rand::random::<[u8; 16]>());
            conn.prepare_cached(
                "INSERT INTO webhook_outbox (delivery, hook, alert_id, event, alert, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![delivery, hook.key, alert.id, event, json, crate::reading::now_ms()])?;
            dropped += conn.execute(
                "DELETE FROM webhook_outbox WHERE hook = ?1 AND id NOT IN \
                 (SELECT id FROM webhook_outbox WHERE hook = ?1 ORDER BY id DESC LIMIT ?2)",
                params![hook.key, QUEUE_MAX as i64],
            )?;
        }
        Ok(dropped)
    }

    pub fn count_dropped(&self, dropped: usize) {
        if dropped > 0 {
            self.stats.dropped_queue_full.fetch_add(dropped as u64, Ordering::Relaxed);
            tracing::warn!(dropped, "alert webhook queue full: the oldest changes were dropped");
        }
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
    pub id: i64,
    /// `X-Gatehouse-Delivery` and `delivery` in the body: the same on every attempt and after a
    /// restart, never reused.
    pub delivery: String,
    pub alert_id: i64,
    pub event: String,
    /// The alert as it was at the change (JSON).
    pub alert: String,
    pub queued_at: i64,
}

/// The oldest change waiting for `hook`.
pub fn next(conn: &Connection, hook: &str) -> rusqlite::Result<Option<Pending>> {
    conn.query_row(
        "SELECT id, delivery, alert_id, event, alert, created_at FROM webhook_outbox \
         WHERE hook = ?1 ORDER BY id LIMIT 1",
        [hook],
        |r| {
            Ok(Pending {
                id: r.get(0)?,
                delivery: r.get(1)?,
                alert_id: r.get(2)?,
                event: r.get(3)?,
                alert: r.get(4)?,
                queued_at: r.get(5)?,
            })
        },
    )
    .optional()
}

/// Counts an attempt before it is made, so one cut short by a crash still counts; returns its
/// number (1, 2, …, across restarts), or `None` when the row is gone (dropped by the bound
/// while it was being retried).
pub fn begin_attempt(conn: &Connection, id: i64) -> rusqlite::Result<Option<u32>> {
    conn.query_row("UPDATE webhook_outbox SET attempts = attempts + 1 WHERE id = ?1 RETURNING attempts", [id], |r| {
        r.get(0)
    })
    .optional()
}

/// Delivered or given up.
pub fn remove(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM webhook_outbox WHERE id = ?1", [id]).map(drop)
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
        AlertRecord { id, ..AlertRecord::example(state, (state == "cleared").then_some(2), acknowledged_at) }
    }

    fn database() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_connection(&dir.path().join("t.db")).unwrap();
        (dir, conn)
    }

    #[test]
    fn each_hook_gets_the_changes_it_wants_in_order() {
        let (_dir, conn) = database();
        let stats = Arc::new(WebhookStats::default());
        let hooks = [hook("http://a/x", &["raised", "cleared"]), hook("http://b/y", &["acknowledged"])];
        let outbox = Outbox::new(&hooks, stats);
        let (a, b) = (hook_key("http://a/x"), hook_key("http://b/y"));
        for record in [alert(7, "active", None), alert(7, "cleared", None), alert(7, "cleared", Some(3))] {
            assert_eq!(outbox.enqueue(&conn, &record).unwrap(), 0);
        }

        let first = next(&conn, &a).unwrap().unwrap();
        assert_eq!((first.alert_id, first.event.as_str()), (7, "raised"));
        let record: serde_json::Value = serde_json::from_str(&first.alert).unwrap();
        assert_eq!(record["state"], "active");
        assert_eq!(begin_attempt(&conn, first.id).unwrap(), Some(1));
        assert_eq!(begin_attempt(&conn, first.id).unwrap(), Some(2), "attempts are kept");
        remove(&conn, first.id).unwrap();
        assert_eq!(begin_attempt(&conn, first.id).unwrap(), None, "a row that is gone");
        assert_eq!(next(&conn, &a).unwrap().unwrap().event, "cleared");
        assert_eq!(next(&conn, &b).unwrap().unwrap().event, "acknowledged");
        assert_eq!(next(&conn, "nobody").unwrap(), None);
    }

    #[test]
    fn delivery_ids_are_never_reused() {
        let (_dir, conn) = database();
        let outbox = Outbox::new(&[hook("http://a/x", &["raised"])], Arc::default());
        let mut seen = std::collections::HashSet::new();
        for id in 1..=5 {
            // Delivered at once: the queue is empty before each change, so row ids repeat.
            outbox.enqueue(&conn, &alert(id, "active", None)).unwrap();
            let pending = next(&conn, &hook_key("http://a/x")).unwrap().unwrap();
            assert_eq!(pending.delivery.len(), 32);
            assert!(seen.insert(pending.delivery.clone()), "{} came back", pending.delivery);
            remove(&conn, pending.id).unwrap();
        }
    }

    #[test]
    fn the_oldest_are_dropped_beyond_the_bound_and_removed_hooks_are_forgotten() {
        let (_dir, conn) = database();
        let stats = Arc::new(WebhookStats::default());
        let outbox = Outbox::new(&[hook("http://a/x", &["raised"]), hook("http://b/y", &["raised"])], stats.clone());
        let dropped: usize =
            (1..=QUEUE_MAX as i64 + 2).map(|id| outbox.enqueue(&conn, &alert(id, "active", None)).unwrap()).sum();
        assert_eq!(dropped, 4, "two per hook");
        outbox.count_dropped(dropped);
        assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 4);
        let a = hook_key("http://a/x");
        assert_eq!(next(&conn, &a).unwrap().unwrap().alert_id, 3, "the oldest two went");

        let only_a = Outbox::new(&[hook("http://a/x", &["raised"])], Arc::default());
        assert_eq!(only_a.forget_removed_hooks(&conn).unwrap(), QUEUE_MAX, "b's");
        assert_eq!(next(&conn, &hook_key("http://b/y")).unwrap(), None);
        assert_eq!(Outbox::default().forget_removed_hooks(&conn).unwrap(), QUEUE_MAX, "no hooks: nothing is kept");
    }

    #[test]
    fn keys_do_not_reveal_the_url() {
        let key = hook_key("https://hooks.slack.com/services/T000/B000/XXXXSECRET");
        assert_eq!(key.len(), 16);
        assert!(!key.contains("SECRET") && key.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(key, hook_key("https://hooks.slack.com/services/T000/B000/OTHER"));
    }
}
