//! Offline checks against drand quicknet's published round-1000 beacon and against ciphertexts
//! that the Python SDK wrote (tests/fixtures/sdk_round1000.json).

mod common;

use koth_timelock::{
    decode_commitment_plaintext, decrypt_with_signature, encrypt, encrypt_with_seed, randomness,
    round_message, verify_round_signature, DrandNetwork, SdkEnvelope, TimelockError,
    WeightsTlockPayload, CIPHERTEXT_OVERHEAD, QUICKNET_CHAIN_HASH_HEX, QUICKNET_SCHEME_ID,
};
// koth-timelock re-exports the rand_core (0.6) whose traits timelock takes.
use koth_timelock::rand_core::OsRng;

#[test]
fn quicknet_parameters_are_the_published_ones() {
    let q = common::quicknet();
    let net = DrandNetwork::quicknet();
    assert_eq!(net.public_key, q.public_key);
    assert_eq!(net.genesis_time, q.genesis_time);
    assert_eq!(net.period, q.period);
    assert_eq!(QUICKNET_CHAIN_HASH_HEX, q.chain_hash);
    assert_eq!(QUICKNET_SCHEME_ID, q.scheme_id);
    // The published key is a valid G2 point.
    DrandNetwork::new(q.public_key, q.genesis_time, q.period).unwrap();
}

#[test]
fn round_1000_signature_verifies_against_quicknet() {
    let q = common::quicknet();
    verify_round_signature(&DrandNetwork::quicknet(), q.round, &q.signature).unwrap();
    // quicknet's randomness is sha256 of the signature: the fixture's pulse is self-consistent.
    assert_eq!(randomness(&q.signature).to_vec(), q.randomness);
}

#[test]
fn tampered_or_misplaced_signatures_do_not_verify() {
    let q = common::quicknet();
    let net = DrandNetwork::quicknet();

    // The pulse subtensor's drand pallet refuses: its bytes are not even a G1 point.
    assert!(matches!(
        verify_round_signature(&net, q.round, &q.invalid_signature),
        Err(TimelockError::SignatureEncoding(_))
    ));
    // The signature's negation (flip the sign bit of the compressed point): a valid G1 point,
    // but not the beacon's signature.
    let mut negated = q.signature.clone();
    negated[0] ^= 0x20;
    assert_eq!(
        verify_round_signature(&net, q.round, &negated),
        Err(TimelockError::SignatureMismatch { round: q.round })
    );
    // The right signature for the wrong round.
    for round in [1, 999, 1001, u64::MAX] {
        assert_eq!(
            verify_round_signature(&net, round, &q.signature),
            Err(TimelockError::SignatureMismatch { round })
        );
    }
    // Every single-bit flip is refused: off the curve, or another point.
    for byte in 0..q.signature.len() {
        for bit in 0..8 {
            let mut sig = q.signature.clone();
            sig[byte] ^= 1 << bit;
            match verify_round_signature(&net, q.round, &sig) {
                Err(TimelockError::SignatureEncoding(_))
                | Err(TimelockError::SignatureMismatch { .. }) => {}
                other => panic!("flip of byte {byte} bit {bit}: {other:?}"),
            }
        }
    }
    // Another public key (a valid G2 point: the quicknet key's negation) refuses it.
    let mut other_key = q.public_key.clone();
    other_key[0] ^= 0x20; // the sign bit of a compressed point
    let other = DrandNetwork::new(other_key, q.genesis_time, q.period).unwrap();
    assert!(matches!(
        verify_round_signature(&other, q.round, &q.signature),
        Err(TimelockError::SignatureMismatch { .. })
    ));
}

#[test]
fn round_message_is_sha256_of_the_big_endian_round() {
    // sha256(00 00 00 00 00 00 03 e8), by hand with sha2 to keep the test independent.
    use sha2::{Digest, Sha256};
    let expected: [u8; 32] = Sha256::digest([0, 0, 0, 0, 0, 0, 0x03, 0xe8]).into();
    assert_eq!(round_message(1000), expected);
}

