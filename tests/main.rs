//! Baton's integration tests: one binary, real servers on 127.0.0.1:0,
//! real HTTP on the wire. `support` holds the harness and fake backends.

mod support;

mod broken_backend;
mod callbacks;
mod cli;
mod cluster;
mod config_files;
mod demo;
mod facade;
mod facade_edges;
mod fault_matrix;
mod hostile;
mod idempotency;
mod lanes;
mod layering;
mod operations;
mod passthrough;
mod reload_drain;
mod shutdown;
mod streaming;
mod tls;
mod websocket;
