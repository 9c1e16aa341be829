//! Continuation tokens: a job a client may come back for, carried in the
//! URL of a Baton-served monitor (`/.baton/jobs/{token}`).
//!
//! The token holds the route and the backend's status URL, sealed with
//! AES-256-GCM under a key derived (HMAC-SHA256) from the configured
//! secret: authenticated, so a forged or altered token does not open and
//! costs no backend call; and opaque, so clients do not learn the
//! backend's internal addresses. Baton keeps no state for it, so any
//! instance with the same secret can serve it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// Where Baton serves continuation monitors.
pub const PREFIX: &str = "/.baton/jobs/";

pub struct Continuation {
    key: LessSafeKey,
    random: SystemRandom,
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

/// The system's random source failed.
#[derive(Debug, thiserror::Error)]
#[error("no system randomness for {0}; refusing to run with a predictable secret")]
pub struct NoRandomness(pub &'static str);

impl Continuation {
    pub fn new(secret: &[u8]) -> Self {
        // The secret may be any string; the cipher key is derived from it,
        // bound to this one use.
        let derive = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let key = hmac::sign(&derive, b"baton continuation token v1");
        let key = UnboundKey::new(&AES_256_GCM, key.as_ref())
            .expect("an HMAC-SHA256 tag is a valid AES-256 key");
        Continuation {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        }
    }

    /// A key of this process alone: tokens die with it. Without system
    /// randomness there is no key worth having (a zero key would let anyone
    /// forge monitors), so Baton refuses to start.
    pub fn random() -> Result<Self, NoRandomness> {
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| NoRandomness("the continuation key"))?;
        Ok(Self::new(&secret))
    }

    /// The monitor path for `ticket`.
    pub fn monitor(&self, ticket: &Ticket) -> String {
        // Serializing four strings cannot fail.
        let mut sealed = serde_json::to_vec(ticket).unwrap_or_default();
        let mut nonce = [0u8; NONCE_LEN];
        if self.random.fill(&mut nonce).is_err() {
            // A repeated nonce would expose the key stream: hand out a
            // monitor that leads nowhere rather than seal with zeros.
            tracing::error!("no system randomness for a continuation nonce");
            return PREFIX.to_owned();
        }
        if self
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .is_err()
        {
            return PREFIX.to_owned();
        }
        let mut token = nonce.to_vec();
        token.extend_from_slice(&sealed);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(token))
    }

    /// The ticket behind a token, if the token is genuine.
    pub fn open(&self, token: &str) -> Option<Ticket> {
        let mut bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).ok()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut sealed)
            .ok()?;
        serde_json::from_slice(plain).ok()
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
        assert!(!path.contains("backend"), "opaque: {path}");
        assert_ne!(c.monitor(&ticket()), path, "a fresh nonce each time");
        // Another instance with the same secret accepts it; another does not.
        assert_eq!(Continuation::new(&[7u8; 32]).open(token), Some(ticket()));
        assert_eq!(Continuation::new(&[8u8; 32]).open(token), None);

        let mut bytes = URL_SAFE_NO_PAD.decode(token).unwrap();
        for i in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[i] ^= 1;
            assert_eq!(
                c.open(&URL_SAFE_NO_PAD.encode(&bytes)),
                None,
                "flipped byte {i}"
            );
            bytes[i] ^= 1;
        }
        assert_eq!(c.open(&token[..token.len() - 2]), None);
        assert_eq!(c.open("garbage"), None);
        assert_eq!(c.open(""), None);
        assert!(Continuation::random().unwrap().open(token).is_none());
    }
}
