//! Cross-checks against the reference client, run live: the Python SDK's `bittensor_drand`
//! 2.0.0 and its SCALE codec, through tests/sdk_helper.py and `scripts/bittensor-venv.sh`.
//! Without the reference client these tests fail (they do not skip).

mod common;

use common::{hex_of, sdk};
use koth_timelock::epoch::MAX_TEMPO;
use koth_timelock::rand_core::OsRng;
use koth_timelock::{
    commitment_plaintext, commitment_reveal_round, decode_commitment_plaintext,
    decrypt_with_signature, encrypt, weights_reveal, DrandNetwork, EpochScheduleState, SdkEnvelope,
    TimelockError, WeightsTlockPayload, CIPHERTEXT_OVERHEAD,
};
use serde_json::{json, Value};

fn sample_weights() -> Vec<WeightsTlockPayload> {
    vec![
        WeightsTlockPayload::new([0xd4; 32], vec![], vec![], 0),
        WeightsTlockPayload::new(
            core::array::from_fn(|i| i as u8),
            vec![0, 1, 7, 255, 256, 65535],
            vec![65535, 0, 12, 1, 2, 3],
            u64::MAX,
        ),
        WeightsTlockPayload::new(
            [0x11; 32],
            (0..300).collect(),
            (0..300).map(|i| (i * 211) as u16).collect(),
            1_234_567,
        ),
    ]
}

fn sample_strings() -> Vec<String> {
    vec![
        String::new(),
        "koth:v1 hf://example/king@0123abcd".into(),
        "ünïcødé ✓ 王".into(),
        "x".repeat(63),     // the largest one-byte compact length
        "y".repeat(64),     // two-byte compact length
        "z".repeat(16_384), // four-byte compact length
    ]
}

#[test]
fn koth_ciphertexts_decrypt_with_the_sdk_and_quicknets_round_1000_signature() {
    let q = common::quicknet();
    let net = DrandNetwork::quicknet();
    let mut plaintexts: Vec<Vec<u8>> = vec![b"raw bytes from koth".to_vec(), vec![]];
    plaintexts.extend(sample_strings().iter().map(|s| commitment_plaintext(s)));
    plaintexts.extend(sample_weights().iter().map(WeightsTlockPayload::to_bytes));

    let mut requests = Vec::new();
    for plaintext in &plaintexts {
        let ciphertext = encrypt(&net, plaintext, q.round, &mut OsRng).unwrap();
        let envelope = SdkEnvelope {
            encrypted_data: ciphertext,
            reveal_round: q.round,
        };
        requests.push(json!({
            "op": "decrypt_with_signature",
            "envelope_hex": hex::encode(envelope.to_bytes()),
            "signature_hex": hex::encode(&q.signature),
        }));
    }
    // A control: the SDK refuses a round-1001 ciphertext with the round-1000 signature.
    let wrong_round = encrypt(&net, b"later", q.round + 1, &mut OsRng).unwrap();
    requests.push(json!({
        "op": "decrypt_with_signature",
        "envelope_hex": hex::encode(SdkEnvelope { encrypted_data: wrong_round, reveal_round: q.round + 1 }.to_bytes()),
        "signature_hex": hex::encode(&q.signature),
    }));

    let answers = sdk(Value::Array(requests));
    for (plaintext, answer) in plaintexts.iter().zip(&answers) {
        assert!(answer.get("error").is_none(), "SDK: {answer}");
        assert_eq!(&hex_of(answer, "plaintext_hex"), plaintext);
    }
    let control = answers.last().unwrap();
    assert!(
        control.get("error").is_some(),
        "the SDK opened a round-1001 ciphertext: {control}"
    );
}

