//! The gateway's own certificate authority and server certificate, generated on first run with
//! rcgen and kept in `<data dir>/tls/`. Devices pin the CA (downloadable from the API); the
//! server certificate is reissued when its names change or it nears expiry. Private keys are
//! written with mode 0600 and never leave the data directory.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::private_file;

const CA_COMMON_NAME: &str = "Gatehouse local CA";
const CA_DAYS: i64 = 3650;
const SERVER_DAYS: i64 = 825;
const RENEW_BEFORE_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS files in {dir}: {source}")]
    Io { dir: PathBuf, source: std::io::Error },
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{file} is not valid PEM: {reason}; delete it to regenerate")]
    Pem { file: PathBuf, reason: String },
}

pub struct TlsMaterial {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
    pub server_names: Vec<String>,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct ServerMeta {
    names: Vec<String>,
    not_after: i64,
}

/// Loads or creates the CA and the server certificate in `dir`.
pub fn ensure(dir: &Path, extra_names: &[String]) -> Result<TlsMaterial, TlsError> {
    let io = |source| TlsError::Io { dir: dir.to_path_buf(), source };
    private_file::ensure_dir(dir).map_err(io)?;

    let ca_key_path = dir.join("ca.key");
    let ca_cert_path = dir.join("ca.crt");
    let (ca_key, ca_pem) = if ca_key_path.exists() && ca_cert_path.exists() {
        let key_pem = std::fs::read_to_string(&ca_key_path).map_err(io)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| TlsError::Pem { file: ca_key_path.clone(), reason: e.to_string() })?;
        (key, std::fs::read_to_string(&ca_cert_path).map_err(io)?)
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        private_file::write(&ca_key_path, key.serialize_pem().as_bytes()).map_err(io)?;
        std::fs::write(&ca_cert_path, cert.pem()).map_err(io)?;
        // A new CA invalidates any server certificate signed by an older one.
        let _ = std::fs::remove_file(dir.join("server.meta.json"));
        tracing::info!(path = %ca_cert_path.display(), "generated the gateway's certificate authority");
        (key, cert.pem())
    };

    let names = server_names(extra_names);
    let meta_path = dir.join("server.meta.json");
    let server_key_path = dir.join("server.key");
    let server_cert_path = dir.join("server.crt");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let current: Option<ServerMeta> =
        std::fs::read_to_string(&meta_path).ok().and_then(|t| serde_json::from_str(&t).ok());
    let fresh = current.as_ref().is_some_and(|m| m.names == names && m.not_after - now > RENEW_BEFORE_DAYS * 86_400)
        && server_key_path.exists()
        && server_cert_path.exists();
    if !fresh {
        let issuer = Issuer::new(ca_params()?, &ca_key);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.clone())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Gatehouse MQTT broker");
        params.distinguished_name = dn;
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(SERVER_DAYS);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer)?;
        private_file::write(&server_key_path, key.serialize_pem().as_bytes()).map_err(io)?;
        std::fs::write(&server_cert_path, cert.pem()).map_err(io)?;
        let meta = ServerMeta { names: names.clone(), not_after: params.not_after.unix_timestamp() };
        std::fs::write(&meta_path, serde_json::to_string_pretty(&meta).unwrap_or_default()).map_err(io)?;
        tracing::info!(?names, "issued the broker's server certificate");
    }

    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    for file in [&server_cert_path, &ca_cert_path] {
        let cert = CertificateDer::from_pem_file(file)
            .map_err(|e| TlsError::Pem { file: file.clone(), reason: e.to_string() })?;
        chain.push(cert);
    }
    let key = PrivateKeyDer::from_pem_file(&server_key_path)
        .map_err(|e| TlsError::Pem { file: server_key_path.clone(), reason: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Devices may authenticate with a certificate issued by our CA instead of a password; those
    // without one still get TLS and log in with their password.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(chain[1].clone())?;
    let client_verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    // TLS 1.2 and 1.3 only: rustls implements nothing older.
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)?;
    Ok(TlsMaterial { ca_pem, server_config: Arc::new(server_config), server_names: names })
}

/// A client certificate for `username` (its common name), signed by the gateway's CA: the
/// identity can then connect over TLS without a password. Returns (certificate, private key) PEM.
/// The key is generated here and not kept.
pub fn issue_client_certificate(dir: &Path, username: &str) -> Result<(String, String), TlsError> {
    let io = |source| TlsError::Io { dir: dir.to_path_buf(), source };
    let ca_key_path = dir.join("ca.key");
    let key_pem = std::fs::read_to_string(&ca_key_path).map_err(io)?;
    let ca_key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Pem { file: ca_key_path, reason: e.to_string() })?;
    let issuer = Issuer::new(ca_params()?, &ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, username);
    params.distinguished_name = dn;
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(SERVER_DAYS);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The subject common name of a DER certificate (already verified against our CA).
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

/// The CA's parameters; rebuilt identically on every start so it can sign with the stored key.
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "Gatehouse");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(CA_DAYS);
    Ok(params)
}

/// localhost, the loopback addresses, this host's name (and `<name>.local`), plus configured ones.
pub(crate) fn server_names(extra: &[String]) -> Vec<String> {
    let mut names: BTreeSet<String> = ["localhost", "127.0.0.1", "::1"].iter().map(|s| s.to_string()).collect();
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim().to_lowercase();
        if !host.is_empty() && host.parse::<IpAddr>().is_err() {
            names.insert(format!("{host}.local"));
            names.insert(host);
        }
    }
    names.extend(extra.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()));
    names.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_keeps_keys_private_and_reissues_on_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let first = ensure(&tls, &[]).unwrap();
        assert!(first.ca_pem.contains("BEGIN CERTIFICATE"));
        assert!(first.server_names.contains(&"localhost".to_string()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in ["ca.key", "server.key"] {
                let mode = std::fs::metadata(tls.join(key)).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{key}");
            }
        }
        let server_before = std::fs::read_to_string(tls.join("server.crt")).unwrap();
        let again = ensure(&tls, &[]).unwrap();
        assert_eq!(again.ca_pem, first.ca_pem, "the CA is kept");
        assert_eq!(std::fs::read_to_string(tls.join("server.crt")).unwrap(), server_before, "nothing changed");
        let renamed = ensure(&tls, &["gw.example.lan".to_string()]).unwrap();
        assert!(renamed.server_names.contains(&"gw.example.lan".to_string()));
        assert_ne!(std::fs::read_to_string(tls.join("server.crt")).unwrap(), server_before, "reissued");
        assert_eq!(renamed.ca_pem, first.ca_pem);
    }

    #[test]
    fn client_certificates_carry_the_username() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        ensure(&tls, &[]).unwrap();
        let (cert_pem, key_pem) = issue_client_certificate(&tls, "sensor-7").unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        assert_eq!(common_name(&der), Some("sensor-7".to_string()));
    }
}
