//! `[train] command`: a miner's own trainer (PyTorch, torchrun + FSDP, DeepSpeed, Megatron, …)
//! run in place of the built-in one.
//!
//! koth runs the command line (split into words like a POSIX shell does, but never given to a
//! shell: no `$VAR` expansion, globbing, pipes or redirections) in the directory of
//! `miner.toml`, in a process group of its own, with stdin closed and the attempt's inputs in
//! environment variables ([`TrainerInputs::env`]; the names are documented in docs/MINING.md).
//! Every line it prints (stdout and stderr) goes to the miner's log and to
//! `<work_dir>/trainer.log`. When it exits 0 having written files into `KOTH_OUTPUT_DIR`, that
//! directory is the challenger. A trainer that exits non-zero, writes nothing or outlives its
//! time limit (its whole process group is then killed) is an error that quotes its last output
//! lines; nothing is published.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::TrainerCommand;
use crate::error::{MinerError, Result};

/// How many of the trainer's last output lines an error quotes.
pub const TAIL_LINES: usize = 20;
/// How long a trainer gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long output is still collected after the trainer exited (a background process it left
/// may hold its pipes open; the group is killed after this).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Everything an external trainer is handed for one attempt.
#[derive(Debug, Clone)]
pub struct TrainerInputs {
    pub king_dir: PathBuf,
    pub king_digest: koth_core::Digest,
    /// Empty when the trainer starts; the challenger when it exits 0.
    pub output_dir: PathBuf,
    /// The miner's data bundle (`data.bundle`), whole: a trainer that reads it itself must
    /// leave out the held-out windows (`KOTH_TRAIN_TOKENS` already does).
    pub bundle: PathBuf,
    /// The training windows the built-in trainer would read, in its order (never a held-out
    /// token): little-endian u32, `windows × seq_len`.
    pub train_tokens: PathBuf,
    pub train_windows: u64,
    pub seq_len: usize,
    pub seed: u64,
    pub attempt: u64,
    pub work_dir: PathBuf,
    pub time_limit: Duration,
    pub settings: crate::config::TrainSettings,
}

impl TrainerInputs {
    /// The environment variables the trainer gets (on top of the miner's own environment).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let s = &self.settings;
        let path = |p: &Path| p.display().to_string();
        vec![
            ("KOTH_KING_DIR", path(&self.king_dir)),
            ("KOTH_KING_DIGEST", self.king_digest.to_string()),
            ("KOTH_OUTPUT_DIR", path(&self.output_dir)),
            ("KOTH_TRAIN_BUNDLE", path(&self.bundle)),
            ("KOTH_TRAIN_TOKENS", path(&self.train_tokens)),
            ("KOTH_TRAIN_WINDOWS", self.train_windows.to_string()),
            ("KOTH_SEQ_LEN", self.seq_len.to_string()),
            ("KOTH_SEED", self.seed.to_string()),
            ("KOTH_ATTEMPT", self.attempt.to_string()),
            ("KOTH_WORK_DIR", path(&self.work_dir)),
            ("KOTH_TIME_LIMIT_S", self.time_limit.as_secs().to_string()),
            ("KOTH_DEVICE", s.device.clone()),
            ("KOTH_DTYPE", s.dtype.clone()),
            ("KOTH_LR", s.schedule.lr.to_string()),
            ("KOTH_MIN_LR", s.schedule.min_lr.to_string()),
            ("KOTH_WARMUP_STEPS", s.schedule.warmup_steps.to_string()),
            ("KOTH_STEPS", s.schedule.steps.to_string()),
            ("KOTH_BATCH_SIZE", s.batch_size.to_string()),
            ("KOTH_GRAD_ACCUM", s.grad_accum.to_string()),
            ("KOTH_WEIGHT_DECAY", s.weight_decay.to_string()),
            ("KOTH_CLIP", s.clip.to_string()),
        ]
    }
}

/// How a trainer run ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainerEnd {
    /// Exited 0 with files in the output directory.
    Finished,
    /// `stop` was set (a signal to the miner) or `should_end` said so (the king changed): the
    /// trainer's group was terminated.
    Stopped,
}

