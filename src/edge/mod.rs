//! Where connections come in and go out: the listeners, the one accept
//! loop, the lanes (a thread per core) that run connections, each
//! connection's HTTP, and the drain at shutdown. Nothing here knows what a
//! route is: the edge serves whatever service it is given.

pub(crate) mod accept;
pub mod connection;
pub(crate) mod lanes;
pub(crate) mod server;
