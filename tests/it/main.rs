//! Integration tests: the real server on loopback, called with the generated tonic
//! clients, on SQLite and again on PostgreSQL (`FERRY_TEST_DATABASE_URL`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed test setup should panic"
)]

mod support;

mod auth;
mod entities;
mod queue;
mod server;
