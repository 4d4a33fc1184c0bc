//! End-to-end scenarios: real PostgreSQL clusters, the real coordinator and
//! worker binaries, driven through the real `pgsnap` CLI. One binary, one
//! module per scenario.

// Test code: a failed unwrap is a failed assertion, with its location.
#![allow(clippy::unwrap_used)]

mod common;

mod alerts;
mod auth;
mod cancel;
mod catalog_events;
mod client_major;
mod coordinators;
mod crash;
mod cross_restore;
mod dashboard;
mod dashboard_plain;
mod discovery;
mod dump_now;
mod dump_types;
mod embedded;
mod encryption;
mod exactly_once;
mod failures;
mod grpc_clients;
mod identity_tls;
mod input_errors;
mod link_faults;
mod log_colour;
mod majors;
mod metadata;
mod metrics;
mod object_store;
mod object_store_pack;
mod offline;
mod outbox_faults;
mod python_api;
mod reconnect;
mod repair;
mod restore;
mod restore_served;
mod restore_served_custom;
mod retention;
mod scale;
mod script_restore;
mod scripts;
mod secrets;
mod shutdown;
mod sslmode;
mod standalone;
mod standby;
mod store;
mod tls;
mod verification;
mod verify;
mod verify_schedule;
mod wakeups;
