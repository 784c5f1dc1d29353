//! Records the git commit the binary is built from (`KOTH_BUILD_COMMIT`), for `koth --version`
//! and the benchmark reports, so that a number in docs/bench/ names the code that produced it.
//! Outside a git checkout (a source tarball) the commit is "unknown".
use std::process::Command;

fn main() {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KOTH_BUILD_COMMIT={commit}");
    // Rebuilt when HEAD moves: a commit, a checkout, a branch switch.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = std::path::Path::new(&dir);
        for f in ["HEAD", "refs/heads", "packed-refs"] {
            println!("cargo:rerun-if-changed={}", dir.join(f).display());
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
