//! The devnet's child processes: `koth validator run` and `koth miner run`, each its own
//! process group with its output in `logs/<name>.log`, stopped with SIGTERM and then SIGKILL.
//!
//! No orphans: every child asks the kernel for SIGTERM when its parent dies
//! (`PR_SET_PDEATHSIG`, set between fork and exec), so even a `kill -9` of `koth devnet` stops
//! them; and each child leads its own process group, so a terminal's Ctrl-C reaches only
//! `koth devnet`, which then stops the children in order (miners first, then the validator).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Set by SIGINT/SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);
/// The last signal received (for the message).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work here: two atomic stores.
    SIGNAL.store(sig, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

/// Route SIGINT and SIGTERM to [`stop_requested`].
pub fn install_signal_handlers() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` only stores to atomics, which is async-signal-safe; the
        // sigaction struct is fully initialised (zeroed, then the handler and an empty mask).
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// The signal that asked to stop, by name.
pub fn stop_signal_name() -> &'static str {
    match SIGNAL.load(Ordering::SeqCst) {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    pub log: PathBuf,
    /// Compute threads (RAYON_NUM_THREADS: candle's CPU backend and gemm size their pools
    /// from it).
    pub threads: usize,
}

/// A running child.
pub struct Supervised {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    exit: Option<ExitStatus>,
}

impl Supervised {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `None` while it runs; its exit status once it has ended (reaped).
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
            }
        }
        self.exit
    }

    fn signal_group(&self, sig: libc::c_int) {
        if self.exit.is_some() {
            return;
        }
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) with a negative pid signals the process group the child leads (it
        // was started with process_group(0)); it has no memory-safety preconditions.
        unsafe {
            libc::kill(-pid, sig);
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL the group and reap.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.poll().is_some() {
            return self.exit;
        }
        self.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.poll().is_some() {
                return self.exit;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(name = %self.name, "did not stop on SIGTERM; killing it");
        self.signal_group(libc::SIGKILL);
        if let Ok(status) = self.child.wait() {
            self.exit = Some(status);
        }
        self.exit
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // A panic or an early return must not leave a child running.
        if self.poll().is_none() {
            self.stop(Duration::from_secs(5));
        }
    }
}

/// Start `spec`: own process group, PDEATHSIG, stdout and stderr appended to its log.
pub fn spawn(spec: &ChildSpec) -> std::io::Result<Supervised> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let err_log = log.try_clone()?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err_log))
        .env("RAYON_NUM_THREADS", spec.threads.to_string())
        .env("NO_COLOR", "1")
        .process_group(0);
    // The parent's pid now; the child checks it after PR_SET_PDEATHSIG, to catch a parent
    // that died before the setting took effect.
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: between fork and exec only async-signal-safe calls are allowed; prctl, getppid
    // and _exit are. Nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok(Supervised {
        name: spec.name.clone(),
        log: spec.log.clone(),
        child,
        exit: None,
    })
}

/// The last `n` lines of a log (for a child that ended early).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_stopped_with_its_group_and_logs_to_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("sleeper.log");
        let spec = ChildSpec {
            name: "sleeper".into(),
            program: "/bin/sh".into(),
            // A grandchild in the same group must go too.
            args: vec!["-c".into(), "echo started; sleep 300 & wait".into()],
            cwd: tmp.path().to_path_buf(),
            log: log.clone(),
            threads: 1,
        };
        let mut child = spawn(&spec).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tail(&log, 1).contains("started") {
            assert!(Instant::now() < deadline, "the child never wrote its log");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(child.poll().is_none());
        let status = child.stop(Duration::from_secs(5)).unwrap();
        assert!(!status.success());
        // Nothing of the group is left running (a zombie waiting for a reaper that the
        // container's init may never be does not run).
        let pgid = child.pid();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let running = running_in_group(pgid);
            if running.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the process group survived: {running:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pids of processes in group `pgid` that are not zombies, from /proc.
    fn running_in_group(pgid: u32) -> Vec<u32> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // After the command name in parentheses: state, ppid, pgrp.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z" {
                out.push(pid);
            }
        }
        out
    }
}