/// Write the training windows the built-in trainer would read for `attempt` (`steps ×
/// grad_accum` micro-batches of `batch_size` rows, in its order) to `path`; their count.
pub fn write_train_tokens(
    data: &crate::data::MinerData,
    settings: &crate::config::TrainSettings,
    attempt: u64,
    path: &Path,
) -> Result<u64> {
    let file = std::fs::File::create(path).map_err(|e| MinerError::io(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    let micro_batches = settings.schedule.steps * settings.grad_accum as u64;
    for i in 0..micro_batches {
        let tokens = data.micro_batch(attempt, i, settings.batch_size)?;
        for t in tokens {
            out.write_all(&t.to_le_bytes())
                .map_err(|e| MinerError::io(path, e))?;
        }
    }
    out.flush().map_err(|e| MinerError::io(path, e))?;
    Ok(micro_batches * settings.batch_size as u64)
}

fn failure(command: &TrainerCommand, reason: String, tail: &VecDeque<String>) -> MinerError {
    MinerError::Trainer {
        command: command.line.clone(),
        reason,
        last_lines: tail.iter().cloned().collect(),
    }
}

/// Signal the trainer's whole process group (its pid is the group's id).
#[cfg(unix)]
fn signal_group(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals the process group; no memory is shared.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// SIGTERM the group, SIGKILL it after the grace period; reap the trainer.
fn end_group(child: &mut std::process::Child) -> Option<ExitStatus> {
    #[cfg(unix)]
    {
        signal_group(child.id(), libc::SIGTERM);
        let until = Instant::now() + TERM_GRACE;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_group(child.id(), libc::SIGKILL);
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
    }
    child.wait().ok()
}

fn describe_exit(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("was killed by signal {sig}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "exited abnormally".to_string(),
    }
}

/// How often, and by what, a running trainer may be ended early.
pub struct Watch<'a> {
    /// A signal to the miner.
    pub stop: &'a AtomicBool,
    /// Asked every `every` (the miner polls the king with it); `true` ends the trainer.
    pub should_end: &'a mut dyn FnMut() -> bool,
    pub every: Duration,
}

/// Run `command` with `inputs`; every output line goes to `on_line` and to `log`. `Ok` only
/// when it exited 0 with something in the output directory (or was ended by `watch`).
pub fn run_trainer(
    command: &TrainerCommand,
    inputs: &TrainerInputs,
    log: &Path,
    watch: Watch<'_>,
    on_line: &mut dyn FnMut(&str),
) -> Result<TrainerEnd> {
    let Watch {
        stop,
        should_end,
        every,
    } = watch;
    let mut last_watch = Instant::now();
    let mut log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| MinerError::io(log, e))?;
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let mut cmd = Command::new(&command.argv[0]);
    cmd.args(&command.argv[1..])
        .current_dir(&command.cwd)
        .envs(inputs.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| {
        failure(
            command,
            format!("could not be started in {}: {e}", command.cwd.display()),
            &tail,
        )
    })?;
    let (tx, rx) = mpsc::channel::<String>();
    let pipes: Vec<Box<dyn std::io::Read + Send>> = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for pipe in pipes {
        let tx = tx.clone();
        std::thread::spawn(move || {
            read_lines(BufReader::new(pipe), &mut |line| tx.send(line).is_ok());
        });
    }
    drop(tx);
    let mut take_line = |line: String, tail: &mut VecDeque<String>| {
        // A full disk must not kill the trainer: the log file is best effort.
        let _ = writeln!(log_file, "{line}");
        on_line(&line);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    };
    let started = Instant::now();
    let mut exited: Option<ExitStatus> = None;
    let mut exited_at: Option<Instant> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => take_line(line, &mut tail),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Both pipes closed: every line is in.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(status) = exited {
                    finish_group(&mut child);
                    return conclude(command, inputs, status, &tail);
                }
                // It closed its output but runs on: wait without spinning.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if exited.is_none() {
            match child.try_wait() {
                Ok(Some(status)) => {
                    exited = Some(status);
                    exited_at = Some(Instant::now());
                }
                Ok(None) => {}
                Err(e) => {
                    end_group(&mut child);
                    return Err(failure(
                        command,
                        format!("could not be waited on: {e}"),
                        &tail,
                    ));
                }
            }
        }
        if let (Some(status), Some(at)) = (exited, exited_at) {
            if at.elapsed() >= DRAIN_AFTER_EXIT {
                // Something it left behind holds the pipes: end it, keep what was printed.
                finish_group(&mut child);
                while let Ok(line) = rx.try_recv() {
                    take_line(line, &mut tail);
                }
                return conclude(command, inputs, status, &tail);
            }
            continue;
        }
        let watched = last_watch.elapsed() >= every && {
            last_watch = Instant::now();
            should_end()
        };
        if watched || stop.load(Ordering::SeqCst) {
            end_group(&mut child);
            return Ok(TrainerEnd::Stopped);
        }
        if started.elapsed() >= command.time_limit {
            end_group(&mut child);
            while let Ok(line) = rx.try_recv() {
                take_line(line, &mut tail);
            }
            return Err(failure(
                command,
                format!(
                    "passed its time limit of {} s (train.time_limit_s) and was killed with its \
                     process group",
                    command.time_limit.as_secs()
                ),
                &tail,
            ));
        }
    }
}

