//! JWT authentication, as SocketCluster's default auth engine does it: HS256 with a secret key by
//! default (random per process when none is given), RS256 or ES256 with a key pair as options.
//!
//! Verification takes an explicit algorithm allow-list (the configured algorithm only), so a token
//! with `alg: none`, or signed with another algorithm family than configured, is rejected — no
//! HS/RS confusion. Failures come back in SocketCluster's wire form: `AuthTokenExpiredError`
//! (with `expiry`), `AuthTokenNotBeforeError` (with `date`, not a "bad" token),
//! `AuthTokenInvalidError`, `AuthTokenError`, each with `isBadToken`.

use alloc::string::String;
use core::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::protocol::RemoteError;

/// Authenticated or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthState {
    /// A token was accepted.
    Authenticated,
    /// No accepted token.
    Unauthenticated,
}

impl AuthState {
    /// `authenticated` or `unauthenticated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authenticated => "authenticated",
            Self::Unauthenticated => "unauthenticated",
        }
    }
}

/// Tokens longer than this are refused without being parsed.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Signs and verifies auth tokens.
///
/// ```
/// use socketcluster::auth::JwtAuth;
/// let auth = JwtAuth::hs256("secret");
/// let token = auth.sign(&serde_json::json!({ "username": "bob" }), None).unwrap();
/// let payload = auth.verify(&token).unwrap();
/// assert_eq!(payload["username"], "bob");
/// assert!(payload["exp"].as_u64().unwrap() >= payload["iat"].as_u64().unwrap() + 86_400);
/// let wrong = JwtAuth::hs256("other").verify(&token).unwrap_err();
/// assert_eq!(wrong.name(), "AuthTokenInvalidError");
/// assert_eq!(wrong.message(), "invalid signature");
/// ```
#[derive(Clone)]
pub struct JwtAuth {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    default_expiry: Duration,
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("algorithm", &self.algorithm)
            .field("default_expiry", &self.default_expiry)
            .finish_non_exhaustive()
    }
}

/// A key that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid key: {}", self.0)
    }
}

impl core::error::Error for KeyError {}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl JwtAuth {
    /// HS256 with `secret` (SocketCluster's `authKey`).
    pub fn hs256(secret: impl AsRef<[u8]>) -> Self {
        let secret = secret.as_ref();
        Self {
            algorithm: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            default_expiry: Duration::from_secs(86_400),
        }
    }

    /// HS256 with a random key (32 random bytes as hex, as SocketCluster makes one): tokens do
    /// not survive a restart.
    pub fn random_hs256() -> Self {
        let mut bytes = [0u8; 32];
        fastrand::fill(&mut bytes);
        let hex: String = bytes.iter().map(|b| alloc::format!("{b:02x}")).collect();
        Self::hs256(hex)
    }

    /// RS256 with a PEM key pair.
    pub fn rs256(private_pem: &[u8], public_pem: &[u8]) -> Result<Self, KeyError> {
        Ok(Self {
            algorithm: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(private_pem).map_err(|e| KeyError(alloc::format!("{e}")))?,
            decoding: DecodingKey::from_rsa_pem(public_pem).map_err(|e| KeyError(alloc::format!("{e}")))?,
            default_expiry: Duration::from_secs(86_400),
        })
    }

    /// ES256 with a PEM key pair (PKCS#8 private key).
    pub fn es256(private_pem: &[u8], public_pem: &[u8]) -> Result<Self, KeyError> {
        Ok(Self {
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(private_pem).map_err(|e| KeyError(alloc::format!("{e}")))?,
            decoding: DecodingKey::from_ec_pem(public_pem).map_err(|e| KeyError(alloc::format!("{e}")))?,
            default_expiry: Duration::from_secs(86_400),
        })
    }

    /// Tokens signed without an `exp` claim expire after this (SocketCluster's
    /// `authDefaultExpiry`, 86 400 s).
    pub fn with_default_expiry(mut self, expiry: Duration) -> Self {
        self.default_expiry = expiry;
        self
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Signs `payload` (a JSON object): adds `iat` (now) and, unless the payload has `exp`,
    /// `exp = iat + expires_in` (the default expiry when `None`).
    pub fn sign(&self, payload: &Value, expires_in: Option<Duration>) -> Result<String, RemoteError> {
        let Value::Object(map) = payload else {
            return Err(RemoteError::new(
                "InvalidArgumentsError",
                "The auth token payload must be an object",
            ));
        };
        let mut claims: Map<String, Value> = map.clone();
        let iat = now_secs();
        claims.insert(String::from("iat"), Value::from(iat));
        if !claims.contains_key("exp") {
            let exp = iat + expires_in.unwrap_or(self.default_expiry).as_secs();
            claims.insert(String::from("exp"), Value::from(exp));
        }
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
            .map_err(|e| RemoteError::new("AuthTokenError", alloc::format!("{e}")))
    }

    /// Verifies `token`; its payload, or the error SocketCluster would report.
    pub fn verify(&self, token: &str) -> Result<Value, RemoteError> {
        if token.is_empty() {
            return Err(invalid("jwt must be provided"));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("jwt too large"));
        }
        // jsonwebtoken's (JS) checks and messages, in its order: three segments, a header that
        // decodes, a signature (`alg: none` has none), then the algorithm.
        let segments: alloc::vec::Vec<&str> = token.split('.').collect();
        if segments.len() != 3 {
            return Err(invalid("jwt malformed"));
        }
        if !decode_segment(segments[0]).is_some_and(|h| h.is_object()) {
            return Err(invalid("invalid token"));
        }
        if segments[2].trim().is_empty() {
            return Err(invalid("jwt signature is required"));
        }
        // The header is checked against the allow-list before any signature work.
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("invalid algorithm"))?;
        if header.alg != self.algorithm {
            return Err(invalid("invalid algorithm"));
        }
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        match jsonwebtoken::decode::<Value>(token, &self.decoding, &validation) {
            Ok(data) if data.claims.is_object() => Ok(data.claims),
            Ok(_) => Err(invalid("jwt payload must be an object")),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => {
                    let exp = claim(token, "exp").unwrap_or(0);
                    RemoteError::new("AuthTokenExpiredError", "jwt expired")
                        .with("expiry", iso8601(exp))
                        .with("isBadToken", true)
                }
                ErrorKind::ImmatureSignature => {
                    let nbf = claim(token, "nbf").unwrap_or(0);
                    RemoteError::new("AuthTokenNotBeforeError", "jwt not active")
                        .with("date", iso8601(nbf))
                        .with("isBadToken", false)
                }
                ErrorKind::InvalidSignature => invalid("invalid signature"),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => invalid("invalid algorithm"),
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    invalid("jwt malformed")
                }
                _ => RemoteError::new("AuthTokenError", alloc::format!("{e}")).with("isBadToken", true),
            }),
        }
    }
}

fn invalid(message: &str) -> RemoteError {
    RemoteError::new("AuthTokenInvalidError", message).with("isBadToken", true)
}

/// A numeric claim from the (unverified) payload segment.
fn claim(token: &str, name: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get(name)?.as_u64()
}

/// A token segment as JSON, if it is base64url-encoded JSON.
fn decode_segment(segment: &str) -> Option<Value> {
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `2026-11-26T13:49:28.000Z` for seconds since the Unix epoch.
pub fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    alloc::format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The payload of a token without verifying it (what a client shows as `authToken`).
pub fn decode_unverified(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_795_701_768), "2026-11-26T14:02:48.000Z"); // date -u -d @1795701768
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00.000Z");
    }
}
