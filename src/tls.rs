//! TLS for every TCP link: the daemon's certificate (generated once,
//! self-signed, ECDSA P-256, or the user's PEM files), and the client side's
//! verifier, which trusts a certificate by its pinned SHA-256 fingerprint, or
//! by a public certificate authority when no fingerprint is pinned.
//!
//! A fingerprint reads `SHA256:` and the base64 (no padding) of the SHA-256
//! of the certificate's DER bytes, as `ssh-keygen -l` prints keys. Input
//! also takes 64 hex digits (with or without colons, as `openssl x509
//! -fingerprint -sha256` prints them).

use crate::sync::LockExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use crate::config::Home;

/// What a fingerprint starts with.
pub const PREFIX: &str = "SHA256:";

/// The one crypto provider opm uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The fingerprint of a certificate (its DER bytes).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    format_fingerprint(digest.as_ref())
}

fn format_fingerprint(digest: &[u8]) -> String {
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Reads a fingerprint as a user gives it and returns it in opm's form.
pub fn parse_fingerprint(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "{s:?} is not a certificate fingerprint: give it as `opm daemon health` prints it (SHA256: and 43 base64 characters) or as 64 hex digits"
        )
    };
    let s = s.trim();
    let body = s
        .strip_prefix(PREFIX)
        .or_else(|| s.strip_prefix("sha256:"))
        .unwrap_or(s);
    let hex: String = body.chars().filter(|c| *c != ':').collect();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        return Ok(format_fingerprint(&bytes));
    }
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(body.trim_end_matches('='))
        .map_err(|_| bad())?;
    if decoded.len() != 32 {
        return Err(bad());
    }
    Ok(format_fingerprint(&decoded))
}

/// The daemon's certificate and key, ready to serve.
pub struct Identity {
    pub config: Arc<ServerConfig>,
    pub fingerprint: String,
    /// Where the certificate was read from.
    pub cert_path: PathBuf,
}

/// Where a generated certificate and key live.
pub fn generated_paths(home: &Home) -> (PathBuf, PathBuf) {
    let dir = home.root.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// The daemon's identity: the user's `cert` and `key` when both are set,
/// else the certificate generated in `OPM_HOME/tls` (made at first need,
/// for this machine's names and addresses and `extra_names`).
pub fn server_identity(
    home: &Home,
    cert: Option<&Path>,
    key: Option<&Path>,
    extra_names: &[String],
) -> Result<Identity, String> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        (None, None) => {
            let (c, k) = generated_paths(home);
            if !c.exists() || !k.exists() {
                generate(home, &c, &k, extra_names)?;
            }
            (c, k)
        }
        _ => {
            return Err(
                "[daemon.web.tls] needs both cert and key (PEM files), or neither (opm generates its own)"
                    .into(),
            )
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert_path.display()))?;
    let Some(leaf) = certs.first() else {
        return Err(format!(
            "{} holds no certificate (PEM, -----BEGIN CERTIFICATE-----)",
            cert_path.display()
        ));
    };
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("cannot read the private key {}: {e}", key_path.display()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "the certificate {} and the key {} do not make a usable pair: {e}",
                cert_path.display(),
                key_path.display()
            )
        })?;
    Ok(Identity {
        config: Arc::new(config),
        fingerprint,
        cert_path,
    })
}

/// This machine's names and addresses, for a generated certificate.
fn machine_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        crate::supervise::proc::hostname(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            let Some(a) = ifa.address else { continue };
            if let Some(v4) = a.as_sockaddr_in() {
                names.push(v4.ip().to_string());
            } else if let Some(v6) = a.as_sockaddr_in6() {
                // Link-local addresses need a scope, which a name cannot carry.
                if v6.ip().segments()[0] & 0xffc0 != 0xfe80 {
                    names.push(v6.ip().to_string());
                }
            }
        }
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| {
        !n.is_empty() && n != "unknown" && n != "0.0.0.0" && n != "::" && seen.insert(n.clone())
    });
    names
}

/// Makes a self-signed ECDSA P-256 certificate and its key, each 0600.
fn generate(home: &Home, cert: &Path, key: &Path, extra: &[String]) -> Result<(), String> {
    let names = machine_names(extra);
    let made = rcgen::generate_simple_self_signed(names.clone())
        .map_err(|e| format!("cannot generate a TLS certificate: {e}"))?;
    let dir = cert.parent().unwrap_or(&home.root);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    // The key first: a certificate is never there without its key.
    crate::fsutil::write_atomic_exact(key, made.signing_key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| format!("cannot write {}: {e}", key.display()))?;
    crate::fsutil::write_atomic_exact(cert, made.cert.pem().as_bytes(), 0o600)
        .map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
    tracing::info!(
        "generated a self-signed TLS certificate {} for {} (fingerprint {})",
        cert.display(),
        names.join(", "),
        fingerprint(made.cert.der())
    );
    Ok(())
}

/// The pinned certificate is not the one the peer showed.
#[derive(Debug, Clone)]
pub struct PinMismatch {
    pub expected: String,
    pub got: String,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "certificate fingerprint mismatch: expected {}, got {}",
            self.expected, self.got
        )
    }
}
impl std::error::Error for PinMismatch {}

/// No fingerprint was pinned and no known authority signed the certificate.
#[derive(Debug, Clone)]
pub struct Untrusted {
    pub got: String,
    pub why: String,
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the certificate (fingerprint {}) is not signed by a known authority ({})",
            self.got, self.why
        )
    }
}
impl std::error::Error for Untrusted {}

