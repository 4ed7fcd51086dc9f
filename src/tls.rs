//! TLS with rustls (feature `tls`): `wss://` for the client, `listen_tls` for the server.
//!
//! The handshake runs on `futures::io` streams (futures-rustls), so both runtimes share this file;
//! the adapters only open TCP. The crypto provider is rustls's `ring` one, chosen explicitly, so
//! an application that also links another provider does not make rustls guess.
//!
//! ```no_run
//! # smol::block_on(async {
//! use socketcluster::client::ClientOptions;
//! use socketcluster::server::ServerOptions;
//! use socketcluster::tls::{ClientTls, server_config_from_pem};
//!
//! // A server on `wss://`: certificate chain and key from PEM files.
//! let tls = server_config_from_pem("cert.pem".as_ref(), "key.pem".as_ref())?;
//! let (server, addr) = socketcluster::smol::listen_tls("0.0.0.0:8443", tls, ServerOptions::default()).await?;
//!
//! // A client: `wss://` URLs are verified against the webpki roots unless told otherwise.
//! let options = ClientOptions { tls: ClientTls::PlatformRoots, ..ClientOptions::new("wss://example.com/socketcluster/") };
//! let client = socketcluster::smol::connect(options);
//! # Ok::<(), std::io::Error>(())
//! # });
//! ```

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use std::io;
use std::path::Path;
use std::sync::OnceLock;

use futures::io::{AsyncRead, AsyncWrite};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

pub use futures_rustls::{client::TlsStream as ClientTlsStream, server::TlsStream as ServerTlsStream};
pub use rustls;

/// How the client checks the server's certificate on `wss://` URLs.
#[derive(Clone, Default)]
pub enum ClientTls {
    /// Mozilla's root certificates, compiled in (`webpki-roots`): the same on every machine.
    #[default]
    WebpkiRoots,
    /// The operating system's root certificates (`rustls-native-certs`), read once per process.
    PlatformRoots,
    /// Your own configuration: private CAs, client certificates, pinned keys.
    Custom(Arc<ClientConfig>),
    /// **Accepts any certificate for any host name** (signatures are still checked): the
    /// connection is encrypted but not authenticated, so anyone on the path can read it. For
    /// tests against self-signed servers only — like Node's `rejectUnauthorized: false`.
    DangerousAcceptAnyCertificate,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WebpkiRoots => "WebpkiRoots",
            Self::PlatformRoots => "PlatformRoots",
            Self::Custom(_) => "Custom(..)",
            Self::DangerousAcceptAnyCertificate => "DangerousAcceptAnyCertificate",
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"));
    Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
}

impl ClientTls {
    /// The rustls configuration this stands for (built once per process for the root stores).
    pub fn config(&self) -> Arc<ClientConfig> {
        static WEBPKI: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        static PLATFORM: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        static ANY: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        match self {
            Self::WebpkiRoots => WEBPKI
                .get_or_init(|| client_config(webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect()))
                .clone(),
            Self::PlatformRoots => PLATFORM
                .get_or_init(|| {
                    let mut roots = RootCertStore::empty();
                    // Unreadable or unparsable system certificates are skipped, as browsers do.
                    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                    client_config(roots)
                })
                .clone(),
            Self::Custom(config) => config.clone(),
            Self::DangerousAcceptAnyCertificate => ANY
                .get_or_init(|| {
                    let mut config = (*client_config(RootCertStore::empty())).clone();
                    config.dangerous().set_certificate_verifier(Arc::new(AnyCertificate(provider())));
                    Arc::new(config)
                })
                .clone(),
        }
    }
}

/// The verifier behind [`ClientTls::DangerousAcceptAnyCertificate`].
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A server configuration from a certificate chain and its private key (no client
/// certificates), on the same crypto provider as the client side.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> io::Result<Arc<ServerConfig>> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, alloc::format!("TLS certificate or key: {e}"))
        })?;
    Ok(Arc::new(config))
}

/// [`server_config`] from PEM files: `cert` holds the chain (leaf first), `key` a PKCS #8, PKCS #1
/// or SEC1 private key. Errors name the file.
pub fn server_config_from_pem(cert: &Path, key: &Path) -> io::Result<Arc<ServerConfig>> {
    let named = |path: &Path, e: rustls::pki_types::pem::Error| {
        io::Error::new(io::ErrorKind::InvalidInput, alloc::format!("{}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| named(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(cert, e))?;
    if chain.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            alloc::format!("{}: no CERTIFICATE in the file", cert.display()),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| named(key, e))?;
    server_config(chain, key_der)
}

/// Why a TLS handshake failed; the client reports it as an `error` event before the close.
#[derive(Debug)]
pub(crate) struct HandshakeFailed(pub(crate) String);

impl fmt::Display for HandshakeFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for HandshakeFailed {}

/// The client half of the handshake with `host` over `io`.
pub(crate) async fn connect<S>(tls: &ClientTls, host: &str, io: S) -> io::Result<ClientTlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let failed = |what: String| io::Error::new(io::ErrorKind::InvalidData, HandshakeFailed(what));
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| failed(alloc::format!("TLS: {host:?} is not a valid server name")))?;
    futures_rustls::TlsConnector::from(tls.config())
        .connect(name, io)
        .await
        .map_err(|e| failed(alloc::format!("TLS handshake with {host} failed: {e}")))
}

/// The server half of the TLS handshake over `io` (an accepted connection), for serving
/// something besides SocketCluster on the same port: the `socketcluster` program does its HTTP
/// on the stream this returns. (Without a timeout: bound it yourself, as
/// [`Server::accept_tls`](crate::server::Server::accept_tls) does.)
pub async fn accept<S>(config: &Arc<ServerConfig>, io: S) -> io::Result<ServerTlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    futures_rustls::TlsAcceptor::from(config.clone()).accept(io).await
}
