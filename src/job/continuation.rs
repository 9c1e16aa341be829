//! Continuation tokens: a job a client may come back for, carried in the
//! URL of a Baton-served monitor (`/.baton/jobs/{token}`).
//!
//! The token holds the route and the backend's status URL, signed with
//! HMAC-SHA256. Baton keeps no state for it, so any instance with the same
//! key can serve it; a token that was forged or altered does not verify
//! and costs no backend call.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Where Baton serves continuation monitors.
pub const PREFIX: &str = "/.baton/jobs/";

pub struct Continuation {
    key: hmac::Key,
}

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    #[serde(rename = "r")]
    pub route: String,
    #[serde(rename = "u")]
    pub status_url: String,
    #[serde(rename = "i")]
    pub job_id: String,
    /// The URI of the submit, for results re-read from it.
    #[serde(rename = "o")]
    pub original: String,
}

impl Continuation {
    pub fn new(secret: &[u8]) -> Self {
        Continuation {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A key of this process alone: tokens die with it.
    pub fn random() -> Self {
        let secret: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
        Self::new(&secret)
    }

    /// The monitor path for `ticket`.
    pub fn monitor(&self, ticket: &Ticket) -> String {
        // Serializing three strings cannot fail.
        let payload = serde_json::to_vec(ticket).unwrap_or_default();
        let tag = hmac::sign(&self.key, &payload);
        format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// The ticket behind a token, if the token is genuine.
    pub fn open(&self, token: &str) -> Option<Ticket> {
        let (payload, tag) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.key, &payload, &tag).ok()?;
        serde_json::from_slice(&payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket {
            route: "reports".into(),
            status_url: "http://backend/status/1".into(),
            job_id: "1".into(),
            original: "http://backend/reports".into(),
        }
    }

    #[test]
    fn tokens_round_trip_and_resist_tampering() {
        let c = Continuation::new(&[7u8; 32]);
        let path = c.monitor(&ticket());
        let token = path.strip_prefix(PREFIX).unwrap();
        assert_eq!(c.open(token), Some(ticket()));
        // Another instance with the same key accepts it; another key does not.
        assert_eq!(Continuation::new(&[7u8; 32]).open(token), Some(ticket()));
        assert_eq!(Continuation::new(&[8u8; 32]).open(token), None);

        let (payload, tag) = token.split_once('.').unwrap();
        let mut forged = ticket();
        forged.status_url = "http://evil/".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(c.open(&format!("{forged_payload}.{tag}")), None);
        assert_eq!(c.open(payload), None);
        assert_eq!(c.open("garbage"), None);
        assert_eq!(c.open(""), None);
    }
}
