//! Compiles `../koth-kernels/csrc/kernels.cu` (and the emulator's own check kernels,
//! `csrc/selftest.cu`) for the host under `csrc/cuda_emu.h`.
//!
//! The CUDA source is used as it is, except for the two pieces of syntax a host compiler cannot
//! read, which are rewritten here:
//! - `kernel<<<grid, block, shared, stream>>>(args)` becomes
//!   `::koth_emu::launch([&] { kernel(args); }, grid, block, shared, stream)`;
//! - `extern __shared__ T name[];` becomes `T *name = (T *)::koth_emu::dynamic_shared();`.
//!
//! `KOTH_EMULATE` is defined, which leaves out the memory-pool functions (host code with
//! nothing to emulate). Only a C++17 compiler is needed, never nvcc.
use std::env;
use std::path::PathBuf;
use std::process::Command;

/// koth's kernels, and the emulator's own check kernels.
const SOURCES: [(&str, &str); 2] = [
    ("../koth-kernels/csrc/kernels.cu", "kernels_emu"),
    ("csrc/selftest.cu", "selftest_emu"),
];

fn main() {
    for (src, _) in SOURCES {
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-changed=csrc/cuda_emu.h");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CXX");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let cxx = env::var("CXX").unwrap_or_else(|_| "c++".into());
    let mut objects = Vec::new();
    for (src, stem) in SOURCES {
        let text = std::fs::read_to_string(src).unwrap_or_else(|e| panic!("read {src}: {e}"));
        let host = emulated_source(&text).unwrap_or_else(|e| panic!("{src}: {e}"));
        let cpp = out.join(format!("{stem}.cpp"));
        std::fs::write(&cpp, host).expect("write the emulated source");
        let obj = out.join(format!("{stem}.o"));
        let status = Command::new(&cxx)
            // -ffp-contract=off: no fused multiply-add the source did not write (see cuda_emu.h).
            // -fno-strict-aliasing: the kernels read 16-byte vector loads through a pointer to
            // the element type, which nvcc allows and g++'s aliasing rules would optimise away.
            .args([
                "-std=c++17",
                "-O2",
                "-fPIC",
                "-ffp-contract=off",
                "-fno-strict-aliasing",
                "-Wno-unknown-pragmas",
                "-DKOTH_EMULATE",
            ])
            .arg(format!("-I{}", manifest.join("csrc").display()))
            .arg("-c")
            .arg(&cpp)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| panic!("koth-kernels-emu: cannot run {cxx}: {e}"));
        assert!(
            status.success(),
            "koth-kernels-emu: {cxx} {src} failed ({status})"
        );
        objects.push(obj);
    }
    let lib = out.join("libkoth_kernels_emu.a");
    let _ = std::fs::remove_file(&lib);
    let status = Command::new("ar")
        .arg("crs")
        .arg(&lib)
        .args(&objects)
        .status()
        .expect("run ar");
    assert!(status.success(), "koth-kernels-emu: ar failed ({status})");
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=koth_kernels_emu");
    println!("cargo:rustc-link-lib=dylib=stdc++");
}

/// The CUDA source rewritten for the host compiler (see the module comment).
fn emulated_source(src: &str) -> Result<String, String> {
    let mut body = String::with_capacity(src.len() + 1024);
    for line in src.lines() {
        let t = line.trim();
        if t.starts_with("#include <cuda") {
            continue;
        }
        if let Some(rest) = t.strip_prefix("extern __shared__ ") {
            // `T name[];`, perhaps with a comment after it.
            let decl = rest.split("//").next().unwrap_or(rest).trim();
            let decl = decl.trim_end_matches(';').trim();
            let (ty, name) = decl
                .rsplit_once(' ')
                .ok_or_else(|| format!("cannot read the shared declaration `{t}`"))?;
            let name = name
                .strip_suffix("[]")
                .ok_or_else(|| format!("`{t}` is not `extern __shared__ T name[];`"))?;
            body.push_str(&format!(
                "    {ty} *{name} = ({ty} *)::koth_emu::dynamic_shared();\n"
            ));
            continue;
        }
        body.push_str(line);
        body.push('\n');
    }
    let body = rewrite_launches(&body)?;
    Ok(format!("#include \"cuda_emu.h\"\n{body}"))
}

/// `kernel<<<cfg>>>(args)` -> `::koth_emu::launch([&] { kernel(args); }, cfg)`.
fn rewrite_launches(src: &str) -> Result<String, String> {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(pos) = src[from..].find("<<<").map(|p| p + from) {
        // The kernel: an identifier, possibly with template arguments, just before `<<<`.
        let mut start = pos;
        if start > 0 && b[start - 1] == b'>' {
            let mut depth = 0usize;
            loop {
                if start == 0 {
                    return Err(format!("unbalanced template arguments before byte {pos}"));
                }
                start -= 1;
                match b[start] {
                    b'>' => depth += 1,
                    b'<' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        while start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            start -= 1;
        }
        let kernel = &src[start..pos];
        if kernel.is_empty() || kernel.starts_with('<') {
            return Err(format!("no kernel name before the launch at byte {pos}"));
        }
        let cfg_end = src[pos..]
            .find(">>>")
            .map(|p| p + pos)
            .ok_or_else(|| format!("`<<<` at byte {pos} has no `>>>`"))?;
        let cfg = &src[pos + 3..cfg_end];
        let mut open = cfg_end + 3;
        while b.get(open).is_some_and(|c| c.is_ascii_whitespace()) {
            open += 1;
        }
        if b.get(open) != Some(&b'(') {
            return Err(format!("the launch of {kernel} has no argument list"));
        }
        let mut depth = 0usize;
        let mut close = open;
        loop {
            match b.get(close) {
                Some(b'(') => depth += 1,
                Some(b')') => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                None => return Err(format!("the launch of {kernel} is not closed")),
                _ => {}
            }
            close += 1;
        }
        let args = &src[open + 1..close];
        out.push_str(&src[copied..start]);
        out.push_str(&format!(
            "::koth_emu::launch([&] {{ {kernel}({args}); }}, {cfg})"
        ));
        copied = close + 1;
        from = close + 1;
    }
    out.push_str(&src[copied..]);
    Ok(out)
}
