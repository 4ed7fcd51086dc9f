//! A server socket's authentication: the token it holds, and the events around it.

use alloc::string::String;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{ServerEvent, ServerSocket, SocketEvent, SocketState};
use crate::auth::AuthState;
use crate::protocol::{Error, RemoteError, close, packet};

/// The token a socket holds.
#[derive(Debug, Default)]
pub(crate) struct AuthSlot {
    pub(crate) signed: Option<String>,
    pub(crate) payload: Option<Value>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn is_bad_token(e: &RemoteError) -> bool {
    e.get("isBadToken").and_then(Value::as_bool).unwrap_or(false)
}

impl ServerSocket {
    /// Authenticated or not.
    pub fn auth_state(&self) -> AuthState {
        if self.inner.auth.lock().payload.is_some() {
            AuthState::Authenticated
        } else {
            AuthState::Unauthenticated
        }
    }

    /// The payload of the socket's auth token (`None`: not authenticated).
    pub fn auth_token(&self) -> Option<Value> {
        self.inner.auth.lock().payload.clone()
    }

    /// The socket's signed auth token.
    pub fn signed_auth_token(&self) -> Option<String> {
        self.inner.auth.lock().signed.clone()
    }

    /// Signs `payload` (a JSON object) with the server's key — `iat` added, `exp` = now +
    /// `expires_in` (the server's default expiry when `None`) unless the payload has one —, makes
    /// it the socket's token and sends it to the client (`#setAuthToken`). Returns the signed
    /// token. Fails before the handshake (`InvalidActionError`); a signing failure closes the
    /// socket with 4002, as in SocketCluster.
    pub fn set_auth_token(&self, payload: Value, expires_in: Option<Duration>) -> Result<String, Error> {
        if self.state() != SocketState::Open {
            return Err(Error::InvalidAction(String::from(
                "Cannot call setAuthToken before completing the handshake",
            )));
        }
        let signed = match self.inner.server.auth.sign(&payload, expires_in) {
            Ok(t) => t,
            Err(e) if e.name() == "InvalidArgumentsError" => return Err(Error::Remote(e)),
            Err(e) => {
                self.disconnect(close::AUTH_SIGN_FAILED, "");
                return Err(Error::Remote(e));
            }
        };
        // What the client will decode, with the claims the signature added.
        let claims = crate::auth::decode_unverified(&signed).unwrap_or(payload);
        self.authenticated(signed.clone(), claims);
        let data = serde_json::json!({ "token": signed });
        if let Ok(frame) = packet::encode_transmit("#setAuthToken", Some(&data)) {
            self.inner.out.text(frame);
        }
        self.inner
            .listeners
            .write("authTokenSigned", SocketEvent::AuthTokenSigned { signed_auth_token: signed.clone() });
        Ok(signed)
    }

    /// Forgets the socket's token and tells the client (`#removeAuthToken`).
    pub fn deauthenticate(&self) {
        self.deauthenticated(true);
    }

    /// Makes `signed` (with payload `claims`) the socket's token: events `authenticate`,
    /// `authStateChange` (when it changed) and the server's equivalents.
    pub(crate) fn authenticated(&self, signed: String, claims: Value) {
        let was = {
            let mut a = self.inner.auth.lock();
            a.signed = Some(signed);
            a.payload.replace(claims.clone()).is_some()
        };
        let server = &self.inner.server;
        self.inner.listeners.write("authenticate", SocketEvent::Authenticate { auth_token: claims.clone() });
        server
            .emit("authentication", ServerEvent::Authentication { socket: self.clone(), auth_token: claims });
        if !was {
            let (old, new) = (AuthState::Unauthenticated, AuthState::Authenticated);
            self.inner.listeners.write("authStateChange", SocketEvent::AuthStateChange { old, new });
            server.emit(
                "authenticationStateChange",
                ServerEvent::AuthenticationStateChange { socket: self.clone(), old, new },
            );
        }
    }

    /// Forgets the token (telling the client when `notify`): events `deauthenticate`,
    /// `authStateChange`, when there was one.
    pub(crate) fn deauthenticated(&self, notify: bool) {
        let old_token = {
            let mut a = self.inner.auth.lock();
            a.signed = None;
            a.payload.take()
        };
        if notify && let Ok(frame) = packet::encode_transmit::<Value>("#removeAuthToken", None) {
            self.inner.out.text(frame);
        }
        let Some(old_auth_token) = old_token else { return };
        let server = &self.inner.server;
        self.inner
            .listeners
            .write("deauthenticate", SocketEvent::Deauthenticate { old_auth_token: old_auth_token.clone() });
        server
            .emit("deauthentication", ServerEvent::Deauthentication { socket: self.clone(), old_auth_token });
        let (old, new) = (AuthState::Authenticated, AuthState::Unauthenticated);
        self.inner.listeners.write("authStateChange", SocketEvent::AuthStateChange { old, new });
        server.emit(
            "authenticationStateChange",
            ServerEvent::AuthenticationStateChange { socket: self.clone(), old, new },
        );
    }

    /// A token that failed verification: when it is a bad token (`isBadToken`; not for "not yet
    /// valid"), `#removeAuthToken` to the client and the `badAuthToken` events, as in
    /// socketcluster-server.
    pub(crate) fn bad_token(&self, error: &RemoteError, signed: Option<String>) {
        if !is_bad_token(error) {
            return;
        }
        if let Ok(frame) = packet::encode_transmit::<Value>("#removeAuthToken", None) {
            self.inner.out.text(frame);
        }
        let signed_auth_token = signed.unwrap_or_default();
        self.inner.listeners.write(
            "badAuthToken",
            SocketEvent::BadAuthToken { error: error.clone(), signed_auth_token: signed_auth_token.clone() },
        );
        self.inner.server.emit(
            "badSocketAuthToken",
            ServerEvent::BadSocketAuthToken { socket: self.clone(), error: error.clone(), signed_auth_token },
        );
        // As SocketCluster does: the socket's `error`, the server's `warning`.
        self.inner.listeners.write("error", SocketEvent::Error(error.clone()));
        self.inner
            .server
            .emit("warning", ServerEvent::Warning { error: error.clone(), socket: Some(self.clone()) });
    }

    /// Checked on every inbound message: an expired token deauthenticates the socket (the
    /// message is still processed). Returns the expiry error when it did.
    pub(crate) fn check_expiry(&self) -> Option<RemoteError> {
        let exp = self.inner.auth.lock().payload.as_ref()?.get("exp")?.as_u64()?;
        if exp > now_secs() {
            return None;
        }
        self.deauthenticated(true);
        Some(
            RemoteError::new("AuthTokenExpiredError", "The socket auth token has expired")
                .with("expiry", crate::auth::iso8601(exp)),
        )
    }
}
