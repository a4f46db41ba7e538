//! Alert webhooks: every alert raised, cleared or acknowledged is POSTed as JSON to each
//! configured URL, in order per URL, retried with exponential backoff until it is accepted (any
//! 2xx) or `max_attempts` is spent (then counted as given up). Bodies can be signed with
//! HMAC-SHA256 so receivers can check they come from this gateway. The queue per URL is the
//! [`super::outbox`] table (bounded): what was not delivered when the gateway stopped or was
//! killed is sent after the restart, with the attempts already made counted.
//!
//! The HTTP client is hyper's with hyper-rustls and an explicit ring TLS configuration (the
//! system's roots, or the hook's `ca_file`), so no process-wide crypto provider is needed.
//! Webhook URLs often carry a token (Slack, Discord…): logs show only scheme, host and port.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Request};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outbox::{self, Pending};
use crate::bus::{AlertRecord, Event, Subscription};
use crate::config::WebhookConfig;
use crate::reading::now_ms;
use crate::store::Store;

/// Deliveries waiting per URL; beyond it the oldest waiting one is dropped (counted).
const QUEUE_MAX: usize = 1000;
/// Wait before looking at the outbox again after the database failed (a full disk, say).
const STORE_RETRY: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub given_up: AtomicU64,
    pub dropped_queue_full: AtomicU64,
}

impl WebhookStats {
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "delivered": self.delivered.load(Ordering::Relaxed),
            "failedAttempts": self.failed_attempts.load(Ordering::Relaxed),
            "givenUp": self.given_up.load(Ordering::Relaxed),
            "droppedQueueFull": self.dropped_queue_full.load(Ordering::Relaxed),
        })
    }
}

/// Which change of an alert this record announces.
pub fn event_name(alert: &AlertRecord) -> &'static str {
    match (alert.acknowledged_at, alert.cleared_at) {
        (Some(acked), Some(cleared)) if acked >= cleared => "acknowledged",
        (Some(_), None) => "acknowledged",
        _ if alert.state == "cleared" => "cleared",
        _ => "raised",
    }
}

/// Wait before attempt `attempt` (2, 3, …): 1 s, 2 s, 4 s … capped at five minutes.
pub fn retry_delay(attempt: u32) -> Duration {
    let doubling = attempt.saturating_sub(2).min(16);
    (Duration::from_secs(1) * 2u32.pow(doubling)).min(RETRY_MAX)
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    /// `alert.raised`, `alert.cleared` or `alert.acknowledged`.
    event: String,
    site: &'a str,
    sent_at: i64,
    /// The alert as it was at the change.
    alert: serde_json::Value,
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for one hook: http:// and https://, trusting the system's roots or `ca_file`.
fn http_client(hook: &WebhookConfig) -> Result<HttpClient, String> {
    let roots = crate::upstream::tls::trusted_roots(hook.ca_file.as_deref())?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector))
}

/// `https://hooks.slack.com/…`: what a log may show of a webhook URL.
pub fn loggable_url(url: &str) -> String {
    match url.parse::<axum::http::Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.host()) {
            (Some(scheme), Some(host)) => match uri.port_u16() {
                Some(port) => format!("{scheme}://{host}:{port}/…"),
                None => format!("{scheme}://{host}/…"),
            },
            _ => "<webhook>".into(),
        },
        Err(_) => "<webhook>".into(),
    }
}

/// The error and its causes, which hyper keeps apart ("client error (Connect)" alone says little).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub fn wants(event: &Event) -> bool {
    matches!(event, Event::Alert(_))
}

/// Starts one delivery task per configured URL, each working through its rows of the outbox,
/// and wakes the ones an announced alert change is for.
pub async fn run(
    hooks: Vec<WebhookConfig>,
    site: String,
    store: Store,
    stats: Arc<WebhookStats>,
    mut events: Subscription,
    shutdown: CancellationToken,
) {
    let mut wakes = Vec::new();
    for hook in hooks {
        let client = match http_client(&hook) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(url = %loggable_url(&hook.url), %error, "this alert webhook is off: its HTTP client cannot be built");
                continue;
            }
        };
        let wake = Arc::new(Notify::new());
        wakes.push((hook.events.clone(), wake.clone()));
        let delivery =
            Delivery { key: outbox::hook_key(&hook.url), hook, site: site.clone(), client, store: store.clone() };
        tokio::spawn(delivery.run(stats.clone(), wake, shutdown.clone()));
    }
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        let Some(Event::Alert(alert)) = event else {
            if event.is_none() {
                return;
            }
            continue;
        };
        let name = event_name(&alert);
        for (wanted, wake) in &wakes {
            if wanted.iter().any(|e| e == name) {
                wake.notify_one();
            }
        }
    }
}

/// One hook's delivery: its outbox rows, oldest first.
struct Delivery {
    hook: WebhookConfig,
    key: String,
    site: String,
    client: HttpClient,
    store: Store,
}

