//! `koth keys import` through the built binary, against wallets written by Bittensor's own
//! wallet library (crates/koth-chain/tests/fixtures/bittensor_wallet, made by
//! scripts/fixtures/make_wallet_fixtures.py).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../koth-chain/tests/fixtures/bittensor_wallet")
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap()
}

/// Run koth with `stdin` piped in (closed when empty).
fn koth(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_koth"))
        .args(args)
        .env_remove("KOTH_KEYSTORE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running koth");
    let mut pipe = child.stdin.take().unwrap();
    // koth may exit before reading (a refused name): a broken pipe is fine.
    let _ = pipe.write_all(stdin.as_bytes());
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn ok_json(args: &[&str], stdin: &str) -> Value {
    let out = koth(args, stdin);
    assert!(
        out.status.success(),
        "koth {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Run a command that must fail; returns its stderr. The keystore must be left as it was.
fn refused(args: &[&str], stdin: &str, ks: &Path) -> String {
    let before = listing(ks);
    let out = koth(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "koth {args:?} should fail");
    assert!(out.stdout.is_empty(), "{args:?} printed a record");
    assert_eq!(listing(ks), before, "{args:?} changed the keystore");
    stderr
}

/// Every file of the keystore with its content.
fn listing(ks: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = match std::fs::read_dir(ks) {
        Ok(entries) => entries
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture(rel: &str) -> String {
    s(&fixtures().join(rel)).to_string()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap()
}

fn keys_of(v: &Value) -> Vec<&String> {
    let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    keys.sort();
    keys
}

#[test]
fn wallet_files_and_mnemonics_import_with_the_librarys_addresses() {
    let exp = expected();
    let dir = tempfile::tempdir().unwrap();
    let ks_path = dir.path().join("keys");
    let ks = s(&ks_path);

    let made = ok_json(
        &["keys", "new", "--name", "fresh", "--keystore", ks, "--json"],
        "",
    );

    for w in exp["wallets"].as_array().unwrap() {
        let case = field(w, "case");
        let want_ss58 = field(w, "ss58");
        let want_public = &field(w, "public")[2..];
        let hot = format!("{case}-hot");
        let got = ok_json(
            &[
                "keys",
                "import",
                "--name",
                &hot,
                "--wallet",
                &fixture(field(w, "hotkey")),
                "--keystore",
                ks,
                "--json",
            ],
            "",
        );
        assert_eq!(keys_of(&got), keys_of(&made), "same record as keys new");
        assert_eq!(field(&got, "name"), hot);
        assert_eq!(field(&got, "ss58"), want_ss58, "{case} hotkey");
        assert_eq!(field(&got, "public"), want_public, "{case} hotkey");
        assert_eq!(
            Path::new(field(&got, "path")),
            ks_path.join(format!("{hot}.json"))
        );
        // The unencrypted coldkey file, and the mnemonic itself.
        let cold = ok_json(
            &[
                "keys",
                "import",
                "--name",
                &format!("{case}-cold"),
                "--wallet",
                &fixture(field(w, "coldkey")),
                "--keystore",
                ks,
                "--json",
            ],
            "",
        );
        assert_eq!(field(&cold, "ss58"), want_ss58, "{case} coldkey");
        let typed = ok_json(
            &[
                "keys",
                "import",
                "--name",
                &format!("{case}-typed"),
                "--mnemonic-stdin",
                "--keystore",
                ks,
                "--json",
            ],
            &format!("{}\n", field(w, "mnemonic")),
        );
        assert_eq!(keys_of(&typed), keys_of(&made));
        assert_eq!(field(&typed, "ss58"), want_ss58, "{case} mnemonic");
        // `keys show` reads the stored key back.
        let shown = ok_json(&["keys", "show", &hot, "--keystore", ks, "--json"], "");
        assert_eq!(shown, got);
    }

    for (i, u) in exp["uris"].as_array().unwrap().iter().enumerate() {
        let got = ok_json(
            &[
                "keys",
                "import",
                "--name",
                &format!("uri-{i}"),
                "--mnemonic-stdin",
                "--keystore",
                ks,
                "--json",
            ],
            &format!("{}\n", field(u, "uri")),
        );
        assert_eq!(field(&got, "ss58"), field(u, "ss58"), "{}", field(u, "uri"));
    }

    for sw in exp["seed_wallets"].as_array().unwrap() {
        let got = ok_json(
            &[
                "keys",
                "import",
                "--name",
                field(sw, "case"),
                "--wallet",
                &fixture(field(sw, "hotkey")),
                "--keystore",
                ks,
                "--json",
            ],
            "",
        );
        assert_eq!(field(&got, "ss58"), field(sw, "ss58"));
    }

    // The text output names the source and the address.
    let out = koth(
        &[
            "keys",
            "import",
            "--name",
            "text",
            "--wallet",
            &fixture("wallets/dev/hotkeys/default"),
            "--keystore",
            ks,
        ],
        "",
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("imported key \"text\" from Bittensor key file")
            && text.contains("5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV"),
        "{text}"
    );
    let listed = ok_json(&["keys", "list", "--keystore", ks, "--json"], "");
    assert!(listed.as_array().unwrap().len() > 20);
}

#[test]
fn refusals_name_the_problem_exit_non_zero_and_store_nothing() {
    let exp = expected();
    let dir = tempfile::tempdir().unwrap();
    let ks_path = dir.path().join("keys");
    let ks = s(&ks_path);
    let dev_hot = fixture("wallets/dev/hotkeys/default");
    let import_file = |name: &str, file: &str| -> Vec<String> {
        [
            "keys",
            "import",
            "--name",
            name,
            "--wallet",
            file,
            "--keystore",
            ks,
        ]
        .map(String::from)
        .to_vec()
    };
    let args = |v: &[String]| -> Vec<String> { v.to_vec() };
    let run_refused = |v: Vec<String>, stdin: &str| -> String {
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        refused(&refs, stdin, &ks_path)
    };

    // A key to collide with.
    ok_json(
        &[
            "keys",
            "import",
            "--name",
            "taken",
            "--wallet",
            &dev_hot,
            "--keystore",
            ks,
            "--json",
        ],
        "",
    );

    for r in exp["refused"].as_array().unwrap() {
        let file = fixture(field(r, "file"));
        let err = run_refused(args(&import_file("x", &file)), "");
        assert!(err.contains(&file), "names the file: {err}");
        let want = match field(r, "why") {
            "encrypted" => "decrypt it with btcli, or import the key's mnemonic",
            "public_only" => "holds only a public key",
            "private_key_only" => "pipe that same URI to `koth keys import --mnemonic-stdin`",
            "ed25519" => "koth's keys are sr25519",
            other => panic!("unknown reason {other}"),
        };
        assert!(err.contains(want), "{}: {err}", field(r, "why"));
    }

    // Damaged files.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let write = |name: &str, bytes: &[u8]| -> String {
        let p = bad.join(name);
        std::fs::write(&p, bytes).unwrap();
        s(&p).to_string()
    };
    let dev: Value = serde_json::from_slice(&std::fs::read(&dev_hot).unwrap()).unwrap();
    let other: Value = serde_json::from_slice(
        &std::fs::read(fixture("wallets/m12-legal/hotkeys/default")).unwrap(),
    )
    .unwrap();
    let mut swapped = dev.clone();
    swapped["ss58Address"] = other["ss58Address"].clone();
    let mut short_seed = dev.clone();
    short_seed["secretSeed"] = Value::from("0x1234");
    short_seed.as_object_mut().unwrap().remove("secretPhrase");
    let mut no_fields = dev.clone();
    for f in ["secretSeed", "secretPhrase", "privateKey"] {
        no_fields.as_object_mut().unwrap().remove(f);
    }
    let mut huge = b"{\"x\":\"".to_vec();
    huge.resize(200 * 1024, b'a');
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            write("swapped", &serde_json::to_vec(&swapped).unwrap()),
            vec![
                field(&dev, "ss58Address"),
                field(&other, "ss58Address"),
                "refusing",
            ],
        ),
        (
            write("short-seed", &serde_json::to_vec(&short_seed).unwrap()),
            vec!["field secretSeed", "expected 0x followed by 64 hex digits"],
        ),
        (
            write("no-secret", &serde_json::to_vec(&no_fields).unwrap()),
            vec!["holds only a public key"],
        ),
        (write("not-json", b"hello"), vec!["is not JSON"]),
        (write("array", b"[]"), vec!["not an object"]),
        (write("huge", &huge), vec!["larger than 65536 bytes"]),
        (s(&bad).to_string(), vec!["is a directory"]),
        (s(&bad.join("absent")).to_string(), vec!["cannot be read"]),
    ];
    for (file, wants) in cases {
        let err = run_refused(args(&import_file("x", &file)), "");
        assert!(err.contains(&file), "names the file: {err}");
        for want in wants {
            assert!(err.contains(want), "{file}: wanted {want:?} in {err}");
        }
    }

    // Bad mnemonics: the reason, never the words.
    let stdin_args = |name: &str| -> Vec<String> {
        [
            "keys",
            "import",
            "--name",
            name,
            "--mnemonic-stdin",
            "--keystore",
            ks,
        ]
        .map(String::from)
        .to_vec()
    };
    for m in exp["invalid_mnemonics"].as_array().unwrap() {
        let phrase = field(m, "mnemonic");
        let err = run_refused(stdin_args("x"), &format!("{phrase}\n"));
        let want = match field(m, "case") {
            "bad-checksum" => "checksum does not match",
            "unknown-word" => "word 4 of 12 is not in the BIP-39 English word list",
            "eleven-words" => "has 11 words; expected 12, 15, 18, 21 or 24",
            "upper-case" => "word 1 of 12 is not in the BIP-39 English word list",
            other => panic!("unknown case {other}"),
        };
        assert!(err.contains(want), "{}: {err}", field(m, "case"));
        assert!(!err.contains("lakes") && !err.contains("BOTTOM"), "{err}");
    }
    let dev_phrase = field(&dev, "secretPhrase");
    for (stdin, want) in [
        ("", "the mnemonic is empty"),
        ("\n", "the mnemonic is empty"),
        ("//Alice\n", "nothing before the derivation path"),
        (
            &format!("{dev_phrase}/soft\n") as &str,
            "junction 1 is soft",
        ),
        (&format!("{dev_phrase}\nagain\n"), "spans several lines"),
    ] {
        let err = run_refused(stdin_args("x"), stdin);
        assert!(err.contains(want), "{stdin:?}: {err}");
    }

    // An existing name: refused before any secret is read, the key untouched.
    let err = run_refused(args(&import_file("taken", &dev_hot)), "");
    assert!(err.contains("already exists"), "{err}");
    let err = run_refused(stdin_args("taken"), "not even a mnemonic\n");
    assert!(err.contains("already exists"), "{err}");
    let err = run_refused(args(&import_file("../evil", &dev_hot)), "");
    assert!(err.contains("is not allowed"), "{err}");

    // Exactly one source.
    let mut both = import_file("x", &dev_hot);
    both.push("--mnemonic-stdin".into());
    let err = run_refused(both, "");
    assert!(err.contains("cannot be used with"), "{err}");
    let err = run_refused(
        ["keys", "import", "--name", "x", "--keystore", ks]
            .map(String::from)
            .to_vec(),
        "",
    );
    assert!(err.contains("--wallet"), "{err}");
}
