//! Fuzz harness for the record layer ([`crate::record`]).
//!
//! Arbitrary bytes opened as a record with a fixed key must be refused with
//! an error, never a panic; a record sealed with the key must open to the
//! same plaintext, and any flipped byte must make it fail. Opening with the
//! plaintext decrypted to an earlier offset (as the connection's reader does
//! behind pending plaintext) must agree with opening in place, and must not
//! touch the bytes before that offset. The cargo-fuzz
//! target `fuzz/fuzz_targets/record_open.rs` is a one-line call; the tests
//! below run it over seeds and mutations in plain `cargo test`.
//!
//! Compiled only for `cargo fuzz` (`--cfg fuzzing`) and tests.

use ring::aead;

use crate::record::{self, HEADER_LEN, MAX_PLAINTEXT, MAX_RECORD, RecordError, RecordKey, TAG_LEN};

const KEY: [u8; 32] = [0x42; 32];
const IV: [u8; 12] = [0x24; 12];

fn key(sel: u8) -> RecordKey {
    let (alg, len) = match sel % 3 {
        0 => (&aead::AES_128_GCM, 16),
        1 => (&aead::AES_256_GCM, 32),
        _ => (&aead::CHACHA20_POLY1305, 32),
    };
    match RecordKey::from_raw(alg, &KEY[..len], IV, u64::from(sel >> 2)) {
        Ok(k) => k,
        Err(e) => panic!("fixed key refused: {e}"),
    }
}

/// Opening `wire` with the harness key either fails or yields exactly what
/// that key seals: a record the key really produced (a mutated input can
/// turn back into one, e.g. by changing the selector byte to the sequence
/// number a seed was sealed at). Anything else that opens is a forgery.
fn authentic_or_refused(sel: u8, wire: &[u8]) {
    let mut rec = wire.to_vec();
    if let Ok((ct, range)) = key(sel).open(&mut rec) {
        let mut again = vec![0u8; HEADER_LEN];
        again.extend_from_slice(&rec[range]);
        if let Err(e) = key(sel).seal(&mut again, 0, ct) {
            panic!("re-seal failed: {e}");
        }
        assert_eq!(again, wire, "a forged record opened");
    }
}

/// `RecordKey::open_to` with the plaintext moved before the record (kept
/// bytes, then a gap standing for earlier records' overhead) gives the same
/// outcome as `open` in place.
fn shifted_agrees(sel: u8, wire: &[u8]) {
    let mut rec = wire.to_vec();
    let in_place = key(sel).open(&mut rec).map(|(ct, r)| (ct, rec[r].to_vec()));
    let keep = usize::from(sel % 7);
    let gap = usize::from(sel) * 13 % 300;
    let mut buf = vec![0xA5; keep + gap];
    buf.extend_from_slice(wire);
    let end = buf.len();
    let shifted = key(sel)
        .open_to(&mut buf, keep + gap..end, keep)
        .map(|(ct, r)| (ct, buf[r].to_vec()));
    assert_eq!(
        in_place, shifted,
        "open_to (keep {keep}, gap {gap}) disagrees with open"
    );
    assert!(
        buf[..keep].iter().all(|&b| b == 0xA5),
        "open_to wrote before its destination"
    );
}

/// First byte: suite (mod 3), starting sequence number and content type.
/// The rest: a record to open as it is, and a plaintext to seal and open.
pub fn fuzz_record_open(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    // As the connection reads: frame, then open.
    match record::complete_record(rest) {
        Ok(Some(n)) => {
            assert!(
                n <= rest.len() && n <= MAX_RECORD && n > HEADER_LEN + TAG_LEN,
                "bad record length {n}"
            );
            authentic_or_refused(sel, &rest[..n]);
            shifted_agrees(sel, &rest[..n]);
        }
        Ok(None) => assert!(rest.len() < MAX_RECORD),
        Err(_) => {}
    }
    // Unframed: anything is refused, however short, unless it is a record
    // this key sealed.
    authentic_or_refused(sel, rest);
    shifted_agrees(sel, rest);

    // Round trip.
    let plain = &rest[..rest.len().min(MAX_PLAINTEXT)];
    let ct = (sel >> 2).max(1);
    let mut rec = vec![0u8; HEADER_LEN];
    rec.extend_from_slice(plain);
    let mut tx = key(sel);
    if let Err(e) = tx.seal(&mut rec, 0, ct) {
        panic!("seal failed: {e}");
    }
    assert_eq!(record::complete_record(&rec), Ok(Some(rec.len())));
    shifted_agrees(sel, &rec);
    let mut tampered = rec.clone();
    match key(sel).open(&mut rec) {
        Ok((got, range)) => {
            assert_eq!(got, ct);
            assert_eq!(&rec[range], plain);
        }
        Err(e) => panic!("own record refused: {e}"),
    }
    let at = usize::from(sel) * 7919 % tampered.len();
    tampered[at] ^= 1 << (sel % 8);
    assert_eq!(
        key(sel).open(&mut tampered),
        Err(RecordError::BadMac),
        "tampered at {at}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::CT_APPLICATION_DATA;

    fn mutations(seeds: &[Vec<u8>], count: usize, mut f: impl FnMut(&[u8])) {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x2545_F491_4F6C_DD1D);
        let mut next = move || rand::Rng::random::<u64>(&mut rng);
        let pick = |r: u64, n: usize| usize::try_from(r % (n as u64).max(1)).unwrap_or(0);
        for s in seeds {
            f(s);
        }
        for _ in 0..count {
            let mut v = seeds[pick(next(), seeds.len())].clone();
            for _ in 0..1 + pick(next(), 3) {
                let r = next();
                let at = pick(r >> 8, v.len() + 1);
                match r % 3 {
                    0 if !v.is_empty() => {
                        let i = at.min(v.len() - 1);
                        v[i] ^= 1 << (r >> 40 & 7);
                    }
                    1 => v.truncate(at),
                    _ => v.insert(at, r.to_le_bytes()[6]),
                }
            }
            f(&v);
        }
    }

    fn seeds() -> Vec<Vec<u8>> {
        let mut out = vec![vec![], vec![0], vec![1, 23, 3, 3, 0, 17], vec![2; 40]];
        for sel in 0..6u8 {
            // A record sealed with the right key but opened at a later
            // sequence number (the harness's key starts at `sel >> 2`).
            let mut rec = vec![0u8; HEADER_LEN];
            rec.extend_from_slice(b"hello, record");
            let mut k = key(sel);
            k.seal(&mut rec, 0, CT_APPLICATION_DATA).unwrap();
            out.push([&[sel.wrapping_add(4)][..], &rec].concat());
        }
        out
    }

    #[test]
    fn record_open_seeds_and_mutations() {
        mutations(&seeds(), 3000, fuzz_record_open);
    }

    #[test]
    fn record_open_max_sizes() {
        let mut big = vec![0u8; MAX_RECORD + 1];
        big[..HEADER_LEN].copy_from_slice(&[CT_APPLICATION_DATA, 3, 3, 0x41, 0x00]);
        fuzz_record_open(&[[7u8].as_slice(), &big].concat());
    }

    /// Found while writing the `record_open` harness: `RecordKey::open` sliced
    /// the header before checking the length, so fewer than 5 bytes panicked
    /// instead of returning an error (the connection was not affected: it
    /// opens only what `complete_record` framed).
    #[test]
    fn open_shorter_than_header_is_an_error() {
        for n in 0..HEADER_LEN {
            let mut rec = vec![CT_APPLICATION_DATA; n];
            assert!(key(0).open(&mut rec).is_err());
        }
    }
}
