//! Bad input gets a typed error, never a panic: truncated, garbage and reshaped ciphertexts,
//! signatures of the wrong length or off the curve, round 0, bad keys, bad payloads.

mod common;

use koth_timelock::rand_core::{RngCore, SeedableRng};
use koth_timelock::{
    decode_commitment_plaintext, decrypt_with_signature, encrypt, encrypt_with_seed,
    verify_round_signature, DrandNetwork, SdkEnvelope, TimelockError, WeightsTlockPayload,
    SIGNATURE_LEN,
};

fn valid_ciphertext(plaintext: &[u8]) -> Vec<u8> {
    encrypt_with_seed(&DrandNetwork::quicknet(), plaintext, 1000, [1; 32]).unwrap()
}

/// Splits a ciphertext into its length-prefixed parts (U is the fixed 96 bytes before them).
fn u64_at(bytes: &[u8], at: usize) -> usize {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize
}

#[test]
fn every_truncation_is_a_malformed_ciphertext() {
    let sig = common::quicknet().signature;
    let ct = valid_ciphertext(b"a commitment");
    for len in 0..ct.len() {
        match decrypt_with_signature(&ct[..len], &sig) {
            Err(TimelockError::MalformedCiphertext(_)) => {}
            other => panic!("truncated to {len} of {}: {other:?}", ct.len()),
        }
    }
    assert_eq!(decrypt_with_signature(&ct, &sig).unwrap(), b"a commitment");
}

#[test]
fn garbage_is_refused() {
    let sig = common::quicknet().signature;
    let mut rng = rand_chacha_rng(42);
    for len in [0usize, 1, 47, 96, 200, 244, 300, 5000] {
        for _ in 0..8 {
            let mut junk = vec![0u8; len];
            rng.fill_bytes(&mut junk);
            assert!(
                decrypt_with_signature(&junk, &sig).is_err(),
                "{len} random bytes"
            );
        }
    }
    // All-zero and all-ones bytes, and huge length prefixes after a valid U.
    let ct = valid_ciphertext(b"x");
    for fill in [0x00u8, 0xff] {
        assert!(decrypt_with_signature(&vec![fill; ct.len()], &sig).is_err());
        let mut huge = ct[..96].to_vec();
        huge.extend_from_slice(&[fill; 64]);
        assert!(matches!(
            decrypt_with_signature(&huge, &sig),
            Err(TimelockError::MalformedCiphertext(_))
        ));
    }
}

#[test]
fn flipped_bits_never_decrypt_to_something_else() {
    let sig = common::quicknet().signature;
    let ct = valid_ciphertext(b"weights for epoch 7");
    for i in 0..ct.len() {
        for bit in [0u8, 3, 7] {
            let mut bad = ct.clone();
            bad[i] ^= 1 << bit;
            match decrypt_with_signature(&bad, &sig) {
                Err(TimelockError::MalformedCiphertext(_))
                | Err(TimelockError::DecryptionFailed(_)) => {}
                // The cipher suite (its length and tag, the last 16 bytes) is not read, and
                // bytes after the ciphertext are ignored: subtensor does the same.
                Ok(p) if i >= ct.len() - 16 => assert_eq!(p, b"weights for epoch 7"),
                other => panic!("byte {i} bit {bit}: {other:?}"),
            }
        }
    }
}

/// Rebuilds a ciphertext with one length-prefixed part (0 = V, 1 = W) replaced.
fn with_part(ct: &[u8], which: usize, part: &[u8]) -> Vec<u8> {
    let mut out = ct[..96].to_vec();
    let mut at = 96;
    for index in 0..2 {
        let len = u64_at(ct, at);
        let original = &ct[at + 8..at + 8 + len];
        let chosen = if index == which { part } else { original };
        out.extend_from_slice(&(chosen.len() as u64).to_le_bytes());
        out.extend_from_slice(chosen);
        at += 8 + len;
    }
    out.extend_from_slice(&ct[at..]);
    out
}

#[test]
fn reshaped_ibe_parts_are_refused_before_they_reach_timelock() {
    // timelock's decryption indexes V and W as 32 bytes; other lengths must stop here.
    let sig = common::quicknet().signature;
    let ct = valid_ciphertext(b"payload");
    assert_eq!(
        with_part(&ct, 0, &ct[104..136]),
        ct,
        "the rebuild is faithful"
    );
    for which in 0..2 {
        for len in [0usize, 1, 31, 33, 64, 1000] {
            let bad = with_part(&ct, which, &vec![7u8; len]);
            match decrypt_with_signature(&bad, &sig) {
                Err(TimelockError::MalformedCiphertext(_)) => {}
                other => panic!("part {which} of {len} bytes: {other:?}"),
            }
        }
    }
}

#[test]
fn a_bad_nonce_length_is_refused() {
    let sig = common::quicknet().signature;
    let ct = valid_ciphertext(b"n");
    // After U, V and W (96 + 40 + 40): the body's length, then the AES ciphertext, then the
    // nonce; rebuild the body with an 11- and a 13-byte nonce.
    let body_at = 96 + 40 + 40;
    let body_len = u64_at(&ct, body_at);
    let body = &ct[body_at + 8..body_at + 8 + body_len];
    let aes_len = u64_at(body, 0);
    let aes = &body[8..8 + aes_len];
    for nonce_len in [0usize, 11, 13] {
        let mut new_body = (aes_len as u64).to_le_bytes().to_vec();
        new_body.extend_from_slice(aes);
        new_body.extend_from_slice(&(nonce_len as u64).to_le_bytes());
        new_body.extend(std::iter::repeat_n(1u8, nonce_len));
        let mut bad = ct[..body_at].to_vec();
        bad.extend_from_slice(&(new_body.len() as u64).to_le_bytes());
        bad.extend_from_slice(&new_body);
        bad.extend_from_slice(&ct[body_at + 8 + body_len..]);
        assert!(
            matches!(
                decrypt_with_signature(&bad, &sig),
                Err(TimelockError::MalformedCiphertext(_))
            ),
            "nonce of {nonce_len} bytes"
        );
    }
}

