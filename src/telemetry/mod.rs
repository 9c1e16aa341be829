//! What Baton tells about itself: the correlation ids every request
//! carries, and the Prometheus metrics.

pub(crate) mod correlation;
pub(crate) mod metrics;
