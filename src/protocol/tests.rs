//! Unit tests of the sans-IO protocol (more in tests/protocol.rs).
