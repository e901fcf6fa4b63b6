//! TLS on the gRPC listener (rustls, ring provider) and on the clients one
//! role keeps to another.
//!
//! # Server
//! With `tls.cert_file` and `tls.key_file` set, the listener speaks TLS only
//! (ALPN `h2`). Connections are accepted on one task and each handshake runs
//! on a task of its own, bounded by [`HANDSHAKE_TIMEOUT`], so a client that
//! opens a connection and sends nothing holds no one else up. TCP_NODELAY is
//! set on every accepted socket (see `app.rs`).
//!
//! **Mutual TLS.** With `tls.client_ca_file`, clients may present a
//! certificate signed by one of its CAs; the handshake verifies it, and the
//! caller is then a *role* for the access policy (`crate::auth`): it may call
//! `Tail`, `Generate` and `Rank` like a holder of the role token. Clients
//! without a certificate still connect (for `Recommend`, `Record`) unless
//! `tls.require_client_cert` is set.
//!
//! **Reload.** The certificate, key and client CAs are re-read when any of
//! their files changes (checked every `tls.reload_seconds`); new connections
//! get the new configuration, open ones keep theirs. A change that does not
//! load (a half-written file, a key that does not match) is logged and the
//! configuration in force stays.
//!
//! # Clients
//! [`endpoint`] turns an `endpoints.*` URL into a tonic endpoint: `https://`
//! URLs trust `tls.ca_file` and present `tls.client_cert_file` /
//! `tls.client_key_file` when set (read when the process starts).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::{
    RootCertStore, ServerConfig,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use watchnext_core::config::TlsConfig;

/// How long a new connection may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ring provider: pure Rust and a C compiler, no CMake or NASM as
/// aws-lc-rs needs. rustls marks it deprecated because it lacks
/// post-quantum key exchange; classical ECDHE is what it negotiates.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate file", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{}: holds no certificate", path.display());
    Ok(certs)
}

fn key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| format!("{}: no PEM private key could be read", path.display()))
}

/// The server configuration the files describe now.
fn server_config(t: &TlsConfig) -> anyhow::Result<ServerConfig> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if t.client_ca_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for ca in certs(Path::new(&t.client_ca_file))? {
            roots.add(ca).with_context(|| format!("{}: a CA certificate was refused", t.client_ca_file))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if t.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
        let verifier: Arc<dyn ClientCertVerifier> = verifier.build().context("tls.client_ca_file")?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(certs(Path::new(&t.cert_file))?, key(Path::new(&t.key_file))?)
        .context("tls.cert_file and tls.key_file do not make a certificate and its key")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The files' modification times, to notice changes.
fn stamps(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

/// The server side: the configuration in force, re-read when its files change.
pub struct ServerTls {
    settings: TlsConfig,
    config: ArcSwap<ServerConfig>,
    files: Vec<PathBuf>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// `None` when `tls.cert_file` is not set (plaintext).
    pub fn from_config(t: &TlsConfig) -> anyhow::Result<Option<Arc<Self>>> {
        if t.cert_file.is_empty() {
            return Ok(None);
        }
        let files: Vec<PathBuf> = [&t.cert_file, &t.key_file, &t.client_ca_file]
            .iter()
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
            .collect();
        let stamps = Mutex::new(stamps(&files));
        let config = ArcSwap::from_pointee(server_config(t)?);
        Ok(Some(Arc::new(Self { settings: t.clone(), config, files, stamps })))
    }

    /// Re-reads the files if any changed; `Ok(true)` when a new
    /// configuration is in force. On error the old one stays.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let now = stamps(&self.files);
        let mut seen = self.stamps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *seen == now {
            return Ok(false);
        }
        let config = server_config(&self.settings)?;
        self.config.store(Arc::new(config));
        *seen = now;
        Ok(true)
    }

    /// Checks the files every `tls.reload_seconds` while the process runs.
    pub fn watch(self: &Arc<Self>) {
        let every = Duration::from_secs(self.settings.reload_seconds.max(1));
        crate::auth::reload_every(self, every, "tls: certificate files", Self::reload);
    }

    /// Accepted connections, each after its handshake (failed and slow
    /// handshakes are dropped and logged at debug level). Ends when the
    /// receiver is dropped (the server shut down).
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConnection, std::io::Error>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = tx.closed() => return,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.load_full());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(TlsConnection { stream, peer })).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// One accepted TLS connection.
#[derive(Debug)]
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
}

