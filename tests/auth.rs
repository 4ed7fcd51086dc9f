//! The server's authentication: tokens in the handshake and in `#authenticate`, every kind of bad
//! token, `set_auth_token`, `deauthenticate`, expiry while connected, the auth events, and
//! tokens shared with the official JS server (SocketCluster protocol reference §1.5, §1.7, §1.9,
//! §1.10, §3.5, §5.1 "Client authentication" / "Server authentication").
//!
//! Our server runs in-process on smol and on tokio (`smol_rt::NAME`, `tokio_rt::NAME`) and is
//! driven by a raw WebSocket client (`support/raw.rs`), so each test sees the exact frames. "Not
//! sent" is shown by order: the server answers a socket's packets in order through one queue, so
//! when the next frame is the answer to a later `echo`, nothing was sent before it. Every wait is
//! bounded.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/util.rs"]
mod util;

#[macro_use]
#[path = "support/raw.rs"]
mod raw;

#[path = "support/peers.rs"]
mod peers;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use socketcluster::auth::{AuthState, JwtAuth};
use socketcluster::client::{ClientEvent, ClientOptions};
use socketcluster::protocol::{Error, RemoteError};
use socketcluster::server::{
    HandshakeAction, Middleware, ServerEvent, ServerOptions, ServerSocket, SocketEvent,
};

use peers::Peer;
use raw::{Harness, Raw, Rt, next_ev, next_of, now_secs, ready, remove_auth_token};

