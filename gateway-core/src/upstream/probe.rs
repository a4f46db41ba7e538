//! "Test connection": walks the way to an upstream broker one stage at a time (DNS, TCP, TLS,
//! MQTT login, ACL) and reports exactly where it failed and what to do about it. Also names the
//! stage of a live connection's errors, so the status page says the same thing.

use std::time::{Duration, Instant};

use rumqttc::{ConnectReturnCode, ConnectionError, Event, Incoming, QoS, SubscribeReasonCode};
use serde::Serialize;

use super::route;
use super::Settings;

const STAGE_TIMEOUT: Duration = Duration::from_secs(5);
const ECHO_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Config,
    Dns,
    Tcp,
    Tls,
    Auth,
    Mqtt,
    Acl,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub stage: Stage,
    pub ok: bool,
    pub message: String,
    pub millis: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub ok: bool,
    /// The first stage that failed.
    pub failed: Option<Stage>,
    pub checks: Vec<Check>,
}

struct Walk {
    checks: Vec<Check>,
    started: Instant,
}

impl Walk {
    fn pass(&mut self, stage: Stage, message: impl Into<String>) {
        self.push(stage, true, message.into());
    }

    fn fail(mut self, stage: Stage, message: impl Into<String>) -> Report {
        self.push(stage, false, message.into());
        Report { ok: false, failed: Some(stage), checks: self.checks }
    }

    fn push(&mut self, stage: Stage, ok: bool, message: String) {
        self.checks.push(Check { stage, ok, message, millis: self.started.elapsed().as_millis() as u64 });
        self.started = Instant::now();
    }
}

