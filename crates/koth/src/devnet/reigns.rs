//! The table of reigns at the end of a devnet run: every king from the validator's event log,
//! with the verdict that crowned it (μ̂, windows used) and a held-out loss the devnet measures
//! itself — every king scored on the same fixed windows of the private holdout — so "each king
//! is better than the last" is checked by numbers, not by trusting the duels.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use koth_core::Digest;
use koth_data::Dataset;
use koth_model::{DType, Device, Model, TokenIds};
use koth_store::{BlockingStore, GetOptions, Location, S3Options};
use koth_validator::event::Outcome;
use koth_validator::ValidatorState;
use serde::Serialize;

/// Seed material of the fixed scoring windows (the same for every king of every run).
pub const SCORE_SEED: &[u8] = b"koth-devnet/final-holdout-windows/1";

/// One reign.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReignRow {
    pub reign: u64,
    pub digest: Digest,
    /// `genesis`, a miner's name, or the hotkey when no name is known.
    pub miner: String,
    pub hotkey: Option<String>,
    pub location: Option<String>,
    /// The block at which it was crowned.
    pub block: u64,
    /// The crowning verdict's mean advantage (nats/token) and windows used.
    pub mu_hat: Option<f64>,
    pub windows: Option<u64>,
    /// Mean loss on the fixed private holdout windows, measured at the end.
    pub heldout_loss: Option<f64>,
}

/// The reigns of `state`, oldest first, with their crowning verdicts; hotkeys named by
/// `names` (ss58 → name).
pub fn rows_of(state: &ValidatorState, names: &BTreeMap<String, String>) -> Vec<ReignRow> {
    state
        .reigns
        .iter()
        .map(|r| {
            let verdict = r.entry.and_then(|id| {
                state.history.iter().find_map(|f| match &f.outcome {
                    Outcome::Dueled { verdict, .. } if f.id == id => Some(verdict),
                    _ => None,
                })
            });
            let miner = match &r.hotkey {
                None => "genesis".to_string(),
                Some(h) => names.get(h).cloned().unwrap_or_else(|| h.clone()),
            };
            ReignRow {
                reign: r.number,
                digest: r.digest,
                miner,
                hotkey: r.hotkey.clone(),
                location: r.location.clone(),
                block: r.block,
                mu_hat: verdict.map(|v| v.mu_hat),
                windows: verdict.map(|v| v.n),
                heldout_loss: None,
            }
        })
        .collect()
}

/// Whether every king's held-out loss is lower than the previous king's (`None` when a loss
/// is missing or there are fewer than two kings).
pub fn strictly_decreasing(rows: &[ReignRow]) -> Option<bool> {
    let losses: Option<Vec<f64>> = rows.iter().map(|r| r.heldout_loss).collect();
    let losses = losses?;
    if losses.len() < 2 {
        return None;
    }
    Some(losses.windows(2).all(|w| w[1] < w[0]))
}

fn short(d: &Digest) -> String {
    let hex = d.hex();
    format!("{}…", &hex[..hex.len().min(12)])
}

/// The table as text, with the verdict line under it.
pub fn format_table(rows: &[ReignRow], scored_windows: usize) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:>5}  {:<14}  {:<10}  {:>7}  {:>13}  {:>8}  {:>7}\n",
        "reign", "king", "miner", "block", "held-out loss", "mu_hat", "windows"
    ));
    for r in rows {
        let loss = r
            .heldout_loss
            .map_or_else(|| "—".to_string(), |l| format!("{l:.4}"));
        let mu = r
            .mu_hat
            .map_or_else(|| "—".to_string(), |m| format!("{m:+.4}"));
        let n = r.windows.map_or_else(|| "—".to_string(), |n| n.to_string());
        out.push_str(&format!(
            "{:>5}  {:<14}  {:<10}  {:>7}  {:>13}  {:>8}  {:>7}\n",
            r.reign,
            short(&r.digest),
            r.miner,
            r.block,
            loss,
            mu,
            n
        ));
    }
    let crowns = rows.len().saturating_sub(1);
    let verdict = match strictly_decreasing(rows) {
        Some(true) => format!(
            "held-out loss decreased monotonically over {crowns} crown(s) (every king scored on the same {scored_windows} private holdout windows): yes"
        ),
        Some(false) => format!(
            "held-out loss decreased monotonically over {crowns} crown(s) (same {scored_windows} private holdout windows): NO"
        ),
        None => format!("{crowns} crown(s): nothing to compare"),
    };
    out.push_str(&verdict);
    out.push('\n');
    out
}

