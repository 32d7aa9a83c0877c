//! Our in-place record layer against rustls's own TLS 1.3 record protection
//! (its `MessageEncrypter`/`MessageDecrypter`, which also enforce the record
//! size and inner-plaintext rules): records we seal, rustls opens, and the
//! other way round, for any plaintext length 0..=2^14, any content type
//! rustls accepts, and key changes (a new key, sequence back at 0, as after a
//! KeyUpdate) at random points.

use msc_tls::record::{self, CT_APPLICATION_DATA, HEADER_LEN, RecordKey};
use proptest::prelude::*;
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, Iv, MessageDecrypter, MessageEncrypter, OutboundChunks, OutboundPlainMessage,
};
use rustls::crypto::ring::cipher_suite::{TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256};
use rustls::{ContentType, ProtocolVersion, SupportedCipherSuite, Tls13CipherSuite};

#[derive(Clone, Debug)]
enum Op {
    /// We seal a record of this length and type; rustls opens it.
    OursToRustls(usize, u8),
    /// rustls seals; we open.
    RustlsToOurs(usize, u8),
    /// Both directions move to a new key (seed), as after a KeyUpdate.
    NewKeys(u8),
}

fn suite(i: usize) -> &'static Tls13CipherSuite {
    // AES-128 is left to the connection tests: rustls's public API makes
    // only 32-byte AeadKeys.
    let s: SupportedCipherSuite = [TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256][i];
    s.tls13().expect("TLS 1.3 suites only")
}

fn material(seed: u8, dir: u8) -> ([u8; 32], [u8; 12]) {
    let key = std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(dir).wrapping_add(i.to_le_bytes()[0]));
    let iv = std::array::from_fn(|i| seed.wrapping_add(dir.wrapping_mul(7)) ^ i.to_le_bytes()[0]);
    (key, iv)
}

/// One direction: our key and rustls's, in step.
struct Keys {
    ours: RecordKey,
    enc: Box<dyn MessageEncrypter>,
    dec: Box<dyn MessageDecrypter>,
    seq: u64,
}

fn keys(s: &Tls13CipherSuite, seed: u8, dir: u8) -> Keys {
    let (k, iv) = material(seed, dir);
    let secrets = s.aead_alg.extract_keys(AeadKey::from(k), Iv::from(iv)).unwrap();
    Keys {
        ours: RecordKey::new(&secrets, 0).unwrap(),
        enc: s.aead_alg.encrypter(AeadKey::from(k), Iv::from(iv)),
        dec: s.aead_alg.decrypter(AeadKey::from(k), Iv::from(iv)),
        seq: 0,
    }
}

fn payload(len: usize, salt: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + salt).to_le_bytes()[0]).collect()
}

fn len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0..=record::MAX_PLAINTEXT,
        1 => Just(0),
        1 => Just(record::MAX_PLAINTEXT),
        1 => record::MAX_PLAINTEXT - 64..=record::MAX_PLAINTEXT,
        1 => 1..64usize,
    ]
}

fn content_type() -> impl Strategy<Value = u8> {
    // 0 is no type at all and 20 (change_cipher_spec) is refused when
    // protected; everything else rustls passes through.
    prop_oneof![
        3 => Just(CT_APPLICATION_DATA),
        1 => Just(record::CT_HANDSHAKE),
        1 => Just(record::CT_ALERT),
        1 => (1u8..=255).prop_filter("not change_cipher_spec", |t| *t != 20),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (len(), content_type()).prop_map(|(l, t)| Op::OursToRustls(l, t)),
        4 => (len(), content_type()).prop_map(|(l, t)| Op::RustlsToOurs(l, t)),
        1 => any::<u8>().prop_map(Op::NewKeys),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn records_interoperate_with_rustls(s in 0..2usize, seed in any::<u8>(), ops in prop::collection::vec(op(), 1..16)) {
        let s = suite(s);
        let mut out = keys(s, seed, 0);
        let mut inb = keys(s, seed, 1);
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::OursToRustls(len, ct) => {
                    let data = payload(len, i);
                    let mut rec = vec![0u8; HEADER_LEN];
                    rec.extend_from_slice(&data);
                    out.ours.seal(&mut rec, 0, ct).unwrap();
                    prop_assert_eq!(record::complete_record(&rec), Ok(Some(rec.len())));
                    prop_assert_eq!(&rec[..3], &[CT_APPLICATION_DATA, 3, 3][..]);
                    let msg = InboundOpaqueMessage::new(
                        ContentType::ApplicationData,
                        ProtocolVersion::TLSv1_2,
                        &mut rec[HEADER_LEN..],
                    );
                    let plain = out.dec.decrypt(msg, out.seq).unwrap();
                    out.seq += 1;
                    prop_assert_eq!(plain.typ, ContentType::from(ct));
                    prop_assert!(plain.payload == &data[..], "plaintext differs");
                }
                Op::RustlsToOurs(len, ct) => {
                    let data = payload(len, i);
                    let msg = OutboundPlainMessage {
                        typ: ContentType::from(ct),
                        version: ProtocolVersion::TLSv1_2,
                        payload: OutboundChunks::from(&data[..]),
                    };
                    let mut rec = inb.enc.encrypt(msg, inb.seq).unwrap().encode();
                    inb.seq += 1;
                    prop_assert_eq!(record::complete_record(&rec), Ok(Some(rec.len())));
                    let (got_ct, r) = inb.ours.open(&mut rec).unwrap();
                    prop_assert_eq!(got_ct, ct);
                    prop_assert!(rec[r] == data[..], "plaintext differs");
                }
                Op::NewKeys(k) => {
                    out = keys(s, k, 0);
                    inb = keys(s, k, 1);
                }
            }
        }
    }
}
