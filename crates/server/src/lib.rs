//! The Wharf HTTP server.
//!
//! One request, one path: the [`action`] router turns method + path + query
//! into a typed [`action::Action`] before anything else runs; [`handlers`]
//! carries it out on the registry core (`store::Registry`) and turns the
//! result into HTTP.

pub mod action;
pub mod auth;
pub mod config;
pub mod conn;
pub mod events;
pub mod handlers;
mod health;
mod listener;
pub mod metrics;
mod mirror;
pub mod origin;
mod response;
mod serve;
pub mod sources;
mod stall;
pub mod tls;
mod ui;
mod upload_slots;

pub use config::Config;
pub use serve::{init_logging, run, run_on, s3_config};