/// Trusts a certificate by its pin; or, without a pin, by the web's
/// certificate authorities (`webpki-roots`); or, for a probe, any
/// certificate (recording which). Handshake signatures are always checked.
#[derive(Debug)]
struct Verifier {
    pin: Option<String>,
    probe: bool,
    seen: Arc<Mutex<Option<String>>>,
    algs: WebPkiSupportedAlgorithms,
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(e),
    )))
}

fn webpki() -> Result<Arc<rustls::client::WebPkiServerVerifier>, String> {
    static V: OnceLock<Result<Arc<rustls::client::WebPkiServerVerifier>, String>> = OnceLock::new();
    V.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())
    })
    .clone()
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity);
        *self.seen.lock_or_recover() = Some(got.clone());
        if self.probe {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.pin {
            Some(expected) if *expected == got => Ok(ServerCertVerified::assertion()),
            Some(expected) => Err(other(PinMismatch {
                expected: expected.clone(),
                got,
            })),
            None => {
                let v = webpki().map_err(rustls::Error::General)?;
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                    .map_err(|e| {
                        other(Untrusted {
                            got,
                            why: e.to_string(),
                        })
                    })
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn client_config_with(verifier: Verifier) -> Result<Arc<ClientConfig>, String> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts `pin` only, or (without a pin) a
/// certificate signed by a known authority. One configuration per pin is
/// shared, so its sessions are resumed.
pub fn client_config(pin: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    static CONFIGS: OnceLock<Mutex<std::collections::HashMap<Option<String>, Arc<ClientConfig>>>> =
        OnceLock::new();
    let key = pin.map(str::to_string);
    let map = CONFIGS.get_or_init(Default::default);
    if let Some(c) = map.lock_or_recover().get(&key) {
        return Ok(c.clone());
    }
    let config = client_config_with(Verifier {
        pin: key.clone(),
        probe: false,
        seen: Default::default(),
        algs: provider().signature_verification_algorithms,
    })?;
    let mut map = map.lock_or_recover();
    // Pins of agents long gone are not kept for ever.
    if map.len() > 20_000 {
        map.clear();
    }
    map.insert(key, config.clone());
    Ok(config)
}

/// The name a TLS client gives for `host` (an IP address or a DNS name).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|_| format!("{host:?} is not a host name"))
}

/// Connects to `host:port`, completes a TLS handshake whatever the
/// certificate, and returns its fingerprint (trust on first use: the caller
/// pins it). Nothing is sent over the connection.
pub async fn probe(host: &str, port: u16) -> Result<String, String> {
    let seen: Arc<Mutex<Option<String>>> = Default::default();
    let config = client_config_with(Verifier {
        pin: None,
        probe: true,
        seen: seen.clone(),
        algs: provider().signature_verification_algorithms,
    })?;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let handshake = connector.connect(server_name(host)?, tcp);
    match tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await {
        Err(_) => Err(format!(
            "{host}:{port} did not complete a TLS handshake within 10s"
        )),
        Ok(Err(e)) => Err(describe_io(&e, &format!("https://{host}:{port}"))),
        Ok(Ok(_)) => seen
            .lock_or_recover()
            .clone()
            .ok_or_else(|| format!("{host}:{port} showed no certificate")),
    }
}

/// A failed TLS connection, as a user should read it.
pub fn describe_io(e: &std::io::Error, url: &str) -> String {
    if let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return describe(r, url);
    }
    format!("cannot connect to {url}: {e}")
}

/// The pin mismatch inside a failed connection, if that is why it failed.
pub fn mismatch_of(e: &(dyn std::error::Error + 'static)) -> Option<PinMismatch> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) =
            err.downcast_ref::<rustls::Error>()
        {
            if let Some(m) = o.0.downcast_ref::<PinMismatch>() {
                return Some(m.clone());
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                cur = Some(inner);
                continue;
            }
        }
        cur = err.source();
    }
    None
}

/// A TLS error, as a user should read it.
pub fn describe(e: &rustls::Error, url: &str) -> String {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
            if let Some(m) = o.0.downcast_ref::<PinMismatch>() {
                return format!(
                    "refusing {url}: its certificate fingerprint is {}, expected {} (the pinned one). Someone may be standing in the middle; if the certificate changed on purpose, pin the new one (--fingerprint {})",
                    m.got, m.expected, m.got
                );
            }
            if let Some(u) = o.0.downcast_ref::<Untrusted>() {
                return format!(
                    "refusing {url}: its certificate is not signed by a known authority ({}); if it is the certificate `opm daemon health` shows on that machine, pin it: --fingerprint {}",
                    u.why, u.got
                );
            }
            format!("TLS with {url} failed: {e}")
        }
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::PeerSentOversizedRecord => format!(
            "{url} does not speak TLS (it answered something else to the handshake): is it plain http://?"
        ),
        e => format!("TLS with {url} failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_in_either_form_and_print_in_one() {
        let fp = fingerprint(b"certificate");
        assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 43, "{fp}");
        assert_eq!(parse_fingerprint(&fp).as_deref(), Ok(fp.as_str()));
        let digest = ring::digest::digest(&ring::digest::SHA256, b"certificate");
        let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_fingerprint(&hex.join(":")), Ok(fp.clone()));
        assert_eq!(parse_fingerprint(&hex.concat().to_lowercase()), Ok(fp));
        assert!(parse_fingerprint("SHA256:short").is_err());
        assert!(parse_fingerprint("").is_err());
    }
}
