//! Rendering the miner's events: a progress bar (loss, tokens/s, ETA) when stderr is a
//! terminal, one `tracing` line per event otherwise, or one JSON object per line.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{MinerEvent, Observer};

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// indicatif progress bar on stderr (plus a line for every other event).
    Bar,
    /// One tracing line per event; training steps at most once per second.
    Lines,
    /// One JSON object per event on stderr.
    Json,
}

impl Display {
    /// `Json` if asked for, else `Bar` on a terminal and `Lines` otherwise.
    pub fn choose(json: bool) -> Self {
        if json {
            Display::Json
        } else if std::io::stderr().is_terminal() {
            Display::Bar
        } else {
            Display::Lines
        }
    }
}

/// An [`Observer`] that renders events in one [`Display`] mode.
pub struct Renderer {
    display: Display,
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
}

impl Renderer {
    pub fn new(display: Display) -> Self {
        Self {
            display,
            bar: None,
            last_line: None,
        }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => tracing::info!("{text}"),
        }
    }

    fn finish_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// The validator's verdict in words: outcome, reject code, message, μ̂ and windows.
pub fn verdict_text(v: &crate::follow::ValidatorVerdict) -> String {
    let mut out = v.outcome.clone();
    if let Some(c) = &v.code {
        out.push_str(&format!(" [{c}]"));
    }
    if let Some(m) = &v.message {
        out.push_str(&format!(": {m}"));
    }
    if let (Some(mu), Some(n)) = (v.mu_hat, v.n) {
        out.push_str(&format!(" (μ̂ = {mu:.5} nats over {n} windows)"));
    }
    out
}

/// One human sentence for an event (`None` for training steps, which the bar shows).
pub fn describe(event: &MinerEvent) -> Option<String> {
    Some(match event {
        MinerEvent::King { attempt, king } => format!(
            "attempt {attempt}: king {} (from the {}{})",
            king.digest,
            match king.source {
                crate::follow::KingSource::Feed => "validator's feed",
                crate::follow::KingSource::Chain => "chain's weights",
                crate::follow::KingSource::Genesis => "competition file: genesis",
            },
            king.reign
                .map(|r| format!(", reign {r}"))
                .unwrap_or_default()
        ),
        MinerEvent::Fetched { digest, path } => format!("king {digest} verified at {path}"),
        MinerEvent::TrainStart {
            start_step,
            steps,
            tokens_per_step,
            ..
        } => {
            if *start_step > 0 {
                format!("resuming training at step {start_step} of {steps} ({tokens_per_step} tokens/step)")
            } else {
                format!("training {steps} steps ({tokens_per_step} tokens/step)")
            }
        }
        MinerEvent::Step(s) => format!(
            "step {}/{} loss {:.4} lr {:.3e} grad-norm {:.3} {:.0} tok/s",
            s.step, s.steps, s.loss, s.lr, s.grad_norm, s.tokens_per_s
        ),
        MinerEvent::Interrupted { step } => {
            format!("stopped at step {step}; the checkpoint resumes it")
        }
        MinerEvent::KingChanged { old, new } => {
            format!("the king changed from {old} to {new}: attempt abandoned")
        }
        MinerEvent::TrainDone { steps, loss } => {
            format!("trained {steps} steps; loss {loss:.4} (mean of the last steps)")
        }
        MinerEvent::TrainerStart {
            command,
            time_limit_s,
            ..
        } => format!("running the trainer `{command}` (time limit {time_limit_s} s)"),
        MinerEvent::TrainerOutput { line } => format!("trainer | {line}"),
        MinerEvent::TrainerDone { seconds } => {
            format!("the trainer exited 0 after {seconds:.1} s")
        }
        MinerEvent::Checked(report) => crate::check::report_text(report),
        MinerEvent::ChallengerSaved { digest, path } => format!("challenger {digest} at {path}"),
        MinerEvent::Judging { .. } => return None,
        MinerEvent::Judged(v) => format!(
            "local duel: {} (king {:.4}, challenger {:.4} nats, μ̂ = {:.5} over {} windows)",
            v.verdict, v.king_nll, v.challenger_nll, v.mu_hat, v.windows
        ),
        MinerEvent::NotSubmitted { reason } => format!("not submitted: {reason}"),
        MinerEvent::Committed {
            block,
            reveal_block,
            payload,
        } => {
            format!("committed at block {block} (revealed at block {reveal_block}): {payload}")
        }
        MinerEvent::Published {
            digest,
            location,
            block,
            reveal_block,
        } => match block {
            Some(b) if b >= reveal_block => format!(
                "published {digest} to {location} at block {b}, LATE: the commitment was \
                 revealed at block {reveal_block}"
            ),
            Some(b) => format!(
                "published {digest} to {location} at block {b}, before the reveal at block \
                 {reveal_block}"
            ),
            None => format!("published {digest} to {location}"),
        },
        MinerEvent::PublishFailed {
            digest,
            location,
            reason,
        } => format!("committed {digest} but did not publish it to {location}: {reason}"),
        MinerEvent::WaitingForVerdict { digest } => {
            format!("waiting for the validator's verdict on {digest}")
        }
        MinerEvent::Verdict(v) => format!("validator: {}", verdict_text(v)),
    })
}

impl Observer for Renderer {
    fn event(&mut self, event: &MinerEvent) {
        match self.display {
            Display::Json => {
                if let Ok(line) = serde_json::to_string(event) {
                    eprintln!("{line}");
                }
            }
            Display::Lines => {
                if let MinerEvent::Step(s) = event {
                    let due = self
                        .last_line
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                    if !(due || s.step == s.steps) {
                        return;
                    }
                    self.last_line = Some(Instant::now());
                }
                if let Some(text) = describe(event) {
                    tracing::info!("{text}");
                }
            }
            Display::Bar => match event {
                MinerEvent::TrainStart {
                    start_step, steps, ..
                } => {
                    if let Some(text) = describe(event) {
                        self.line(text);
                    }
                    let bar =
                        ProgressBar::with_draw_target(Some(*steps), ProgressDrawTarget::stderr());
                    let style = ProgressStyle::with_template(
                        "{bar:30} {pos}/{len} steps  {msg}  ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                    bar.set_style(style);
                    bar.set_position(*start_step);
                    bar.reset_eta();
                    self.bar = Some(bar);
                }
                MinerEvent::Step(s) => {
                    if let Some(bar) = &self.bar {
                        bar.set_position(s.step);
                        bar.set_message(format!(
                            "loss {:.4}  {:.0} tok/s  lr {:.2e}",
                            s.loss, s.tokens_per_s, s.lr
                        ));
                    }
                }
                MinerEvent::Judging {
                    windows,
                    king_nll,
                    challenger_nll,
                } => {
                    if let Some(bar) = &self.bar {
                        bar.set_message(format!(
                            "local duel: {windows} windows, king {king_nll:.4} vs challenger {challenger_nll:.4}"
                        ));
                    }
                }
                MinerEvent::TrainDone { .. }
                | MinerEvent::Interrupted { .. }
                | MinerEvent::KingChanged { .. } => {
                    self.finish_bar();
                    if let Some(text) = describe(event) {
                        self.line(text);
                    }
                }
                other => {
                    if let Some(text) = describe(other) {
                        self.line(text);
                    }
                }
            },
        }
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.finish_bar();
    }
}
