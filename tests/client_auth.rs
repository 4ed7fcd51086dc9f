//! Our client's auth state machine (protocol reference §4.8, the auth group of the upstream
//! client suite §5.2) against the official socketcluster-server 20.0.1 (`tests/interop/server.mjs`
//! with `--auth-key`: procedures `login`, `deauth`, `whoami`, the `private/` rule), every scenario
//! on smol and on tokio.
//!
//! Events of different names go to different consumers, so their relative order is checked the
//! only way it can be: when an event arrives, an event that must come before it is already
//! waiting in its own consumer (both are written by the same task, in order). Every wait is
//! bounded; sleeps appear only where a test shows that something does *not* happen.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/peers.rs"]
mod peers;
#[macro_use]
#[path = "support/client_rt.rs"]
mod client_rt;

use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use socketcluster::auth::JwtAuth;
use socketcluster::client::{
    AuthState, Client, ClientEvent, ClientOptions, ClientState, FileTokenStore, MemoryTokenStore, TokenStore,
};
use socketcluster::protocol::channels::{ChannelState, SubscribeOptions};
use socketcluster::protocol::{Error, RemoteError};
use socketcluster::stream::Consumer;

use client_rt::Rt;
use peers::{Peer, assert_claims};

/// The servers' auth key.
const KEY: &str = "client-auth-test-key";
/// How long to watch for an event that must not come.
const QUIET: Duration = Duration::from_millis(300);

/// This file's helpers on the runtime.
impl Rt {
    /// A client that is not connected yet.
    fn client(&self, options: ClientOptions) -> Client {
        self.connect(ClientOptions { auto_connect: false, ..options })
    }

    /// Connects `client` and returns its `connect` event.
    async fn open(&self, client: &Client) -> ClientEvent {
        let mut connect = client.listener("connect");
        client.connect();
        self.next(&mut connect, "the connect event").await
    }
}

