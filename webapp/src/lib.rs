//! The mask detection web application (`mask-web`): a `warp` server composing the detector,
//! `accounts`, `history-store` and `mailer`.
//!
//! The layers, from the request in:
//! - [`server::serve`] accepts connections (head limits) and attaches each one's peer address;
//!   [`client`] turns it into the client address (trusted proxies' `X-Forwarded-For`).
//! - [`routes`] is the whole site, grouped by area; every route is a named filter whose
//!   [`guards`] establish who may call it before the handler runs.
//! - Handlers parse, call a library or a [`services`] function, and render; [`error`] is the one
//!   mapping from library errors to HTTP and the one `recover`.
//! - [`pool`] runs detections on dedicated threads with admission control; [`jobs`] is the
//!   periodic maintenance; [`config`] the sectioned settings.

pub mod app;
pub mod client;
pub mod config;
pub mod error;
pub mod fetch;
pub mod guards;
pub mod jobs;
pub mod multipart;
pub mod pool;
pub mod privacy;
pub mod routes;
pub mod server;
pub mod services;
pub mod web;

pub use app::{App, Clocks, Startup, StartupError};
pub use config::Settings;
pub use routes::routes;
