//! Owns TLS session tickets shared by every worker of a generation
//! ([`SharedTicketer`]): tickets are sealed with ChaCha20-Poly1305 under the
//! generation's ticket key, which the master draws when it loads the config
//! (`TlsListen::ticket_key`) and every worker inherits at fork — so a client
//! resumes whichever worker its next connection reaches. A reload draws a
//! new key: tickets of the old generation then make a full handshake.
//! A ticket is `nonce (12 bytes) || ciphertext || tag`; a ticket that does
//! not open is simply not resumed.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// Ticket lifetime hint sent to clients (the key lives as long as the
/// generation; a client may try its ticket for this long).
const LIFETIME_SECS: u32 = 12 * 3600;

/// The ticketer of one listen in one generation.
pub struct SharedTicketer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedTicketer")
    }
}

impl SharedTicketer {
    /// A ticketer under the generation's 32-byte key.
    pub fn new(key: &[u8; 32]) -> Option<SharedTicketer> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key).ok()?;
        Some(SharedTicketer {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }
}

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut out[NONCE_LEN..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let nonce = cipher.get(..NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = cipher.get(NONCE_LEN..)?.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut sealed)
            .ok()?;
        let n = plain.len();
        sealed.truncate(n);
        Some(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_under_the_same_key_only() {
        let a = SharedTicketer::new(&[7; 32]).expect("key");
        let a2 = SharedTicketer::new(&[7; 32]).expect("key");
        let b = SharedTicketer::new(&[8; 32]).expect("key");
        let t = a.encrypt(b"session state").expect("sealed");
        assert_eq!(a2.decrypt(&t).as_deref(), Some(&b"session state"[..]));
        assert_eq!(b.decrypt(&t), None);
        assert_eq!(a.decrypt(&t[..5]), None);
        let mut bad = t.clone();
        bad[NONCE_LEN] ^= 1;
        assert_eq!(a.decrypt(&bad), None);
    }
}