pub async fn test_connection(settings: &Settings) -> Report {
    let mut walk = Walk { checks: Vec::new(), started: Instant::now() };
    let endpoint = &settings.endpoint;

    let addresses =
        match tokio::time::timeout(STAGE_TIMEOUT, tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)))
            .await
        {
            Ok(Ok(found)) => found.collect::<Vec<_>>(),
            Ok(Err(error)) => {
                return walk.fail(
                    Stage::Dns,
                    format!("cannot resolve `{}`: {error}; check the host name in the URL", endpoint.host),
                )
            }
            Err(_) => {
                return walk.fail(Stage::Dns, format!("no DNS answer for `{}` within {STAGE_TIMEOUT:?}", endpoint.host))
            }
        };
    if addresses.is_empty() {
        return walk.fail(Stage::Dns, format!("`{}` has no address", endpoint.host));
    }
    walk.pass(Stage::Dns, format!("{} → {}", endpoint.host, join(&addresses)));

    let mut last_error = String::new();
    let mut stream = None;
    for address in &addresses {
        match tokio::time::timeout(STAGE_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(connected)) => {
                stream = Some((connected, *address));
                break;
            }
            Ok(Err(error)) => last_error = format!("{address}: {error}"),
            Err(_) => last_error = format!("{address}: no answer within {STAGE_TIMEOUT:?}"),
        }
    }
    let Some((tcp, address)) = stream else {
        return walk.fail(
            Stage::Tcp,
            format!(
                "cannot connect ({last_error}); is the broker running on port {}, and no firewall in the way?",
                endpoint.port
            ),
        );
    };
    walk.pass(Stage::Tcp, format!("connected to {address}"));

    if endpoint.tls {
        let config = match super::tls::client_config(&settings.config) {
            Ok(config) => config,
            Err(error) => return walk.fail(Stage::Config, error),
        };
        let name = match rustls::pki_types::ServerName::try_from(endpoint.host.clone()) {
            Ok(name) => name,
            Err(error) => {
                return walk
                    .fail(Stage::Tls, format!("`{}` cannot be checked against a certificate: {error}", endpoint.host))
            }
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout(STAGE_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => {
                let version = tls.get_ref().1.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
                walk.pass(
                    Stage::Tls,
                    format!("handshake done ({version}), certificate trusted for `{}`", endpoint.host),
                );
            }
            Ok(Err(error)) => return walk.fail(Stage::Tls, tls_advice(&error.to_string())),
            Err(_) => {
                return walk.fail(
                    Stage::Tls,
                    format!("no TLS answer within {STAGE_TIMEOUT:?}; is port {} a TLS listener?", endpoint.port),
                )
            }
        }
    } else {
        drop(tcp);
    }

    // Brokers that bind a client certificate to a client id (Gatehouse, AWS IoT) refuse another
    // id: with a certificate the test uses the bridge's own id (the live link reconnects after).
    let client_id = match settings.config.client_cert {
        Some(_) => settings.client_id.clone(),
        None => format!("{}-test", settings.client_id),
    };
    let (client, mut eventloop) = match super::link::client(settings, &client_id) {
        Ok(pair) => pair,
        Err(error) => return walk.fail(Stage::Config, error),
    };
    let connack = tokio::time::timeout(STAGE_TIMEOUT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => return Ok(ack),
                Ok(_) => continue,
                Err(error) => return Err(error),
            }
        }
    })
    .await;
    match connack {
        Ok(Ok(_)) => walk.pass(
            Stage::Auth,
            match (&settings.config.username, &settings.config.client_cert) {
                (Some(user), _) => format!("logged in as `{user}`"),
                (None, Some(_)) => "logged in with the client certificate".to_string(),
                (None, None) => "connected without a login".to_string(),
            },
        ),
        Ok(Err(error)) => {
            let (stage, message) = classify(&error);
            return walk.fail(stage, message);
        }
        Err(_) => return walk.fail(Stage::Mqtt, format!("no CONNACK within {STAGE_TIMEOUT:?}; is this an MQTT port?")),
    }

    let probe = route::probe_topic(&settings.prefix);
    let mut filters = vec![probe.clone()];
    if settings.config.commands {
        filters.insert(0, settings.commands_topic.clone());
    }
    let mut granted = Vec::new();
    for filter in &filters {
        if let Err(error) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
            return walk.fail(Stage::Mqtt, error.to_string());
        }
    }
    let nonce = format!("probe-{}", rand::random::<u64>());
    let outcome = tokio::time::timeout(STAGE_TIMEOUT + ECHO_TIMEOUT, async {
        let mut published = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                    granted.extend(ack.return_codes.iter().map(|code| matches!(code, SubscribeReasonCode::Success(_))));
                    if granted.len() == filters.len() {
                        if settings.config.commands && !granted[0] {
                            return Err(format!(
                                "may not subscribe to `{}`, where task requests arrive; grant it read access (or set commands = false)",
                                settings.commands_topic
                            ));
                        }
                        if !granted[granted.len() - 1] {
                            return Ok(format!(
                                "may{} subscribe to its task topic; publishing under `{}/…` could not be verified (this account may not read `{probe}`)",
                                if settings.config.commands { "" } else { " not need to" },
                                settings.prefix
                            ));
                        }
                        client.publish(probe.clone(), QoS::AtLeastOnce, false, nonce.clone()).await.map_err(|e| e.to_string())?;
                        published = true;
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(message))) if published && message.payload.as_ref() == nonce.as_bytes() => {
                    return Ok(format!("may publish under `{}/…`{}", settings.prefix, if settings.config.commands { " and read task requests" } else { "" }));
                }
                Ok(_) => continue,
                Err(error) => return Err(format!("connection lost: {error}")),
            }
        }
    })
    .await;
    let _ = client.try_disconnect();
    match outcome {
        Ok(Ok(message)) => walk.pass(Stage::Acl, message),
        Ok(Err(message)) => return walk.fail(Stage::Acl, message),
        Err(_) => {
            return walk.fail(
                Stage::Acl,
                format!(
                    "a test message published to `{probe}` never came back: the broker's ACL probably denies this account publishing \
                     (or reading) under `{}/…`; grant it read-write there",
                    settings.prefix
                ),
            )
        }
    }
    Report { ok: true, failed: None, checks: walk.checks }
}

