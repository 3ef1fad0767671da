//! What keeps one client from starving the others: a publish rate per
//! client over every transport ([`rate`]), and caps on the connections an
//! instance and each client hold ([`connections`]).

pub mod connections;
pub mod rate;

pub use connections::{ConnectionCaps, ConnectionPermit, TooManyConnections};
pub use rate::{PublishLimiter, Rate};
