//! `koth keys …` and `koth chain …` through the built binary.

use std::path::Path;
use std::process::{Command, Output};

use koth_chain::{Chain, EmbeddedChain, ManualClock};

fn koth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_koth"))
        .args(args)
        .env_remove("KOTH_CHAIN")
        .env_remove("KOTH_KEYSTORE")
        .output()
        .expect("running koth")
}

fn ok(args: &[&str]) -> String {
    let out = koth(args);
    assert!(
        out.status.success(),
        "koth {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = koth(args);
    assert!(!out.status.success(), "koth {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).unwrap()
}

/// Seal `blocks` more blocks on the chain at `path` without waiting for their time: a handle
/// whose clock is at the end of block `head + blocks` reads the chain, and reading seals every
/// block whose time has come (sealing is lazy and a head is never lowered, so the CLI processes
/// then see those blocks).
fn advance_chain(path: &Path, blocks: u64) {
    let now = EmbeddedChain::open(path).unwrap();
    let head = now.block().unwrap().number;
    let p = now.params();
    let ahead = ManualClock::new(p.genesis_time_ms + (head + blocks) * p.block_time_ms);
    let chain = EmbeddedChain::open_with_clock(path, Box::new(ahead)).unwrap();
    assert_eq!(chain.block().unwrap().number, head + blocks);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keys_and_chain_commands_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("keys");
    let ks = s(&ks);
    let chain_path = dir.path().join("chain.db");
    let chain = s(&chain_path);

    for name in ["miner", "validator", "stranger"] {
        let info = json(&["keys", "new", "--name", name, "--keystore", ks, "--json"]);
        assert!(info["ss58"].as_str().unwrap().starts_with('5'));
    }
    let miner_file = std::fs::read(Path::new(ks).join("miner.json")).unwrap();
    let err = fails(&["keys", "new", "--name", "miner", "--keystore", ks]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read(Path::new(ks).join("miner.json")).unwrap(),
        miner_file
    );
    let listed = json(&["keys", "list", "--keystore", ks, "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let miner_ss58 = json(&["keys", "show", "miner", "--keystore", ks, "--json"])["ss58"]
        .as_str()
        .unwrap()
        .to_string();

    let err = fails(&["chain", "status", "--chain", chain]);
    assert!(err.contains("koth chain init"), "{err}");
    let params = json(&[
        "chain",
        "init",
        "--path",
        chain,
        "--netuid",
        "7",
        "--block-time",
        "100ms",
        "--reveal-delay",
        "2",
        "--keystore",
        ks,
        "--json",
    ]);
    assert_eq!(params["netuid"], 7);
    assert_eq!(params["block_time_ms"], 100);
    let before = std::fs::read(&chain_path).unwrap();
    let err = fails(&[
        "chain",
        "init",
        "--path",
        chain,
        "--netuid",
        "7",
        "--block-time",
        "100ms",
        "--reveal-delay",
        "2",
        "--keystore",
        ks,
    ]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&chain_path).unwrap(), before);

    let base = ["--chain", chain, "--keystore", ks];
    let with = |extra: &[&'static str]| -> Vec<String> {
        extra
            .iter()
            .map(|x| x.to_string())
            .chain(base.iter().map(|x| x.to_string()))
            .collect()
    };
    let run_ok = |extra: &[&'static str]| {
        let v = with(extra);
        ok(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let run_fail = |extra: &[&'static str]| {
        let v = with(extra);
        fails(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    run_ok(&["chain", "register", "--hotkey", "miner"]);
    run_ok(&["chain", "register", "--hotkey", "validator", "--validator"]);
    let err = run_fail(&["chain", "register", "--hotkey", "miner"]);
    assert!(err.contains("already registered"), "{err}");
    let err = run_fail(&[
        "chain",
        "commit",
        "--hotkey",
        "stranger",
        "--payload",
        "v4|x|y|z",
    ]);
    assert!(err.contains("not registered"), "{err}");
    let err = run_fail(&[
        "chain",
        "set-weights",
        "--hotkey",
        "miner",
        "--weights",
        "0=1",
    ]);
    assert!(err.contains("no validator permit"), "{err}");
    let err = run_fail(&[
        "chain",
        "set-weights",
        "--hotkey",
        "validator",
        "--weights",
        "0=-1",
    ]);
    assert!(err.contains("finite and ≥ 0"), "{err}");
    run_ok(&[
        "chain",
        "commit",
        "--hotkey",
        "miner",
        "--payload",
        "v4|hf:org/model|sha256:00|me",
    ]);
    run_ok(&[
        "chain",
        "set-weights",
        "--hotkey",
        "validator",
        "--weights",
        "0=0.75,1=0.25",
    ]);

    // The commit is included in block b and revealed at b + 2; `advance_chain` seals three
    // blocks ahead instead of waiting for them.
    // Hiding is shown on a second chain whose reveal delay (1000 blocks = 100 s) no test
    // machine can outlast.
    let slow_path = dir.path().join("slow.db");
    let slow = s(&slow_path);
    ok(&[
        "chain",
        "init",
        "--path",
        slow,
        "--netuid",
        "8",
        "--block-time",
        "100ms",
        "--reveal-delay",
        "1000",
        "--keystore",
        ks,
    ]);
    ok(&[
        "chain",
        "register",
        "--hotkey",
        "miner",
        "--chain",
        slow,
        "--keystore",
        ks,
    ]);
    let receipt = json(&[
        "chain",
        "commit",
        "--hotkey",
        "miner",
        "--payload",
        "secret",
        "--chain",
        slow,
        "--keystore",
        ks,
        "--json",
    ]);
    assert!(receipt["block"].as_u64().unwrap() >= 1);
    let hidden = json(&["chain", "reveals", "--all", "--chain", slow, "--json"]);
    assert_eq!(
        hidden.as_array().unwrap().len(),
        0,
        "revealed too early: {hidden}"
    );
    advance_chain(&chain_path, 3);
    let reveals = json(&["chain", "reveals", "--chain", chain, "--json"]);
    assert_eq!(reveals[0]["payload"], "v4|hf:org/model|sha256:00|me");
    assert_eq!(reveals[0]["hotkey"].as_str().unwrap(), miner_ss58);
    let weights = json(&["chain", "weights", "--chain", chain, "--json"]);
    assert_eq!(
        weights[0]["weights"],
        serde_json::json!([[0, 65535], [1, 21845]])
    );
    let status = json(&["chain", "status", "--chain", chain, "--json"]);
    assert_eq!(status["metagraph"]["neurons"].as_array().unwrap().len(), 2);
    assert_eq!(status["metagraph"]["neurons"][1]["validator_permit"], true);
    assert!(status["emission"][0]["rao"].as_u64().unwrap() > 0);
    let human = ok(&["chain", "status", "--chain", chain]);
    assert!(human.contains("2 registered"), "{human}");
    assert!(ok(&["chain", "verify", "--chain", chain]).starts_with("ok:"));

    // Several CLI processes committing at once lose nothing.
    let writers: Vec<String> = (0..4).map(|i| format!("w{i}")).collect();
    for w in &writers {
        ok(&["keys", "new", "--name", w, "--keystore", ks]);
        ok(&[
            "chain",
            "register",
            "--hotkey",
            w,
            "--chain",
            chain,
            "--keystore",
            ks,
        ]);
    }
    let children: Vec<_> = writers
        .iter()
        .map(|w| {
            let script = format!(
                "for i in 1 2 3 4 5; do \"$0\" chain commit --chain \"$1\" --keystore \"$2\" --hotkey {w} --payload \"v4|{w}|$i|x\" >/dev/null || exit 1; done"
            );
            Command::new("sh")
                .args(["-c", &script, env!("CARGO_BIN_EXE_koth"), chain, ks])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    advance_chain(&chain_path, 3);
    let all = json(&["chain", "reveals", "--all", "--chain", chain, "--json"]);
    assert_eq!(all.as_array().unwrap().len(), 1 + 4 * 5);
    let verified = json(&["chain", "verify", "--chain", chain, "--json"]);
    // 2 registrations, 1 permit, 1 commit, 1 set_weights, then 4 registrations and 20 commits.
    assert_eq!(verified["extrinsics"], 2 + 1 + 1 + 1 + 4 + 4 * 5);
}

#[test]
fn foreign_and_garbage_files_are_refused_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let err = fails(&["chain", "status", "--chain", s(&garbage)]);
    assert!(err.contains("is not a koth chain file"), "{err}");
    assert!(err.contains("garbage.db"), "{err}");
    assert_eq!(std::fs::read(&garbage).unwrap(), vec![0x5a; 8192]);
    let err = fails(&[
        "chain",
        "init",
        "--path",
        s(&garbage),
        "--netuid",
        "1",
        "--reveal-delay",
        "1",
        "--keystore",
        s(&dir.path().join("k")),
    ]);
    assert!(err.contains("already exists"), "{err}");
    let err = fails(&[
        "chain",
        "init",
        "--path",
        s(&dir.path().join("c.db")),
        "--netuid",
        "1",
        "--block-time",
        "2 seconds",
        "--reveal-delay",
        "1",
    ]);
    assert!(err.contains("--block-time"), "{err}");
}

#[test]
fn init_with_max_uids_and_immunity_blocks_prunes_a_full_subnet() {
    let dir = tempfile::tempdir().unwrap();
    let ks_dir = dir.path().join("keys");
    let ks = s(&ks_dir);
    let mut ss58 = std::collections::HashMap::new();
    for name in ["val", "old", "new"] {
        let info = json(&["keys", "new", "--name", name, "--keystore", ks, "--json"]);
        ss58.insert(name, info["ss58"].as_str().unwrap().to_string());
    }
    let init = |file: &str, block_time: &str, extra: &[&str]| -> (String, serde_json::Value) {
        let path = dir.path().join(file);
        let path = s(&path).to_string();
        let mut args = vec![
            "chain",
            "init",
            "--path",
            &path,
            "--netuid",
            "9",
            "--block-time",
            block_time,
            "--reveal-delay",
            "1",
            "--max-uids",
            "2",
            "--keystore",
            ks,
            "--json",
        ];
        args.extend_from_slice(extra);
        let params = json(&args);
        (path, params)
    };
    let register = |chain: &str, hotkey: &str, validator: bool| {
        let mut args = vec![
            "chain",
            "register",
            "--hotkey",
            hotkey,
            "--chain",
            chain,
            "--keystore",
            ks,
        ];
        if validator {
            args.push("--validator");
        }
        koth(&args)
    };

    // Immunity 0: every neuron can be pruned at once, so the outcome does not depend on timing.
    // "val" holds a validator permit and is protected; "old" has the least emission (none) and
    // is replaced by "new" on its uid.
    let (pruning, params) = init("pruning.db", "100ms", &["--immunity-blocks", "0"]);
    assert_eq!(params["max_uids"], 2);
    assert_eq!(params["immunity_period"], 0);
    assert!(register(&pruning, "val", true).status.success());
    assert!(register(&pruning, "old", false).status.success());
    let out = register(&pruning, "new", false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = json(&["chain", "status", "--chain", &pruning, "--json"]);
    let neurons = status["metagraph"]["neurons"].as_array().unwrap();
    let hotkeys: Vec<&str> = neurons
        .iter()
        .map(|n| n["hotkey"].as_str().unwrap())
        .collect();
    assert_eq!(hotkeys, [ss58["val"].as_str(), ss58["new"].as_str()]);
    assert_eq!(status["params"]["immunity_period"], 0);
    let human = ok(&["chain", "status", "--chain", &pruning]);
    assert!(
        human.contains("max uids 2") && human.contains("immunity 0 blocks"),
        "{human}"
    );
    // The replacement replays through the rules.
    assert!(ok(&["chain", "verify", "--chain", &pruning]).starts_with("ok:"));

    // A long immunity period (1000 blocks of 1 s) protects every neuron: the subnet is full.
    let (immune, params) = init("immune.db", "1s", &["--immunity-blocks", "1000"]);
    assert_eq!(params["immunity_period"], 1000);
    assert!(register(&immune, "val", false).status.success());
    assert!(register(&immune, "old", false).status.success());
    let out = register(&immune, "new", false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("subnet is full (2 uids)"), "{err}");

    // Without --immunity-blocks the chain never prunes.
    let (plain, params) = init("plain.db", "100ms", &[]);
    assert!(params.get("immunity_period").is_none(), "{params}");
    assert!(register(&plain, "val", true).status.success());
    assert!(register(&plain, "old", false).status.success());
    let out = register(&plain, "new", false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("subnet is full (2 uids)"), "{err}");
    let human = ok(&["chain", "status", "--chain", &plain]);
    assert!(human.contains("pruning: none"), "{human}");

    let err = fails(&[
        "chain",
        "init",
        "--path",
        s(&dir.path().join("bad.db")),
        "--netuid",
        "9",
        "--reveal-delay",
        "1",
        "--immunity-blocks=-3",
        "--keystore",
        ks,
    ]);
    assert!(
        err.contains("--immunity-blocks") && err.contains("-3"),
        "{err}"
    );
    assert!(!dir.path().join("bad.db").exists());
}
