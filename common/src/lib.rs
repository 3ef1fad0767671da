//! What the three chat transports share, and nothing transport-specific.
//!
//! A service is a [`Service`] (its transport name, how it frames a message,
//! its own routes and settings) run by [`Application`] on top of:
//! - [`message`]: the message model (the `wire` crate's types) and the
//!   [`Draft`](message::Draft) a publish becomes;
//! - [`config`]: the settings every service reads from the environment;
//! - [`broker`]: ids, history and cross-instance delivery (Redis, or in
//!   process);
//! - [`hub`]: this instance's per-room buffers and fan-out to its clients;
//! - [`publisher`]: the one path every publish takes;
//! - [`session`]: a streaming client's connection (SSE or WebSocket);
//! - [`http`]: the shared routes (publish, history, health, readiness,
//!   metrics), extractors, CORS;
//! - [`error`]: every failure as a status code and a JSON body;
//! - [`client`] (who a request comes from), [`limits`] (publish rate,
//!   connection caps), [`metrics`];
//! - [`startup`] (building a service) and [`cli`] (every binary's `main`).
//!
//! Dependencies point one way: services use `common`, never each other.

pub mod auth;
pub mod backoff;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod evacuation;
pub mod http;
pub mod hub;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod publisher;
pub mod quiet;
pub mod session;
pub mod startup;

pub use config::Config;
pub use error::ApiError;
pub use message::{Message, RoomName, Via};
pub use startup::{Application, Routes, Service};
