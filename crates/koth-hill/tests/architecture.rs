//! The architecture rules this crate exists for, checked on every test run:
//!
//! - its modules form layers with no import loop (each uses only the modules before it in
//!   [`LAYERS`], the order `lib.rs` documents);
//! - it stays pure: nothing it depends on, directly or through other crates, is an async
//!   runtime, a web server, a database, an HTTP client or a tensor library. The dependency
//!   graph is read from `cargo metadata`, resolved for this crate alone and for the dashboard
//!   (`koth-web`), which must build without the validator's shell;
//! - every library crate's errors are typed: no `Result<_, String>`, no `Result<Result<…>>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// koth-hill's modules, lowest first: a module may use only the ones before it.
const LAYERS: [&str; 10] = [
    "event",
    "state",
    "reward",
    "gates",
    "fingerprint",
    "core",
    "observe",
    "feed",
    "reader",
    "lib",
];

/// Crates the rules must never pull in, by name prefix.
const FORBIDDEN_IN_HILL: [&str; 7] = [
    "candle",
    "tokio",
    "rusqlite",
    "axum",
    "reqwest",
    "hyper",
    "object_store",
];

/// The dashboard serves pages (axum over tokio is allowed) but reads the validator only through
/// koth-hill's reader: no SQLite, no model code, no HTTP client, no validator shell.
const FORBIDDEN_IN_WEB: [&str; 6] = [
    "candle",
    "rusqlite",
    "reqwest",
    "object_store",
    "koth-validator",
    "koth-model",
];

/// The `crate::<module>` paths a source file's code mentions (comments, doc links included, are
/// not uses).
fn crate_refs(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let text = code.as_str();
    let mut refs = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        // Not `koth_crate::` or similar: the path must start here.
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            refs.insert(name);
        }
    }
    refs
}

#[test]
fn modules_form_layers_without_a_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(&src).expect("reading src/") {
        let path = entry.expect("reading src/").path();
        let module = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a file name")
            .to_string();
        let Some(level) = LAYERS.iter().position(|m| *m == module) else {
            panic!("src/{module}.rs is not placed in LAYERS; give it a layer");
        };
        seen.insert(module.clone());
        let text = std::fs::read_to_string(&path).expect("reading a module");
        for used in crate_refs(&text) {
            if module == "lib" || used == module {
                continue;
            }
            // Items re-exported at the crate root are reached through `crate::name`.
            let used_level = LAYERS.iter().position(|m| *m == used).unwrap_or_else(|| {
                panic!("src/{module}.rs uses crate::{used}, which is not a module in LAYERS")
            });
            assert!(
                used_level < level,
                "src/{module}.rs uses crate::{used}, a module at or above its own layer \
                 ({LAYERS:?}): that is an import loop waiting to happen"
            );
        }
    }
    assert_eq!(
        seen,
        LAYERS.iter().map(|s| s.to_string()).collect(),
        "LAYERS names a module that does not exist"
    );
}

/// Package names in the normal (non-dev) dependency graph of `package`, resolved with the
/// features that building `package` alone enables, as `cargo tree` would print them.
fn normal_dependencies(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn offenders(deps: &BTreeSet<String>, forbidden: &[&str]) -> BTreeMap<String, String> {
    deps.iter()
        .filter_map(|d| {
            forbidden
                .iter()
                .find(|f| {
                    d == *f || d.starts_with(&format!("{f}-")) || d.starts_with(&format!("{f}_"))
                })
                .map(|f| (d.clone(), f.to_string()))
        })
        .collect()
}

#[test]
fn the_rules_depend_on_no_runtime_database_server_or_tensor_library() {
    let deps = normal_dependencies("koth-hill");
    assert!(
        deps.contains("koth-core"),
        "cargo tree output not understood: {deps:?}"
    );
    let bad = offenders(&deps, &FORBIDDEN_IN_HILL);
    assert!(bad.is_empty(), "koth-hill depends on {bad:?}");
}

#[test]
fn the_dashboard_builds_without_the_validator_shell() {
    let deps = normal_dependencies("koth-web");
    assert!(
        deps.contains("koth-hill"),
        "cargo tree output not understood: {deps:?}"
    );
    let bad = offenders(&deps, &FORBIDDEN_IN_WEB);
    assert!(bad.is_empty(), "koth-web depends on {bad:?}");
}

#[test]
fn the_binary_never_links_the_emulated_kernels() {
    // koth-kernels-emu compiles the CUDA kernels for the host, for tests only; a shipped
    // validator must score with the real ones or with the CPU model, never with the emulator.
    let deps = normal_dependencies("koth");
    assert!(
        deps.contains("koth-kernels"),
        "cargo tree output not understood: {deps:?}"
    );
    assert!(
        !deps.contains("koth-kernels-emu"),
        "the koth binary depends on koth-kernels-emu"
    );
}

/// The `Result<…>` types a source text names, as their top-level generic arguments.
fn result_types(text: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("Result<") {
        let after = &rest[i + "Result<".len()..];
        let (mut depth, mut args, mut current) = (1usize, Vec::new(), String::new());
        for c in after.chars() {
            match c {
                '<' | '(' => depth += 1,
                '>' | ')' => depth -= 1,
                ',' if depth == 1 => {
                    args.push(current.trim().to_string());
                    current.clear();
                    continue;
                }
                _ => {}
            }
            if depth == 0 {
                break;
            }
            current.push(c);
        }
        args.push(current.trim().to_string());
        found.push(args);
        rest = after;
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Library crates return typed errors: no `Result<_, String>` and no `Result<Result<…>>` in any
/// crate's `src/` but the `koth` binary's (where `anyhow` is the edge).
#[test]
fn library_errors_are_typed() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(&crates).unwrap().flatten() {
        let src = entry.path().join("src");
        if entry.file_name() == "koth" || !src.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for args in result_types(&text) {
                let string_error = args.get(1).is_some_and(|e| e == "String");
                let nested = args.first().is_some_and(|t| t.starts_with("Result<"));
                if string_error || nested {
                    offenders.push(format!("{}: Result<{}>", file.display(), args.join(", ")));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "untyped library errors: {offenders:#?}"
    );
}

#[test]
fn the_error_scan_sees_what_it_forbids() {
    let caught = |s: &str| {
        result_types(s).iter().any(|a| {
            a.get(1).is_some_and(|e| e == "String")
                || a.first().is_some_and(|t| t.starts_with("Result<"))
        })
    };
    assert!(caught("fn f() -> std::result::Result<u64, String> {"));
    assert!(caught("fn f() -> Result<Result<(), E>, E> {"));
    assert!(!caught(
        "fn f() -> Result<BTreeMap<String, String>, CorpusError> {"
    ));
    assert!(!caught("fn f() -> Result<String> {"));
    assert!(!caught("fn f() -> Result<(String, u8), E> {"));
}
