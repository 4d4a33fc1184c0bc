//! End-to-end scenarios: real PostgreSQL clusters, the real coordinator and
//! worker binaries, driven through the real `pgsnap` CLI. One binary, one
//! module per scenario.

mod common;

mod dump_now;
mod embedded;
mod exactly_once;
mod failures;
mod reconnect;
mod shutdown;
