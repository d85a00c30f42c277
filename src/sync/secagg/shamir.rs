//! Shamir's t-of-n sharing of 32-byte secrets (the self-mask seeds and the mask-agreement
//! secret keys), over GF(2⁸) byte by byte with the maintained `blahaj` crate. Member `i` of
//! a round holds the share at x = i + 1; fewer than `t` shares say nothing about the secret.
//! One byte of x bounds a round to 255 members.

use blahaj::{Share, Sharks};
use zeroize::Zeroizing;

use super::error::{SecAggError, SecAggResult};

/// Length of one share on the wire: x, then one byte per secret byte.
pub const SHARE_LEN: usize = 33;

/// `n` shares of `secret`, any `t` of which recover it; share `i` belongs to member `i`.
pub fn split(secret: &[u8; 32], n: usize, t: usize) -> SecAggResult<Vec<Zeroizing<Vec<u8>>>> {
    if !(1..=n).contains(&t) || n > 255 {
        return Err(SecAggError::InvalidParams(format!(
            "a {t}-of-{n} sharing (1 ≤ t ≤ n ≤ 255)"
        )));
    }
    // `dealer` draws the polynomials from the thread's CSPRNG (OS-seeded) and yields the
    // shares at x = 1, 2, … in order.
    let shares: Vec<Zeroizing<Vec<u8>>> = Sharks(t as u8)
        .dealer(secret)
        .take(n)
        .map(|s| Zeroizing::new(Vec::from(&s)))
        .collect();
    debug_assert!(shares
        .iter()
        .enumerate()
        .all(|(i, s)| s[0] as usize == i + 1));
    Ok(shares)
}

/// The secret from the shares `(member, share)`, of which at least `t` must be distinct
/// members' well-formed shares. A share whose x is not its member's is refused (a share
/// moved to another member would interpolate a wrong secret). The result is only as right as
/// the shares: the caller checks it against a commitment or a public key.
pub fn recover(t: usize, shares: &[(u32, &[u8])]) -> SecAggResult<Zeroizing<[u8; 32]>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut parsed = Vec::with_capacity(shares.len());
    for &(member, bytes) in shares {
        if bytes.len() != SHARE_LEN {
            return Err(SecAggError::Malformed(format!(
                "a share of {} bytes, not {SHARE_LEN}",
                bytes.len()
            )));
        }
        if member >= 255 || u32::from(bytes[0]) != member + 1 {
            return Err(SecAggError::Malformed(format!(
                "member {member}'s share is at x = {}",
                bytes[0]
            )));
        }
        if !seen.insert(member) {
            return Err(SecAggError::Malformed(format!(
                "two shares of member {member}"
            )));
        }
        parsed.push(Share::try_from(bytes).map_err(|e| SecAggError::Malformed(e.into()))?);
    }
    if parsed.len() < t.max(1) {
        return Err(SecAggError::BelowThreshold {
            survivors: parsed.len(),
            threshold: t,
        });
    }
    let secret = Zeroizing::new(
        Sharks(t as u8)
            .recover(&parsed)
            .map_err(|e| SecAggError::Reconstruction(e.into()))?,
    );
    let bytes: [u8; 32] = secret
        .as_slice()
        .try_into()
        .map_err(|_| SecAggError::Reconstruction("not 32 bytes".into()))?;
    Ok(Zeroizing::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(shares: &[Zeroizing<Vec<u8>>], members: &[u32]) -> Vec<(u32, Vec<u8>)> {
        members
            .iter()
            .map(|&m| (m, shares[m as usize].to_vec()))
            .collect()
    }

    fn recover_from(t: usize, shares: &[(u32, Vec<u8>)]) -> SecAggResult<[u8; 32]> {
        let r: Vec<(u32, &[u8])> = shares.iter().map(|(m, s)| (*m, s.as_slice())).collect();
        recover(t, &r).map(|s| *s)
    }

    #[test]
    fn any_t_shares_recover_and_fewer_do_not() {
        let secret: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        let shares = split(&secret, 10, 7).unwrap();
        assert_eq!(shares.len(), 10);
        assert!(shares.iter().all(|s| s.len() == SHARE_LEN));
        for members in [
            &[0u32, 1, 2, 3, 4, 5, 6][..],
            &[3, 4, 5, 6, 7, 8, 9],
            &[9, 0, 8, 1, 7, 2, 6, 3],
        ] {
            assert_eq!(recover_from(7, &refs(&shares, members)).unwrap(), secret);
        }
        assert!(matches!(
            recover_from(7, &refs(&shares, &[0, 1, 2, 3, 4, 5])),
            Err(SecAggError::BelowThreshold {
                survivors: 6,
                threshold: 7
            })
        ));
    }

    /// An independent check of the crate's arithmetic on a 2-of-2 sharing: f(x) = s + a·x, so
    /// in GF(2⁸) (characteristic 2; the crate's tables are of the polynomial 0x11d) 2·f(1) + f(2) = 2a + 2s + 2a + s =
    /// 3·s, whatever the random a.
    #[test]
    fn two_of_two_interpolates_as_by_hand() {
        let secret = [0x53u8; 32];
        let shares = split(&secret, 2, 2).unwrap();
        // xtime(b) = b·2 in GF(2⁸) modulo x⁸ + x⁴ + x³ + x² + 1.
        let xtime = |b: u8| (b << 1) ^ if b & 0x80 != 0 { 0x1d } else { 0 };
        for i in 0..32 {
            let (f1, f2) = (shares[0][1 + i], shares[1][1 + i]);
            assert_eq!(xtime(f1) ^ f2, xtime(0x53) ^ 0x53, "byte {i}");
        }
    }

    #[test]
    fn misplaced_duplicate_and_short_shares_are_refused() {
        let secret = [1u8; 32];
        let shares = split(&secret, 5, 3).unwrap();
        let mut moved = refs(&shares, &[0, 1, 2]);
        moved[0].0 = 4;
        assert!(matches!(
            recover_from(3, &moved),
            Err(SecAggError::Malformed(_))
        ));
        let dup = refs(&shares, &[0, 0, 1]);
        assert!(matches!(
            recover_from(3, &dup),
            Err(SecAggError::Malformed(_))
        ));
        let mut short = refs(&shares, &[0, 1, 2]);
        short[1].1.pop();
        assert!(matches!(
            recover_from(3, &short),
            Err(SecAggError::Malformed(_))
        ));
        assert!(split(&secret, 3, 4).is_err());
        assert!(split(&secret, 256, 4).is_err());
        // A tampered share interpolates a different secret (the caller's commitment check
        // catches it).
        let mut bad = refs(&shares, &[0, 1, 2]);
        bad[2].1[5] ^= 1;
        assert_ne!(recover_from(3, &bad).unwrap(), secret);
    }
}
