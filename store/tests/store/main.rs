//! End-to-end tests of the store on real files in temporary directories: one
//! binary (`store`) with a module per area.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod basics;
mod crash;
mod damage;
mod delta;
mod encryption;
mod feed;
mod gc;
mod golden;
mod golden_v3;
mod helpers;
mod later;
mod positional;