impl Delivery {
    async fn run(self, stats: Arc<WebhookStats>, wake: Arc<Notify>, shutdown: CancellationToken) {
        let url = loggable_url(&self.hook.url);
        loop {
            let key = self.key.clone();
            let found =
                self.store.run(move |conn| Ok((outbox::trim(conn, &key, QUEUE_MAX)?, outbox::next(conn, &key)?))).await;
            let pending = match found {
                Ok((dropped, pending)) => {
                    if dropped > 0 {
                        stats.dropped_queue_full.fetch_add(dropped as u64, Ordering::Relaxed);
                        tracing::warn!(%url, dropped, "alert webhook queue full: the oldest changes were dropped");
                    }
                    pending
                }
                Err(error) => {
                    tracing::warn!(%url, %error, "cannot read the alert webhook queue; retrying in {STORE_RETRY:?}");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(STORE_RETRY) => continue,
                    }
                }
            };
            // A change stored after the query above has already stored a wake-up permit.
            let Some(pending) = pending else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = wake.notified() => continue,
                }
            };
            if !self.deliver(&pending, &url, &stats, &shutdown).await {
                return;
            }
            let id = pending.id;
            if let Err(error) = self.store.run(move |conn| Ok(outbox::remove(conn, id)?)).await {
                // Sent again later: receivers de-duplicate by `X-Gatehouse-Delivery`.
                tracing::warn!(%url, %error, "cannot mark an alert webhook delivery done; it may be sent again");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(STORE_RETRY) => {}
                }
            }
        }
    }

    /// Sends `pending` until it is accepted or its attempts are spent (true), or the gateway
    /// stops (false: the row stays for the next start).
    async fn deliver(&self, pending: &Pending, url: &str, stats: &WebhookStats, shutdown: &CancellationToken) -> bool {
        let alert = serde_json::from_str(&pending.alert).unwrap_or_default();
        let body = serde_json::to_vec(&Payload {
            event: format!("alert.{}", pending.event),
            site: &self.site,
            sent_at: now_ms(),
            alert,
        })
        .unwrap_or_default();
        let body = Bytes::from(body);
        let mut attempt = pending.attempts + 1;
        loop {
            let mut request = Request::post(self.hook.url.as_str())
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::USER_AGENT, concat!("Gatehouse/", env!("CARGO_PKG_VERSION")))
                .header("X-Gatehouse-Attempt", attempt.to_string())
                .header("X-Gatehouse-Delivery", pending.id.to_string());
            if let Some(secret) = &self.hook.secret {
                request = request.header("X-Gatehouse-Signature", signature(secret, &body));
            }
            let outcome = match request.body(Full::new(body.clone())) {
                Err(error) => Err(format!("cannot build the request: {error}")),
                Ok(request) => match tokio::time::timeout(self.hook.timeout, self.client.request(request)).await {
                    Ok(Ok(response)) if response.status().is_success() => Ok(()),
                    Ok(Ok(response)) => Err(format!("answered {}", response.status())),
                    Ok(Err(error)) => Err(describe(&error)),
                    Err(_) => Err(format!("no answer within {:?}", self.hook.timeout)),
                },
            };
            let Err(why) = outcome else {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                return true;
            };
            stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            let alert = pending.alert_id;
            if attempt >= self.hook.max_attempts {
                stats.given_up.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%url, alert, attempts = attempt, "alert webhook given up: {why}");
                return true;
            }
            let id = pending.id;
            if let Err(error) = self.store.run(move |conn| Ok(outbox::count_attempt(conn, id)?)).await {
                tracing::warn!(%url, %error, "cannot record a failed alert webhook attempt");
            }
            attempt += 1;
            let wait = retry_delay(attempt);
            tracing::warn!(%url, alert, "alert webhook failed ({why}); attempt {attempt} in {wait:?}");
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(state: &str, cleared_at: Option<i64>, acknowledged_at: Option<i64>) -> AlertRecord {
        AlertRecord {
            id: 1,
            device_id: "d".into(),
            site: "home".into(),
            ts: 0,
            severity: "warning".into(),
            code: None,
            message: "m".into(),
            source: "device".into(),
            details: None,
            state: state.into(),
            rule_id: None,
            cleared_at,
            acknowledged_at,
            acknowledged_by: None,
        }
    }

    #[test]
    fn names_the_change() {
        let table = [
            (alert("active", None, None), "raised"),
            (alert("cleared", Some(5), None), "cleared"),
            (alert("active", None, Some(6)), "acknowledged"),
            (alert("cleared", Some(5), Some(6)), "acknowledged"),
            (alert("cleared", Some(7), Some(6)), "cleared"),
        ];
        for (record, name) in table {
            assert_eq!(event_name(&record), name, "{record:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = (2..=12).map(|a| retry_delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[test]
    fn logged_urls_keep_no_path_or_credentials() {
        for (url, logged) in [
            ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "https://hooks.slack.com/…"),
            ("http://127.0.0.1:8080/hook?token=abc", "http://127.0.0.1:8080/…"),
            ("https://user:pw@example.com/x", "https://example.com/…"),
            ("not a url", "<webhook>"),
        ] {
            assert_eq!(loggable_url(url), logged, "{url}");
        }
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