/// Score every king of `rows` on the same `n` windows of the holdout (drawn with the secret
/// from [`SCORE_SEED`]); fills `heldout_loss`. Kings are fetched from their locations into
/// `kings_dir/<hex>` (or found there).
pub fn score_kings(
    rows: &mut [ReignRow],
    genesis_location: &str,
    holdout_bundle: &Path,
    secret: &[u8],
    seq_len: u32,
    n: u64,
    kings_dir: &Path,
) -> anyhow::Result<usize> {
    let dataset = Dataset::open(holdout_bundle)
        .with_context(|| format!("opening {}", holdout_bundle.display()))?;
    let sample = dataset
        .sample(SCORE_SEED, Some(secret), n, seq_len)
        .context("drawing the scoring windows")?;
    let windows = sample.windows.len();
    let batches: Vec<Vec<u32>> = sample
        .windows
        .chunks(32)
        .map(|c| dataset.read_windows(c))
        .collect::<Result<_, _>>()
        .context("reading the scoring windows")?;
    std::fs::create_dir_all(kings_dir).with_context(|| kings_dir.display().to_string())?;
    for row in rows.iter_mut() {
        let location = row.location.as_deref().unwrap_or(genesis_location);
        let loc: Location = location
            .parse()
            .with_context(|| format!("reign {} location {location:?}", row.reign))?;
        let store = BlockingStore::open(&loc, &S3Options::default())
            .with_context(|| format!("opening {location}"))?;
        let dir = kings_dir.join(row.digest.hex());
        store
            .get(
                &row.digest,
                &dir,
                &GetOptions {
                    max_total_bytes: 4 << 30,
                    max_bytes_per_sec: None,
                },
            )
            .with_context(|| format!("fetching king {} from {location}", row.digest))?;
        let model = Model::load(&dir, DType::F32, &Device::Cpu)
            .with_context(|| format!("loading king {}", row.digest))?;
        let mut sum = 0.0f64;
        let mut count = 0usize;
        for tokens in &batches {
            let rows_in_batch = tokens.len() / seq_len as usize;
            let ids = TokenIds::new(tokens.clone(), rows_in_batch, seq_len as usize)
                .context("shaping the scoring windows")?;
            let losses = model
                .sequence_losses(&ids)
                .with_context(|| format!("scoring king {}", row.digest))?;
            sum += losses.iter().map(|l| f64::from(*l)).sum::<f64>();
            count += losses.len();
        }
        if count == 0 {
            anyhow::bail!("no scoring windows");
        }
        row.heldout_loss = Some(sum / count as f64);
    }
    Ok(windows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(reign: u64, loss: Option<f64>) -> ReignRow {
        ReignRow {
            reign,
            digest: Digest::of(format!("king-{reign}").as_bytes()),
            miner: if reign == 0 {
                "genesis".into()
            } else {
                format!("miner-{reign}")
            },
            hotkey: None,
            location: None,
            block: reign * 10,
            mu_hat: (reign > 0).then_some(0.25),
            windows: (reign > 0).then_some(64),
            heldout_loss: loss,
        }
    }

    #[test]
    fn monotonic_only_when_every_king_beats_the_last() {
        let good = [row(0, Some(6.9)), row(1, Some(5.2)), row(2, Some(4.8))];
        assert_eq!(strictly_decreasing(&good), Some(true));
        let bad = [row(0, Some(6.9)), row(1, Some(5.2)), row(2, Some(5.2))];
        assert_eq!(strictly_decreasing(&bad), Some(false));
        assert_eq!(strictly_decreasing(&[row(0, Some(6.9))]), None);
        assert_eq!(
            strictly_decreasing(&[row(0, Some(6.9)), row(1, None)]),
            None
        );
    }

    #[test]
    fn the_table_has_a_row_per_reign_and_says_whether_losses_fell() {
        let rows = [row(0, Some(6.9312)), row(1, Some(5.2)), row(2, Some(4.8))];
        let t = format_table(&rows, 256);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 1 + 3 + 1, "{t}");
        assert!(lines[0].contains("held-out loss") && lines[0].contains("mu_hat"));
        assert!(lines[1].contains("genesis") && lines[1].contains("6.9312"));
        assert!(
            lines[1].contains('—'),
            "genesis has no verdict: {}",
            lines[1]
        );
        assert!(lines[2].contains("miner-1") && lines[2].contains("+0.2500"));
        assert!(lines[4].ends_with("yes"), "{t}");
        let t = format_table(&[row(0, Some(6.0)), row(1, Some(6.1))], 256);
        assert!(t.trim_end().ends_with("NO"), "{t}");
    }
}