#[test]
fn koth_encrypts_to_round_1000_and_the_published_signature_opens_it() {
    let q = common::quicknet();
    let net = DrandNetwork::quicknet();
    for len in [0usize, 1, 31, 32, 33, 1000, 70_000] {
        let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let ct = encrypt(&net, &plaintext, q.round, &mut OsRng).unwrap();
        assert_eq!(ct.len(), plaintext.len() + CIPHERTEXT_OVERHEAD);
        assert_eq!(
            decrypt_with_signature(&ct, &q.signature).unwrap(),
            plaintext
        );
    }
}

#[test]
fn another_rounds_ciphertext_does_not_open() {
    let q = common::quicknet();
    let net = DrandNetwork::quicknet();
    for round in [999, 1001] {
        let ct = encrypt(&net, b"not yet", round, &mut OsRng).unwrap();
        assert!(matches!(
            decrypt_with_signature(&ct, &q.signature),
            Err(TimelockError::DecryptionFailed(_))
        ));
    }
    // Nor does the round-1000 ciphertext open with a tampered signature: the negated one (a
    // valid point) or the pulse subtensor refuses (not a point).
    let ct = encrypt(&net, b"secret", q.round, &mut OsRng).unwrap();
    let mut negated = q.signature.clone();
    negated[0] ^= 0x20;
    assert!(matches!(
        decrypt_with_signature(&ct, &negated),
        Err(TimelockError::DecryptionFailed(_))
    ));
    assert!(matches!(
        decrypt_with_signature(&ct, &q.invalid_signature),
        Err(TimelockError::SignatureEncoding(_))
    ));
}

#[test]
fn seeded_encryption_is_deterministic_and_stable() {
    let q = common::quicknet();
    let net = DrandNetwork::quicknet();
    let a = encrypt_with_seed(&net, b"koth", q.round, [7; 32]).unwrap();
    let b = encrypt_with_seed(&net, b"koth", q.round, [7; 32]).unwrap();
    let c = encrypt_with_seed(&net, b"koth", q.round, [8; 32]).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(decrypt_with_signature(&a, &q.signature).unwrap(), b"koth");
    // The exact bytes of this version (timelock 0.0.1, ChaCha20 from the seed): a change here
    // means the ciphertext format or the use of randomness moved.
    let golden = common::read_json("tests/fixtures/koth_golden.json");
    assert_eq!(
        hex::encode(&a),
        golden["seed_7_koth_round_1000"].as_str().unwrap()
    );
}

#[test]
fn sdk_ciphertexts_in_the_repo_decrypt_in_koth() {
    let q = common::quicknet();
    let fixtures = common::read_json("tests/fixtures/sdk_round1000.json");
    let cases = fixtures["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let envelope = SdkEnvelope::from_bytes(&common::hex_of(case, "sdk_envelope_hex")).unwrap();
        assert_eq!(envelope.reveal_round, 1000, "{name}");
        let plaintext = decrypt_with_signature(&envelope.encrypted_data, &q.signature).unwrap();
        assert_eq!(plaintext, common::hex_of(case, "plaintext_hex"), "{name}");
        match name {
            "commitment" => assert_eq!(
                decode_commitment_plaintext(&plaintext).unwrap(),
                case["commitment"].as_str().unwrap()
            ),
            "weights" => {
                let w = &case["weights"];
                let hotkey: [u8; 32] = common::hex_of(w, "hotkey_hex").try_into().unwrap();
                let as_u16 = |k: &str| -> Vec<u16> {
                    w[k].as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap() as u16)
                        .collect()
                };
                let expected = WeightsTlockPayload::new(
                    hotkey,
                    as_u16("uids"),
                    as_u16("values"),
                    w["version_key"].as_u64().unwrap(),
                );
                assert_eq!(
                    WeightsTlockPayload::from_bytes(&plaintext).unwrap(),
                    expected
                );
                assert_eq!(expected.to_bytes(), plaintext);
            }
            _ => {}
        }
        // Re-wrapping gives the SDK's bytes back.
        assert_eq!(
            envelope.to_bytes(),
            common::hex_of(case, "sdk_envelope_hex"),
            "{name}"
        );
    }
}
