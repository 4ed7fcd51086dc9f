//! Fuzzes `WritableConsumableStream` against the reference model shared with the property test
//! (`tests/support/model.rs`): any op sequence, on an unbounded stream or a bounded one
//! (`Overflow::Wait` / `Overflow::KillConsumer`), must behave exactly as the model says.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/model.rs"]
mod model;

/// Longest op sequence run per input (longer inputs are cut, to keep executions fast).
const MAX_OPS: usize = 1024;

fuzz_target!(|input: (model::Kind, Vec<model::Op>)| {
    let (kind, mut ops) = input;
    ops.truncate(MAX_OPS);
    model::run(kind, &ops);
});