#[test]
fn sdk_ciphertexts_decrypt_in_koth() {
    let q = common::quicknet();
    let plaintexts: Vec<Vec<u8>> = vec![
        b"raw bytes from the SDK".to_vec(),
        vec![],
        commitment_plaintext("a commitment written by the SDK"),
        sample_weights()[1].to_bytes(),
        vec![0xab; 5000],
    ];
    let requests = plaintexts
        .iter()
        .map(|p| json!({"op": "encrypt_at_round", "data_hex": hex::encode(p), "round": q.round}))
        .collect();
    let answers = sdk(Value::Array(requests));
    for (plaintext, answer) in plaintexts.iter().zip(&answers) {
        assert!(answer.get("error").is_none(), "SDK: {answer}");
        let envelope = SdkEnvelope::from_bytes(&hex_of(answer, "envelope_hex")).unwrap();
        assert_eq!(envelope.reveal_round, q.round);
        assert_eq!(
            envelope.encrypted_data.len(),
            plaintext.len() + CIPHERTEXT_OVERHEAD
        );
        assert_eq!(
            &decrypt_with_signature(&envelope.encrypted_data, &q.signature).unwrap(),
            plaintext
        );
        // And not with a signature for another round (the negated point).
        let mut negated = q.signature.clone();
        negated[0] ^= 0x20;
        assert!(matches!(
            decrypt_with_signature(&envelope.encrypted_data, &negated),
            Err(TimelockError::DecryptionFailed(_))
        ));
    }
}

#[test]
fn scale_payloads_match_the_sdks_codec() {
    let strings = sample_strings();
    let weights = sample_weights();
    let mut requests: Vec<Value> = strings
        .iter()
        .map(|s| json!({"op": "scale_str", "data": s}))
        .collect();
    requests.extend(weights.iter().map(|w| {
        json!({
            "op": "scale_weights",
            "hotkey_hex": hex::encode(&w.hotkey),
            "uids": w.uids,
            "values": w.values,
            "version_key": w.version_key,
        })
    }));
    let answers = sdk(Value::Array(requests));
    for (s, answer) in strings.iter().zip(&answers) {
        let sdk_bytes = hex_of(answer, "hex");
        assert_eq!(
            commitment_plaintext(s),
            sdk_bytes,
            "string of {} bytes",
            s.len()
        );
        assert_eq!(&decode_commitment_plaintext(&sdk_bytes).unwrap(), s);
    }
    for (w, answer) in weights.iter().zip(&answers[strings.len()..]) {
        let sdk_bytes = hex_of(answer, "hex");
        assert_eq!(w.to_bytes(), sdk_bytes);
        assert_eq!(&WeightsTlockPayload::from_bytes(&sdk_bytes).unwrap(), w);
    }
}

/// koth's rule at the SDK call's two ends brackets the SDK's answer (the SDK reads its own
/// clock; both read the same system clock). The window is a few milliseconds, so the two ends
/// almost always agree and the check is then exact.
fn assert_bracketed(what: &str, sdk_round: u64, at_before: u64, at_after: u64) {
    assert!(
        at_before <= sdk_round && sdk_round <= at_after,
        "{what}: the SDK chose round {sdk_round}, koth {at_before}..={at_after}"
    );
}

#[test]
fn commitment_reveal_round_matches_the_sdk() {
    let net = DrandNetwork::quicknet();
    let cases: &[(&str, u64, f64)] = &[
        ("koth:v1 a", 10, 12.0),
        ("b", 360, 12.0),
        ("c", 0, 12.0),
        ("d", 3, 0.25),
        ("e", 7, 0.25),
        ("f", 1, 0.5),
        ("g", 1_000_000, 12.0),
        ("h", 5, 12.345),
        // Half-second delays 0.5, 1.5, .. 4.5: rounded half away from zero they are 1..5, which
        // cover every residue mod 3, so a floor or a round-half-even rule would pick another
        // round for at least one of them whatever the clock reads.
        ("i", 1, 0.5),
        ("j", 3, 0.5),
        ("k", 5, 0.5),
        ("l", 7, 0.5),
        ("m", 9, 0.5),
    ];
    let requests = cases
        .iter()
        .map(|(data, blocks, block_time)| {
            json!({"op": "commitment", "data": data, "blocks_until_reveal": blocks, "block_time": block_time})
        })
        .collect();
    let answers = sdk(Value::Array(requests));
    for ((data, blocks, block_time), answer) in cases.iter().zip(&answers) {
        assert!(answer.get("error").is_none(), "SDK: {answer}");
        let sdk_round = answer["reveal_round"].as_u64().unwrap();
        // bittensor-drand truncates the time to whole seconds.
        let before = answer["t_before"].as_f64().unwrap().floor() as u64;
        let after = answer["t_after"].as_f64().unwrap().floor() as u64;
        assert_bracketed(
            &format!("commitment {data:?} {blocks} blocks of {block_time} s"),
            sdk_round,
            commitment_reveal_round(&net, *blocks, *block_time, before).unwrap(),
            commitment_reveal_round(&net, *blocks, *block_time, after).unwrap(),
        );
        // The SDK's ciphertext is the bare TLE ciphertext of the SCALE string.
        assert_eq!(
            hex_of(answer, "ciphertext_hex").len(),
            commitment_plaintext(data).len() + CIPHERTEXT_OVERHEAD
        );
    }
}

