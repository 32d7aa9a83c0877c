//! Kernel TLS crypto state from rustls's extracted traffic secrets.
//!
//! The kernel takes one direction's record protection as a `struct
//! tls12_crypto_info_*` (`include/uapi/linux/tls.h`; the name says TLS 1.2,
//! the `version` field says 1.3): the suite, the key, the IV split into a
//! 4-byte salt and an 8-byte explicit part (AES-GCM) or whole (ChaCha20-
//! Poly1305), and the next record sequence number. [`CryptoInfo::new`] lays
//! it out byte for byte from the same secrets [`crate::record`] uses, so the
//! socket-level calls in `msc_io::ktls` can hand a connection to the kernel.
//!
//! Pure and unit-tested against the kernel's layouts. Nothing calls it on
//! the data path yet: perf/ktls.md says what kernel TLS would give and what
//! is left to wire (behind a configuration key, off by default, until a
//! kernel with `CONFIG_TLS` can test it end to end).

use rustls::ConnectionTrafficSecrets;

use crate::record::RecordError;

/// `TLS_1_3_VERSION`: `TLS_VERSION_NUMBER(3, 4)` (linux/tls.h).
pub const TLS_1_3_VERSION: u16 = 0x0304;
/// `TLS_CIPHER_AES_GCM_128` (linux/tls.h).
pub const TLS_CIPHER_AES_GCM_128: u16 = 51;
/// `TLS_CIPHER_AES_GCM_256` (linux/tls.h).
pub const TLS_CIPHER_AES_GCM_256: u16 = 52;
/// `TLS_CIPHER_CHACHA20_POLY1305` (linux/tls.h).
pub const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;

/// `sizeof(struct tls12_crypto_info_aes_gcm_128)`: info (4), iv (8), key
/// (16), salt (4), rec_seq (8).
pub const AES_GCM_128_LEN: usize = 40;
/// `sizeof(struct tls12_crypto_info_aes_gcm_256)`: info (4), iv (8), key
/// (32), salt (4), rec_seq (8).
pub const AES_GCM_256_LEN: usize = 56;
/// `sizeof(struct tls12_crypto_info_chacha20_poly1305)`: info (4), iv (12),
/// key (32), salt (0), rec_seq (8).
pub const CHACHA20_POLY1305_LEN: usize = 56;

/// One direction's `struct tls12_crypto_info_*`, laid out as the kernel
/// reads it (all fields are byte arrays except the two native-endian `__u16`
/// of `struct tls_crypto_info`, so there is no padding).
///
/// Holds key material: its `Debug` shows the suite only, and it is zeroed
/// when dropped.
pub struct CryptoInfo {
    bytes: [u8; 56],
    len: usize,
}

impl std::fmt::Debug for CryptoInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoInfo")
            .field("cipher_type", &self.cipher_type())
            .finish_non_exhaustive()
    }
}

impl Drop for CryptoInfo {
    fn drop(&mut self) {
        // Best effort, like rustls's own key types: the bytes go to a syscall.
        self.bytes.fill(0);
        std::hint::black_box(&self.bytes);
    }
}

impl CryptoInfo {
    /// The crypto state for one direction of a TLS 1.3 connection whose next
    /// record has sequence number `seq`.
    pub fn new(secrets: &ConnectionTrafficSecrets, seq: u64) -> Result<CryptoInfo, RecordError> {
        // (cipher type, key length, bytes of the 12-byte IV that are salt)
        let (cipher, key, iv, salt_len) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (TLS_CIPHER_AES_GCM_128, key, iv, 4),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (TLS_CIPHER_AES_GCM_256, key, iv, 4),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (TLS_CIPHER_CHACHA20_POLY1305, key, iv, 0),
            _ => return Err(RecordError::Suite),
        };
        let (key, iv) = (key.as_ref(), iv.as_ref());
        let key_len = match cipher {
            TLS_CIPHER_AES_GCM_128 => 16,
            _ => 32,
        };
        if key.len() != key_len || iv.len() != 12 {
            return Err(RecordError::Suite);
        }
        let (salt, explicit) = iv.split_at(salt_len);
        let mut bytes = [0u8; 56];
        let mut at = 0;
        for field in [
            &TLS_1_3_VERSION.to_ne_bytes()[..],
            &cipher.to_ne_bytes(),
            explicit,
            key,
            salt,
            &seq.to_be_bytes(),
        ] {
            bytes[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        }
        Ok(CryptoInfo { bytes, len: at })
    }

