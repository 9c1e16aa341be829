//! What Baton tells about itself: the correlation ids every request
//! carries, and the Prometheus metrics.

pub mod correlation;
pub mod metrics;
