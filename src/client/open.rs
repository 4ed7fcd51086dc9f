//! What the adapters' connectors share: where a URL points, and the TLS and WebSocket
//! handshakes over a TCP stream the adapter opened.

use alloc::string::String;

use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::error::UrlError;
use async_tungstenite::tungstenite::handshake::client::Request;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures::io::{AsyncRead, AsyncWrite};

use super::{WsSink, WsStream, split_websocket};

/// A parsed `ws://` or `wss://` URL: the upgrade request, and the host and port to dial.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) request: Request,
    /// Without the brackets of an IPv6 literal.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) secure: bool,
}

/// Where `url` points (ports 80 and 443 by default).
pub(crate) fn target(url: &str) -> Result<Target, WsError> {
    let request = url.into_client_request()?;
    let uri = request.uri();
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err(WsError::Url(UrlError::UnsupportedUrlScheme)),
    };
    let host = String::from(uri.host().ok_or(WsError::Url(UrlError::NoHostName))?);
    let host = String::from(host.trim_start_matches('[').trim_end_matches(']'));
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    Ok(Target { request, host, port, secure })
}

/// The TLS handshake (for `wss://`) and the WebSocket upgrade over `tcp`.
pub(crate) async fn handshake<S>(
    target: Target,
    tcp: S,
    config: WebSocketConfig,
    _tls: &Tls,
) -> Result<(WsSink, WsStream), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if !target.secure {
        let (ws, _) = async_tungstenite::client_async_with_config(target.request, tcp, Some(config)).await?;
        return Ok(split_websocket(ws));
    }
    #[cfg(feature = "tls")]
    {
        let stream = crate::tls::connect(_tls, &target.host, tcp).await.map_err(WsError::Io)?;
        let (ws, _) =
            async_tungstenite::client_async_with_config(target.request, stream, Some(config)).await?;
        Ok(split_websocket(ws))
    }
    #[cfg(not(feature = "tls"))]
    Err(WsError::Url(UrlError::TlsFeatureNotEnabled))
}

/// How a connector verifies `wss://` servers: [`ClientTls`](crate::tls::ClientTls) with the
/// `tls` feature, nothing without (then `wss://` URLs fail).
#[cfg(feature = "tls")]
pub(crate) type Tls = crate::tls::ClientTls;
/// How a connector verifies `wss://` servers: nothing without the `tls` feature.
#[cfg(not(feature = "tls"))]
#[derive(Clone, Debug, Default)]
pub(crate) struct Tls;

impl Tls {
    /// The choice in `options`.
    pub(crate) fn of(_options: &super::ClientOptions) -> Self {
        #[cfg(feature = "tls")]
        return _options.tls.clone();
        #[cfg(not(feature = "tls"))]
        Tls
    }
}
