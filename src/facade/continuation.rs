//! Continuation tokens: a job a client may come back for, carried in the
//! URL of a Baton-served monitor (`/.baton/jobs/{token}`).
//!
//! The token holds the route, the backend's status URL and an expiry,
//! sealed with AES-256-GCM under a key derived (HMAC-SHA256) from the
//! configured secret: authenticated, so a forged or altered token does not
//! open and costs no backend call; and opaque, so clients do not learn the
//! backend's internal addresses. Baton keeps no state for it, so any
//! instance with the same secret can serve it.
//!
//! The format is versioned and names its key, so a secret can be rotated:
//!
//! ```text
//! base64url( version (1 byte, 2) | key id (4) | nonce (12) | sealed )
//! sealed = AES-256-GCM( expiry (u64 BE, Unix seconds) | ticket as JSON ),
//!          with version and key id as associated data
//! ```
//!
//! The key id is derived from the secret, so nothing but the secrets is
//! configured: `continuation_key` seals, and `continuation_keys` (earlier
//! secrets) still open the tokens they sealed until those expire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Where Baton serves continuation monitors.
pub const PREFIX: &str = "/.baton/jobs/";

/// The token format this code writes and reads.
const VERSION: u8 = 2;
const KEY_ID_LEN: usize = 4;
/// Version and key id: the part of a token that is read before opening.
const HEADER_LEN: usize = 1 + KEY_ID_LEN;
const EXPIRY_LEN: usize = 8;

pub struct Continuation {
    /// Seals new tokens (and opens them).
    current: Key,
    /// Earlier secrets: they open what they sealed, and seal nothing.
    previous: Vec<Key>,
    /// How long a token opens after it was made.
    ttl: Duration,
    random: SystemRandom,
}

/// One secret, as the cipher key and the id tokens name it by.
struct Key {
    id: [u8; KEY_ID_LEN],
    aead: LessSafeKey,
}

impl Key {
    fn derive(secret: &[u8]) -> Self {
        // The secret may be any string; the cipher key and the id are
        // derived from it, each bound to its one use.
        let derive = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let cipher = hmac::sign(&derive, b"baton continuation token v2");
        let aead = UnboundKey::new(&AES_256_GCM, cipher.as_ref())
            .expect("an HMAC-SHA256 tag is a valid AES-256 key");
        let tag = hmac::sign(&derive, b"baton continuation key id");
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&tag.as_ref()[..KEY_ID_LEN]);
        Key {
            id,
            aead: LessSafeKey::new(aead),
        }
    }
}

pub use crate::store::Ticket;

/// Why a token does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a token of ours: forged, altered, another format, or sealed
    /// with a secret this instance does not hold.
    Unknown,
    /// Genuine, but past its expiry.
    Expired,
}

