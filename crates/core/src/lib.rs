//! The shared vocabulary of watchnext. Every other crate depends on this one
//! and on nothing else of ours but the wire types, so the pieces of the
//! pipeline agree on what a video id, a device, a request or a configuration
//! is, and on how each failure reaches a client.
//!
//! - [`ids`]: validated identifiers (users, videos, requests).
//! - [`request`]: the domain form of a request's context (device, time,
//!   locale, history) converted from, and validated against, the wire types.
//! - [`config`]: the layered configuration (built-in defaults → TOML file →
//!   `WATCHNEXT__…` environment variables → command-line flags), validated at
//!   start-up with errors that name the key.
//! - [`error`]: the request-validation error and its gRPC status.
//! - [`role`]: the roles one `watchnext` process can serve.
//! - [`registry`]: the one list of candidate generators everything else
//!   derives from.
//!
//! - [`features`]: the feature schema the trainer and the ranker share, so
//!   the two cannot drift apart.
//! - [`model`]: the model contract (a model directory's manifest).

pub mod candidates;
pub mod catalog;
pub mod config;
pub mod datadir;
pub mod error;
pub mod event;
pub mod features;
pub mod fsutil;
pub mod generator;
pub mod history;
pub mod ids;
pub mod model;
pub mod registry;
pub mod request;
pub mod role;
pub mod stages;

pub use config::{Config, ConfigError};
pub use error::InvalidRequest;
pub use ids::{RequestId, UserId, VideoId};
pub use request::{Device, History, Query, RequestContext};
pub use role::Role;