scenarios!(
    no_token_stays_unauthenticated,
    login_wait_for_auth_and_switching_users,
    deauthenticate_and_authenticate,
    authenticate_with_a_bad_token_while_authenticated,
    disconnect_keeps_auth_and_reconnect_sends_the_token,
    invalid_stored_token,
    file_token_store_persists_across_clients,
    memory_token_store_is_the_default,
    failing_token_store_save,
    tokens_are_compatible_with_jwt_auth,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn server() -> Peer {
    Peer::js_server(&["--auth-key", KEY])
}

fn options(server: &Peer) -> ClientOptions {
    ClientOptions::new(server.url())
}

/// Consumers of the three auth events, created before the action under test.
struct AuthEvents {
    authenticate: Consumer<ClientEvent>,
    deauthenticate: Consumer<ClientEvent>,
    state_change: Consumer<ClientEvent>,
}

impl AuthEvents {
    fn new(client: &Client) -> Self {
        AuthEvents {
            authenticate: client.listener("authenticate"),
            deauthenticate: client.listener("deauthenticate"),
            state_change: client.listener("authStateChange"),
        }
    }

    /// The signed token of the next `authenticate` event.
    async fn authenticated(&mut self, rt: &Rt) -> String {
        match rt.next(&mut self.authenticate, "the authenticate event").await {
            ClientEvent::Authenticate { signed_auth_token } => signed_auth_token,
            other => panic!("not an authenticate event: {other:?}"),
        }
    }

    async fn changed(&mut self, rt: &Rt, old: AuthState, new: AuthState) {
        assert_eq!(
            rt.next(&mut self.state_change, "the authStateChange event").await,
            ClientEvent::AuthStateChange { old, new }
        );
    }

    /// Asserts that no auth event is waiting (all three consumers are empty right now).
    fn none_now(&mut self, what: &str) {
        for c in [&mut self.authenticate, &mut self.deauthenticate, &mut self.state_change] {
            if let Some(Some(ev)) = c.next().now_or_never() {
                panic!("{what}: unexpected {ev:?}");
            }
        }
    }

    /// Waits [`QUIET`] and then asserts that no auth event came.
    async fn none_for_a_while(&mut self, rt: &Rt, what: &str) {
        rt.runtime.sleep_until(Instant::now() + QUIET).await;
        self.none_now(what);
    }
}

/// Invokes `login` with `payload` and returns the token the server set (the response may come
/// before `#setAuthToken`, so the `authenticate` event is awaited).
async fn login(rt: &Rt, client: &Client, events: &mut AuthEvents, payload: Value) -> String {
    assert_eq!(rt.bounded("login", client.invoke("login", payload)).await, Ok(json!("ok")));
    events.authenticated(rt).await
}

async fn whoami(rt: &Rt, client: &Client) -> Value {
    rt.bounded("whoami", client.invoke("whoami", ())).await.expect("whoami")
}

fn remote(r: Result<impl std::fmt::Debug, Error>) -> RemoteError {
    match r {
        Err(Error::Remote(e)) => e,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

fn temp_path(rt: &Rt, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sc-client-auth-{}-{}-{name}", std::process::id(), rt.name))
}

/// Deletes a file when dropped (also when the test fails).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// Connecting without a token: unauthenticated, no auth events at all.
async fn no_token_stays_unauthenticated(rt: Rt) {
    let server = server();
    let client = rt.client(options(&server));
    assert_eq!(client.auth_state(), AuthState::Unauthenticated);
    let mut events = AuthEvents::new(&client);
    let ClientEvent::Connect { is_authenticated, auth_error, .. } = rt.open(&client).await else { panic!() };
    assert!(!is_authenticated);
    assert_eq!(auth_error, None);
    assert_eq!(client.auth_state(), AuthState::Unauthenticated);
    assert_eq!(client.signed_auth_token(), None);
    assert_eq!(client.auth_token(), None);
    events.none_for_a_while(&rt, "connect without a token").await;
    assert_eq!(whoami(&rt, &client).await, Value::Null);
}

/// `login` → `#setAuthToken`: `authStateChange` unauthenticated→authenticated and `authenticate`;
/// the token's payload is the login data plus iat/exp; a `waitForAuth` channel subscribes only
/// then. Logging in as another user: `authenticate` only.
async fn login_wait_for_auth_and_switching_users(rt: Rt) {
    let server = server();
    let client = rt.client(options(&server));
    rt.open(&client).await;
    let mut events = AuthEvents::new(&client);
    let mut subscribes = client.listener("subscribe");
    let mut fails = client.listener("subscribeFail");

    // A waitForAuth channel on the `private/` rule: the server refuses it while unauthenticated,
    // so a subscribe sent too early would fail.
    let mut ch =
        client.subscribe("private/w", SubscribeOptions { wait_for_auth: true, ..Default::default() });
    assert_eq!(rt.quiet(&mut subscribes, QUIET).await, None, "subscribed before authentication");
    assert_eq!(ch.state(), ChannelState::Pending);

    let bob = json!({"user": "bob", "role": "admin"});
    assert_eq!(rt.bounded("login", client.invoke("login", &bob)).await, Ok(json!("ok")));
    // The subscription follows the authentication: when its ack arrives, both auth events are
    // already there.
    assert_eq!(
        rt.next(&mut subscribes, "the waitForAuth subscription").await,
        ClientEvent::Subscribe { channel: "private/w".into() }
    );
    assert_eq!(
        events.state_change.next().now_or_never(),
        Some(Some(ClientEvent::AuthStateChange {
            old: AuthState::Unauthenticated,
            new: AuthState::Authenticated
        })),
        "authStateChange before the subscription"
    );
    let Some(Some(ClientEvent::Authenticate { signed_auth_token: token })) =
        events.authenticate.next().now_or_never()
    else {
        panic!("no authenticate event before the subscription")
    };
    assert_eq!(fails.next().now_or_never(), None);
    assert_eq!(ch.state(), ChannelState::Subscribed);

    assert_eq!(client.auth_state(), AuthState::Authenticated);
    assert_eq!(client.signed_auth_token().as_deref(), Some(token.as_str()));
    let payload = client.auth_token().expect("the token's payload");
    assert_claims(&payload, &bob);
    assert_eq!(whoami(&rt, &client).await, payload);
    rt.bounded("publish", client.invoke_publish("private/w", 1)).await.expect("publish");
    assert_eq!(rt.next(&mut ch, "a private message").await, json!(1));

    // Another user: authenticate again, no state change.
    let alice = json!({"user": "alice"});
    let token2 = login(&rt, &client, &mut events, alice.clone()).await;
    assert_ne!(token2, token);
    assert_eq!(client.signed_auth_token(), Some(token2));
    assert_claims(&client.auth_token().unwrap(), &alice);
    assert_claims(&whoami(&rt, &client).await, &alice);
    events.none_for_a_while(&rt, "switching users").await;
    assert_eq!(client.auth_state(), AuthState::Authenticated);
}

/// `deauthenticate()`: unauthenticated at once (+ `authStateChange`, `deauthenticate`), the
/// server forgets the token; a waitForAuth channel that is subscribed stays subscribed.
/// `authenticate(token)`: authenticated again after the response, the server knows the payload.
async fn deauthenticate_and_authenticate(rt: Rt) {
    let server = server();
    let client = rt.client(options(&server));
    rt.open(&client).await;
    let mut events = AuthEvents::new(&client);
    let carol = json!({"user": "carol"});
    let token = login(&rt, &client, &mut events, carol.clone()).await;
    events.changed(&rt, AuthState::Unauthenticated, AuthState::Authenticated).await;
    let mut sub = client.channel("private/x").listener("subscribe");
    let ch = client.subscribe("private/x", SubscribeOptions { wait_for_auth: true, ..Default::default() });
    rt.next(&mut sub, "the private/x subscription").await;

    client.deauthenticate();
    // Immediate, before any answer from the server.
    assert_eq!(client.auth_state(), AuthState::Unauthenticated);
    assert_eq!(client.signed_auth_token(), None);
    assert_eq!(client.auth_token(), None);
    assert_eq!(
        events.state_change.next().now_or_never(),
        Some(Some(ClientEvent::AuthStateChange {
            old: AuthState::Authenticated,
            new: AuthState::Unauthenticated
        }))
    );
    assert_eq!(events.deauthenticate.next().now_or_never(), Some(Some(ClientEvent::Deauthenticate)));
    // `#removeAuthToken` went first on the same connection: the server has no token.
    assert_eq!(whoami(&rt, &client).await, Value::Null);
    assert_eq!(ch.state(), ChannelState::Subscribed, "deauthentication does not unsubscribe");
    // Deauthenticating again changes nothing.
    client.deauthenticate();
    events.none_for_a_while(&rt, "a second deauthenticate()").await;

    // authenticate(token): the state flips after the response.
    let mut call = pin!(client.authenticate(&token));
    assert!(futures::poll!(call.as_mut()).is_pending());
    assert_eq!(client.auth_state(), AuthState::Unauthenticated, "authenticated before the response");
    assert_eq!(rt.bounded("authenticate", call).await, Ok(()));
    assert_eq!(client.auth_state(), AuthState::Authenticated);
    events.changed(&rt, AuthState::Unauthenticated, AuthState::Authenticated).await;
    assert_eq!(events.authenticated(&rt).await, token);
    assert_eq!(client.signed_auth_token().as_deref(), Some(token.as_str()));
    assert_claims(&whoami(&rt, &client).await, &carol);
    events.none_for_a_while(&rt, "after authenticate").await;
}

/// `authenticate("garbage")` while authenticated: still authenticated while the call is out,
/// then unauthenticated; the call fails with AuthTokenInvalidError; the server dropped the old
/// token too.
async fn authenticate_with_a_bad_token_while_authenticated(rt: Rt) {
    let server = server();
    let store = Arc::new(MemoryTokenStore::default());
    let client = rt.client(ClientOptions { token_store: Some(store.clone()), ..options(&server) });
    rt.open(&client).await;
    let mut events = AuthEvents::new(&client);
    let mut frames = client.listener("message");
    let token = login(&rt, &client, &mut events, json!({"user": "dan"})).await;
    events.changed(&rt, AuthState::Unauthenticated, AuthState::Authenticated).await;
    assert_eq!(store.load(), Some(token));

    let mut call = pin!(client.authenticate("garbage"));
    assert!(futures::poll!(call.as_mut()).is_pending());
    assert_eq!(client.auth_state(), AuthState::Authenticated);
    events.none_now("while the bad token is being checked");
    let e = remote(rt.bounded("authenticate(garbage)", call).await);
    assert_eq!(e.name(), "AuthTokenInvalidError", "{e:?}");
    assert_eq!(e.message(), "jwt malformed", "{e:?}");
    assert_eq!(e.get("isBadToken"), Some(&json!(true)), "{e:?}");
    assert_eq!(client.auth_state(), AuthState::Unauthenticated);
    assert_eq!(client.signed_auth_token(), None);
    assert_eq!(store.load(), None, "the token store was cleared");
    events.changed(&rt, AuthState::Authenticated, AuthState::Unauthenticated).await;
    assert_eq!(rt.next(&mut events.deauthenticate, "deauthenticate").await, ClientEvent::Deauthenticate);
    assert_eq!(whoami(&rt, &client).await, Value::Null);
    events.none_for_a_while(&rt, "after the failed authenticate").await;
    assert_eq!(client.state(), ClientState::Open);

    // What the server sent, in order (for the report): the error response, #removeAuthToken.
    let mut order = Vec::new();
    while let Some(Some(ClientEvent::Message(text))) = frames.next().now_or_never() {
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if v.get("error").is_some() {
            order.push("error response");
        } else if v["event"] == "#removeAuthToken" {
            order.push("#removeAuthToken");
        }
    }
    eprintln!("[{}] after #authenticate(garbage) the JS server sent: {order:?}", rt.name);
}

/// A disconnect keeps the auth state and the token; the next handshake sends the token:
/// `authenticate` before `connect` (`is_authenticated: true`), no `authStateChange`, the
/// waitForAuth channel is subscribed again. `authenticate()` on a closed client connects first.
async fn disconnect_keeps_auth_and_reconnect_sends_the_token(rt: Rt) {
    let server = server();
    let client = rt.client(options(&server));
    rt.open(&client).await;
    let mut events = AuthEvents::new(&client);
    let erin = json!({"user": "erin"});
    let token = login(&rt, &client, &mut events, erin.clone()).await;
    events.changed(&rt, AuthState::Unauthenticated, AuthState::Authenticated).await;
    let mut subscribes = client.listener("subscribe");
    let ch = client.subscribe("private/y", SubscribeOptions { wait_for_auth: true, ..Default::default() });
    rt.next(&mut subscribes, "the private/y subscription").await;

    let mut disconnects = client.listener("disconnect");
    client.disconnect(1000, "bye");
    rt.next(&mut disconnects, "the disconnect").await;
    assert_eq!(client.state(), ClientState::Closed);
    assert_eq!(client.auth_state(), AuthState::Authenticated, "a disconnect keeps the auth state");
    assert_eq!(client.signed_auth_token().as_deref(), Some(token.as_str()));
    assert_eq!(ch.state(), ChannelState::Pending);

    // Reconnect: the stored token in the handshake.
    let ev = rt.open(&client).await;
    let ClientEvent::Connect { is_authenticated, auth_error, .. } = ev else { panic!() };
    assert!(is_authenticated);
    assert_eq!(auth_error, None);
    assert_eq!(
        events.authenticate.next().now_or_never(),
        Some(Some(ClientEvent::Authenticate { signed_auth_token: token.clone() })),
        "authenticate before connect"
    );
    assert_eq!(
        rt.next(&mut subscribes, "private/y again").await,
        ClientEvent::Subscribe { channel: "private/y".into() }
    );
    assert_claims(&whoami(&rt, &client).await, &erin);
    events.none_for_a_while(&rt, "reconnect with the stored token").await;

    // authenticate() while closed: connects (the handshake has the token), then authenticates.
    client.disconnect(1000, "");
    rt.next(&mut disconnects, "the second disconnect").await;
    assert_eq!(client.state(), ClientState::Closed);
    let mut connects = client.listener("connect");
    assert_eq!(rt.bounded("authenticate while closed", client.authenticate(&token)).await, Ok(()));
    let ClientEvent::Connect { is_authenticated, .. } = rt.next(&mut connects, "connect").await else {
        panic!()
    };
    assert!(is_authenticated);
    // Two authenticate events (handshake, #authenticate), still no state change.
    assert_eq!(events.authenticated(&rt).await, token);
    assert_eq!(events.authenticated(&rt).await, token);
    assert_eq!(client.auth_state(), AuthState::Authenticated);
    events.none_for_a_while(&rt, "authenticate while closed").await;
    assert_claims(&whoami(&rt, &client).await, &erin);
}

/// A stored token the server rejects: `connect` with `is_authenticated: false` and
/// AuthTokenInvalidError; the token is removed from the store (not sent again); no auth state
/// change (the client was never authenticated).
async fn invalid_stored_token(rt: Rt) {
    let server = server();
    let foreign = JwtAuth::hs256("another key").sign(&json!({"user": "mallory"}), None).unwrap();
    let store = Arc::new(MemoryTokenStore::new(Some(foreign.clone())));
    let client = rt.client(ClientOptions { token_store: Some(store.clone()), ..options(&server) });
    // As in socketcluster-client, `signedAuthToken` is null until a handshake accepted the token.
    assert_eq!(client.signed_auth_token(), None, "stored, not yet accepted");
    assert_eq!(store.load(), Some(foreign));
    assert_eq!(client.auth_state(), AuthState::Unauthenticated);
    let mut events = AuthEvents::new(&client);
    let mut frames = client.listener("message");
    let ClientEvent::Connect { is_authenticated, auth_error, .. } = rt.open(&client).await else { panic!() };
    assert!(!is_authenticated);
    let e = auth_error.expect("an auth error");
    assert_eq!(e.name(), "AuthTokenInvalidError", "{e:?}");
    assert_eq!(e.message(), "invalid signature", "{e:?}");
    assert_eq!(client.auth_state(), AuthState::Unauthenticated);
    assert_eq!(client.signed_auth_token(), None);
    assert_eq!(client.auth_token(), None);
    assert_eq!(store.load(), None, "the rejected token was removed from the store");
    // The server also sends #removeAuthToken.
    loop {
        let ClientEvent::Message(text) = rt.next(&mut frames, "#removeAuthToken").await else { panic!() };
        if text.contains("#removeAuthToken") {
            break;
        }
    }
    events.none_for_a_while(&rt, "a rejected handshake token").await;
    assert_eq!(whoami(&rt, &client).await, Value::Null);

    // The next connection sends no token.
    let mut disconnects = client.listener("disconnect");
    client.disconnect(1000, "");
    rt.next(&mut disconnects, "disconnect").await;
    let ClientEvent::Connect { is_authenticated, auth_error, .. } = rt.open(&client).await else { panic!() };
    assert!(!is_authenticated);
    assert_eq!(auth_error, None, "the bad token was sent again");
}

/// A `FileTokenStore` keeps the login across client instances: the second client connects
/// authenticated without logging in; `deauthenticate()` deletes the file.
async fn file_token_store_persists_across_clients(rt: Rt) {
    let server = server();
    let path = temp_path(&rt, "token");
    let _cleanup = TempFile(path.clone());
    let _ = std::fs::remove_file(&path);
    let frank = json!({"user": "frank"});

    let first = rt.client(ClientOptions {
        token_store: Some(Arc::new(FileTokenStore::new(&path))),
        ..options(&server)
    });
    rt.open(&first).await;
    let mut events = AuthEvents::new(&first);
    let token = login(&rt, &first, &mut events, frank.clone()).await;
    assert_eq!(FileTokenStore::new(&path).load().as_deref(), Some(token.as_str()));
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);
    let mut disconnects = first.listener("disconnect");
    first.disconnect(1000, "");
    rt.next(&mut disconnects, "disconnect").await;
    drop(first);

    let second = rt.client(ClientOptions {
        token_store: Some(Arc::new(FileTokenStore::new(&path))),
        ..options(&server)
    });
    assert_eq!(second.signed_auth_token(), None, "stored, not yet accepted");
    let mut events = AuthEvents::new(&second);
    let ClientEvent::Connect { is_authenticated, .. } = rt.open(&second).await else { panic!() };
    assert!(is_authenticated);
    assert_eq!(second.signed_auth_token().as_deref(), Some(token.as_str()), "accepted by the handshake");
    events.changed(&rt, AuthState::Unauthenticated, AuthState::Authenticated).await;
    assert_eq!(events.authenticated(&rt).await, token);
    assert_eq!(second.auth_state(), AuthState::Authenticated);
    assert_claims(&whoami(&rt, &second).await, &frank);

    second.deauthenticate();
    assert!(!path.exists(), "deauthenticate() removes the token file");
    assert_eq!(whoami(&rt, &second).await, Value::Null);
}

/// Without a `token_store` the token lives in memory: kept across reconnects of one client,
/// unknown to another client.
async fn memory_token_store_is_the_default(rt: Rt) {
    let server = server();
    let client = rt.client(options(&server));
    rt.open(&client).await;
    let mut events = AuthEvents::new(&client);
    let gina = json!({"user": "gina"});
    let token = login(&rt, &client, &mut events, gina.clone()).await;
    let mut disconnects = client.listener("disconnect");
    client.disconnect(1000, "");
    rt.next(&mut disconnects, "disconnect").await;
    let ClientEvent::Connect { is_authenticated, .. } = rt.open(&client).await else { panic!() };
    assert!(is_authenticated, "the token was kept in memory");
    assert_eq!(client.signed_auth_token(), Some(token));
    assert_claims(&whoami(&rt, &client).await, &gina);

    let other = rt.client(options(&server));
    assert_eq!(other.signed_auth_token(), None);
    let ClientEvent::Connect { is_authenticated, .. } = rt.open(&other).await else { panic!() };
    assert!(!is_authenticated, "a new client has its own store");
    assert_eq!(whoami(&rt, &other).await, Value::Null);
}

/// A token store whose `save` fails: an `error` event each time, the client is authenticated all
/// the same (`#setAuthToken` and `authenticate()`).
#[derive(Debug, Default)]
struct FailingStore {
    saves: AtomicUsize,
}

impl TokenStore for FailingStore {
    fn load(&self) -> Option<String> {
        None
    }

    fn save(&self, _token: &str) -> Result<(), String> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        Err(String::from("disk full"))
    }

    fn remove(&self) {}
}

async fn failing_token_store_save(rt: Rt) {
    let server = server();
    let store = Arc::new(FailingStore::default());
    let client = rt.client(ClientOptions { token_store: Some(store.clone()), ..options(&server) });
    rt.open(&client).await;
    let mut events = AuthEvents::new(&client);
    let mut errors = client.listener("error");
    let kate = json!({"user": "kate"});
    let token = login(&rt, &client, &mut events, kate.clone()).await;
    let ClientEvent::Error(e) = rt.next(&mut errors, "the save error").await else { panic!() };
    assert!(e.message().contains("disk full"), "{e:?}");
    eprintln!("[{}] a failed save is reported as {}", rt.name, e.as_value());
    assert_eq!(store.saves.load(Ordering::SeqCst), 1);
    events.changed(&rt, AuthState::Unauthenticated, AuthState::Authenticated).await;
    assert_eq!(client.auth_state(), AuthState::Authenticated);
    assert_eq!(client.signed_auth_token().as_deref(), Some(token.as_str()));
    assert_claims(&whoami(&rt, &client).await, &kate);

    // authenticate(): resolves, another error event, still authenticated.
    let signed = JwtAuth::hs256(KEY).sign(&json!({"user": "kate2"}), None).unwrap();
    assert_eq!(rt.bounded("authenticate", client.authenticate(&signed)).await, Ok(()));
    let ClientEvent::Error(e) = rt.next(&mut errors, "the second save error").await else { panic!() };
    assert!(e.message().contains("disk full"), "{e:?}");
    assert_eq!(events.authenticated(&rt).await, signed);
    assert_eq!(client.auth_state(), AuthState::Authenticated);
    assert_eq!(client.signed_auth_token(), Some(signed));
    assert_eq!(whoami(&rt, &client).await["user"], "kate2");
    events.none_for_a_while(&rt, "after the second save").await;

    // Nothing was stored, so the next handshake has no token: the client leaves the
    // authenticated state (as SocketCluster's does when its engine loads no token).
    let mut disconnects = client.listener("disconnect");
    client.disconnect(1000, "");
    rt.next(&mut disconnects, "disconnect").await;
    assert_eq!(client.auth_state(), AuthState::Authenticated);
    let ClientEvent::Connect { is_authenticated, .. } = rt.open(&client).await else { panic!() };
    assert!(!is_authenticated);
    events.changed(&rt, AuthState::Authenticated, AuthState::Unauthenticated).await;
    assert_eq!(rt.next(&mut events.deauthenticate, "deauthenticate").await, ClientEvent::Deauthenticate);
    assert_eq!(client.signed_auth_token(), None);
}

/// The JS server's tokens verify with `JwtAuth::hs256(KEY)`, and tokens signed by it are
/// accepted by the JS server, in the handshake and in `authenticate()`; another key's are not.
async fn tokens_are_compatible_with_jwt_auth(rt: Rt) {
    let server = server();
    let auth = JwtAuth::hs256(KEY);
    let client = rt.client(options(&server));
    rt.open(&client).await;
    let mut events = AuthEvents::new(&client);
    let hal = json!({"user": "hal", "n": 9000});
    let token = login(&rt, &client, &mut events, hal.clone()).await;
    let verified = auth.verify(&token).expect("the JS server's token verifies with JwtAuth::hs256");
    assert_claims(&verified, &hal);
    assert_eq!(Some(verified), client.auth_token());
    assert_eq!(JwtAuth::hs256("wrong").verify(&token).unwrap_err().name(), "AuthTokenInvalidError");

    // Ours, in authenticate().
    let ivy = json!({"user": "ivy"});
    let signed = auth.sign(&ivy, None).unwrap();
    assert_eq!(rt.bounded("authenticate", client.authenticate(&signed)).await, Ok(()));
    assert_claims(&whoami(&rt, &client).await, &ivy);

    // Ours, in the handshake.
    let jay = json!({"user": "jay"});
    let signed = auth.sign(&jay, Some(Duration::from_secs(60))).unwrap();
    let other = rt.client(ClientOptions { auth_token: Some(signed), ..options(&server) });
    let ClientEvent::Connect { is_authenticated, auth_error, .. } = rt.open(&other).await else { panic!() };
    assert!(is_authenticated, "{auth_error:?}");
    let me = whoami(&rt, &other).await;
    assert_eq!(me["user"], "jay");
    assert_eq!(me["exp"].as_u64().unwrap() - me["iat"].as_u64().unwrap(), 60);

    // Another key's: refused.
    let bad = JwtAuth::hs256("another key").sign(&jay, None).unwrap();
    let e = remote(rt.bounded("authenticate(foreign)", client.authenticate(&bad)).await);
    assert_eq!((e.name(), e.message()), ("AuthTokenInvalidError", "invalid signature"));
    assert_eq!(client.auth_state(), AuthState::Unauthenticated);
}
