//! Counting the messages rumqttd's router skips for a subscriber that fell too far behind.
//!
//! The router keeps a bounded commit log per subscription filter; a subscriber that lags beyond it
//! is moved forward and the skipped messages are lost. rumqttd reports this only as a `tracing`
//! warning ("Read cursor start jumped from (segment, offset) to (segment, offset) on <filter>")
//! inside a span that carries the router's connection id. This layer reads those two fields and
//! the span, turning them into per-client counters. It depends on rumqttd's log format, which is
//! why rumqttd is pinned to one exact version; `tests/broker_security.rs` checks it still works.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::sessions::Sessions;

const ROUTER_TARGET: &str = "rumqttd::router::routing";
const OUTGOING_SPAN: &str = "[<] outgoing";

static SINK: RwLock<Option<Sessions>> = RwLock::new(None);
static TOTAL: AtomicU64 = AtomicU64::new(0);

/// Routes counted drops to this process's live sessions (one router per process).
pub fn attach(sessions: Sessions) {
    *SINK.write().unwrap_or_else(|p| p.into_inner()) = Some(sessions);
}

/// Messages skipped by the router since the process started.
pub fn total() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}

/// The layer to install next to the log output (see `logging::init`).
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    DropLayer.with_filter(RouterFilter)
}

struct RouterFilter;

impl<S> Filter<S> for RouterFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        meta.target() == ROUTER_TARGET
            && ((meta.is_span() && meta.name() == OUTGOING_SPAN)
                || (meta.is_event() && *meta.level() == tracing::Level::WARN))
    }
}

struct DropLayer;

struct ConnectionId(usize);

#[derive(Default)]
struct Cursors {
    request: Option<String>,
    start: Option<String>,
    connection_id: Option<usize>,
}

impl Visit for Cursors {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "request_cursor" => self.request = Some(format!("{value:?}")),
            "start_cursor" => self.start = Some(format!("{value:?}")),
            "connection_id" => self.connection_id = format!("{value:?}").parse().ok(),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "connection_id" {
            self.connection_id = Some(value as usize);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "connection_id" {
            self.connection_id = usize::try_from(value).ok();
        }
    }
}

impl<S> Layer<S> for DropLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Cursors::default();
        attrs.record(&mut fields);
        if let (Some(connection_id), Some(span)) = (fields.connection_id, ctx.span(id)) {
            span.extensions_mut().insert(ConnectionId(connection_id));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Cursors::default();
        event.record(&mut fields);
        let (Some(request), Some(start)) = (fields.request, fields.start) else { return };
        let Some(lost) = skipped(&request, &start) else { return };
        TOTAL.fetch_add(lost, Ordering::Relaxed);
        let connection_id = ctx
            .event_scope(event)
            .and_then(|scope| scope.from_root().find_map(|span| span.extensions().get::<ConnectionId>().map(|c| c.0)));
        if let (Some(connection_id), Some(sessions)) =
            (connection_id, SINK.read().unwrap_or_else(|p| p.into_inner()).as_ref())
        {
            sessions.count_router_drop(connection_id, lost);
        }
    }
}

/// Messages between two cursors `(segment, offset)`; offsets are absolute positions in the log.
fn skipped(request: &str, start: &str) -> Option<u64> {
    let offset = |cursor: &str| -> Option<u64> {
        let inner = cursor.trim().strip_prefix('(')?.strip_suffix(')')?;
        inner.split(',').nth(1)?.trim().parse().ok()
    };
    let (from, to) = (offset(request)?, offset(start)?);
    to.checked_sub(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_arithmetic() {
        assert_eq!(skipped("(4, 8521)", "(5, 9428)"), Some(907));
        assert_eq!(skipped("(0, 0)", "(0, 0)"), Some(0));
        assert_eq!(skipped("(5, 10)", "(4, 2)"), None);
        assert_eq!(skipped("garbage", "(1, 2)"), None);
    }
}
