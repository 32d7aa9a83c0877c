//! Session-ticket keys shared by several gateways, so that TLS 1.3
//! resumption works whichever instance behind a load balancer answers.
//!
//! rustls's own `Ticketer` makes a random key per process: a ticket from
//! one instance means nothing to another, and every connection the balancer
//! sends elsewhere is a full handshake. [`SharedTicketer`] seals tickets
//! with keys every instance is given (AES-256-GCM from ring), each with the
//! time from which it encrypts:
//!
//! - the newest key whose start time has passed seals new tickets;
//! - a key whose start is still ahead already opens tickets (an instance
//!   whose clock runs ahead may have started using it), so a rotation is
//!   rolled out by distributing the next key *before* its start;
//! - a superseded key still opens tickets for `grace` after its successor
//!   started (by default the ticket lifetime: every ticket it sealed stays
//!   usable for as long as the client may present it), then it is ignored.
//!
//! A ticket is `key id (8) || nonce (12) || ciphertext || tag (16)`; the
//! key id (a hash of the key) is authenticated as associated data and
//! selects the key without trial decryption.
//!
//! # Thread Safety
//! The key set is an immutable snapshot behind an `ArcSwap`: every worker
//! reads it without a lock, and [`SharedTicketer::set_keys`] (the reload)
//! publishes a new one atomically.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// Bytes of a ticket key.
pub const KEY_LEN: usize = 32;
const ID_LEN: usize = 8;
const TAG_LEN: usize = 16;
/// Tickets longer than this are refused before any decryption (a fixed cap
/// rather than "the longest this process sealed": a ticket from another
/// instance must open on a freshly started one). A TLS 1.3 ticket with a
/// client certificate chain is a few KiB at most.
const MAX_TICKET: usize = 16 * 1024;

/// One key as configured: its secret and when it starts sealing tickets.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub not_before: SystemTime,
    pub secret: [u8; KEY_LEN],
}

impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("KeySpec")
            .field("not_before", &self.not_before)
            .field("id", &hex(&key_id(&self.secret)))
            .finish()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_id(secret: &[u8; KEY_LEN]) -> [u8; ID_LEN] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"msc session-ticket key id\0");
    ctx.update(secret);
    let d = ctx.finish();
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&d.as_ref()[..ID_LEN]);
    id
}

struct Key {
    id: [u8; ID_LEN],
    not_before: SystemTime,
    /// When its successor starts (`None`: the newest key).
    superseded: Option<SystemTime>,
    aead: LessSafeKey,
}

/// A validated key set, oldest first.
struct KeySet {
    keys: Vec<Key>,
}

/// Why a key set cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    #[error("no keys")]
    Empty,
    #[error("two keys are the same (key {0} repeats an earlier one)")]
    Duplicate(usize),
    #[error("two keys start at the same time (key {0})")]
    SameStart(usize),
}

impl KeySet {
    fn new(mut specs: Vec<KeySpec>) -> Result<KeySet, KeySetError> {
        if specs.is_empty() {
            return Err(KeySetError::Empty);
        }
        for (i, s) in specs.iter().enumerate() {
            if specs[..i].iter().any(|o| o.secret == s.secret) {
                return Err(KeySetError::Duplicate(i));
            }
            if specs[..i].iter().any(|o| o.not_before == s.not_before) {
                return Err(KeySetError::SameStart(i));
            }
        }
        specs.sort_by_key(|s| s.not_before);
        let starts: Vec<SystemTime> = specs.iter().map(|s| s.not_before).collect();
        let keys = specs
            .iter()
            .enumerate()
            .map(|(i, s)| Key {
                id: key_id(&s.secret),
                not_before: s.not_before,
                superseded: starts.get(i + 1).copied(),
                // 32 bytes is AES-256's key length: this cannot fail.
                aead: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &s.secret).expect("a 32-byte AES-256 key")),
            })
            .collect();
        Ok(KeySet { keys })
    }

    /// The key that seals at `now`: the newest that has started (or, when
    /// none has, the earliest: better than no resumption at all).
    fn sealing(&self, now: SystemTime) -> &Key {
        self.keys
            .iter()
            .rev()
            .find(|k| k.not_before <= now)
            .unwrap_or(&self.keys[0])
    }

    /// Whether `k` still opens tickets at `now`.
    fn opens(k: &Key, now: SystemTime, grace: Duration) -> bool {
        k.superseded.is_none_or(|s| now < s + grace)
    }
}

