//! TLS: the server certificate (reloaded when its files change), optional
//! client-certificate authentication (mTLS), and the name of a verified
//! client certificate.

use crate::config::{ClientAuth, Tls};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked when the config says nothing.
const DEFAULT_RELOAD: Duration = Duration::from_secs(5);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS setup: an acceptor and the certificate it presents.
pub struct TlsServer {
    pub acceptor: TlsAcceptor,
    cert: Arc<ReloadingCert>,
    reload_every: Option<Duration>,
}

impl TlsServer {
    /// Load the certificate, key and client CA named in `tls`.
    pub fn new(tls: &Tls) -> anyhow::Result<TlsServer> {
        let (Some(cert_path), Some(key_path)) = (&tls.cert, &tls.key) else {
            anyhow::bail!("TLS needs both a certificate and a key");
        };
        let provider = provider();
        let cert = Arc::new(ReloadingCert::load(
            cert_path.clone(),
            key_path.clone(),
            provider.clone(),
        )?);
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &tls.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in read_certs(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| anyhow::anyhow!("bad client CA in {}: {e}", ca.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match tls.client_auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                }
                .build()
                .map_err(|e| anyhow::anyhow!("client CA {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let reload_every = match tls.reload_secs {
            Some(0) => None,
            Some(n) => Some(Duration::from_secs(n)),
            None => Some(DEFAULT_RELOAD),
        };
        Ok(TlsServer {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert,
            reload_every,
        })
    }

    /// Check the certificate files for changes until the task is dropped:
    /// a new valid pair replaces the old one for new connections; a broken
    /// one is logged and the old pair stays.
    pub async fn watch(cert: Arc<ReloadingCert>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let c = cert.clone();
            // Reading files and parsing keys is blocking work.
            let _ = tokio::task::spawn_blocking(move || c.reload_if_changed()).await;
        }
    }

    /// The reload task for [`TlsServer::watch`], if reloading is on.
    pub fn watcher(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        self.reload_every
            .map(|every| Self::watch(self.cert.clone(), every))
    }
}

/// Modification time and length of both files: a change means "reload".
type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp_of(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [one(cert), one(key)]
}

/// The server certificate, swapped in place when its files change.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: RwLock<Stamp>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish()
    }
}

impl ReloadingCert {
    fn load(
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<ReloadingCert> {
        let stamp = stamp_of(&cert_path, &key_path);
        let key = load_pair(&cert_path, &key_path, &provider)?;
        Ok(ReloadingCert {
            cert_path,
            key_path,
            provider,
            current: RwLock::new(Arc::new(key)),
            stamp: RwLock::new(stamp),
        })
    }

    /// Reload if either file changed since the last look. Returns whether
    /// a new certificate is now in use.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp_of(&self.cert_path, &self.key_path);
        {
            let mut last = self.stamp.write().unwrap_or_else(|p| p.into_inner());
            if *last == now {
                return false;
            }
            *last = now;
        }
        match load_pair(&self.cert_path, &self.key_path, &self.provider) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(
                    cert = %self.cert_path.display(),
                    key = %self.key_path.display(),
                    error = %e,
                    "cannot reload the TLS certificate; still serving the previous one"
                );
                false
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("bad certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no PEM certificate in {}", path.display());
    }
    Ok(certs)
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = read_certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read a private key from {}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, der, provider).map_err(|e| {
        anyhow::anyhow!(
            "certificate {} and key {} do not make a usable pair: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// The subject common name of the verified client certificate, if any.
pub fn client_cert_name(conn: &rustls::ServerConnection) -> Option<String> {
    let der = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