/// What a request on a TLS connection knows of its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsPeer {
    pub remote_addr: SocketAddr,
    /// The peer presented a client certificate the handshake verified
    /// against `tls.client_ca_file`: it is a role.
    pub verified_client: bool,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        let verified_client = self.stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
        TlsPeer { remote_addr: self.peer, verified_client }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A tonic endpoint for `url` (an `endpoints.*` value named `key` in
/// errors): `https://` URLs get TLS with `tls.ca_file` as the trust roots
/// and this process's client certificate when one is configured.
pub fn endpoint(key: &str, url: &str, t: &TlsConfig) -> anyhow::Result<tonic::transport::Endpoint> {
    endpoint_for(key, url, t, None)
}

/// [`endpoint`] for a URL naming one replica's address, with `domain` (the
/// configured host name) as the name its certificate must carry.
pub fn endpoint_for(
    key: &str,
    url: &str,
    t: &TlsConfig,
    domain: Option<&str>,
) -> anyhow::Result<tonic::transport::Endpoint> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("configuration key `{key}`: `{url}` is not a URL"))?;
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    anyhow::ensure!(
        !t.ca_file.is_empty(),
        "configuration key `{key}` is an https:// URL: set tls.ca_file to the CA certificates that signed the other \
         roles' certificates"
    );
    let read = |p: &str| std::fs::read(p).with_context(|| format!("cannot read {p}"));
    let mut client = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(&t.ca_file)?));
    if let Some(domain) = domain {
        client = client.domain_name(domain);
    }
    if !t.client_cert_file.is_empty() {
        client = client
            .identity(tonic::transport::Identity::from_pem(read(&t.client_cert_file)?, read(&t.client_key_file)?));
    }
    endpoint.tls_config(client).with_context(|| format!("configuration key `{key}`: TLS settings"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA and a server certificate for 127.0.0.1 / localhost, written as PEM files.
    fn write_pki(dir: &Path, name: &str) -> TlsConfig {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let path = |f: &str| dir.join(format!("{name}-{f}"));
        std::fs::write(path("ca.pem"), ca.pem()).unwrap();
        std::fs::write(path("cert.pem"), cert.pem()).unwrap();
        std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
        TlsConfig {
            cert_file: path("cert.pem").display().to_string(),
            key_file: path("key.pem").display().to_string(),
            client_ca_file: path("ca.pem").display().to_string(),
            ..TlsConfig::default()
        }
    }

    #[test]
    fn loads_reloads_on_change_and_keeps_the_old_config_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let t = write_pki(dir.path(), "a");
        let tls = ServerTls::from_config(&t).unwrap().expect("configured");
        assert!(!tls.reload().unwrap(), "nothing changed");
        let before = tls.config.load_full();

        // A new key pair for the same files: a new configuration.
        let other = write_pki(dir.path(), "b");
        std::fs::copy(&other.cert_file, &t.cert_file).unwrap();
        std::fs::copy(&other.key_file, &t.key_file).unwrap();
        let bump = |p: &str, secs| {
            let f = std::fs::File::options().write(true).open(p).unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
        };
        bump(&t.cert_file, 1_000);
        assert!(tls.reload().unwrap());
        assert!(!Arc::ptr_eq(&before, &tls.config.load_full()));

        // A key that does not match the certificate: refused, the config in force stays.
        let in_force = tls.config.load_full();
        std::fs::copy(write_pki(dir.path(), "c").key_file, &t.key_file).unwrap();
        bump(&t.key_file, 2_000);
        let err = tls.reload().unwrap_err();
        assert!(format!("{err:#}").contains("do not make a certificate and its key"), "{err:#}");
        assert!(Arc::ptr_eq(&in_force, &tls.config.load_full()));

        // Garbage instead of a certificate names the file.
        std::fs::write(&t.cert_file, "not a certificate").unwrap();
        let err = ServerTls::from_config(&t).unwrap_err();
        assert!(format!("{err:#}").contains("holds no certificate"), "{err:#}");
    }

    #[test]
    fn plaintext_unless_configured_and_https_needs_a_ca() {
        assert!(ServerTls::from_config(&TlsConfig::default()).unwrap().is_none());
        assert!(endpoint("endpoints.ranker", "http://127.0.0.1:1", &TlsConfig::default()).is_ok());
        let err = endpoint("endpoints.ranker", "https://127.0.0.1:1", &TlsConfig::default()).unwrap_err();
        assert!(err.to_string().contains("tls.ca_file"), "{err}");
        let err = endpoint("endpoints.ranker", "not a url", &TlsConfig::default()).unwrap_err();
        assert!(err.to_string().contains("`endpoints.ranker`"), "{err}");
    }
}
