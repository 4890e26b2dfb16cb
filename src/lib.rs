//! ferry: bulk export and import jobs over an organization's entities, served over gRPC.

pub mod api;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod calendar;
pub mod cli;
pub mod client;
pub mod config;
pub mod db;
pub mod exchange;
pub mod export;
pub mod formula_guard;
pub mod hostile;
pub mod import;
pub mod jobs;
pub mod mail;
pub mod metrics;
pub mod notifications;
pub mod orgs;
pub mod private_file;
pub mod proto;
pub mod request;
pub mod rest;
pub mod scratch;
pub mod server;
pub mod storage;
