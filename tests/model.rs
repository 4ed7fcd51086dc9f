//! Property test: random op sequences applied to a real `WritableConsumableStream` and to the
//! reference model in `support/model.rs` (the fuzz target `stream_ops` runs the same model).
#![allow(clippy::unwrap_used)]

#[path = "support/model.rs"]
mod model;

use model::{Kind, Op};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        2 => Just(Kind::Unbounded),
        1 => any::<u8>().prop_map(Kind::Wait),
        1 => (0u8..12).prop_map(Kind::Wait),
        1 => any::<u8>().prop_map(Kind::KillConsumer),
        1 => (0u8..12).prop_map(Kind::KillConsumer),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let idx = || 0u8..8;
    prop_oneof![
        4 => Just(Op::Create),
        8 => Just(Op::Write),
        2 => any::<u8>().prop_map(Op::WriteMany),
        2 => Just(Op::TryWrite),
        2 => Just(Op::WriteAsyncOnce),
        2 => idx().prop_map(Op::WriteTo),
        1 => (idx(), any::<u8>()).prop_map(|(i, n)| Op::WriteToMany(i, n)),
        1 => any::<bool>().prop_map(|with_value| Op::Close { with_value }),
        1 => (idx(), any::<bool>()).prop_map(|(consumer, with_value)| Op::CloseConsumer { consumer, with_value }),
        1 => any::<bool>().prop_map(|with_value| Op::Kill { with_value }),
        1 => (idx(), any::<bool>()).prop_map(|(consumer, with_value)| Op::KillConsumer { consumer, with_value }),
        1 => idx().prop_map(Op::DropConsumer),
        8 => idx().prop_map(Op::Poll),
        3 => (idx(), any::<u8>()).prop_map(|(i, n)| Op::PollMany(i, n)),
        1 => Just(Op::Check),
    ]
}

/// Same as `op` plus dropping the stream handle (rarely, so that most runs keep writing).
fn op_or_drop_stream() -> impl Strategy<Value = Op> {
    prop_oneof![60 => op(), 1 => Just(Op::DropStream)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn stream_agrees_with_the_model(kind in kind(), ops in prop::collection::vec(op_or_drop_stream(), 0..200)) {
        model::run(kind, &ops);
    }
}

/// A hand-written sequence that exercises every op at least once, so the model itself is run
/// deterministically (and a broken model shows up without shrinking).
#[test]
fn every_op_once_agrees_with_the_model() {
    use Op::*;
    let ops = [
        Create,
        Create,
        Write,
        WriteMany(70),
        TryWrite,
        WriteAsyncOnce,
        WriteTo(1),
        WriteToMany(1, 40),
        Poll(0),
        PollMany(0, 40),
        Check,
        CloseConsumer { consumer: 1, with_value: true },
        PollMany(1, 79),
        Create,
        KillConsumer { consumer: 2, with_value: true },
        Poll(2),
        Create,
        Write,
        Close { with_value: false },
        PollMany(0, 79),
        Create,
        Write,
        Kill { with_value: true },
        PollMany(3, 3),
        PollMany(4, 3),
        Create,
        Write,
        DropConsumer(0),
        DropStream,
        PollMany(5, 3),
        Check,
    ];
    model::run(Kind::Unbounded, &ops);
    model::run(Kind::Wait(3), &ops);
    model::run(Kind::KillConsumer(3), &ops);
}
