//! The pgsnapman coordinator: owns the catalog (Postgres through sqlx), serves
//! the Admin service to `pgsnap` and the Worker service to workers, leases
//! ad-hoc tasks and applies the events workers upload.

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod dashboard;
pub mod embedded;
pub mod enrollment;
pub mod error;
pub mod health;
pub mod identity;
pub mod link;
pub mod metrics;
pub mod notify;
pub mod pki;
pub mod rows;
pub mod server;
pub mod streams;
pub mod wake;
pub mod watch;
pub mod window;