fn join(addresses: &[std::net::SocketAddr]) -> String {
    addresses.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
}

fn tls_advice(error: &str) -> String {
    let hint = if error.contains("UnknownIssuer") || error.contains("unknown issuer") {
        "the broker's certificate is not signed by a trusted CA: set ca_file to the CA that signed it"
    } else if error.contains("NotValidForName") || error.contains("not valid for name") {
        "the certificate does not name this host: use the host name it was issued for"
    } else if error.contains("Expired") || error.contains("expired") {
        "the broker's certificate has expired (or this machine's clock is wrong)"
    } else if error.contains("CertificateRequired") || error.contains("certificate required") {
        "the broker wants a client certificate: set client_cert and client_key"
    } else if error.contains("InvalidContentType") || error.contains("corrupt message") || error.contains("eof") {
        "the port does not seem to speak TLS; use mqtt:// or the broker's TLS port"
    } else {
        "check the URL's port and the broker's TLS settings"
    };
    format!("{error}; {hint}")
}

/// The stage a live connection failed at, and a message that says what to do.
pub fn classify(error: &ConnectionError) -> (Stage, String) {
    match error {
        ConnectionError::Io(io) => {
            let text = io.to_string();
            if text.contains("lookup") || text.contains("resolve") || text.contains("Name or service not known") {
                (Stage::Dns, format!("cannot resolve the host: {text}"))
            } else if matches!(io.kind(), std::io::ErrorKind::ConnectionRefused) {
                (Stage::Tcp, format!("{text}; is the broker running and listening on that port?"))
            } else {
                (Stage::Tcp, text)
            }
        }
        ConnectionError::Tls(tls) => (Stage::Tls, tls_advice(&tls.to_string())),
        ConnectionError::NetworkTimeout => (Stage::Tcp, "no answer from the broker (network timeout)".into()),
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => {
                (Stage::Auth, "the broker refused the login (bad username or password): check the username and password".into())
            }
            // Mosquitto answers a wrong password with this code on MQTT 3.1.1.
            ConnectReturnCode::NotAuthorized => (
                Stage::Auth,
                "the broker refused the login (not authorised): check the username and password, and that the account may connect".into(),
            ),
            other => (Stage::Mqtt, format!("the broker refused the connection: {other:?}")),
        },
        other => (Stage::Mqtt, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::route::Endpoint;
    use super::*;

    #[test]
    fn live_errors_name_their_stage() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)");
        let dns = std::io::Error::other("failed to lookup address information: Name or service not known");
        let cases = [
            (ConnectionError::Io(refused), Stage::Tcp, "listening"),
            (ConnectionError::Io(dns), Stage::Dns, "resolve"),
            (ConnectionError::NetworkTimeout, Stage::Tcp, "timeout"),
            (
                ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
                Stage::Auth,
                "check the username and password",
            ),
            (
                ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
                Stage::Auth,
                "check the username and password",
            ),
            (ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId), Stage::Mqtt, "BadClientId"),
        ];
        for (error, stage, part) in cases {
            let (got, message) = classify(&error);
            assert_eq!(got, stage, "{error}");
            assert!(message.contains(part), "{error}: {message}");
        }
    }

    #[test]
    fn tls_failures_come_with_advice() {
        assert!(tls_advice("invalid peer certificate: UnknownIssuer").contains("ca_file"));
        assert!(tls_advice("invalid peer certificate: NotValidForName").contains("host name"));
        assert!(tls_advice("received corrupt message of type InvalidContentType").contains("mqtt://"));
    }

    #[test]
    fn endpoint_display_is_the_url() {
        let endpoint = Endpoint { host: "broker.lan".into(), port: 8883, tls: true };
        assert_eq!(endpoint.to_string(), "mqtts://broker.lan:8883");
    }
}
