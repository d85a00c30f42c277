//! The primitives of a round, each from a maintained crate: X25519 key agreement
//! (`x25519-dalek`), HKDF-SHA256 key derivation (`hkdf`, `sha2`), the ChaCha20 keystream as
//! the mask PRG (`chacha20`), ChaCha20-Poly1305 for shares relayed through the server
//! (`chacha20poly1305`), SHA-256 commitments, and OS randomness (`getrandom`; in the browser
//! `crypto.getRandomValues`). Nothing here is home-made beyond the domain separation.
//!
//! Every derived key is bound to the model and round ([`RoundContext`]) and to the ordered
//! pair of members it serves, so a key — and so a mask or an encrypted share — of one round
//! is useless in any other.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::error::{SecAggError, SecAggResult};

/// HKDF salt of every key of this protocol (its version: a new derivation gets a new salt).
const SALT: &[u8] = b"tacit-rm secagg v1";

/// What every derived key is bound to: the model and the round id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundContext {
    pub model: String,
    pub round: u64,
}

impl RoundContext {
    pub fn new(model: &str, round: u64) -> Self {
        RoundContext {
            model: model.to_string(),
            round,
        }
    }

    /// `label ‖ len(model) ‖ model ‖ round ‖ a ‖ b`, lengths and numbers little-endian: an
    /// unambiguous encoding (no two contexts give the same bytes).
    fn info(&self, label: &[u8], a: u32, b: u32) -> Vec<u8> {
        let mut info = Vec::with_capacity(label.len() + self.model.len() + 24);
        info.extend_from_slice(label);
        info.extend_from_slice(&(self.model.len() as u32).to_le_bytes());
        info.extend_from_slice(self.model.as_bytes());
        info.extend_from_slice(&self.round.to_le_bytes());
        info.extend_from_slice(&a.to_le_bytes());
        info.extend_from_slice(&b.to_le_bytes());
        info
    }
}

/// 32 bytes from the platform's CSPRNG.
pub fn random_32() -> SecAggResult<Zeroizing<[u8; 32]>> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut()).map_err(|e| SecAggError::Randomness(e.to_string()))?;
    Ok(bytes)
}

/// A fresh X25519 secret (for one round: a key never serves two).
pub fn fresh_secret() -> SecAggResult<StaticSecret> {
    Ok(StaticSecret::from(*random_32()?))
}

pub fn public_of(secret: &StaticSecret) -> [u8; 32] {
    PublicKey::from(secret).to_bytes()
}

/// The X25519 shared secret with `their_public`. A low-order public key (shared secret all
/// zeros) is refused: it would make the "secret" known to everyone.
pub fn agree(secret: &StaticSecret, their_public: &[u8; 32]) -> SecAggResult<Zeroizing<[u8; 32]>> {
    let shared = secret.diffie_hellman(&PublicKey::from(*their_public));
    if !shared.was_contributory() {
        return Err(SecAggError::Malformed(
            "a low-order public key (non-contributory key agreement)".into(),
        ));
    }
    Ok(Zeroizing::new(*shared.as_bytes()))
}

fn derive(ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(SALT), ikm)
        .expand(info, okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 length");
    okm
}

/// The PRG seed of the pairwise mask between members `a` and `b` (symmetric: both sides
/// derive it with the smaller index first).
pub fn pair_seed(shared: &[u8; 32], ctx: &RoundContext, a: u32, b: u32) -> Zeroizing<[u8; 32]> {
    derive(shared, &ctx.info(b"mask", a.min(b), a.max(b)))
}

/// The PRG seed of a member's self mask, from its secret self-mask seed.
pub fn self_seed(seed: &[u8; 32], ctx: &RoundContext, member: u32) -> Zeroizing<[u8; 32]> {
    derive(seed, &ctx.info(b"self", member, member))
}

/// The AEAD key of the one message `from` → `to` (directional: each key seals one message,
/// which is why a fixed nonce is sound).
pub fn share_key(shared: &[u8; 32], ctx: &RoundContext, from: u32, to: u32) -> Zeroizing<[u8; 32]> {
    derive(shared, &ctx.info(b"share", from, to))
}