/// Longest output line kept (bytes); the rest of a longer line is dropped.
pub const MAX_LINE_BYTES: usize = 16 << 10;

/// Cut `reader` into lines as a terminal shows them: `\n` (or `\r\n`) ends a line, a lone `\r`
/// starts it over (a progress bar redrawing itself leaves its last state, not hours of
/// redraws in one line), and a line keeps at most [`MAX_LINE_BYTES`]. Each line goes to `emit`
/// (trailing whitespace trimmed, invalid UTF-8 replaced) until it returns `false`.
pub fn read_lines(mut reader: impl BufRead, emit: &mut dyn FnMut(String) -> bool) {
    let mut line: Vec<u8> = Vec::new();
    let mut after_cr = false;
    let finish = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line).trim_end().to_string();
        line.clear();
        text
    };
    loop {
        let chunk = match reader.fill_buf() {
            Ok([]) => break,
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let n = chunk.len();
        for &b in chunk {
            if after_cr && b != b'\n' {
                line.clear();
            }
            after_cr = false;
            match b {
                b'\n' if !emit(finish(&mut line)) => return,
                b'\n' => {}
                b'\r' => after_cr = true,
                _ if line.len() < MAX_LINE_BYTES => line.push(b),
                _ => {}
            }
        }
        reader.consume(n);
    }
    if !line.is_empty() {
        emit(finish(&mut line));
    }
}

/// After the trainer exited: nothing of its group may keep running (and writing into the
/// output directory while it is checked and published).
fn finish_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    signal_group(child.id(), libc::SIGKILL);
    #[cfg(not(unix))]
    let _ = child;
}

fn conclude(
    command: &TrainerCommand,
    inputs: &TrainerInputs,
    status: ExitStatus,
    tail: &VecDeque<String>,
) -> Result<TrainerEnd> {
    if !status.success() {
        return Err(failure(command, describe_exit(status), tail));
    }
    let wrote = std::fs::read_dir(&inputs.output_dir)
        .map_err(|e| MinerError::io(&inputs.output_dir, e))?
        .next()
        .is_some();
    if !wrote {
        return Err(failure(
            command,
            format!(
                "exited 0 but wrote nothing into KOTH_OUTPUT_DIR ({})",
                inputs.output_dir.display()
            ),
            tail,
        ));
    }
    Ok(TrainerEnd::Finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        // A tiny buffer: lines and \r\n pairs straddle reads.
        let reader = std::io::BufReader::with_capacity(3, bytes);
        read_lines(reader, &mut |l| {
            out.push(l);
            true
        });
        out
    }

    #[test]
    fn lines_are_cut_as_a_terminal_shows_them() {
        assert_eq!(lines_of(b"a\nbb\r\nccc"), ["a", "bb", "ccc"]);
        // A progress bar redrawn with \r keeps its last state.
        assert_eq!(
            lines_of(b" 10%|#   |\r 50%|##  |\r100%|####|\ndone\n"),
            ["100%|####|", "done"]
        );
        assert_eq!(lines_of(b"\xff ok \n"), ["\u{fffd} ok"]);
        let long = vec![b'x'; MAX_LINE_BYTES * 3];
        let got = lines_of(&[long.as_slice(), b"\nnext\n"].concat());
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE_BYTES);
        assert_eq!(got[1], "next");
    }
}