/// A [`ProducesTickets`] with keys shared between gateway instances.
pub struct SharedTicketer {
    keys: ArcSwap<KeySet>,
    lifetime: u32,
    grace: Duration,
    rng: SystemRandom,
}

impl fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTicketer")
            .field("keys", &self.keys.load().keys.len())
            .field("lifetime", &self.lifetime)
            .field("grace", &self.grace)
            .finish()
    }
}

impl SharedTicketer {
    /// A ticketer with `keys`; tickets are announced with `lifetime`
    /// (seconds, at most 7 days as RFC 8446 allows) and superseded keys open
    /// tickets for `grace` after their successor started.
    pub fn new(keys: Vec<KeySpec>, lifetime: Duration, grace: Duration) -> Result<SharedTicketer, KeySetError> {
        let lifetime = u32::try_from(lifetime.as_secs().min(7 * 24 * 3600)).unwrap_or(u32::MAX);
        Ok(SharedTicketer {
            keys: ArcSwap::from_pointee(KeySet::new(keys)?),
            lifetime,
            grace,
            rng: SystemRandom::new(),
        })
    }

    /// Replaces the keys (a reload); tickets sealed with a key that is no
    /// longer in the set stop opening at once.
    pub fn set_keys(&self, keys: Vec<KeySpec>) -> Result<(), KeySetError> {
        self.keys.store(Arc::new(KeySet::new(keys)?));
        Ok(())
    }

    /// The id (hex) of the key sealing tickets at `now`, for logs.
    pub fn sealing_id(&self, now: SystemTime) -> String {
        hex(&self.keys.load().sealing(now).id)
    }

