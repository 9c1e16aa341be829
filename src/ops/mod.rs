//! Running Baton: the admin listener (metrics, health, readiness), process
//! signals (drain, reload) and `baton demo`.

pub(crate) mod admin;
pub mod demo;
pub mod signals;
