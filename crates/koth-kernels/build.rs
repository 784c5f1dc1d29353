//! Builds csrc/ into `libkoth_kernels.a` when the `cuda` feature is on.
//!
//! Inputs come from the environment that `scripts/cuda-build.sh` sets up (nothing is downloaded
//! here):
//! - `NVCC` or `CUDA_HOME` (nvcc and the CUDA headers, pinned to 13.0);
//! - `KOTH_CUDNN_INCLUDE`: cuDNN's headers (`nvidia-cudnn-cu13`, the GPU host's major.minor);
//! - `KOTH_CUDNN_FE_INCLUDE`: the header-only cuDNN frontend (`nvidia-cudnn-frontend`);
//! - `CUDA_COMPUTE_CAP` (default 90).
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=csrc/kernels.cu");
    println!("cargo:rerun-if-changed=csrc/sdpa.cpp");
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "KOTH_CUDNN_INCLUDE",
        "KOTH_CUDNN_FE_INCLUDE",
        "CUDA_COMPUTE_CAP",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let cuda_home = env::var("CUDA_HOME").ok().map(PathBuf::from);
    let nvcc = env::var("NVCC")
        .map(PathBuf::from)
        .unwrap_or_else(|_| match &cuda_home {
            Some(h) => h.join("bin/nvcc"),
            None => PathBuf::from("nvcc"),
        });
    let need = |var: &str| -> PathBuf {
        match env::var(var) {
            Ok(v) => PathBuf::from(v),
            Err(_) => panic!(
                "koth-kernels: the cuda feature needs {var} (set by scripts/cuda-build.sh; see docs/GPU.md)"
            ),
        }
    };
    let cudnn_inc = need("KOTH_CUDNN_INCLUDE");
    let fe_inc = need("KOTH_CUDNN_FE_INCLUDE");
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let mut cuda_inc = Vec::new();
    if let Some(h) = &cuda_home {
        cuda_inc.push(h.join("include"));
    }

    let run = |cmd: &mut Command, what: &str| {
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("koth-kernels: cannot run {what}: {e}"));
        assert!(status.success(), "koth-kernels: {what} failed ({status})");
    };
    let kernels_o = out.join("kernels.o");
    let mut nv = Command::new(&nvcc);
    // A kernel that spills registers to local memory fails the build: the delta rule's first
    // version spilled 408 bytes per thread at 255 registers (half the blocks per SM it needed)
    // and nothing said so.
    nv.args([
        "-O3",
        "-std=c++17",
        "-Xptxas",
        "-warn-spills,-Werror",
        "-Xcompiler",
        "-fPIC",
        "-gencode",
    ])
    .arg(format!("arch=compute_{cap},code=sm_{cap}"))
    .arg("-c")
    .arg("csrc/kernels.cu")
    .arg("-o")
    .arg(&kernels_o);
    run(&mut nv, "nvcc csrc/kernels.cu");

    let sdpa_o = out.join("sdpa.o");
    let cxx = env::var("CXX").unwrap_or_else(|_| "c++".into());
    let mut cc = Command::new(cxx);
    cc.args([
        "-std=c++17",
        "-O2",
        "-fPIC",
        "-DNV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING",
        "-w",
    ])
    .arg(format!("-I{}", fe_inc.display()))
    .arg(format!("-I{}", cudnn_inc.display()));
    for inc in &cuda_inc {
        cc.arg(format!("-I{}", inc.display()));
    }
    cc.arg("-c").arg("csrc/sdpa.cpp").arg("-o").arg(&sdpa_o);
    run(&mut cc, "c++ csrc/sdpa.cpp (cuDNN frontend)");

    let lib = out.join("libkoth_kernels.a");
    let _ = std::fs::remove_file(&lib);
    run(
        Command::new("ar")
            .arg("crs")
            .arg(&lib)
            .arg(&kernels_o)
            .arg(&sdpa_o),
        "ar",
    );
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=koth_kernels");
    if let Some(h) = &cuda_home {
        println!("cargo:rustc-link-search=native={}", h.join("lib").display());
    }
    println!("cargo:rustc-link-lib=dylib=cudart");
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo:rustc-link-lib=dylib=dl");
}