/// The HMAC key of the HS256 servers.
const KEY: &str = "auth-test-key";
const RSA_PRIVATE: &[u8] = include_bytes!("keys/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("keys/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("keys/ec_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("keys/ec_public.pem");

/// 2020-09-13T12:26:40Z: long past.
const PAST: u64 = 1_600_000_000;
/// 2100-01-01T00:00:00Z: far ahead.
const FUTURE: u64 = 4_102_444_800;

on_both_runtimes!(
    handshake_with_valid_token,
    handshake_expired_token,
    authenticate_expired_token,
    handshake_not_yet_valid_token,
    authenticate_not_yet_valid_token,
    handshake_wrong_key,
    authenticate_wrong_key,
    handshake_wrong_algorithm_hs512,
    authenticate_wrong_algorithm_hs512,
    handshake_rs256_hs256_confusion,
    authenticate_rs256_hs256_confusion,
    handshake_alg_none,
    authenticate_alg_none,
    handshake_garbage_token,
    authenticate_garbage_token,
    handshake_token_without_dots,
    authenticate_token_without_dots,
    handshake_empty_token_is_no_token,
    authenticate_empty_token,
    handshake_non_string_token,
    authenticate_non_string_token,
    handshake_oversized_token,
    authenticate_oversized_token,
    authenticate_valid_token_and_switch_users,
    set_auth_token_sends_signed_token,
    set_auth_token_exp_claim_wins,
    set_auth_token_custom_expiry,
    set_auth_token_before_handshake,
    set_auth_token_non_object_payload,
    server_deauthenticate,
    client_remove_auth_token,
    token_expires_while_connected,
    our_token_accepted_by_js_server,
    js_token_accepted_by_our_server,
    rs256_round_trip,
    es256_round_trip,
    client_auth_against_our_server,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn hs256() -> JwtAuth {
    JwtAuth::hs256(KEY)
}

fn rs256() -> JwtAuth {
    JwtAuth::rs256(RSA_PRIVATE, RSA_PUBLIC).unwrap()
}

fn es256() -> JwtAuth {
    JwtAuth::es256(EC_PRIVATE, EC_PUBLIC).unwrap()
}

fn with_auth(auth: JwtAuth) -> ServerOptions {
    ServerOptions { auth: Some(auth), ..ServerOptions::default() }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token's payload, decoded without verification.
fn payload_of(token: &str) -> Value {
    let seg = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(seg).unwrap()).unwrap()
}

/// The socket's `event` listener items so far, without waiting.
fn events(c: &mut socketcluster::stream::Consumer<SocketEvent>) -> Vec<SocketEvent> {
    ready(c)
}

/// A bad token and what the server must answer.
struct Bad {
    /// The server's signer and verifier.
    auth: JwtAuth,
    /// What the client sends as the token.
    token: Value,
    /// The error object on the wire (`authError` in the handshake response, `error` of the
    /// `#authenticate` response or its `authError`).
    error: Value,
}

impl Bad {
    fn is_bad(&self) -> bool {
        self.error["isBadToken"] == true
    }
}

fn invalid(message: &str) -> Value {
    json!({"message": message, "name": "AuthTokenInvalidError", "isBadToken": true})
}

fn expired() -> Bad {
    let token = hs256().sign(&json!({"username": "bob", "exp": PAST}), None).unwrap();
    Bad {
        auth: hs256(),
        token: json!(token),
        error: json!({
            "message": "jwt expired",
            "name": "AuthTokenExpiredError",
            "expiry": "2020-09-13T12:26:40.000Z",
            "isBadToken": true
        }),
    }
}

fn not_yet_valid() -> Bad {
    let token = hs256().sign(&json!({"username": "bob", "nbf": FUTURE}), None).unwrap();
    Bad {
        auth: hs256(),
        token: json!(token),
        error: json!({
            "message": "jwt not active",
            "name": "AuthTokenNotBeforeError",
            "date": "2100-01-01T00:00:00.000Z",
            "isBadToken": false
        }),
    }
}

fn wrong_key() -> Bad {
    let token = JwtAuth::hs256("not-the-key").sign(&json!({"username": "bob"}), None).unwrap();
    Bad { auth: hs256(), token: json!(token), error: invalid("invalid signature") }
}

/// HS512 with the right secret, on a server configured for HS256. (socketcluster-server without
/// `authAlgorithm` accepts every HS algorithm; we verify the configured one only.)
fn wrong_algorithm_hs512() -> Bad {
    let claims = json!({"username": "bob", "exp": now_secs() + 3600});
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims,
        &EncodingKey::from_secret(KEY.as_bytes()),
    )
    .unwrap();
    Bad { auth: hs256(), token: json!(token), error: invalid("invalid algorithm") }
}

/// The classic confusion: the server verifies RS256; the attacker signs HS256 with the public
/// key's PEM as the HMAC secret, hoping the server uses its public key as an HMAC key.
fn rs256_hs256_confusion() -> Bad {
    let claims = json!({"username": "admin", "exp": now_secs() + 3600});
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(RSA_PUBLIC))
            .unwrap();
    Bad { auth: rs256(), token: json!(token), error: invalid("invalid algorithm") }
}

/// `{"alg":"none"}`, a payload, no signature (as jsonwebtoken answers with a key configured).
fn alg_none() -> Bad {
    let payload = b64(json!({"username": "admin", "exp": now_secs() + 3600}).to_string().as_bytes());
    let token = format!("eyJhbGciOiJub25lIn0.{payload}.");
    Bad { auth: hs256(), token: json!(token), error: invalid("jwt signature is required") }
}

/// Three segments that are not a JWT (the reference's transcript, §1.15).
fn garbage() -> Bad {
    Bad { auth: hs256(), token: json!("garbage.token.value"), error: invalid("invalid token") }
}

fn without_dots() -> Bad {
    Bad { auth: hs256(), token: json!("abc"), error: invalid("jwt malformed") }
}

fn empty() -> Bad {
    Bad { auth: hs256(), token: json!(""), error: invalid("jwt must be provided") }
}

/// What socketcluster-server answers (ag-auth refuses a token that is not a string before
/// jsonwebtoken sees it; observed on the wire with server 20.0.1).
fn non_string() -> Bad {
    let error = json!({
        "message": "Invalid token format - Token must be a string",
        "name": "AuthTokenError",
        "isBadToken": true
    });
    Bad { auth: hs256(), token: json!(42), error }
}

/// A correctly signed token over 16 KiB: refused unparsed.
fn oversized() -> Bad {
    let token = hs256().sign(&json!({"username": "bob", "pad": "x".repeat(20_000)}), None).unwrap();
    assert!(token.len() > 16 * 1024);
    assert!(hs256().verify(&token).is_err());
    Bad { auth: hs256(), token: json!(token), error: invalid("jwt too large") }
}

/// A bad token in the handshake: connected, not authenticated, `authError` in the response,
/// `#removeAuthToken` right after it for a bad token (not for "not yet valid"), `badAuthToken`
/// and `badSocketAuthToken` for a bad token, no `authenticate`.
async fn bad_in_handshake(rt: Rt, bad: Bad) {
    let mut h = Harness::start(rt, with_auth(bad.auth.clone())).await;
    let mut c = Raw::connect(h.addr).await;
    let socket = h.pending_socket(&c).await;
    let mut listeners: Vec<_> = ["badAuthToken", "authenticate", "authStateChange", "deauthenticate"]
        .into_iter()
        .map(|n| socket.listener(n))
        .collect();
    let mut server_bad = h.server.listener("badSocketAuthToken");
    let mut server_auth = h.server.listener("authentication");

    let r = c.handshake(bad.token.clone()).await;
    assert_eq!(r["data"]["isAuthenticated"], false, "{r}");
    assert_eq!(r["data"]["authError"], bad.error, "{r}");
    if bad.is_bad() {
        assert_eq!(c.packet().await, remove_auth_token());
    }
    // Nothing else came (no `#removeAuthToken` for a token that is not bad).
    c.echo(2, json!("next")).await;

    let id = r["data"]["id"].as_str().unwrap();
    let conn = h.conn(id).await;
    assert!(!conn.is_authenticated);
    assert_eq!(conn.auth_error.map(RemoteError::into_value), Some(bad.error.clone()));
    assert_eq!(socket.auth_state(), AuthState::Unauthenticated);
    assert_eq!(socket.auth_token(), None);
    assert_eq!(socket.signed_auth_token(), None);
    let signed = bad.token.as_str().unwrap_or_default().to_string();
    if bad.is_bad() {
        assert_eq!(
            next_ev(&mut listeners[0], "badAuthToken").await,
            SocketEvent::BadAuthToken {
                error: RemoteError::from_value(bad.error.clone()),
                signed_auth_token: signed.clone()
            }
        );
        match next_ev(&mut server_bad, "badSocketAuthToken").await {
            ServerEvent::BadSocketAuthToken { socket: s, error, signed_auth_token } => {
                assert_eq!(s.id(), id);
                assert_eq!(error.into_value(), bad.error);
                assert_eq!(signed_auth_token, signed);
            }
            other => panic!("{other:?}"),
        }
    }
    for l in &mut listeners {
        assert_eq!(events(l), []);
    }
    assert!(ready(&mut server_bad).is_empty());
    assert!(ready(&mut server_auth).is_empty());
}

/// A bad token in `#authenticate` from an authenticated socket: a bad token gets an error
/// response then `#removeAuthToken`; a token that is only not yet valid gets
/// `{"isAuthenticated":false,"authError":...}` and no `#removeAuthToken`. Either way the socket
/// is no longer authenticated (as the client is told).
async fn bad_in_authenticate(rt: Rt, bad: Bad) {
    let mut h = Harness::start(rt, with_auth(bad.auth.clone())).await;
    let good = bad.auth.sign(&json!({"username": "bob"}), None).unwrap();
    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(json!(good)).await;
    assert_eq!(r["data"]["isAuthenticated"], true, "{r}");
    let id = r["data"]["id"].as_str().unwrap();
    let socket = h.conn(id).await.socket;
    assert_eq!(socket.auth_state(), AuthState::Authenticated);
    let mut deauthenticate = socket.listener("deauthenticate");
    let mut bad_events = socket.listener("badAuthToken");
    let mut authenticate = socket.listener("authenticate");

    c.json(json!({"event": "#authenticate", "data": bad.token, "cid": 2})).await;
    if bad.is_bad() {
        assert_eq!(c.packet().await, json!({"rid": 2, "error": bad.error}));
        assert_eq!(c.packet().await, remove_auth_token());
    } else {
        assert_eq!(
            c.packet().await,
            json!({"rid": 2, "data": {"isAuthenticated": false, "authError": bad.error}})
        );
    }
    c.echo(3, json!("next")).await;

    assert_eq!(
        socket.auth_state(),
        AuthState::Unauthenticated,
        "the server agrees with what the client was told"
    );
    assert_eq!(socket.auth_token(), None);
    match next_ev(&mut deauthenticate, "deauthenticate").await {
        SocketEvent::Deauthenticate { old_auth_token } => assert_eq!(old_auth_token["username"], "bob"),
        other => panic!("{other:?}"),
    }
    if bad.is_bad() {
        match next_ev(&mut bad_events, "badAuthToken").await {
            SocketEvent::BadAuthToken { error, .. } => assert_eq!(error.into_value(), bad.error),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(events(&mut bad_events), []);
    assert_eq!(events(&mut authenticate), []);
}

// ---------------------------------------------------------------------------------------------
// Handshake with a valid token
// ---------------------------------------------------------------------------------------------

/// A valid token in the handshake: `isAuthenticated: true`, no `authError`, no `#setAuthToken`;
/// the socket's `connect`, then `authenticate` and `authStateChange`; the server's
/// `authentication` and `authenticationStateChange`; `connection` with `is_authenticated`.
async fn handshake_with_valid_token(rt: Rt) {
    let mut h = Harness::start(rt, with_auth(hs256())).await;
    let token = hs256().sign(&json!({"username": "bob"}), None).unwrap();
    let claims = payload_of(&token);
    let mut c = Raw::connect(h.addr).await;
    let socket = h.pending_socket(&c).await;
    let mut connect = socket.listener("connect");
    let mut authenticate = socket.listener("authenticate");
    let mut state_change = socket.listener("authStateChange");
    let mut bad = socket.listener("badAuthToken");
    let mut signed = socket.listener("authTokenSigned");
    let mut authentication = h.server.listener("authentication");
    let mut server_state = h.server.listener("authenticationStateChange");

    let r = c.handshake(json!(token)).await;
    let id = r["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 20);
    assert_eq!(r["data"]["isAuthenticated"], true, "{r}");
    assert!(r["data"].get("authError").is_none(), "{r}");
    // No `#setAuthToken` (nor anything else) for a handshake token.
    c.echo(2, json!("next")).await;

    assert_eq!(
        next_ev(&mut authenticate, "authenticate").await,
        SocketEvent::Authenticate { auth_token: claims.clone() }
    );
    // `connect` was written before `authenticate` (the same task writes both, in this order).
    assert_eq!(events(&mut connect), [SocketEvent::Connect { id: id.clone(), is_authenticated: true }]);
    assert_eq!(
        next_ev(&mut state_change, "authStateChange").await,
        SocketEvent::AuthStateChange { old: AuthState::Unauthenticated, new: AuthState::Authenticated }
    );
    match next_ev(&mut authentication, "authentication").await {
        ServerEvent::Authentication { socket: s, auth_token } => {
            assert_eq!(s.id(), id);
            assert_eq!(auth_token, claims);
        }
        other => panic!("{other:?}"),
    }
    match next_ev(&mut server_state, "authenticationStateChange").await {
        ServerEvent::AuthenticationStateChange { socket: s, old, new } => {
            assert_eq!(s.id(), id);
            assert_eq!((old, new), (AuthState::Unauthenticated, AuthState::Authenticated));
        }
        other => panic!("{other:?}"),
    }
    let conn = h.conn(&id).await;
    assert!(conn.is_authenticated);
    assert_eq!(conn.auth_error, None);
    assert_eq!(socket.auth_state(), AuthState::Authenticated);
    assert_eq!(socket.auth_token(), Some(claims));
    assert_eq!(socket.signed_auth_token(), Some(token));
    assert_eq!(events(&mut bad), []);
    assert_eq!(events(&mut signed), [], "the server signed nothing");
    assert_eq!(events(&mut authenticate), []);
    assert_eq!(events(&mut state_change), []);
}

// ---------------------------------------------------------------------------------------------
// Bad tokens, each in the handshake and in `#authenticate`
// ---------------------------------------------------------------------------------------------

async fn handshake_expired_token(rt: Rt) {
    bad_in_handshake(rt, expired()).await;
}

async fn authenticate_expired_token(rt: Rt) {
    bad_in_authenticate(rt, expired()).await;
}

async fn handshake_not_yet_valid_token(rt: Rt) {
    bad_in_handshake(rt, not_yet_valid()).await;
}

async fn authenticate_not_yet_valid_token(rt: Rt) {
    bad_in_authenticate(rt, not_yet_valid()).await;
}

async fn handshake_wrong_key(rt: Rt) {
    bad_in_handshake(rt, wrong_key()).await;
}

async fn authenticate_wrong_key(rt: Rt) {
    bad_in_authenticate(rt, wrong_key()).await;
}

async fn handshake_wrong_algorithm_hs512(rt: Rt) {
    bad_in_handshake(rt, wrong_algorithm_hs512()).await;
}

async fn authenticate_wrong_algorithm_hs512(rt: Rt) {
    bad_in_authenticate(rt, wrong_algorithm_hs512()).await;
}

async fn handshake_rs256_hs256_confusion(rt: Rt) {
    bad_in_handshake(rt, rs256_hs256_confusion()).await;
}

async fn authenticate_rs256_hs256_confusion(rt: Rt) {
    bad_in_authenticate(rt, rs256_hs256_confusion()).await;
}

async fn handshake_alg_none(rt: Rt) {
    bad_in_handshake(rt, alg_none()).await;
}

async fn authenticate_alg_none(rt: Rt) {
    bad_in_authenticate(rt, alg_none()).await;
}

async fn handshake_garbage_token(rt: Rt) {
    bad_in_handshake(rt, garbage()).await;
}

async fn authenticate_garbage_token(rt: Rt) {
    bad_in_authenticate(rt, garbage()).await;
}

async fn handshake_token_without_dots(rt: Rt) {
    bad_in_handshake(rt, without_dots()).await;
}

async fn authenticate_token_without_dots(rt: Rt) {
    bad_in_authenticate(rt, without_dots()).await;
}

/// socketcluster-server reads the handshake's `authToken` as `data.authToken || null`: an empty
/// string (like `false` or `0`) is no token — no `authError`, no `#removeAuthToken`.
async fn handshake_empty_token_is_no_token(rt: Rt) {
    let mut h = Harness::start(rt, with_auth(hs256())).await;
    for (n, token) in [json!(""), json!(false), json!(0), Value::Null].into_iter().enumerate() {
        let mut c = Raw::connect(h.addr).await;
        let socket = h.pending_socket(&c).await;
        let mut bad = socket.listener("badAuthToken");
        let r = c.handshake(token.clone()).await;
        assert_eq!(r["data"]["isAuthenticated"], false, "{token}: {r}");
        assert!(r["data"].get("authError").is_none(), "{token}: {r}");
        c.echo(2, json!(n)).await;
        let conn = h.conn(r["data"]["id"].as_str().unwrap()).await;
        assert_eq!(conn.auth_error, None);
        assert_eq!(events(&mut bad), []);
    }
}

/// `#authenticate` with `""` (and with `null`): "jwt must be provided".
async fn authenticate_empty_token(rt: Rt) {
    bad_in_authenticate(rt, empty()).await;
    bad_in_authenticate(rt, Bad { token: Value::Null, ..empty() }).await;
}

async fn handshake_non_string_token(rt: Rt) {
    bad_in_handshake(rt, non_string()).await;
}

async fn authenticate_non_string_token(rt: Rt) {
    bad_in_authenticate(rt, non_string()).await;
    bad_in_authenticate(rt, Bad { token: json!({"token": "a.b.c"}), ..non_string() }).await;
}

async fn handshake_oversized_token(rt: Rt) {
    bad_in_handshake(rt, oversized()).await;
}

async fn authenticate_oversized_token(rt: Rt) {
    bad_in_authenticate(rt, oversized()).await;
}

// ---------------------------------------------------------------------------------------------
// `#authenticate` with valid tokens
// ---------------------------------------------------------------------------------------------

/// `#authenticate` with a valid token: `{"isAuthenticated":true,"authError":null}`, no
/// `#setAuthToken`; a second user's token: `authenticate` again, no second `authStateChange`,
/// no `deauthenticate` (upstream "Should allow switching between users").
async fn authenticate_valid_token_and_switch_users(rt: Rt) {
    let mut h = Harness::start(rt, with_auth(hs256())).await;
    let (mut c, id) = Raw::open(h.addr).await;
    let socket = h.conn(&id).await.socket;
    let mut authenticate = socket.listener("authenticate");
    let mut state_change = socket.listener("authStateChange");
    let mut deauthenticate = socket.listener("deauthenticate");
    let mut authentication = h.server.listener("authentication");
    let bob = hs256().sign(&json!({"username": "bob"}), None).unwrap();
    let alice = hs256().sign(&json!({"username": "alice"}), None).unwrap();

    let r = c.call(2, "#authenticate", json!(bob)).await;
    assert_eq!(r, json!({"rid": 2, "data": {"isAuthenticated": true, "authError": null}}));
    c.echo(3, json!("no #setAuthToken")).await;
    assert_eq!(socket.auth_token(), Some(payload_of(&bob)));
    assert_eq!(socket.signed_auth_token().as_deref(), Some(bob.as_str()));
    let r = c.call(4, "#authenticate", json!(alice)).await;
    assert_eq!(r, json!({"rid": 4, "data": {"isAuthenticated": true, "authError": null}}));
    c.echo(5, json!("still none")).await;
    assert_eq!(socket.auth_token(), Some(payload_of(&alice)));

    for who in ["bob", "alice"] {
        match next_ev(&mut authenticate, "authenticate").await {
            SocketEvent::Authenticate { auth_token } => assert_eq!(auth_token["username"], who),
            other => panic!("{other:?}"),
        }
        match next_ev(&mut authentication, "authentication").await {
            ServerEvent::Authentication { auth_token, .. } => assert_eq!(auth_token["username"], who),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        events(&mut state_change),
        [SocketEvent::AuthStateChange { old: AuthState::Unauthenticated, new: AuthState::Authenticated }]
    );
    assert_eq!(events(&mut deauthenticate), []);
}

// ---------------------------------------------------------------------------------------------
// set_auth_token
// ---------------------------------------------------------------------------------------------

/// Opens a raw client and returns it with its server socket.
async fn opened(h: &mut Harness) -> (Raw, ServerSocket) {
    let (c, id) = Raw::open(h.addr).await;
    let socket = h.conn(&id).await.socket;
    (c, socket)
}

/// Reads the `#setAuthToken` frame and returns its token.
async fn set_auth_token_frame(c: &mut Raw) -> String {
    let p = c.packet().await;
    assert_eq!(p["event"], "#setAuthToken", "{p}");
    assert!(p.get("cid").is_none(), "a transmit: {p}");
    assert_eq!(p["data"].as_object().unwrap().len(), 1, "{p}");
    p["data"]["token"].as_str().unwrap().to_string()
}

/// `set_auth_token`: a `#setAuthToken` frame whose token verifies with the server's key (and with
/// an independent verifier of the same key), `iat` now and `exp = iat + 86400`; the socket is
/// authenticated with the signed claims; events `authTokenSigned`, `authenticate`,
/// `authStateChange`, server `authentication`.
async fn set_auth_token_sends_signed_token(rt: Rt) {
    let mut h = Harness::start(rt, with_auth(hs256())).await;
    let (mut c, socket) = opened(&mut h).await;
    let mut signed_events = socket.listener("authTokenSigned");
    let mut authenticate = socket.listener("authenticate");
    let mut state_change = socket.listener("authStateChange");
    let mut authentication = h.server.listener("authentication");

    let before = now_secs();
    let signed = socket.set_auth_token(json!({"username": "ann", "role": ["a", "b"]}), None).unwrap();
    let after = now_secs();
    let token = set_auth_token_frame(&mut c).await;
    assert_eq!(token, signed);
    let claims = JwtAuth::hs256(KEY).verify(&token).unwrap();
    assert_eq!(h.server.auth().verify(&token).unwrap(), claims);
    assert!(JwtAuth::hs256("other").verify(&token).is_err());
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(claims["username"], "ann");
    assert_eq!(claims["role"], json!(["a", "b"]));
    let iat = claims["iat"].as_u64().unwrap();
    assert!((before..=after).contains(&iat), "iat {iat} not in {before}..={after}");
    assert_eq!(claims["exp"].as_u64(), Some(iat + 86_400));
    assert_eq!(claims.as_object().unwrap().len(), 4, "{claims}");

    assert_eq!(socket.auth_state(), AuthState::Authenticated);
    assert_eq!(socket.auth_token(), Some(claims.clone()));
    assert_eq!(socket.signed_auth_token(), Some(token.clone()));
    assert_eq!(
        next_ev(&mut signed_events, "authTokenSigned").await,
        SocketEvent::AuthTokenSigned { signed_auth_token: token.clone() }
    );
    assert_eq!(
        next_ev(&mut authenticate, "authenticate").await,
        SocketEvent::Authenticate { auth_token: claims.clone() }
    );
    assert_eq!(
        next_ev(&mut state_change, "authStateChange").await,
        SocketEvent::AuthStateChange { old: AuthState::Unauthenticated, new: AuthState::Authenticated }
    );
    match next_ev(&mut authentication, "authentication").await {
        ServerEvent::Authentication { auth_token, .. } => assert_eq!(auth_token, claims),
        other => panic!("{other:?}"),
    }
    // Nothing else was sent; the token works in a new handshake.
    c.echo(2, json!("after")).await;
    let mut c2 = Raw::connect(h.addr).await;
    let r = c2.handshake(json!(token)).await;
    assert_eq!(r["data"]["isAuthenticated"], true, "{r}");
}

/// An `exp` claim in the payload wins over the expiry option (upstream "The exp claim should have
/// priority over expiresIn option").
async fn set_auth_token_exp_claim_wins(rt: Rt) {
    let mut h = Harness::start(rt, with_auth(hs256())).await;
    let (mut c, socket) = opened(&mut h).await;
    let exp = now_secs() + 10 * 86_400;
    socket
        .set_auth_token(json!({"username": "ann", "exp": exp}), Some(Duration::from_secs(1000 * 86_400)))
        .unwrap();
    let claims = hs256().verify(&set_auth_token_frame(&mut c).await).unwrap();
    assert_eq!(claims["exp"].as_u64(), Some(exp));
    socket.set_auth_token(json!({"username": "ann", "exp": exp}), None).unwrap();
    let claims = hs256().verify(&set_auth_token_frame(&mut c).await).unwrap();
    assert_eq!(claims["exp"].as_u64(), Some(exp));
}

/// A custom expiry: per call (`expires_in`, upstream "expiresIn option") and per server
/// (`with_default_expiry`, SocketCluster's `authDefaultExpiry`).
async fn set_auth_token_custom_expiry(rt: Rt) {
    let mut h = Harness::start(rt, with_auth(hs256().with_default_expiry(Duration::from_secs(60)))).await;
    let (mut c, socket) = opened(&mut h).await;
    socket.set_auth_token(json!({"username": "ann"}), Some(Duration::from_secs(10 * 86_400))).unwrap();
    let claims = hs256().verify(&set_auth_token_frame(&mut c).await).unwrap();
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["exp"].as_u64(), Some(iat + 10 * 86_400));
    socket.set_auth_token(json!({"username": "ann"}), None).unwrap();
    let claims = hs256().verify(&set_auth_token_frame(&mut c).await).unwrap();
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["exp"].as_u64(), Some(iat + 60), "the server's default expiry");
}

/// Before the handshake completes — on the `handshake` event and inside HANDSHAKE_SC middleware
/// — `set_auth_token` fails with InvalidActionError; nothing is sent, the socket connects
/// unauthenticated, no `authentication` event (upstream "Should not be allowed to call
/// req.socket.setAuthToken from inside middleware").
async fn set_auth_token_before_handshake(rt: Rt) {
    let (tx, from_middleware) = async_channel::unbounded();
    let middleware = Middleware::new().handshake(move |action| {
        let tx = tx.clone();
        async move {
            if let HandshakeAction::Sc { socket, .. } = action {
                let _ = tx.try_send(socket.set_auth_token(json!({"username": "mw"}), None));
            }
            Ok(())
        }
    });
    let mut h = Harness::start(rt, ServerOptions { middleware, ..with_auth(hs256()) }).await;
    let mut authentication = h.server.listener("authentication");
    let mut c = Raw::connect(h.addr).await;
    let socket = h.pending_socket(&c).await;
    let expected = Error::InvalidAction("Cannot call setAuthToken before completing the handshake".into());
    assert_eq!(socket.set_auth_token(json!({"username": "early"}), None), Err(expected.clone()));
    let r = c.handshake(Value::Null).await;
    assert_eq!(r["data"]["isAuthenticated"], false, "{r}");
    assert_eq!(next_of(&from_middleware, "the middleware's attempt").await, Err(expected));
    c.echo(2, json!("nothing before this")).await;
    assert_eq!(socket.auth_state(), AuthState::Unauthenticated);
    assert!(ready(&mut authentication).is_empty());
    let conn = h.conn(socket.id()).await;
    assert!(!conn.is_authenticated);
}

/// A payload that is not a JSON object is refused (InvalidArgumentsError); nothing is sent, the
/// socket stays open and unauthenticated.
async fn set_auth_token_non_object_payload(rt: Rt) {
    let mut h = Harness::start(rt, with_auth(hs256())).await;
    let (mut c, socket) = opened(&mut h).await;
    let mut signed = socket.listener("authTokenSigned");
    for payload in [json!("bob"), json!(["bob"]), json!(42), json!(true), Value::Null] {
        match socket.set_auth_token(payload.clone(), None) {
            Err(Error::Remote(e)) => {
                assert_eq!(e.name(), "InvalidArgumentsError", "{payload}");
                assert_eq!(e.message(), "The auth token payload must be an object");
            }
            other => panic!("{payload}: {other:?}"),
        }
    }
    c.echo(2, json!("nothing before this")).await;
    assert_eq!(socket.auth_state(), AuthState::Unauthenticated);
    assert_eq!(socket.state(), socketcluster::server::SocketState::Open);
    assert_eq!(events(&mut signed), []);
}

// ---------------------------------------------------------------------------------------------
// Deauthentication
// ---------------------------------------------------------------------------------------------

/// Handshakes with a valid token; returns the client, its socket and the claims.
async fn authenticated(h: &mut Harness, username: &str) -> (Raw, ServerSocket, Value) {
    let token = hs256().sign(&json!({"username": username}), None).unwrap();
    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(json!(token)).await;
    assert_eq!(r["data"]["isAuthenticated"], true, "{r}");
    let socket = h.conn(r["data"]["id"].as_str().unwrap()).await.socket;
    assert_eq!(socket.auth_state(), AuthState::Authenticated);
    (c, socket, payload_of(&token))
}

/// Checks the deauthentication events of `socket` (whose token was `claims`).
async fn expect_deauthentication_events(
    socket_deauth: &mut socketcluster::stream::Consumer<SocketEvent>,
    socket_state: &mut socketcluster::stream::Consumer<SocketEvent>,
    server_deauth: &mut socketcluster::stream::Consumer<ServerEvent>,
    server_state: &mut socketcluster::stream::Consumer<ServerEvent>,
    id: &str,
    claims: &Value,
) {
    assert_eq!(
        next_ev(socket_deauth, "deauthenticate").await,
        SocketEvent::Deauthenticate { old_auth_token: claims.clone() }
    );
    assert_eq!(
        next_ev(socket_state, "authStateChange").await,
        SocketEvent::AuthStateChange { old: AuthState::Authenticated, new: AuthState::Unauthenticated }
    );
    match next_ev(server_deauth, "deauthentication").await {
        ServerEvent::Deauthentication { socket, old_auth_token } => {
            assert_eq!(socket.id(), id);
            assert_eq!(&old_auth_token, claims);
        }
        other => panic!("{other:?}"),
    }
    match next_ev(server_state, "authenticationStateChange").await {
        ServerEvent::AuthenticationStateChange { socket, old, new } => {
            assert_eq!(socket.id(), id);
            assert_eq!((old, new), (AuthState::Authenticated, AuthState::Unauthenticated));
        }
        other => panic!("{other:?}"),
    }
}

/// `deauthenticate()` on the server: `#removeAuthToken` to the client, the socket forgets the
/// token, events `deauthenticate` (with the old token), `authStateChange`, server
/// `deauthentication`, `authenticationStateChange`. Again: the frame is sent, no more events.
async fn server_deauthenticate(rt: Rt) {
    let mut h = Harness::start(rt, with_auth(hs256())).await;
    let (mut c, socket, claims) = authenticated(&mut h, "dave").await;
    let mut deauth = socket.listener("deauthenticate");
    let mut state = socket.listener("authStateChange");
    let mut server_deauth = h.server.listener("deauthentication");
    let mut server_state = h.server.listener("authenticationStateChange");
    socket.deauthenticate();
    assert_eq!(c.packet().await, remove_auth_token());
    assert_eq!(socket.auth_state(), AuthState::Unauthenticated);
    assert_eq!(socket.auth_token(), None);
    assert_eq!(socket.signed_auth_token(), None);
    let id = socket.id().to_string();
    expect_deauthentication_events(
        &mut deauth,
        &mut state,
        &mut server_deauth,
        &mut server_state,
        &id,
        &claims,
    )
    .await;
    socket.deauthenticate();
    assert_eq!(c.packet().await, remove_auth_token());
    c.echo(2, json!("open")).await;
    assert_eq!(events(&mut deauth), []);
    assert_eq!(events(&mut state), []);
}

/// `#removeAuthToken` from the client: the server deauthenticates silently (no answer, not even
/// with a cid), with the same events.
async fn client_remove_auth_token(rt: Rt) {
    let mut h = Harness::start(rt, with_auth(hs256())).await;
    let (mut c, socket, claims) = authenticated(&mut h, "erin").await;
    let mut deauth = socket.listener("deauthenticate");
    let mut state = socket.listener("authStateChange");
    let mut server_deauth = h.server.listener("deauthentication");
    let mut server_state = h.server.listener("authenticationStateChange");
    c.json(json!({"event": "#removeAuthToken"})).await;
    c.echo(2, json!("no reply before this")).await;
    assert_eq!(socket.auth_state(), AuthState::Unauthenticated);
    assert_eq!(socket.auth_token(), None);
    let id = socket.id().to_string();
    expect_deauthentication_events(
        &mut deauth,
        &mut state,
        &mut server_deauth,
        &mut server_state,
        &id,
        &claims,
    )
    .await;
    // With a cid, and when not authenticated: still nothing.
    c.json(json!({"event": "#removeAuthToken", "cid": 3})).await;
    c.echo(4, json!("still no reply")).await;
    assert_eq!(events(&mut deauth), []);
}

// ---------------------------------------------------------------------------------------------
// Expiry while connected
// ---------------------------------------------------------------------------------------------

/// A token that expires while the socket is connected: before the expiry packets are answered
/// as usual; after it, the next inbound packet makes the server send `#removeAuthToken` (with
/// the deauthentication events) and the packet is still processed.
async fn token_expires_while_connected(rt: Rt) {
    let mut h = Harness::start(rt, with_auth(hs256())).await;
    let exp = now_secs() + 2;
    let token = hs256().sign(&json!({"username": "fay", "exp": exp}), None).unwrap();
    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(json!(token)).await;
    assert_eq!(r["data"]["isAuthenticated"], true, "{r}");
    let socket = h.conn(r["data"]["id"].as_str().unwrap()).await.socket;
    let mut deauth = socket.listener("deauthenticate");
    c.echo(2, json!("before expiry")).await;
    assert_eq!(socket.auth_state(), AuthState::Authenticated);

    // Wait (answering pings) until the expiry has passed; the server sends nothing by itself.
    let until = UNIX_EPOCH + Duration::from_secs(exp) + Duration::from_millis(200);
    let wait = until.duration_since(SystemTime::now()).unwrap_or_default();
    c.silence(wait).await;
    assert_eq!(socket.auth_state(), AuthState::Authenticated, "nothing happens without a packet");

    c.json(json!({"event": "echo", "data": "after expiry", "cid": 3})).await;
    assert_eq!(c.packet().await, remove_auth_token());
    assert_eq!(c.packet().await, json!({"rid": 3, "data": "after expiry"}));
    assert_eq!(socket.auth_state(), AuthState::Unauthenticated);
    match next_ev(&mut deauth, "deauthenticate").await {
        SocketEvent::Deauthenticate { old_auth_token } => {
            assert_eq!(old_auth_token["exp"].as_u64(), Some(exp))
        }
        other => panic!("{other:?}"),
    }
    c.echo(4, json!("once")).await;
}

// ---------------------------------------------------------------------------------------------
// Tokens shared with the official JS server
// ---------------------------------------------------------------------------------------------

/// A token our `JwtAuth::hs256(K)` signs is accepted by socketcluster-server 20 with
/// `authKey: K`: our client's handshake is authenticated and `whoami` returns our claims.
async fn our_token_accepted_by_js_server(rt: Rt) {
    let js = Peer::js_server(&["--auth-key", KEY]);
    let token = hs256().sign(&json!({"username": "ours"}), None).unwrap();
    let client = rt.client(ClientOptions {
        auto_connect: false,
        auth_token: Some(token.clone()),
        ..ClientOptions::new(js.url())
    });
    let mut connect = client.listener("connect");
    client.connect();
    match next_ev(&mut connect, "connect").await {
        ClientEvent::Connect { is_authenticated, auth_error, .. } => {
            assert!(is_authenticated, "{auth_error:?}");
            assert_eq!(auth_error, None);
        }
        other => panic!("{other:?}"),
    }
    let whoami = util::bounded("whoami", client.invoke("whoami", ())).await.unwrap();
    assert_eq!(whoami, payload_of(&token));
    // And one signed with another key is not.
    let other = JwtAuth::hs256("other").sign(&json!({"username": "ours"}), None).unwrap();
    let client = rt.client(ClientOptions {
        auto_connect: false,
        auth_token: Some(other),
        ..ClientOptions::new(js.url())
    });
    let mut connect = client.listener("connect");
    client.connect();
    match next_ev(&mut connect, "connect").await {
        ClientEvent::Connect { is_authenticated, auth_error, .. } => {
            assert!(!is_authenticated);
            assert_eq!(auth_error.map(RemoteError::into_value), Some(invalid("invalid signature")));
        }
        other => panic!("{other:?}"),
    }
}

/// A token socketcluster-server 20 signs (`setAuthToken` in its `login` procedure, read by our
/// client) is accepted by our server with the same key.
async fn js_token_accepted_by_our_server(rt: Rt) {
    let js = Peer::js_server(&["--auth-key", KEY]);
    let client = rt.client(ClientOptions { auto_connect: false, ..ClientOptions::new(js.url()) });
    let mut connect = client.listener("connect");
    let mut authenticate = client.listener("authenticate");
    client.connect();
    next_ev(&mut connect, "connect").await;
    let r = util::bounded("login", client.invoke("login", json!({"username": "js"}))).await.unwrap();
    assert_eq!(r, json!("ok"));
    let ClientEvent::Authenticate { signed_auth_token: token } =
        next_ev(&mut authenticate, "authenticate").await
    else {
        panic!()
    };
    assert_eq!(client.signed_auth_token().as_deref(), Some(token.as_str()));
    let claims = hs256().verify(&token).unwrap();
    assert_eq!(claims["username"], "js");
    assert_eq!(claims["exp"].as_u64(), Some(claims["iat"].as_u64().unwrap() + 86_400));

    let mut h = Harness::start(rt, with_auth(hs256())).await;
    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(json!(token)).await;
    assert_eq!(r["data"]["isAuthenticated"], true, "{r}");
    assert!(r["data"].get("authError").is_none(), "{r}");
    let socket = h.conn(r["data"]["id"].as_str().unwrap()).await.socket;
    assert_eq!(socket.auth_token(), Some(claims));
    // `#authenticate` with it too.
    let (mut c2, _) = Raw::open(h.addr).await;
    let r = c2.call(2, "#authenticate", json!(token)).await;
    assert_eq!(r, json!({"rid": 2, "data": {"isAuthenticated": true, "authError": null}}));
}

// ---------------------------------------------------------------------------------------------
// RS256 and ES256
// ---------------------------------------------------------------------------------------------

/// A server with a key pair: `set_auth_token` signs with the private key (header `alg`), the
/// token verifies with the public key, and a new connection's handshake and `#authenticate`
/// accept it; an HS256 server with the public key as secret does not.
async fn asymmetric_round_trip(rt: Rt, auth: JwtAuth, alg: Algorithm) {
    let mut h = Harness::start(rt, with_auth(auth.clone())).await;
    let (mut c, socket) = opened(&mut h).await;
    let signed = socket.set_auth_token(json!({"username": "pki"}), None).unwrap();
    let token = set_auth_token_frame(&mut c).await;
    assert_eq!(token, signed);
    assert_eq!(jsonwebtoken::decode_header(&token).unwrap().alg, alg);
    let claims = auth.verify(&token).unwrap();
    assert_eq!(claims["username"], "pki");
    assert_eq!(socket.auth_token(), Some(claims.clone()));

    let mut c2 = Raw::connect(h.addr).await;
    let r = c2.handshake(json!(token)).await;
    assert_eq!(r["data"]["isAuthenticated"], true, "{r}");
    let socket2 = h.conn(r["data"]["id"].as_str().unwrap()).await.socket;
    assert_eq!(socket2.auth_token(), Some(claims));
    let (mut c3, _) = Raw::open(h.addr).await;
    let r = c3.call(2, "#authenticate", json!(token)).await;
    assert_eq!(r, json!({"rid": 2, "data": {"isAuthenticated": true, "authError": null}}));

    // An HS256 token is refused, whatever its key.
    let hs = hs256().sign(&json!({"username": "pki"}), None).unwrap();
    let r = c3.call(3, "#authenticate", json!(hs)).await;
    assert_eq!(r, json!({"rid": 3, "error": invalid("invalid algorithm")}));
    assert_eq!(c3.packet().await, remove_auth_token());
}

async fn rs256_round_trip(rt: Rt) {
    asymmetric_round_trip(rt, rs256(), Algorithm::RS256).await;
    // Another RS256 server (ES256 keys cannot make one) does not share tokens by accident.
    let other = es256().sign(&json!({"username": "pki"}), None).unwrap();
    assert_eq!(rs256().verify(&other).unwrap_err().message(), "invalid algorithm");
}

async fn es256_round_trip(rt: Rt) {
    asymmetric_round_trip(rt, es256(), Algorithm::ES256).await;
    let other = rs256().sign(&json!({"username": "pki"}), None).unwrap();
    assert_eq!(es256().verify(&other).unwrap_err().message(), "invalid algorithm");
}

// ---------------------------------------------------------------------------------------------
// Our client against our server
// ---------------------------------------------------------------------------------------------

/// Our client's auth API against our server: `#setAuthToken` stores the token and authenticates
/// the client; `deauthenticate()` tells the server; `authenticate(token)` authenticates both
/// sides; a bad token is refused and clears the client's token; a reconnect sends the stored
/// token in the handshake.
async fn client_auth_against_our_server(rt: Rt) {
    let mut h = Harness::start(rt, with_auth(hs256())).await;
    let client = rt.client(ClientOptions { auto_connect: false, ..ClientOptions::new(h.url()) });
    let mut connect = client.listener("connect");
    let mut authenticate = client.listener("authenticate");
    let mut state = client.listener("authStateChange");
    let mut deauthenticate = client.listener("deauthenticate");
    client.connect();
    let ClientEvent::Connect { id, is_authenticated, .. } = next_ev(&mut connect, "connect").await else {
        panic!()
    };
    assert!(!is_authenticated);
    assert_eq!(client.auth_state(), AuthState::Unauthenticated);
    let socket = h.conn(&id).await.socket;
    let mut server_deauth = socket.listener("deauthenticate");
    let mut server_auth = socket.listener("authenticate");

    // The server logs the client in.
    let token = socket.set_auth_token(json!({"username": "cli"}), None).unwrap();
    assert_eq!(
        next_ev(&mut authenticate, "authenticate").await,
        ClientEvent::Authenticate { signed_auth_token: token.clone() }
    );
    assert_eq!(
        next_ev(&mut state, "authStateChange").await,
        ClientEvent::AuthStateChange { old: AuthState::Unauthenticated, new: AuthState::Authenticated }
    );
    assert_eq!(client.auth_state(), AuthState::Authenticated);
    assert_eq!(client.signed_auth_token(), Some(token.clone()));
    assert_eq!(client.auth_token().unwrap()["username"], "cli");
    next_ev(&mut server_auth, "the server's authenticate").await;

    // The client logs out: the server hears it.
    client.deauthenticate();
    assert_eq!(next_ev(&mut deauthenticate, "deauthenticate").await, ClientEvent::Deauthenticate);
    assert_eq!(client.auth_state(), AuthState::Unauthenticated);
    assert_eq!(client.signed_auth_token(), None);
    next_ev(&mut server_deauth, "the server's deauthenticate").await;
    assert_eq!(socket.auth_state(), AuthState::Unauthenticated);

    // `authenticate(token)` logs both sides in again.
    util::bounded("authenticate", client.authenticate(&token)).await.unwrap();
    assert_eq!(client.auth_state(), AuthState::Authenticated);
    next_ev(&mut server_auth, "the server's authenticate").await;
    assert_eq!(socket.auth_token().unwrap()["username"], "cli");

    // A bad token: refused, and the client's token is gone (the server's too).
    match util::bounded("authenticate", client.authenticate("garbage.token.value")).await {
        Err(Error::Remote(e)) => assert_eq!(e.into_value(), invalid("invalid token")),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.auth_state(), AuthState::Unauthenticated);
    assert_eq!(client.signed_auth_token(), None);
    next_ev(&mut server_deauth, "the server's deauthenticate").await;
    assert_eq!(socket.auth_state(), AuthState::Unauthenticated);

    // The stored token goes into the next handshake.
    util::bounded("authenticate", client.authenticate(&token)).await.unwrap();
    let mut disconnect = client.listener("disconnect");
    client.disconnect(1000, "");
    next_ev(&mut disconnect, "disconnect").await;
    client.connect();
    match next_ev(&mut connect, "connect").await {
        ClientEvent::Connect { id, is_authenticated, auth_error, .. } => {
            assert!(is_authenticated, "{auth_error:?}");
            let socket = h.conn(&id).await.socket;
            assert_eq!(socket.auth_token().unwrap()["username"], "cli");
        }
        other => panic!("{other:?}"),
    }
}
