//! koth's call bytes, signing payloads and signed extrinsics equal Bittensor's Python SDK
//! (bittensor 10.5.0) byte for byte, against the pinned subtensor metadata.
//!
//! The reference is tests/fixtures/reference_calls.json, made by
//! scripts/fixtures/make_subtensor_reference.py through the SDK's own code paths (fixtures/README.md
//! says what each field is). sr25519 signatures are randomized, so extrinsics are compared with
//! their 64 signature bytes cut out, and both signatures (the SDK's and koth's) are verified.
//!
//! `sdk_decodes_koths_extrinsics` also runs the SDK at test time (the python that
//! scripts/bittensor-venv.sh prints) to decode koth's extrinsics and check what it reads back.

use std::path::{Path, PathBuf};
use std::process::Command;

use codec::Decode;
use koth_chain::{AccountId, Keypair};
use koth_subtensor::calls::{encode_call, CallError, CommitmentData, SubtensorCall};
use koth_subtensor::metadata::{check_koth_items, decode_metadata, MetadataError};
use koth_subtensor::tx::{
    check_extensions, extrinsic_hash, signed_extrinsic, signing_payload, Era, TxError, TxParams,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subxt_core::Metadata;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn metadata_bytes() -> Vec<u8> {
    std::fs::read(fixtures().join("metadata.scale")).expect("reading tests/fixtures/metadata.scale")
}

fn metadata() -> Metadata {
    decode_metadata(&metadata_bytes()).expect("the pinned metadata decodes")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("reference_calls.json"))
        .expect("reading tests/fixtures/reference_calls.json");
    serde_json::from_str(&text).expect("reference_calls.json is JSON")
}

fn unhex(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap_or_else(|| panic!("{v} is not a string"));
    hex::decode(s.strip_prefix("0x").unwrap_or(s)).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn hash32(v: &Value) -> [u8; 32] {
    unhex(v).try_into().expect("a 32-byte hash")
}

fn num(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{v} is not an unsigned integer"))
}

fn u16s(v: &Value) -> Vec<u16> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| u16::try_from(num(x)).expect("a u16"))
        .collect()
}

/// The fixture case's call, as koth's type.
fn call_of(case: &Value) -> SubtensorCall {
    let a = &case["args"];
    let netuid = u16::try_from(num(&a["netuid"])).unwrap();
    match case["call"].as_str().unwrap() {
        "set_commitment" => {
            let d = &a["data"];
            let data = if let Some(raw) = d.get("Raw") {
                CommitmentData::Raw(unhex(raw))
            } else {
                let t = &d["TimelockEncrypted"];
                CommitmentData::TimelockEncrypted {
                    encrypted: unhex(&t["encrypted"]),
                    reveal_round: num(&t["reveal_round"]),
                }
            };
            SubtensorCall::SetCommitment { netuid, data }
        }
        "set_weights" => SubtensorCall::SetWeights {
            netuid,
            dests: u16s(&a["dests"]),
            weights: u16s(&a["weights"]),
            version_key: num(&a["version_key"]),
        },
        "commit_timelocked_mechanism_weights" => SubtensorCall::CommitTimelockedMechanismWeights {
            netuid,
            mecid: u8::try_from(num(&a["mecid"])).unwrap(),
            commit: unhex(&a["commit"]),
            reveal_round: num(&a["reveal_round"]),
            commit_reveal_version: u16::try_from(num(&a["commit_reveal_version"])).unwrap(),
        },
        other => panic!("unknown fixture call {other}"),
    }
}

fn params_of(reference: &Value, signed: &Value) -> TxParams {
    let p = &reference["params"];
    let era = match signed["era"].get("Mortal") {
        None => Era::Immortal,
        Some(m) => Era::Mortal {
            period: num(&m["period"]),
            current: num(&m["current"]),
            block_hash: hash32(&m["block_hash"]),
        },
    };
    TxParams {
        genesis_hash: hash32(&p["genesis_hash"]),
        spec_version: u32::try_from(num(&p["spec_version"])).unwrap(),
        transaction_version: u32::try_from(num(&p["transaction_version"])).unwrap(),
        nonce: num(&p["nonce"]),
        era,
        tip: u128::from(num(&p["tip"])),
    }
}

fn signer(reference: &Value) -> Keypair {
    let s = &reference["signer"];
    let key = Keypair::from_seed(hash32(&s["seed"]));
    assert_eq!(
        key.account().as_bytes().to_vec(),
        unhex(&s["public"]),
        "signer public key"
    );
    assert_eq!(
        key.account().to_ss58(),
        s["ss58"].as_str().unwrap(),
        "signer address"
    );
    key
}

fn without_signature(extrinsic: &[u8], offset: usize) -> Vec<u8> {
    assert!(
        extrinsic.len() >= offset + 64,
        "extrinsic too short for a signature at {offset}"
    );
    [&extrinsic[..offset], &extrinsic[offset + 64..]].concat()
}