    /// The struct's bytes, for `setsockopt(SOL_TLS, TLS_TX | TLS_RX, ...)`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// `info.cipher_type`.
    pub fn cipher_type(&self) -> u16 {
        u16::from_ne_bytes([self.bytes[2], self.bytes[3]])
    }
}

#[cfg(test)]
mod tests {
    use rustls::crypto::cipher::{AeadKey, Iv};

    use super::*;

    fn key32() -> [u8; 32] {
        std::array::from_fn(|i| 0xA0 + u8::try_from(i).unwrap())
    }

    fn iv12() -> [u8; 12] {
        std::array::from_fn(|i| 0x10 + u8::try_from(i).unwrap())
    }

    /// The offsets of `struct tls12_crypto_info_aes_gcm_256` (linux/tls.h):
    /// version @0, cipher_type @2, iv[8] @4, key[32] @12, salt[4] @44,
    /// rec_seq[8] @48; 56 bytes.
    #[test]
    fn aes_gcm_256_layout() {
        let s = ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from(key32()),
            iv: Iv::from(iv12()),
        };
        let info = CryptoInfo::new(&s, 0x0102_0304_0506_0708).unwrap();
        let b = info.as_bytes();
        assert_eq!(b.len(), AES_GCM_256_LEN);
        assert_eq!(&b[0..2], &0x0304u16.to_ne_bytes());
        assert_eq!(&b[2..4], &52u16.to_ne_bytes());
        assert_eq!(&b[4..12], &iv12()[4..], "iv: the explicit part of the nonce");
        assert_eq!(&b[12..44], &key32());
        assert_eq!(&b[44..48], &iv12()[..4], "salt: the implicit part");
        assert_eq!(&b[48..56], &[1, 2, 3, 4, 5, 6, 7, 8], "rec_seq is big-endian");
        assert_eq!(info.cipher_type(), TLS_CIPHER_AES_GCM_256);
        if cfg!(target_endian = "little") {
            assert_eq!(&b[..4], &[0x04, 0x03, 52, 0]);
        }
    }

    /// `struct tls12_crypto_info_aes_gcm_128`: iv @4, key[16] @12, salt @28,
    /// rec_seq @32; 40 bytes. (rustls builds 16-byte keys only itself: the
    /// secrets come from a real AES-128-GCM handshake.)
    #[test]
    fn aes_gcm_128_layout() {
        let (c, _s) =
            crate::conn::testing::memory_pair_with_suite(rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256);
        let (seq, s) = c.dangerous_extract_secrets().unwrap().tx;
        let ConnectionTrafficSecrets::Aes128Gcm { key, iv } = &s else {
            panic!("not AES-128-GCM");
        };
        let info = CryptoInfo::new(&s, seq + 7).unwrap();
        let b = info.as_bytes();
        assert_eq!(b.len(), AES_GCM_128_LEN);
        assert_eq!(&b[0..2], &0x0304u16.to_ne_bytes());
        assert_eq!(&b[2..4], &51u16.to_ne_bytes());
        assert_eq!(&b[4..12], &iv.as_ref()[4..]);
        assert_eq!(&b[12..28], key.as_ref());
        assert_eq!(&b[28..32], &iv.as_ref()[..4]);
        assert_eq!(&b[32..40], &(seq + 7).to_be_bytes());
    }

    /// `struct tls12_crypto_info_chacha20_poly1305`: iv[12] @4, key[32] @16,
    /// salt[0], rec_seq @48; 56 bytes.
    #[test]
    fn chacha20_poly1305_layout() {
        let s = ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: AeadKey::from(key32()),
            iv: Iv::from(iv12()),
        };
        let info = CryptoInfo::new(&s, u64::MAX).unwrap();
        let b = info.as_bytes();
        assert_eq!(b.len(), CHACHA20_POLY1305_LEN);
        assert_eq!(&b[2..4], &54u16.to_ne_bytes());
        assert_eq!(&b[4..16], &iv12(), "the whole IV, no salt");
        assert_eq!(&b[16..48], &key32());
        assert_eq!(&b[48..56], &[0xFF; 8]);
        assert!(!format!("{info:?}").contains("160"), "Debug shows no key bytes");
    }

    /// From a real handshake: what one side sends with is what the other
    /// receives with, byte for byte, for each TLS 1.3 suite msc offers.
    #[test]
    fn both_ends_of_a_real_handshake_agree() {
        use rustls::crypto::ring::cipher_suite as cs;
        for suite in [
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let (c, s) = crate::conn::testing::memory_pair_with_suite(suite);
            let (c, s) = (
                c.dangerous_extract_secrets().unwrap(),
                s.dangerous_extract_secrets().unwrap(),
            );
            let info = |(seq, sec): &(u64, ConnectionTrafficSecrets)| CryptoInfo::new(sec, *seq).unwrap();
            assert_eq!(info(&c.tx).as_bytes(), info(&s.rx).as_bytes(), "{suite:?}");
            assert_eq!(info(&s.tx).as_bytes(), info(&c.rx).as_bytes(), "{suite:?}");
            assert_ne!(info(&c.tx).as_bytes(), info(&c.rx).as_bytes(), "{suite:?}");
        }
    }

    /// The fallback: where the kernel has no TLS (this machine), handing a
    /// live tunnel's socket to it fails at the first step, and the tunnel
    /// carries on with the user-space record layer: 1 MiB each way, exact.
    #[monoio::test_all(timer_enabled = true)]
    async fn without_kernel_tls_the_record_layer_carries_the_tunnel() {
        use std::os::fd::AsRawFd;

        use msc_io::stream::{Sink, Source};

        let (client, server) = crate::conn::testing::connected_pair().await;
        if let Err(why) = msc_io::ktls::available() {
            let (c, _s) = crate::conn::testing::memory_pair_with_suite(
                rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
            );
            let secrets = c.dangerous_extract_secrets().unwrap();
            let tx = CryptoInfo::new(&secrets.tx.1, secrets.tx.0).unwrap();
            let rx = CryptoInfo::new(&secrets.rx.1, secrets.rx.0).unwrap();
            let e = msc_io::ktls::enable(client.tcp().as_raw_fd(), tx.as_bytes(), rx.as_bytes())
                .expect_err("kernel TLS is unavailable here");
            // ENOENT: no "tls" upper-layer protocol.
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e} ({why})");
        }
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let data: Vec<u8> = (0..1 << 20).map(|i: usize| u8::try_from(i % 251).unwrap()).collect();
        let d2 = data.clone();
        let up = monoio::spawn(async move {
            cw.write_bytes(&d2).await.unwrap();
            cw
        });
        let d3 = data.clone();
        let down = monoio::spawn(async move {
            sw.write_bytes(&d3).await.unwrap();
            sw
        });
        for r in [&mut sr, &mut cr] {
            let mut got = Vec::with_capacity(data.len());
            while got.len() < data.len() {
                assert_ne!(r.fill().await.unwrap(), 0, "early end");
                got.extend_from_slice(r.data());
                let n = r.data().len();
                r.consume(n);
            }
            assert!(got == data, "bytes differ");
        }
        let _ = (up.await, down.await);
    }
}