/// The system's random source failed.
#[derive(Debug, thiserror::Error)]
#[error("no system randomness for {0}; refusing to run with a predictable secret")]
pub struct NoRandomness(pub(crate) &'static str);

impl Continuation {
    /// Seals with `secret`; also opens tokens sealed with any of
    /// `previous`. Tokens live for `ttl`.
    pub fn new(secret: &[u8], previous: &[&[u8]], ttl: Duration) -> Self {
        Continuation {
            current: Key::derive(secret),
            previous: previous.iter().map(|s| Key::derive(s)).collect(),
            ttl,
            random: SystemRandom::new(),
        }
    }

    /// A key of this process alone: tokens die with it. Without system
    /// randomness there is no key worth having (a zero key would let anyone
    /// forge monitors), so Baton refuses to start.
    pub fn random(ttl: Duration) -> Result<Self, NoRandomness> {
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| NoRandomness("the continuation key"))?;
        Ok(Self::new(&secret, &[], ttl))
    }

    /// The monitor path for `ticket`.
    pub fn monitor(&self, ticket: &Ticket) -> String {
        self.monitor_at(ticket, SystemTime::now())
    }

    fn monitor_at(&self, ticket: &Ticket, now: SystemTime) -> String {
        let expiry = unix_seconds(now).saturating_add(self.ttl.as_secs());
        let mut sealed = expiry.to_be_bytes().to_vec();
        // Serializing four strings cannot fail.
        sealed.extend(serde_json::to_vec(ticket).unwrap_or_default());
        let mut nonce = [0u8; NONCE_LEN];
        if self.random.fill(&mut nonce).is_err() {
            // A repeated nonce would expose the key stream: hand out a
            // monitor that leads nowhere rather than seal with zeros.
            tracing::error!("no system randomness for a continuation nonce");
            return PREFIX.to_owned();
        }
        let mut token = Vec::with_capacity(HEADER_LEN + NONCE_LEN + sealed.len() + 16);
        token.push(VERSION);
        token.extend_from_slice(&self.current.id);
        let aad = Aad::from(token.clone());
        let nonce_value = Nonce::assume_unique_for_key(nonce);
        if self
            .current
            .aead
            .seal_in_place_append_tag(nonce_value, aad, &mut sealed)
            .is_err()
        {
            return PREFIX.to_owned();
        }
        token.extend_from_slice(&nonce);
        token.extend_from_slice(&sealed);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(token))
    }

    /// The ticket behind a token, if the token is genuine and unexpired.
    pub fn open(&self, token: &str) -> Result<Ticket, Refused> {
        self.open_at(token, SystemTime::now())
    }

    fn open_at(&self, token: &str, now: SystemTime) -> Result<Ticket, Refused> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| Refused::Unknown)?;
        if bytes.len() < HEADER_LEN + NONCE_LEN || bytes[0] != VERSION {
            return Err(Refused::Unknown);
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id[..] == header[1..])
            .ok_or(Refused::Unknown)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Refused::Unknown)?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .aead
            .open_in_place(nonce, Aad::from(header), &mut sealed)
            .map_err(|_| Refused::Unknown)?;
        if plain.len() < EXPIRY_LEN {
            return Err(Refused::Unknown);
        }
        let (expiry, ticket) = plain.split_at(EXPIRY_LEN);
        let mut expiry_bytes = [0u8; EXPIRY_LEN];
        expiry_bytes.copy_from_slice(expiry);
        if unix_seconds(now) >= u64::from_be_bytes(expiry_bytes) {
            return Err(Refused::Expired);
        }
        serde_json::from_slice(ticket).map_err(|_| Refused::Unknown)
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn ticket() -> Ticket {
        Ticket {
            route: "reports".into(),
            status_url: "http://backend/status/1".into(),
            job_id: "1".into(),
            original: "http://backend/reports".into(),
            callback: None,
        }
    }

    fn token(path: &str) -> &str {
        path.strip_prefix(PREFIX).unwrap()
    }

    #[test]
    fn tokens_round_trip_and_resist_tampering() {
        let c = Continuation::new(&[7u8; 32], &[], DAY);
        let path = c.monitor(&ticket());
        let token = token(&path);
        assert_eq!(c.open(token), Ok(ticket()));
        assert!(!path.contains("backend"), "opaque: {path}");
        assert_ne!(c.monitor(&ticket()), path, "a fresh nonce each time");
        // Another instance with the same secret accepts it; another does not.
        let same = Continuation::new(&[7u8; 32], &[], DAY);
        assert_eq!(same.open(token), Ok(ticket()));
        let other = Continuation::new(&[8u8; 32], &[], DAY);
        assert_eq!(other.open(token), Err(Refused::Unknown));

        assert_eq!(c.open(&token[..token.len() - 2]), Err(Refused::Unknown));
        assert_eq!(c.open("garbage"), Err(Refused::Unknown));
        assert_eq!(c.open(""), Err(Refused::Unknown));
        let random = Continuation::random(DAY).unwrap();
        assert_eq!(random.open(token), Err(Refused::Unknown));
    }

    proptest! {
        /// Whatever bit of a token flips (version, key id, nonce, sealed
        /// expiry, ticket or tag), it no longer opens.
        #[test]
        fn no_flipped_bit_opens(bit in 0usize..10_000) {
            let c = Continuation::new(&[7u8; 32], &[], DAY);
            let path = c.monitor(&ticket());
            let mut bytes = URL_SAFE_NO_PAD.decode(token(&path)).unwrap();
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(c.open(&URL_SAFE_NO_PAD.encode(&bytes)), Err(Refused::Unknown));
        }

        /// A token opens until its expiry and never after, by a clock
        /// anywhere in the next ten years.
        #[test]
        fn a_token_opens_exactly_until_it_expires(
            ttl in 1u64..400 * 24 * 3600,
            after in 0u64..10 * 365 * 24 * 3600,
        ) {
            let c = Continuation::new(&[7u8; 32], &[], Duration::from_secs(ttl));
            let made = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let path = c.monitor_at(&ticket(), made);
            let opened = c.open_at(token(&path), made + Duration::from_secs(after));
            if after < ttl {
                prop_assert_eq!(opened, Ok(ticket()));
            } else {
                prop_assert_eq!(opened, Err(Refused::Expired));
            }
        }
    }

    #[test]
    fn a_rotated_secret_still_opens_what_it_sealed_and_seals_nothing() {
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let before = Continuation::new(&old, &[], DAY);
        let after = Continuation::new(&new, &[&old], DAY);
        let retired = Continuation::new(&new, &[], DAY);
        let old_path = before.monitor(&ticket());
        assert_eq!(after.open(token(&old_path)), Ok(ticket()));
        assert_eq!(retired.open(token(&old_path)), Err(Refused::Unknown));
        // New tokens are sealed with the new secret: the old one alone
        // cannot open them.
        let new_path = after.monitor(&ticket());
        assert_eq!(before.open(token(&new_path)), Err(Refused::Unknown));
        assert_eq!(retired.open(token(&new_path)), Ok(ticket()));
    }

    #[test]
    fn a_token_names_its_format_and_key() {
        let c = Continuation::new(&[7u8; 32], &[], DAY);
        let bytes = URL_SAFE_NO_PAD
            .decode(token(&c.monitor(&ticket())))
            .unwrap();
        assert_eq!(bytes[0], VERSION);
        assert_eq!(bytes[1..HEADER_LEN], c.current.id);
        // An earlier format (no version byte: a v1 nonce first) is refused
        // without trying to open it.
        let mut v1 = bytes.clone();
        v1[0] = 1;
        assert_eq!(c.open(&URL_SAFE_NO_PAD.encode(&v1)), Err(Refused::Unknown));
    }
}
