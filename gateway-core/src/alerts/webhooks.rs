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

/// Wait before looking at the outbox again after the database failed (a full disk, say).
const STORE_RETRY: Duration = Duration::from_secs(5);
/// How often an idle delivery looks at its queue without being woken.
const QUEUE_RECHECK: Duration = Duration::from_secs(60);
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
    /// The same on every attempt and after a restart (also `X-Gatehouse-Delivery`, but only the
    /// body is signed): receivers drop repeats by it.
    delivery: &'a str,
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

/// A configured hook with its HTTP client.
pub struct Webhook {
    config: WebhookConfig,
    client: HttpClient,
}

/// Builds each hook's HTTP client, once, at start. An error names the hook whose client cannot
/// be built (a bad `ca_file`): the start fails rather than queue changes nobody can send.
pub fn prepare(hooks: &[WebhookConfig]) -> Result<Vec<Webhook>, String> {
    hooks
        .iter()
        .map(|hook| match http_client(hook) {
            Ok(client) => Ok(Webhook { config: hook.clone(), client }),
            Err(error) => Err(format!("alert webhook {}: {error}", loggable_url(&hook.url))),
        })
        .collect()
}

/// Starts one delivery task per configured URL, each working through its rows of the outbox,
/// and wakes the ones an announced alert change is for. Returns once they have all stopped.
pub async fn run(
    hooks: Vec<Webhook>,
    site: String,
    store: Store,
    stats: Arc<WebhookStats>,
    mut events: Subscription,
    shutdown: CancellationToken,
) {
    let mut wakes = Vec::new();
    let mut deliveries = tokio::task::JoinSet::new();
    for Webhook { config: hook, client } in hooks {
        let wake = Arc::new(Notify::new());
        wakes.push((hook.events.clone(), wake.clone()));
        let delivery = Delivery {
            key: outbox::hook_key(&hook.url),
            url: loggable_url(&hook.url),
            hook,
            site: site.clone(),
            client,
            store: store.clone(),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
        };
        deliveries.spawn(delivery.run(wake));
    }
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = events.recv() => event,
        };
        let Some(Event::Alert(alert)) = event else {
            if event.is_none() {
                break;
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
    // Publishers must not wait on a subscription nobody reads any more.
    drop(events);
    // A delivery that was accepted is marked done before its task ends; a request in flight is
    // abandoned at shutdown (its row stays and is sent after the restart).
    while let Some(ended) = deliveries.join_next().await {
        if let Err(error) = ended {
            tracing::error!(%error, "an alert webhook delivery task failed");
        }
    }
}

/// One hook's delivery: its outbox rows, oldest first.
struct Delivery {
    hook: WebhookConfig,
    key: String,
    /// What logs may show of the URL.
    url: String,
    site: String,
    client: HttpClient,
    store: Store,
    stats: Arc<WebhookStats>,
    shutdown: CancellationToken,
}

impl Delivery {
    async fn run(self, wake: Arc<Notify>) {
        loop {
            let key = self.key.clone();
            let pending = match self.store.run(move |conn| Ok(outbox::next(conn, &key)?)).await {
                Ok(pending) => pending,
                Err(error) => {
                    tracing::warn!(url = %self.url, %error, "cannot read the alert webhook queue; retrying in {STORE_RETRY:?}");
                    if !self.pause(STORE_RETRY).await {
                        return;
                    }
                    continue;
                }
            };
            // A change stored after the query above has already stored a wake-up permit. The
            // wake comes from the bus announcement after the commit; should that never come (the
            // announcing request was dropped in between), the queue is looked at every minute.
            let Some(pending) = pending else {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = wake.notified() => continue,
                    _ = tokio::time::sleep(QUEUE_RECHECK) => continue,
                }
            };
            // Queued before the hook's `events` were narrowed: not sent.
            let wanted = self.hook.events.contains(&pending.event);
            if wanted && !self.deliver(&pending).await {
                return;
            }
            if !self.finish(pending.id).await {
                return;
            }
        }
    }

    /// Sleeps unless the gateway stops first (false).
    async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    /// Takes the row out of the queue, retrying while the database refuses (a full disk): the
    /// next row is not looked at before, or this one would be sent again and again.
    async fn finish(&self, id: i64) -> bool {
        loop {
            match self.store.run(move |conn| Ok(outbox::remove(conn, id)?)).await {
                Ok(()) => return true,
                Err(error) => {
                    tracing::warn!(url = %self.url, %error, "cannot mark an alert webhook delivery done; retrying in {STORE_RETRY:?}");
                    if !self.pause(STORE_RETRY).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Sends `pending` until it is accepted or its attempts are spent (true), or the gateway
    /// stops (false: the row stays for the next start).
    async fn deliver(&self, pending: &Pending) -> bool {
        let alert = serde_json::from_str(&pending.alert).unwrap_or_default();
        let body = serde_json::to_vec(&Payload {
            event: format!("alert.{}", pending.event),
            site: &self.site,
            sent_at: now_ms(),
            delivery: &pending.delivery,
            alert,
        })
        .unwrap_or_default();
        let body = Bytes::from(body);
        let mut attempt = 0;
        loop {
            let id = pending.id;
            attempt = match self.store.run(move |conn| Ok(outbox::begin_attempt(conn, id)?)).await {
                Ok(Some(counted)) => counted,
                // Dropped by the queue's bound while it was retried (counted there).
                Ok(None) => return true,
                Err(error) => {
                    tracing::warn!(url = %self.url, %error, "cannot count an alert webhook attempt; sending anyway");
                    attempt + 1
                }
            };
            if attempt > self.hook.max_attempts {
                // Its last allowed attempt was cut short by a stop, or `max_attempts` was lowered.
                self.stats.given_up.fetch_add(1, Ordering::Relaxed);
                tracing::error!(url = %self.url, alert = pending.alert_id, "alert webhook given up: no attempts left");
                return true;
            }
            let sent = tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                sent = self.send(&body, &pending.delivery, attempt) => sent,
            };
            let Err(why) = sent else {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                return true;
            };
            self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            let (url, alert) = (&self.url, pending.alert_id);
            if attempt >= self.hook.max_attempts {
                self.stats.given_up.fetch_add(1, Ordering::Relaxed);
                let queued_for = Duration::from_millis((now_ms() - pending.queued_at).max(0) as u64 / 1000 * 1000);
                let queued_for = humantime::format_duration(queued_for);
                tracing::error!(%url, alert, attempts = attempt, %queued_for, "alert webhook given up: {why}");
                return true;
            }
            let wait = retry_delay(attempt + 1);
            tracing::warn!(%url, alert, "alert webhook failed ({why}); attempt {} in {wait:?}", attempt + 1);
            if !self.pause(wait).await {
                return false;
            }
        }
    }

    /// One POST; `Err` says why it was not accepted.
    async fn send(&self, body: &Bytes, delivery: &str, attempt: u32) -> Result<(), String> {
        let mut request = Request::post(self.hook.url.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, concat!("Gatehouse/", env!("CARGO_PKG_VERSION")))
            .header("X-Gatehouse-Attempt", attempt.to_string())
            .header("X-Gatehouse-Delivery", delivery);
        if let Some(secret) = &self.hook.secret {
            request = request.header("X-Gatehouse-Signature", signature(secret, body));
        }
        let request = request.body(Full::new(body.clone())).map_err(|e| format!("cannot build the request: {e}"))?;
        match tokio::time::timeout(self.hook.timeout, self.client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(format!("answered {}", response.status())),
            Ok(Err(error)) => Err(describe(&error)),
            Err(_) => Err(format!("no answer within {:?}", self.hook.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(state: &str, cleared_at: Option<i64>, acknowledged_at: Option<i64>) -> AlertRecord {
        AlertRecord::example(state, cleared_at, acknowledged_at)
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