#[test]
fn weights_reveal_round_matches_the_sdk() {
    let net = DrandNetwork::quicknet();
    let st = |last, pending, index, tempo, since, current| EpochScheduleState {
        last_epoch_block: last,
        pending_epoch_at: pending,
        subnet_epoch_index: index,
        tempo,
        blocks_since_last_step: since,
        current_block: current,
    };
    // bittensor-drand's vectors, then edges: an epoch's last block, a pending epoch after the
    // automatic one, the MAX_TEMPO safety net, several reveal periods, a mainnet-like subnet.
    let cases: Vec<(EpochScheduleState, u64, f64)> = vec![
        (st(10, 0, 0, 50, 0, 10), 1, 12.0),
        (st(80, 95, 0, 20, 0, 91), 1, 12.0),
        (st(100, 0, 0, 50, 0, 120), 1, 12.0),
        (st(100, 0, 0, 10, 9, 109), 1, 12.0),
        (st(100, 0, 0, 10, 8, 108), 3, 12.0),
        (st(100, 200, 4, 50, 20, 120), 2, 12.0),
        (st(0, 0, 5, 1000, u64::from(MAX_TEMPO) + 1, 60_000), 1, 12.0),
        (st(7_200_000, 0, 20_000, 360, 100, 7_200_100), 1, 12.0),
        (st(7_200_000, 0, 20_000, 360, 359, 7_200_359), 2, 12.0),
        (st(50, 0, 1, 99, 0, 50), 4, 0.25),
    ];
    let hotkey = [0x42u8; 32];
    let mut requests: Vec<Value> = cases
        .iter()
        .map(|(s, period, block_time)| {
            json!({
                "op": "commit_v2",
                "uids": [0, 1],
                "weights": [100, 200],
                "version_key": 1,
                "state": {
                    "last_epoch_block": s.last_epoch_block,
                    "pending_epoch_at": s.pending_epoch_at,
                    "subnet_epoch_index": s.subnet_epoch_index,
                    "tempo": s.tempo,
                    "blocks_since_last_step": s.blocks_since_last_step,
                    "current_block": s.current_block,
                },
                "reveal_period_epochs": period,
                "block_time": block_time,
                "hotkey_hex": hex::encode(hotkey),
            })
        })
        .collect();
    // tempo 0: the SDK raises; koth gives TempoZero (checked below).
    let mut tempo_zero = requests[0].clone();
    tempo_zero["state"]["tempo"] = json!(0);
    requests.push(tempo_zero);

    let answers = sdk(Value::Array(requests.clone()));
    let payload_len = WeightsTlockPayload::new(hotkey, vec![0, 1], vec![100, 200], 1)
        .to_bytes()
        .len();
    for ((s, period, block_time), answer) in cases.iter().zip(&answers) {
        assert!(answer.get("error").is_none(), "SDK: {answer}");
        let sdk_round = answer["reveal_round"].as_u64().unwrap();
        let before = answer["t_before"].as_f64().unwrap();
        let after = answer["t_after"].as_f64().unwrap();
        let at = |t| {
            weights_reveal(&net, s, *period, *block_time, t)
                .unwrap()
                .reveal_round
        };
        assert_bracketed(
            &format!("{s:?}, {period} epochs"),
            sdk_round,
            at(before),
            at(after),
        );
        assert_eq!(
            hex_of(answer, "ciphertext_hex").len(),
            payload_len + CIPHERTEXT_OVERHEAD
        );
    }
    let last = answers.last().unwrap();
    assert!(
        last.get("error").is_some(),
        "the SDK accepted tempo 0: {last}"
    );
    assert_eq!(
        weights_reveal(&net, &st(10, 0, 0, 0, 0, 10), 1, 12.0, 1.8e9),
        Err(TimelockError::TempoZero)
    );
}