/// koth's signed extrinsics for every fixture case and era, with the fixture entry they match.
fn koths_extrinsics(
    reference: &Value,
    metadata: &Metadata,
    key: &Keypair,
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for case in reference["cases"].as_array().unwrap() {
        let call = encode_call(metadata, &call_of(case)).unwrap();
        for signed in case["signed"].as_array().unwrap() {
            let params = params_of(reference, signed);
            let ext = signed_extrinsic(metadata, &call, &params, key).unwrap();
            let label = format!("{} {}", case["name"].as_str().unwrap(), signed["era"]);
            out.push((label, ext));
        }
    }
    out
}

#[test]
fn fixture_was_made_from_the_pinned_metadata() {
    let reference = reference();
    let sha = hex::encode(Sha256::digest(metadata_bytes()));
    assert_eq!(reference["metadata"]["sha256"].as_str().unwrap(), sha);
    assert_eq!(reference["bittensor"].as_str().unwrap(), "10.5.0");
    check_koth_items(&metadata()).unwrap();
    let names: Vec<_> = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "set_commitment_raw",
            "set_commitment_timelock",
            "set_weights",
            "commit_timelocked_mechanism_weights"
        ]
    );
}

#[test]
fn call_bytes_equal_the_sdks() {
    let (reference, metadata) = (reference(), metadata());
    for case in reference["cases"].as_array().unwrap() {
        let ours = encode_call(&metadata, &call_of(case)).unwrap();
        assert_eq!(
            hex::encode(&ours),
            hex::encode(unhex(&case["call_bytes"])),
            "call bytes of {}",
            case["name"]
        );
    }
}

#[test]
fn signing_payloads_equal_the_sdks() {
    let (reference, metadata) = (reference(), metadata());
    let mut hashed = 0;
    for case in reference["cases"].as_array().unwrap() {
        let call = encode_call(&metadata, &call_of(case)).unwrap();
        for signed in case["signed"].as_array().unwrap() {
            let what = format!("{} {}", case["name"], signed["era"]);
            let params = params_of(&reference, signed);
            if let Some(m) = signed["era"].get("Mortal") {
                assert_eq!(
                    params.era.birth(),
                    Some(num(&m["birth"])),
                    "era birth of {what}"
                );
            }
            let ours = signing_payload(&metadata, &call, &params).unwrap();
            let raw = unhex(&signed["signing_payload_raw"]);
            let expected = unhex(&signed["signing_payload"]);
            assert_eq!(
                hex::encode(&ours),
                hex::encode(&expected),
                "signing payload of {what}"
            );
            // The raw payload starts with the call; when long, what is signed is its hash.
            assert!(
                raw.starts_with(&call),
                "raw payload of {what} starts with the call"
            );
            if raw.len() > 256 {
                hashed += 1;
                assert_eq!(ours.len(), 32);
                assert_eq!(
                    ours,
                    extrinsic_hash(&raw),
                    "blake2-256 of the raw payload of {what}"
                );
            } else {
                assert_eq!(ours, raw, "short payload of {what} is signed as is");
            }
        }
    }
    assert!(hashed >= 2, "the fixtures cover payloads over 256 bytes");
}

#[test]
fn signed_extrinsics_equal_the_sdks_and_both_signatures_verify() {
    let (reference, metadata) = (reference(), metadata());
    let key = signer(&reference);
    let public = AccountId::from_bytes(*key.account().as_bytes());
    let mut ours_iter = koths_extrinsics(&reference, &metadata, &key).into_iter();
    for case in reference["cases"].as_array().unwrap() {
        for signed in case["signed"].as_array().unwrap() {
            let (what, ours) = ours_iter.next().unwrap();
            let sdk = unhex(&signed["extrinsic"]);
            let offset = usize::try_from(num(&signed["signature_offset"])).unwrap();
            let payload = unhex(&signed["signing_payload"]);
            assert_eq!(ours.len(), sdk.len(), "extrinsic length of {what}");
            assert_eq!(
                hex::encode(without_signature(&ours, offset)),
                hex::encode(without_signature(&sdk, offset)),
                "extrinsic of {what}, signature aside"
            );
            let sdk_sig: [u8; 64] = sdk[offset..offset + 64].try_into().unwrap();
            assert_eq!(sdk_sig.to_vec(), unhex(&signed["signature"]));
            assert!(
                public.verify(&payload, &sdk_sig),
                "the SDK's signature of {what} verifies"
            );
            let our_sig: [u8; 64] = ours[offset..offset + 64].try_into().unwrap();
            assert!(
                public.verify(&payload, &our_sig),
                "koth's signature of {what} verifies"
            );
            // A signature over anything else does not.
            assert!(!public.verify(&[payload.as_slice(), b"x"].concat(), &our_sig));
            assert_eq!(
                extrinsic_hash(&sdk).to_vec(),
                unhex(&signed["extrinsic_hash"]),
                "extrinsic hash of {what}"
            );
        }
    }
}