/// `len` words of the ChaCha20 keystream under `seed` (the mask PRG).
pub fn expand_mask(seed: &[u8; 32], len: usize) -> Vec<u32> {
    let mut bytes = vec![0u8; len * 4];
    let mut cipher = chacha20::ChaCha20::new(seed.into(), &[0u8; 12].into());
    cipher.apply_keystream(&mut bytes);
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Seals a share message; `aad` names the round and the pair.
pub fn seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    ChaCha20Poly1305::new(key.into())
        .encrypt(
            &[0u8; 12].into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("ChaCha20-Poly1305 seals any message under 256 GiB")
}

pub fn open(key: &[u8; 32], ciphertext: &[u8], aad: &[u8]) -> SecAggResult<Zeroizing<Vec<u8>>> {
    ChaCha20Poly1305::new(key.into())
        .decrypt(
            &[0u8; 12].into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SecAggError::ShareAuthentication("the AEAD tag does not verify".into()))
}

/// The commitment to a self-mask seed, published when joining: the server checks the seed
/// it reconstructs against it, so a wrong share aborts the round instead of skewing the sum.
pub fn commit(seed: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tacit-rm secagg v1 commitment");
    h.update(seed);
    h.finalize().into()
}

/// Lowercase hex, the wire form of keys, shares and vectors.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn from_hex(s: &str) -> SecAggResult<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if s.len() % 2 != 0 {
        return Err(SecAggError::Malformed("odd-length hex".into()));
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| match (digit(p[0]), digit(p[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(SecAggError::Malformed("not lowercase hex".into())),
        })
        .collect()
}

pub fn from_hex_32(s: &str) -> SecAggResult<[u8; 32]> {
    from_hex(s)?
        .try_into()
        .map_err(|_| SecAggError::Malformed("expected 32 bytes of hex".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> [u8; 32] {
        from_hex_32(s).unwrap()
    }

    /// RFC 7748 §6.1: Alice's and Bob's keys and their shared secret.
    #[test]
    fn x25519_matches_rfc_7748() {
        let a = StaticSecret::from(hex32(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let b = StaticSecret::from(hex32(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ));
        assert_eq!(
            to_hex(&public_of(&a)),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        let shared = agree(&a, &public_of(&b)).unwrap();
        assert_eq!(
            to_hex(shared.as_ref()),
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
        );
        assert_eq!(*agree(&b, &public_of(&a)).unwrap(), *shared);
        // The all-zero point is of low order: refused.
        assert!(agree(&a, &[0u8; 32]).is_err());
    }

    /// RFC 5869 A.1 (HKDF-SHA256), through the same crate the derivations use.
    #[test]
    fn hkdf_matches_rfc_5869() {
        let ikm = [0x0bu8; 22];
        let salt = from_hex("000102030405060708090a0b0c").unwrap();
        let info = from_hex("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let mut okm = [0u8; 42];
        Hkdf::<Sha256>::new(Some(&salt), &ikm)
            .expand(&info, &mut okm)
            .unwrap();
        assert_eq!(
            to_hex(&okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    /// RFC 8439 A.1, ChaCha20 block test vector #1 (all-zero key and nonce, counter 0): the
    /// first keystream words of the mask PRG under the all-zero seed.
    #[test]
    fn the_mask_prg_is_the_chacha20_keystream() {
        let words = expand_mask(&[0u8; 32], 4);
        // 76 b8 e0 ad a0 f1 3d 90 …, little-endian words.
        assert_eq!(
            words,
            vec![0xade0_b876, 0x903d_f1a0, 0xe56a_5d40, 0x28bd_8653]
        );
        // Deterministic, and a different seed gives a different stream.
        assert_eq!(expand_mask(&[7u8; 32], 64), expand_mask(&[7u8; 32], 64));
        assert_ne!(expand_mask(&[7u8; 32], 8), expand_mask(&[8u8; 32], 8));
    }

    #[test]
    fn derived_keys_are_bound_to_round_model_and_pair() {
        let s = [5u8; 32];
        let r1 = RoundContext::new("m", 1);
        assert_eq!(*pair_seed(&s, &r1, 2, 7), *pair_seed(&s, &r1, 7, 2));
        assert_ne!(
            *pair_seed(&s, &r1, 2, 7),
            *pair_seed(&s, &RoundContext::new("m", 2), 2, 7)
        );
        assert_ne!(
            *pair_seed(&s, &r1, 2, 7),
            *pair_seed(&s, &RoundContext::new("n", 1), 2, 7)
        );
        assert_ne!(*pair_seed(&s, &r1, 2, 7), *pair_seed(&s, &r1, 2, 8));
        assert_ne!(*share_key(&s, &r1, 2, 7), *share_key(&s, &r1, 7, 2));
        assert_ne!(*share_key(&s, &r1, 2, 7), *pair_seed(&s, &r1, 2, 7));
    }

    #[test]
    fn sealed_shares_open_only_with_their_key_and_aad() {
        let key = [9u8; 32];
        let sealed = seal(&key, b"share", b"aad");
        assert_eq!(open(&key, &sealed, b"aad").unwrap().as_slice(), b"share");
        assert!(open(&[8u8; 32], &sealed, b"aad").is_err());
        assert!(open(&key, &sealed, b"other").is_err());
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert!(open(&key, &tampered, b"aad").is_err());
    }

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        assert_eq!(to_hex(&[0, 15, 255]), "000fff");
        assert_eq!(from_hex("000fff").unwrap(), vec![0, 15, 255]);
        assert!(from_hex("0").is_err());
        assert!(from_hex("0G").is_err());
        assert!(from_hex("AB").is_err());
        assert!(from_hex_32("00").is_err());
    }
}
