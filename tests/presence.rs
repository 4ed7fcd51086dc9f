//! Presence (our extension): members and join/leave events stay right across unsubscribe,
//! kick-out, an abrupt disconnect and shedding (1013); the user field of the token; the
//! `#presence` procedure, its rules and its middleware. On smol and on tokio.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/util.rs"]
mod util;
#[macro_use]
#[path = "support/raw.rs"]
mod raw;

use std::time::Duration;

use serde_json::{Value, json};
use socketcluster::protocol::RemoteError;
use socketcluster::server::{
    Blocked, InboundAction, Middleware, PresenceEvent, PresenceMember, ServerEvent, ServerOptions,
};

use raw::{Harness, Raw, Rt, next_ev};

fn options() -> ServerOptions {
    ServerOptions {
        presence_user_field: Some(String::from("username")),
        client_presence: true,
        outbound_limit: Some(50),
        ping_timeout_disabled: true,
        middleware: Middleware::new().inbound(|action| async move {
            if let InboundAction::Invoke { procedure, data, .. } = &action
                && procedure == "#presence"
                && data.as_ref().and_then(|d| d.get("channel")).and_then(Value::as_str) == Some("secret")
            {
                return Err(Blocked::with(RemoteError::new("ForbiddenError", "not for you")));
            }
            Ok(action)
        }),
        ..ServerOptions::default()
    }
}

fn member(id: &str, user: Option<&str>) -> PresenceMember {
    PresenceMember { socket_id: id.to_string(), user: user.map(|u| json!(u)) }
}

fn ids(members: &[PresenceMember]) -> Vec<String> {
    let mut v: Vec<String> = members.iter().map(|m| m.socket_id.clone()).collect();
    v.sort();
    v
}

async fn counts_stay_right_across_every_way_of_leaving(rt: Rt) {
    let h = Harness::start(rt, options()).await;
    let ex = h.server.exchange().clone();
    let mut room = ex.presence_listener("room");
    let mut disconnections = h.server.listener("disconnection");

    let token = h.server.auth().sign(&json!({"username": "ann"}), None).unwrap();
    let mut a = Raw::connect(h.addr).await;
    let id_a = a.handshake(json!(token)).await["data"]["id"].as_str().unwrap().to_string();
    let (mut b, id_b) = Raw::open(h.addr).await;
    let (mut c, id_c) = Raw::open(h.addr).await;
    let (mut d, id_d) = Raw::open(h.addr).await;
    for (raw, cid) in [(&mut a, 2), (&mut b, 2), (&mut c, 2), (&mut d, 2)] {
        raw.subscribe(cid, "room").await;
    }
    let mut joined = Vec::new();
    for _ in 0..4 {
        let PresenceEvent::Join(m) = next_ev(&mut room, "a join").await else { panic!("a join first") };
        joined.push(m);
    }
    assert!(joined.contains(&member(&id_a, Some("ann"))), "the token's username: {joined:?}");
    assert_eq!(ids(&ex.presence("room")), {
        let mut v = vec![id_a.clone(), id_b.clone(), id_c.clone(), id_d.clone()];
        v.sort();
        v
    });
    // Subscribing again changes nothing.
    b.subscribe(3, "room").await;
    assert_eq!(ex.presence_count("room"), 4);

    // Unsubscribe.
    assert_eq!(d.call(4, "#unsubscribe", json!("room")).await, json!({"rid": 4}));
    assert_eq!(next_ev(&mut room, "d leaves").await, PresenceEvent::Leave(member(&id_d, None)));
    // Kick-out.
    let sa = h.server.client(&id_a).unwrap();
    assert!(sa.kick_out("room", "bye").await);
    assert_eq!(next_ev(&mut room, "a is kicked out").await, PresenceEvent::Leave(member(&id_a, Some("ann"))));
    // An abrupt disconnect (the TCP connection dropped, no close frame).
    drop(b);
    assert_eq!(next_ev(&mut room, "b drops").await, PresenceEvent::Leave(member(&id_b, None)));
    assert_eq!(ids(&ex.presence("room")), vec![id_c.clone()]);
    // Shedding: c stops reading while the channel is flooded.
    let pad = "x".repeat(16 * 1024);
    let mut shed = false;
    for i in 0..4000u32 {
        ex.transmit_publish("room", json!({"i": i, "pad": pad})).await.unwrap();
        if ex.presence_count("room") == 0 {
            shed = true;
            break;
        }
        if i % 64 == 0 {
            rt.sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(shed, "c was shed");
    assert_eq!(next_ev(&mut room, "c is shed").await, PresenceEvent::Leave(member(&id_c, None)));
    loop {
        if let ServerEvent::Disconnection { socket, code, .. } =
            next_ev(&mut disconnections, "c's 1013").await
            && socket.id() == id_c
        {
            assert_eq!(code, 1013);
            break;
        }
    }
    assert!(ex.presence("room").is_empty());
    assert_eq!(h.server.stats().subscriptions, 0, "the same count the stats keep");
    drop((a, c, d));
}

async fn clients_ask_with_the_presence_procedure(rt: Rt) {
    let h = Harness::start(rt, options()).await;
    let token = h.server.auth().sign(&json!({"username": "bob"}), None).unwrap();
    let mut a = Raw::connect(h.addr).await;
    let id_a = a.handshake(json!(token)).await["data"]["id"].as_str().unwrap().to_string();
    let (mut b, id_b) = Raw::open(h.addr).await;
    a.subscribe(2, "room").await;
    b.subscribe(2, "room").await;
    b.subscribe(3, "secret").await;
    let r = b.call(4, "#presence", json!({"channel": "room"})).await;
    assert_eq!(r["data"]["count"], 2, "{r}");
    let mut members = r["data"]["members"].as_array().unwrap().clone();
    members.sort_by_key(|m| m["id"].as_str().unwrap().to_string());
    let mut expected = vec![json!({"id": id_a, "user": "bob"}), json!({"id": id_b, "user": null})];
    expected.sort_by_key(|m| m["id"].as_str().unwrap().to_string());
    assert_eq!(members, expected);
    // Only channels the socket is subscribed to.
    let r = a.call(3, "#presence", json!({"channel": "elsewhere"})).await;
    assert_eq!(r["error"]["name"], "InvalidActionError", "{r}");
    // Middleware may refuse.
    let r = b.call(5, "#presence", json!({"channel": "secret"})).await;
    assert_eq!(r["error"], json!({"message": "not for you", "name": "ForbiddenError"}), "{r}");
    // Bad arguments.
    let r = b.call(6, "#presence", json!(42)).await;
    assert_eq!(r["error"]["name"], "InvalidArgumentsError", "{r}");
    // Without client_presence, `#presence` is an ordinary procedure (nobody answers here).
    let h2 = Harness::start(rt, ServerOptions::default()).await;
    let (mut c, _) = Raw::open(h2.addr).await;
    c.subscribe(2, "room").await;
    c.json(json!({"event": "#presence", "data": {"channel": "room"}, "cid": 3})).await;
    c.json(json!({"event": "echo", "data": 1, "cid": 4})).await;
    assert_eq!(c.packet().await, json!({"rid": 4, "data": 1}), "no presence answer came first");
}

on_both_runtimes!(counts_stay_right_across_every_way_of_leaving, clients_ask_with_the_presence_procedure);
