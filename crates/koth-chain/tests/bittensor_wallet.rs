//! Importing Bittensor keys gives the addresses Bittensor's own wallet library derives.
//!
//! The fixtures (tests/fixtures/bittensor_wallet) were written by `bittensor_wallet` itself:
//! see scripts/fixtures/make_wallet_fixtures.py and the `expected.json` it records.

use std::fs;
use std::path::{Path, PathBuf};

use koth_chain::import::{
    keypair_from_uri, parse_wallet_file, read_wallet_file, MnemonicError, WalletProblem,
    MAX_WALLET_FILE_BYTES,
};
use koth_chain::{Keypair, Keystore};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bittensor_wallet")
}

fn expected() -> Value {
    let text = fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().unwrap()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn assert_same(key: &Keypair, want: &Value, what: &str) {
    assert_eq!(key.account().to_ss58(), str_of(want, "ss58"), "{what}");
    assert_eq!(
        format!("0x{}", key.account().public_hex()),
        str_of(want, "public"),
        "{what}"
    );
}

fn problem(path: &Path) -> WalletProblem {
    match read_wallet_file(path) {
        Ok(key) => panic!("{} was imported as {}", path.display(), key.account()),
        Err(e) => {
            assert_eq!(e.path, path);
            // The message names the file.
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            e.problem
        }
    }
}

#[test]
fn hotkey_and_coldkey_files_give_the_librarys_addresses() {
    let exp = expected();
    let wallets = list(&exp, "wallets");
    let words: Vec<u64> = wallets
        .iter()
        .map(|w| w["words"].as_u64().unwrap())
        .collect();
    for n in [12, 15, 18, 24] {
        assert!(words.contains(&n), "fixtures cover {n}-word mnemonics");
    }
    for w in wallets {
        let case = str_of(w, "case");
        for file in ["hotkey", "coldkey"] {
            let path = fixtures().join(str_of(w, file));
            let key = read_wallet_file(&path).unwrap_or_else(|e| panic!("{case} {file}: {e}"));
            assert_same(&key, w, &format!("{case} {file}"));
        }
        let key = keypair_from_uri(str_of(w, "mnemonic")).unwrap();
        assert_same(&key, w, &format!("{case} mnemonic"));
        for file in ["coldkeypub", "hotkeypub"] {
            let path = fixtures().join(str_of(w, file));
            assert!(
                matches!(problem(&path), WalletProblem::PublicOnly),
                "{case} {file}"
            );
        }
    }
}

#[test]
fn seed_only_hotkeys_give_the_librarys_addresses() {
    let exp = expected();
    let seeds = list(&exp, "seed_wallets");
    // One of them has the library's text-not-hex secretSeed.
    assert!(seeds.iter().any(|s| s["seed_written_as_hex"] == false));
    for s in seeds {
        let path = fixtures().join(str_of(s, "hotkey"));
        let key = read_wallet_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_same(&key, s, str_of(s, "case"));
        assert_eq!(
            format!("0x{}", hex::encode(key.seed())),
            str_of(s, "seed"),
            "the seed itself is stored"
        );
    }
}

#[test]
fn secret_uris_give_the_librarys_addresses() {
    let exp = expected();
    for u in list(&exp, "uris") {
        let uri = str_of(u, "uri");
        let key = keypair_from_uri(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_same(&key, u, uri);
        // The stored seed expands to the same key (hard derivation yields a seed).
        assert_eq!(Keypair::from_seed(*key.seed()).account(), key.account());
    }
}

#[test]
fn mnemonics_the_library_refuses_are_refused() {
    let exp = expected();
    for m in list(&exp, "invalid_mnemonics") {
        let err = keypair_from_uri(str_of(m, "mnemonic")).unwrap_err();
        let want = match str_of(m, "case") {
            "bad-checksum" => matches!(err, MnemonicError::Checksum),
            "unknown-word" => matches!(
                err,
                MnemonicError::UnknownWord {
                    index: 4,
                    count: 12
                }
            ),
            "eleven-words" => matches!(err, MnemonicError::WordCount(11)),
            "upper-case" => matches!(err, MnemonicError::UnknownWord { index: 1, .. }),
            other => panic!("unknown case {other}"),
        };
        assert!(want, "{}: {err}", str_of(m, "case"));
    }
}

#[test]
fn encrypted_public_only_uri_and_ed25519_files_are_refused_with_the_reason() {
    let exp = expected();
    let refused = list(&exp, "refused");
    for why in ["private_key_only", "public_only", "ed25519", "encrypted"] {
        assert!(
            refused.iter().any(|r| r["why"] == why),
            "fixtures cover {why}"
        );
    }
    for r in refused {
        let path = fixtures().join(str_of(r, "file"));
        let problem = problem(&path);
        let msg = problem.to_string();
        match str_of(r, "why") {
            "private_key_only" => {
                assert!(matches!(problem, WalletProblem::PrivateKeyOnly), "{msg}");
                assert!(msg.contains("--mnemonic-stdin"), "{msg}");
                // The documented way round works: the same URI gives the same key.
                let key = keypair_from_uri(str_of(r, "uri")).unwrap();
                assert_same(&key, r, "uri-hotkey");
                let file: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
                assert_eq!(file["ss58Address"], r["ss58"]);
                // And its privateKey is the expansion of that key.
                let private = hex::decode(&str_of(&file, "privateKey")[2..]).unwrap();
                assert!(key.expanded_secret_eq(&private.try_into().unwrap()));
            }
            "public_only" => assert!(matches!(problem, WalletProblem::PublicOnly), "{msg}"),
            "ed25519" => assert!(matches!(problem, WalletProblem::NotSr25519(0)), "{msg}"),
            "encrypted" => {
                assert!(matches!(problem, WalletProblem::Encrypted(_)), "{msg}");
                assert!(msg.contains("btcli") && msg.contains("mnemonic"), "{msg}");
            }
            other => panic!("unknown reason {other}"),
        }
    }
}

/// A fixture hotkey file as a JSON object, to damage.
fn hotkey_json(case: &str) -> serde_json::Map<String, Value> {
    let path = fixtures().join(format!("wallets/{case}/hotkeys/default"));
    match serde_json::from_slice(&fs::read(path).unwrap()).unwrap() {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

fn parse(map: &serde_json::Map<String, Value>) -> Result<Keypair, WalletProblem> {
    parse_wallet_file(&serde_json::to_vec(map).unwrap())
}

#[test]
fn damaged_files_are_refused_naming_the_field_and_what_was_expected() {
    let good = hotkey_json("dev");
    assert!(parse(&good).is_ok());
    let other = hotkey_json("m12-legal");

    // Another key's address: both addresses are named.
    let mut m = good.clone();
    m.insert("ss58Address".into(), other["ss58Address"].clone());
    let err = parse(&m).unwrap_err();
    assert!(
        matches!(
            err,
            WalletProblem::AddressMismatch {
                field: "ss58Address",
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(good["ss58Address"].as_str().unwrap())
            && msg.contains(other["ss58Address"].as_str().unwrap()),
        "{msg}"
    );
    for field in ["publicKey", "accountId"] {
        let mut m = good.clone();
        m.insert(field.into(), other[field].clone());
        let err = parse(&m).unwrap_err();
        assert!(
            matches!(&err, WalletProblem::AddressMismatch { field: f, .. } if *f == field),
            "{err}"
        );
    }

    // Phrase and seed of different keys.
    let mut m = good.clone();
    m.insert("secretSeed".into(), other["secretSeed"].clone());
    let err = parse(&m).unwrap_err();
    assert!(
        matches!(err, WalletProblem::PhraseSeedMismatch { .. }),
        "{err}"
    );

    // Another key's privateKey.
    let mut m = good.clone();
    m.insert("privateKey".into(), other["privateKey"].clone());
    assert!(matches!(
        parse(&m).unwrap_err(),
        WalletProblem::PrivateKeyMismatch("secretSeed")
    ));

    // Wrong lengths and types name the field and the expected form, never the secret.
    let cases: [(&str, Value); 6] = [
        ("secretSeed", Value::from("0x1234")),
        ("secretSeed", Value::from(42)),
        ("publicKey", Value::from(format!("0x{}", "ab".repeat(33)))),
        ("privateKey", Value::from("0xzz")),
        ("accountId", Value::from(vec![1, 2])),
        ("secretPhrase", Value::from(true)),
    ];
    for (field, value) in cases {
        let mut m = good.clone();
        m.insert(field.into(), value.clone());
        let err = parse(&m).unwrap_err();
        assert!(
            matches!(&err, WalletProblem::Field { field: f, .. } if *f == field),
            "{field}={value}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(field) && msg.contains("expected"), "{msg}");
    }
    let mut m = good.clone();
    m.insert("ss58Address".into(), Value::from("5notanaddress"));
    assert!(matches!(
        parse(&m).unwrap_err(),
        WalletProblem::Field {
            field: "ss58Address",
            ..
        }
    ));
    let mut m = good.clone();
    m.insert("cryptoType".into(), Value::from(7));
    assert!(matches!(
        parse(&m).unwrap_err(),
        WalletProblem::Field {
            field: "cryptoType",
            ..
        }
    ));
    // A bad phrase (with no seed to fall back on) is a phrase error, not shown.
    let mut m = good.clone();
    m.remove("secretSeed");
    m.insert("secretPhrase".into(), Value::from("abandon ".repeat(12)));
    let err = parse(&m).unwrap_err();
    assert!(
        matches!(err, WalletProblem::Phrase(MnemonicError::Checksum)),
        "{err}"
    );
    assert!(!err.to_string().contains("abandon"));
    // The phrase alone is enough (an empty or null field counts as absent).
    let mut m = good.clone();
    m.insert("secretSeed".into(), Value::from(""));
    m.insert("privateKey".into(), Value::Null);
    assert_eq!(
        parse(&m).unwrap().account().to_ss58(),
        good["ss58Address"].as_str().unwrap()
    );

    // Missing fields.
    let mut m = good.clone();
    for f in ["publicKey", "accountId", "ss58Address"] {
        m.remove(f);
    }
    assert!(matches!(parse(&m).unwrap_err(), WalletProblem::NoAddress));
    let mut m = serde_json::Map::new();
    m.insert("name".into(), Value::from("x"));
    assert!(matches!(parse(&m).unwrap_err(), WalletProblem::NoKey));

    // Not JSON, not an object, other encrypted formats.
    for (bytes, want) in [
        (&b"not json"[..], "NotJson"),
        (&b""[..], "NotJson"),
        (&b"[1, 2]"[..], "NotObject"),
        (&b"\"0x00\""[..], "NotObject"),
        (&b"$ANSIBLE_VAULT;1.1;AES256\n6162"[..], "Encrypted"),
        (&b"gAAAAABh-legacy-fernet"[..], "Encrypted"),
        (&[0xff, 0x00, 0x13][..], "NotJson"),
    ] {
        let err = parse_wallet_file(bytes).unwrap_err();
        let got = match err {
            WalletProblem::NotJson(_) => "NotJson",
            WalletProblem::NotObject => "NotObject",
            WalletProblem::Encrypted(_) => "Encrypted",
            _ => "other",
        };
        assert_eq!(got, want, "{bytes:?}: {err}");
    }
}

#[test]
fn huge_files_directories_and_missing_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge");
    let mut text = String::from("{\"pad\": \"");
    text.push_str(&"a".repeat(MAX_WALLET_FILE_BYTES as usize));
    text.push_str("\"}");
    fs::write(&huge, text).unwrap();
    assert!(matches!(problem(&huge), WalletProblem::TooLarge));
    assert!(matches!(problem(dir.path()), WalletProblem::Directory));
    assert!(matches!(
        problem(&dir.path().join("absent")),
        WalletProblem::Read(_)
    ));
}

#[test]
fn an_imported_key_is_stored_and_loads_back_with_the_same_address() {
    let exp = expected();
    let w = &list(&exp, "wallets")[0];
    let dir = tempfile::tempdir().unwrap();
    let store = Keystore::new(dir.path().join("keys"));
    let key = read_wallet_file(&fixtures().join(str_of(w, "hotkey"))).unwrap();
    store.insert("hot", &key).unwrap();
    assert_same(&store.load("hot").unwrap(), w, "stored");
    let info = store.info("hot").unwrap();
    assert_eq!(info.ss58, str_of(w, "ss58"));
    // Never overwritten.
    let other = keypair_from_uri(str_of(&list(&exp, "wallets")[1], "mnemonic")).unwrap();
    assert!(store.insert("hot", &other).is_err());
    assert_same(&store.load("hot").unwrap(), w, "still the first key");
}
