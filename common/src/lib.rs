//! What the three chat transports share.
//!
//! A service is a [`server::Service`] (its transport name, how it frames a
//! message, its own routes) run by [`server::Application`] on top of:
//! - [`message`]: the message model and input validation;
//! - [`config`]: settings from the environment;
//! - [`broker`]: ids, history and cross-instance delivery (Redis, or in
//!   process);
//! - [`hub`]: this instance's per-room buffers and fan-out to its clients;
//! - [`http`]: the shared routes (publish, history, health, readiness,
//!   metrics), extractors, CORS;
//! - [`error`]: every failure as a status code and a JSON body;
//! - [`metrics`], [`rate_limit`], [`close`] (why connections end).
//!
//! Dependencies point one way: services use `common`, never each other.

pub mod backoff;
pub mod broker;
pub mod close;
pub mod config;
pub mod error;
pub mod http;
pub mod hub;
pub mod message;
pub mod metrics;
pub mod rate_limit;
pub mod server;

pub use config::Config;
pub use error::ApiError;
pub use message::{Message, RoomName, Via};
pub use server::{Application, Service};
