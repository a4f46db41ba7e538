//! Which browser pages may talk to the gateway, one policy for the HTTP API and the MQTT
//! WebSockets. Two checks, both on headers a browser sets and a page cannot forge:
//!
//! - **DNS rebinding.** A page can make the browser reach the gateway under a name its author
//!   controls (the name resolves first to the attacker, then to the gateway). The browser then
//!   takes the gateway for that page's own site: `Origin` and `Host` agree. So a request only
//!   counts as coming from the gateway's own pages when the name it was sent to is one this
//!   gateway is known by: an IP address (which cannot be rebound), `localhost`, this machine's
//!   name (and `<name>.local`), or a configured one ([`OwnNames`]).
//! - **Same site.** The page's origin (`Origin`) names the host the request was sent to
//!   (`Host`).

use axum::http::uri::{Authority, Uri};

/// The names this gateway is reached by, besides IP addresses.
#[derive(Debug, Clone, Default)]
pub struct OwnNames {
    names: Vec<String>,
}

impl OwnNames {
    /// `localhost`, this machine's name and `<name>.local`, and `extra` (`mqtt.tls_names`,
    /// `http.host_names`).
    pub fn new(extra: &[String]) -> OwnNames {
        let names = crate::broker::tls::server_names(extra).into_iter().map(|n| n.to_ascii_lowercase()).collect();
        OwnNames { names }
    }

    #[cfg(test)]
    fn of(names: &[&str]) -> OwnNames {
        OwnNames { names: names.iter().map(|n| n.to_string()).collect() }
    }

    /// Whether a request sent to `host` (a `Host` header's host, see [`host_of`]) reached the
    /// gateway by a name that cannot have been rebound.
    pub fn trusts(&self, host: &str) -> bool {
        is_ip_literal(host)
            || host == "localhost"
            || host.ends_with(".localhost")
            || self.names.iter().any(|n| n == host)
    }
}

fn is_ip_literal(host: &str) -> bool {
    host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok()
}

/// The host of a `Host` header (`host[:port]`), lower-cased; IPv6 addresses in brackets.
pub fn host_of(host_header: &str) -> Option<String> {
    let authority: Authority = host_header.parse().ok()?;
    Some(authority.host().to_ascii_lowercase()).filter(|h| !h.is_empty())
}

/// The host of an `Origin` header (`scheme://host[:port]`); `None` for `null` and garbage.
pub fn origin_host(origin: &str) -> Option<String> {
    let uri: Uri = origin.parse().ok()?;
    uri.scheme()?;
    Some(uri.host()?.to_ascii_lowercase()).filter(|h| !h.is_empty())
}

/// Whether a page of `origin` was served by the host the request was sent to (`host`, the
/// `Host` header), under a name the gateway trusts. Ports may differ: the web UI and the MQTT
/// WebSocket listen on different ones.
pub fn same_host(origin: &str, host: &str, own: &OwnNames) -> bool {
    match (origin_host(origin), host_of(host)) {
        (Some(page), Some(gateway)) => page == gateway && own.trusts(&gateway),
        _ => false,
    }
}

/// Whether a page of `origin` is the web UI the request was sent to: host and port as in the
/// request's `Host`. Says nothing about rebinding: the HTTP API checks the name itself where it
/// matters (without a login; with one, the session cookie is never sent to another name).
pub fn same_origin(origin: &str, host: &str) -> bool {
    let page = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    page.is_some_and(|page| page.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_headers() {
        let cases = [
            ("192.168.1.20:9001", Some("192.168.1.20")),
            ("Gatehouse.LOCAL", Some("gatehouse.local")),
            ("[fe80::1]:8080", Some("[fe80::1]")),
            ("", None),
            ("a b", None),
        ];
        for (header, host) in cases {
            assert_eq!(host_of(header).as_deref(), host, "{header:?}");
        }
        let origins = [
            ("http://192.168.1.20:8080", Some("192.168.1.20")),
            ("https://Dashboard.lan", Some("dashboard.lan")),
            ("http://[::1]:8080", Some("[::1]")),
            ("null", None),
            ("?", None),
            ("192.168.1.20:8080", None),
        ];
        for (origin, host) in origins {
            assert_eq!(origin_host(origin).as_deref(), host, "{origin:?}");
        }
    }

    #[test]
    fn only_names_that_cannot_be_rebound_are_trusted() {
        let own = OwnNames::of(&["localhost", "pi", "pi.local", "gw.example.net"]);
        for (host, trusted) in [
            ("127.0.0.1", true),
            ("192.168.1.20", true),
            ("[::1]", true),
            ("[fe80::1]", true),
            ("localhost", true),
            ("app.localhost", true),
            ("pi", true),
            ("pi.local", true),
            ("gw.example.net", true),
            ("rebind.example", false),
            ("127.0.0.1.nip.io", false),
            ("pi.local.evil.example", false),
            ("localhost.evil.example", false),
        ] {
            assert_eq!(own.trusts(host), trusted, "{host}");
        }
    }

    #[test]
    fn same_host_and_same_origin() {
        let own = OwnNames::of(&["localhost", "pi.local"]);
        let cases = [
            // (origin, host header, same host, same origin)
            ("http://192.168.1.20:8080", "192.168.1.20:9001", true, false),
            ("http://192.168.1.20:8080", "192.168.1.20:8080", true, true),
            ("http://pi.local:8080", "pi.local:9001", true, false),
            ("https://pi.local", "pi.local", true, true),
            ("http://127.0.0.1:8080", "127.0.0.1:8080", true, true),
            // DNS rebinding: the page's own name, now pointing at the gateway. Same origin (the
            // browser thinks so too), but not a name the gateway trusts.
            ("http://rebind.example:8080", "rebind.example:9001", false, false),
            ("http://rebind.example:8080", "rebind.example:8080", false, true),
            // Another host.
            ("http://evil.example", "192.168.1.20:9001", false, false),
            ("http://192.168.1.21:8080", "192.168.1.20:9001", false, false),
            ("http://192.168.1.20.evil.example", "192.168.1.20:9001", false, false),
            ("http://127.0.0.1:8081", "127.0.0.1:8080", true, false),
            ("null", "127.0.0.1:8080", false, false),
            ("http://127.0.0.1:8080", "", false, false),
        ];
        for (origin, host, host_ok, origin_ok) in cases {
            assert_eq!(same_host(origin, host, &own), host_ok, "same host: {origin} to {host}");
            assert_eq!(same_origin(origin, host), origin_ok, "same origin: {origin} to {host}");
        }
    }
}