    /// Seals `plain` as at `now`.
    pub fn encrypt_at(&self, plain: &[u8], now: SystemTime) -> Option<Vec<u8>> {
        let set = self.keys.load();
        let key = set.sealing(now);
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(ID_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = key
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.id),
                &mut out[ID_LEN + NONCE_LEN..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// Opens `ticket` as at `now`; `None` for anything that does not open.
    pub fn decrypt_at(&self, ticket: &[u8], now: SystemTime) -> Option<Vec<u8>> {
        if ticket.len() > MAX_TICKET || ticket.len() < ID_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (id, rest) = ticket.split_at(ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let set = self.keys.load();
        // Key ids are public (they travel in every ticket): comparing them
        // in variable time reveals nothing.
        let key = set
            .keys
            .iter()
            .find(|k| k.id == id && KeySet::opens(k, now, self.grace))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let n = key.aead.open_in_place(nonce, Aad::from(key.id), &mut buf).ok()?.len();
        buf.truncate(n);
        Some(buf)
    }
}

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.encrypt_at(plain, SystemTime::now())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.decrypt_at(cipher, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    fn t(hours: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + H * u32::try_from(hours).unwrap()
    }

    fn key(b: u8, start: SystemTime) -> KeySpec {
        KeySpec {
            not_before: start,
            secret: [b; KEY_LEN],
        }
    }

    #[test]
    fn two_instances_with_the_same_keys_open_each_others_tickets() {
        let a = SharedTicketer::new(vec![key(1, t(0))], H, H).unwrap();
        let b = SharedTicketer::new(vec![key(1, t(0))], H, H).unwrap();
        let c = a.encrypt_at(b"session", t(1)).unwrap();
        assert_eq!(b.decrypt_at(&c, t(1)).as_deref(), Some(&b"session"[..]));
        // A third instance with another key cannot.
        let other = SharedTicketer::new(vec![key(2, t(0))], H, H).unwrap();
        assert_eq!(other.decrypt_at(&c, t(1)), None);
    }

    #[test]
    fn rotation_seals_with_the_new_key_and_opens_old_tickets_for_the_grace_period() {
        // The next key is distributed an hour before it starts.
        let tk = SharedTicketer::new(vec![key(1, t(0)), key(2, t(10))], H, 2 * H).unwrap();
        let old = tk.encrypt_at(b"old", t(5)).unwrap();
        assert_eq!(tk.sealing_id(t(5)), hex(&key_id(&[1; KEY_LEN])));
        // A ticket sealed with the next key by an instance whose clock runs
        // ahead opens before the key starts here.
        let ahead = SharedTicketer::new(vec![key(1, t(0)), key(2, t(10))], H, 2 * H).unwrap();
        let early = ahead.encrypt_at(b"early", t(10)).unwrap();
        assert_eq!(tk.decrypt_at(&early, t(9)).as_deref(), Some(&b"early"[..]));
        // After the switch: new tickets use key 2; key 1 still opens for 2 h.
        let new = tk.encrypt_at(b"new", t(11)).unwrap();
        assert_eq!(tk.sealing_id(t(11)), hex(&key_id(&[2; KEY_LEN])));
        assert_eq!(&new[..ID_LEN], &key_id(&[2; KEY_LEN]));
        assert_eq!(tk.decrypt_at(&old, t(11)).as_deref(), Some(&b"old"[..]));
        assert_eq!(
            tk.decrypt_at(&old, t(12) - Duration::from_secs(1)).as_deref(),
            Some(&b"old"[..])
        );
        assert_eq!(tk.decrypt_at(&old, t(12)), None, "past the grace period");
        assert_eq!(tk.decrypt_at(&new, t(100)).as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn a_reload_replaces_the_keys() {
        let tk = SharedTicketer::new(vec![key(1, t(0))], H, H).unwrap();
        let c1 = tk.encrypt_at(b"one", t(1)).unwrap();
        tk.set_keys(vec![key(1, t(0)), key(3, t(2))]).unwrap();
        let c3 = tk.encrypt_at(b"three", t(2)).unwrap();
        assert_eq!(&c3[..ID_LEN], &key_id(&[3; KEY_LEN]));
        assert!(tk.decrypt_at(&c1, t(2)).is_some());
        // Key 1 removed from the file: its tickets stop opening at once.
        tk.set_keys(vec![key(3, t(2))]).unwrap();
        assert_eq!(tk.decrypt_at(&c1, t(2)), None);
        assert!(tk.decrypt_at(&c3, t(2)).is_some());
        // A bad set is refused and the keys in use stay.
        assert_eq!(tk.set_keys(vec![]), Err(KeySetError::Empty));
        assert_eq!(
            tk.set_keys(vec![key(4, t(0)), key(4, t(1))]),
            Err(KeySetError::Duplicate(1))
        );
        assert_eq!(
            tk.set_keys(vec![key(4, t(0)), key(5, t(0))]),
            Err(KeySetError::SameStart(1))
        );
        assert!(tk.decrypt_at(&c3, t(2)).is_some());
    }

    #[test]
    fn tampered_truncated_or_oversized_tickets_do_not_open() {
        let tk = SharedTicketer::new(vec![key(1, t(0))], H, H).unwrap();
        let c = tk.encrypt_at(b"session state", t(1)).unwrap();
        for i in 0..c.len() {
            let mut bad = c.clone();
            bad[i] ^= 0x01;
            assert_eq!(tk.decrypt_at(&bad, t(1)), None, "byte {i} flipped");
        }
        for n in 0..c.len() {
            assert_eq!(tk.decrypt_at(&c[..n], t(1)), None, "{n} bytes");
        }
        assert_eq!(tk.decrypt_at(&vec![0u8; MAX_TICKET + 1], t(1)), None);
        // Each ticket has its own nonce.
        assert_ne!(tk.encrypt_at(b"x", t(1)), tk.encrypt_at(b"x", t(1)));
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let k = key(0xab, t(0));
        let s = format!("{k:?}");
        assert!(!s.contains("abababab"), "{s}");
        let tk = SharedTicketer::new(vec![k], H, H).unwrap();
        assert!(!format!("{tk:?}").contains("abababab"));
    }
}
