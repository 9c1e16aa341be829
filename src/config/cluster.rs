//! The `[cluster]` table: the Redis that several instances share state
//! through, validated into a [`ClusterConfig`].

use std::time::Duration;

use super::context::{valid_name, Cx};
use super::raw::RawCluster;
use super::{defaults, ConfigError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub redis: String,
    /// Prefix of every key and channel, so deployments can share a Redis.
    pub namespace: String,
    /// How long a leader's claim on a job survives its instance.
    pub lease: Duration,
}

impl Cx<'_> {
    pub(super) fn cluster(&self, raw: &RawCluster) -> Result<ClusterConfig, ConfigError> {
        let redis = self.value(
            &raw.redis,
            || "cluster.redis".to_owned(),
            |url| {
                let parsed =
                    url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL ({e})"))?;
                match parsed.scheme() {
                    "redis" | "rediss" => Ok(url.to_owned()),
                    other => Err(format!(
                        "{other}:// is not a Redis URL; write redis://host:port"
                    )),
                }
            },
        )?;
        let namespace = match &raw.namespace {
            None => defaults::NAMESPACE.to_owned(),
            Some(n) => self.value(
                n,
                || "cluster.namespace".to_owned(),
                |n| {
                    if valid_name(n) {
                        Ok(n.to_owned())
                    } else {
                        Err("a namespace is letters, digits, `-` and `_`".to_owned())
                    }
                },
            )?,
        };
        Ok(ClusterConfig {
            redis,
            namespace,
            lease: self.duration(
                raw.lease.as_ref(),
                || "cluster.lease".to_owned(),
                defaults::LEASE,
            )?,
        })
    }
}