#[test]
fn commitment_data_tags_are_subtensors_hand_written_ones() {
    let metadata = metadata();
    // set_commitment: 0x12 0x00 (pallet 18, call 0), netuid u16, compact(1) fields, Data tag.
    let tag = |data: CommitmentData| {
        let call =
            encode_call(&metadata, &SubtensorCall::SetCommitment { netuid: 1, data }).unwrap();
        assert_eq!(call[..2], [18, 0]);
        assert_eq!(call[4], 0x04);
        (call[5], call.len() - 6)
    };
    assert_eq!(tag(CommitmentData::Raw(vec![])), (1, 0));
    assert_eq!(tag(CommitmentData::Raw(vec![b'a'; 5])), (6, 5));
    assert_eq!(tag(CommitmentData::Raw(vec![b'a'; 128])), (129, 128));
    let (t, len) = tag(CommitmentData::TimelockEncrypted {
        encrypted: vec![7; 3],
        reveal_round: 9,
    });
    // Tag 134, compact(3), three bytes, reveal_round u64.
    assert_eq!((t, len), (134, 1 + 3 + 8));
    assert_eq!(
        encode_call(
            &metadata,
            &SubtensorCall::SetCommitment {
                netuid: 1,
                data: CommitmentData::Raw(vec![0; 129]),
            }
        ),
        Err(CallError::RawTooLong { len: 129 })
    );
}

#[test]
fn out_of_range_and_mismatched_arguments_are_errors() {
    let metadata = metadata();
    assert_eq!(
        encode_call(
            &metadata,
            &SubtensorCall::SetWeights {
                netuid: 1,
                dests: vec![1, 2],
                weights: vec![1],
                version_key: 0,
            }
        ),
        Err(CallError::WeightsLengthMismatch {
            dests: 2,
            weights: 1
        })
    );
}

/// The pinned metadata, changed by `edit`.
fn edited_metadata(edit: impl FnOnce(&mut frame_metadata::v15::RuntimeMetadataV15)) -> Metadata {
    use frame_metadata::{RuntimeMetadata, RuntimeMetadataPrefixed};
    let bytes = metadata_bytes();
    let mut prefixed = RuntimeMetadataPrefixed::decode(&mut &bytes[..]).unwrap();
    let RuntimeMetadata::V15(v15) = &mut prefixed.1 else {
        panic!("the pinned metadata is V15");
    };
    edit(v15);
    Metadata::try_from(prefixed).unwrap()
}

#[test]
fn a_runtime_without_the_call_is_an_error_naming_it() {
    let commit = SubtensorCall::SetCommitment {
        netuid: 1,
        data: CommitmentData::Raw(b"x".to_vec()),
    };
    let weights = SubtensorCall::SetWeights {
        netuid: 1,
        dests: vec![],
        weights: vec![],
        version_key: 0,
    };
    let no_calls = edited_metadata(|m| {
        let p = m
            .pallets
            .iter_mut()
            .find(|p| p.name == "Commitments")
            .unwrap();
        p.calls = None;
    });
    let err = encode_call(&no_calls, &commit).unwrap_err();
    assert_eq!(
        err,
        CallError::MissingCall {
            pallet: "Commitments",
            call: "set_commitment"
        }
    );
    assert_eq!(
        err.to_string(),
        "runtime metadata has no call Commitments.set_commitment"
    );
    let no_pallet = edited_metadata(|m| m.pallets.retain(|p| p.name != "SubtensorModule"));
    assert_eq!(
        encode_call(&no_pallet, &weights),
        Err(CallError::MissingPallet {
            pallet: "SubtensorModule",
            call: "set_weights"
        })
    );
    let Err(MetadataError::MissingItems { missing }) = check_koth_items(&no_pallet) else {
        panic!("check_koth_items accepts a runtime without SubtensorModule");
    };
    assert!(missing.contains(&"call SubtensorModule.set_weights".to_string()));
    assert!(missing.contains(&"storage SubtensorModule.Uids".to_string()));
    assert!(!missing.iter().any(|m| m.contains("Commitments")));
}

#[test]
fn an_unknown_transaction_extension_with_data_is_refused() {
    let (reference, metadata) = (reference(), metadata());
    let params = params_of(&reference, &reference["cases"][0]["signed"][0]);
    let call = encode_call(&metadata, &call_of(&reference["cases"][0])).unwrap();
    check_extensions(&metadata).unwrap();
    // Subtensor's own empty extensions pass; one carrying data that koth cannot fill in does not.
    let renamed = edited_metadata(|m| {
        let e = m
            .extrinsic
            .signed_extensions
            .iter_mut()
            .find(|e| e.identifier == "CheckNonce")
            .unwrap();
        e.identifier = "CheckNonceV2".into();
    });
    let err = signing_payload(&renamed, &call, &params).unwrap_err();
    assert_eq!(
        err,
        TxError::UnsupportedExtension {
            identifier: "CheckNonceV2".into(),
            extra_empty: "not empty",
            implicit_empty: "empty",
        }
    );
    assert!(err.to_string().contains("CheckNonceV2"), "{err}");
}