#[test]
fn signatures_of_the_wrong_length_or_off_the_curve_are_refused() {
    let q = common::quicknet();
    let net = DrandNetwork::quicknet();
    let ct = valid_ciphertext(b"s");
    for len in [0usize, 1, 47, 49, 96] {
        let sig = vec![0xaau8; len];
        let expected = TimelockError::SignatureLength {
            expected: SIGNATURE_LEN,
            got: len,
        };
        assert_eq!(decrypt_with_signature(&ct, &sig), Err(expected.clone()));
        assert_eq!(verify_round_signature(&net, 1000, &sig), Err(expected));
    }
    // 48 bytes that are no G1 point; the point at infinity (flag byte 0xc0).
    let mut infinity = vec![0u8; 48];
    infinity[0] = 0xc0;
    for sig in [vec![0xffu8; 48], vec![0u8; 48], infinity] {
        assert!(matches!(
            decrypt_with_signature(&ct, &sig),
            Err(TimelockError::SignatureEncoding(_))
        ));
        assert!(matches!(
            verify_round_signature(&net, 1000, &sig),
            Err(TimelockError::SignatureEncoding(_))
        ));
    }
    // Hex instead of raw bytes is the wrong length, not a panic.
    let hex_sig = hex::encode(&q.signature).into_bytes();
    assert!(matches!(
        decrypt_with_signature(&ct, &hex_sig),
        Err(TimelockError::SignatureLength { got: 96, .. })
    ));
}

#[test]
fn round_zero_is_refused() {
    let net = DrandNetwork::quicknet();
    let mut rng = rand_chacha_rng(0);
    assert_eq!(
        encrypt(&net, b"x", 0, &mut rng),
        Err(TimelockError::RoundZero)
    );
    assert_eq!(
        verify_round_signature(&net, 0, &common::quicknet().signature),
        Err(TimelockError::RoundZero)
    );
}

#[test]
fn bad_network_parameters_are_refused() {
    let q = common::quicknet();
    let mut rng = rand_chacha_rng(0);
    for key in [
        vec![],
        vec![0u8; 95],
        vec![0xffu8; 96],
        q.public_key[..48].to_vec(),
    ] {
        assert!(matches!(
            DrandNetwork::new(key.clone(), q.genesis_time, q.period),
            Err(TimelockError::PublicKey(_))
        ));
        let net = DrandNetwork {
            public_key: key,
            genesis_time: q.genesis_time,
            period: q.period,
        };
        assert!(matches!(
            encrypt(&net, b"x", 5, &mut rng),
            Err(TimelockError::PublicKey(_))
        ));
        assert!(matches!(
            verify_round_signature(&net, 1000, &q.signature),
            Err(TimelockError::PublicKey(_))
        ));
    }
    // The G2 point at infinity (flag byte 0xc0) is a valid encoding but no key.
    let mut infinity = vec![0u8; 96];
    infinity[0] = 0xc0;
    assert!(matches!(
        DrandNetwork::new(infinity, q.genesis_time, q.period),
        Err(TimelockError::PublicKey(_))
    ));
    assert_eq!(
        DrandNetwork::new(q.public_key.clone(), q.genesis_time, 0),
        Err(TimelockError::PeriodZero)
    );
    let mut zero_period = DrandNetwork::quicknet();
    zero_period.period = 0;
    assert_eq!(
        zero_period.round_at(q.genesis_time),
        Err(TimelockError::PeriodZero)
    );
}

#[test]
fn bad_payloads_are_refused() {
    // Commitment strings: a length prefix that disagrees with the bytes, not UTF-8, empty.
    assert_eq!(decode_commitment_plaintext(&[0]).unwrap(), "");
    assert_eq!(decode_commitment_plaintext(&[8, b'h', b'i']).unwrap(), "hi");
    for bad in [
        &[][..],
        &[8, b'h'],
        &[8, b'h', b'i', b'!'],
        &[8, 0xff, 0xfe],
        &[0xff],
    ] {
        assert!(
            matches!(
                decode_commitment_plaintext(bad),
                Err(TimelockError::MalformedPayload(_))
            ),
            "{bad:?}"
        );
    }
    // Weights payloads: truncated, trailing bytes.
    let payload = WeightsTlockPayload::new([9; 32], vec![1, 2], vec![3, 4], 5).to_bytes();
    for len in 0..payload.len() {
        assert!(WeightsTlockPayload::from_bytes(&payload[..len]).is_err());
    }
    let mut trailing = payload.clone();
    trailing.push(0);
    assert!(matches!(
        WeightsTlockPayload::from_bytes(&trailing),
        Err(TimelockError::MalformedPayload(_))
    ));
    // SDK envelopes: truncated, trailing bytes, a length prefix past the end.
    let envelope = SdkEnvelope {
        encrypted_data: vec![1, 2, 3],
        reveal_round: 1000,
    }
    .to_bytes();
    for len in 0..envelope.len() {
        assert!(SdkEnvelope::from_bytes(&envelope[..len]).is_err());
    }
    let mut trailing = envelope.clone();
    trailing.push(0);
    assert!(SdkEnvelope::from_bytes(&trailing).is_err());
    assert!(SdkEnvelope::from_bytes(&[0xfe, 0xff, 0xff, 0xff]).is_err());
}

/// A seeded CSPRNG of the rand_core (0.6) that koth-timelock re-exports.
fn rand_chacha_rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}