/// The python with bittensor 10.5.0 (installed by the script when missing).
fn bittensor_python() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(root.join("scripts/bittensor-venv.sh"))
        .output()
        .expect("running scripts/bittensor-venv.sh");
    assert!(
        out.status.success(),
        "scripts/bittensor-venv.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .lines()
        .last()
        .expect("a python path")
        .trim()
        .to_string()
}

#[test]
fn sdk_decodes_koths_extrinsics() {
    let (reference, metadata) = (reference(), metadata());
    let key = signer(&reference);
    let ours = koths_extrinsics(&reference, &metadata, &key);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(bittensor_python())
        .arg(root.join("scripts/fixtures/make_subtensor_reference.py"))
        .arg("--decode-extrinsic")
        .args(
            ours.iter()
                .map(|(_, ext)| format!("0x{}", hex::encode(ext))),
        )
        .output()
        .expect("running the SDK's decoder");
    assert!(
        out.status.success(),
        "the SDK did not decode koth's extrinsics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(decoded.len(), ours.len());

    let p = &reference["params"];
    let mut i = 0;
    for case in reference["cases"].as_array().unwrap() {
        for signed in case["signed"].as_array().unwrap() {
            let (what, ext) = &ours[i];
            let d = &decoded[i];
            i += 1;
            assert_eq!(d["address"], reference["signer"]["ss58"], "{what}: signer");
            assert_eq!(d["nonce"], p["nonce"], "{what}: nonce");
            assert_eq!(d["tip"], p["tip"], "{what}: tip");
            // The SDK's extrinsic_length is the length its compact prefix states.
            let mut body = &ext[..];
            let stated = codec::Compact::<u32>::decode(&mut body).unwrap().0;
            assert_eq!(stated as usize, body.len(), "{what}: length prefix");
            assert_eq!(
                num(&d["extrinsic_length"]),
                u64::from(stated),
                "{what}: length"
            );
            assert_eq!(
                unhex(&d["extrinsic_hash"]),
                extrinsic_hash(ext).to_vec(),
                "{what}: hash"
            );
            let offset = usize::try_from(num(&signed["signature_offset"])).unwrap();
            assert_eq!(
                unhex(&d["signature"]["Sr25519"]),
                ext[offset..offset + 64].to_vec(),
                "{what}: signature"
            );
            match signed["era"].get("Mortal") {
                None => assert_eq!(d["era"], "00", "{what}: era"),
                Some(m) => {
                    let period = num(&m["period"]);
                    let phase = num(&m["current"]) % period;
                    assert_eq!(d["era"], serde_json::json!([period, phase]), "{what}: era");
                }
            }
            let call = &d["call"];
            assert_eq!(call["call_module"], case["pallet"], "{what}: pallet");
            assert_eq!(call["call_function"], case["call"], "{what}: call");
            let args: serde_json::Map<String, Value> = call["call_args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (a["name"].as_str().unwrap().to_string(), a["value"].clone()))
                .collect();
            let a = &case["args"];
            assert_eq!(args["netuid"], a["netuid"], "{what}: netuid");
            match case["call"].as_str().unwrap() {
                "set_commitment" => {
                    let field = &args["info"]["fields"][0];
                    if let Some(raw) = a["data"].get("Raw") {
                        let name = format!("Raw{}", unhex(raw).len());
                        assert_eq!(unhex(&field[&name]), unhex(raw), "{what}: {name}");
                    } else {
                        let t = &a["data"]["TimelockEncrypted"];
                        let f = &field["TimelockEncrypted"];
                        assert_eq!(
                            unhex(&f["encrypted"]),
                            unhex(&t["encrypted"]),
                            "{what}: encrypted"
                        );
                        assert_eq!(f["reveal_round"], t["reveal_round"], "{what}: reveal_round");
                    }
                }
                "set_weights" => {
                    for k in ["dests", "weights", "version_key"] {
                        assert_eq!(args[k], a[k], "{what}: {k}");
                    }
                }
                _ => {
                    for k in ["mecid", "reveal_round", "commit_reveal_version"] {
                        assert_eq!(args[k], a[k], "{what}: {k}");
                    }
                    assert_eq!(
                        unhex(&args["commit"]),
                        unhex(&a["commit"]),
                        "{what}: commit"
                    );
                }
            }
        }
    }
}
