//! Gate 5's trainability probe and gate 6's behavioural fingerprint (PROTOCOL §5), as pure
//! functions: the secret probe set, the fingerprint record and its digest, the Jensen–Shannon
//! distance, and the two verdicts. Running the models is the shell's (`gate_run`).
//!
//! **Probes.** A validator secret (never published) and the competition's sha256 seed a
//! ChaCha20 stream that draws [`PROBE_SEQUENCES`] token sequences of `min(seq_len, 64)` random
//! tokens, one secret position `q` in the second half of each, and the candidate tokens whose
//! probabilities are read there: the whole vocabulary when it has at most
//! [`FULL_VOCAB_LIMIT`] tokens, else [`SUBSET_CANDIDATES`] secret distinct tokens. Each
//! candidate costs one scored row of at most 64 tokens, so a fingerprint scores at most
//! 8 × 256 short rows whatever the vocabulary: far less than a duel. The probes
//! depend on nothing per submission, so every checkpoint is fingerprinted on the same inputs
//! and a fingerprint taken once can be compared with every later one.
//!
//! **Fingerprint.** For each probe, the next-token distribution at position `q`: the
//! probability of each candidate `c`, read as `exp(-nll)` of a row that is the probe with `c`
//! placed at `q + 1` (koth-model's public scoring path gives per-token NLL only, and a causal
//! model's prediction at `q` does not depend on anything after it). With a candidate subset,
//! one more bucket holds the remaining mass, so each distribution sums to 1 without
//! renormalising away what the subset misses. Kept as f32; with the full vocabulary it is the
//! exact distribution (64 tokens: 8 × 64 numbers), with a subset a compact summary (8 × 257)
//! whose buckets a copier cannot target because they are secret.
//!
//! **Distance.** Per probe the Jensen–Shannon distance (square root of the JS divergence in
//! bits, in [0, 1]); a fingerprint's distance to another is the mean over probes. A copy of a
//! checkpoint with small noise added moves every distribution a little and lands near 0; any
//! genuinely different training lands far away.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use koth_core::{Digest, RejectCode};

use crate::event::Gate;
use crate::gates::GateError;
use crate::state::{GateResult, ValidatorState};

/// Probe sequences per fingerprint.
pub const PROBE_SEQUENCES: usize = 8;
/// Longest probe sequence.
pub const MAX_PROBE_LEN: usize = 64;
/// Shortest probe sequence (a position with a prefix and a following token).
pub const MIN_PROBE_LEN: usize = 4;
/// Vocabularies up to this size are fingerprinted with their full distributions (one scored row
/// per candidate token: a larger vocabulary uses a secret subset, which costs the same).
pub const FULL_VOCAB_LIMIT: usize = 256;
/// Candidate tokens of a larger vocabulary's fingerprint.
pub const SUBSET_CANDIDATES: usize = 256;
/// Version of the fingerprint record.
pub const FINGERPRINT_FORMAT: u32 = 1;

/// The secret inputs every checkpoint is fingerprinted (and probed for trainability) on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSet {
    /// The probe sequences, each `len` tokens.
    pub sequences: Vec<Vec<u32>>,
    /// Per sequence, the position whose next-token distribution is read.
    pub positions: Vec<usize>,
    /// The tokens whose probabilities are read, ascending.
    pub candidates: Vec<u32>,
    /// Whether the candidates are the whole vocabulary (else a rest bucket is added).
    pub full_vocab: bool,
    pub vocab_size: usize,
    /// sha256 of everything above: two fingerprints are comparable iff their probe digests
    /// are equal. It does not reveal the probes.
    pub digest: Digest,
}

impl ProbeSet {
    /// Derive the probes from the validator's secret, the competition and the model shape.
    pub fn derive(
        secret: &[u8],
        competition_sha256: &Digest,
        vocab_size: usize,
        seq_len: usize,
    ) -> Result<Self, GateError> {
        if secret.is_empty() {
            return Err(GateError::Undecidable(
                "the fingerprint secret is empty".into(),
            ));
        }
        if vocab_size < 2 || vocab_size > u32::MAX as usize {
            return Err(GateError::Undecidable(format!(
                "the king's vocab_size {vocab_size} cannot be probed"
            )));
        }
        let mut seed = koth_core::Sha256Writer::new();
        seed.update(b"koth/fingerprint-probes/1\0");
        seed.update(&(secret.len() as u64).to_be_bytes());
        seed.update(secret);
        seed.update(competition_sha256.as_bytes());
        let mut rng = ChaCha20Rng::from_seed(*seed.finish().as_bytes());
        let len = seq_len.clamp(MIN_PROBE_LEN, MAX_PROBE_LEN);
        let mut sequences: Vec<Vec<u32>> = Vec::with_capacity(PROBE_SEQUENCES);
        let mut positions = Vec::with_capacity(PROBE_SEQUENCES);
        for _ in 0..PROBE_SEQUENCES {
            sequences.push(
                (0..len)
                    .map(|_| rng.random_range(0..vocab_size as u32))
                    .collect(),
            );
            positions.push(rng.random_range(len / 2..len - 1));
        }
        let full_vocab = vocab_size <= FULL_VOCAB_LIMIT;
        let candidates: Vec<u32> = if full_vocab {
            (0..vocab_size as u32).collect()
        } else {
            let mut chosen = BTreeSet::new();
            while chosen.len() < SUBSET_CANDIDATES {
                chosen.insert(rng.random_range(0..vocab_size as u32));
            }
            chosen.into_iter().collect()
        };
        let mut h = koth_core::Sha256Writer::new();
        h.update(b"koth/probe-set/1\0");
        h.update(&(vocab_size as u64).to_be_bytes());
        h.update(&[u8::from(full_vocab)]);
        for (seq, q) in sequences.iter().zip(&positions) {
            h.update(&(*q as u64).to_be_bytes());
            h.update(&(seq.len() as u64).to_be_bytes());
            for t in seq {
                h.update(&t.to_be_bytes());
            }
        }
        h.update(&(candidates.len() as u64).to_be_bytes());
        for c in &candidates {
            h.update(&c.to_be_bytes());
        }
        Ok(Self {
            sequences,
            positions,
            candidates,
            full_vocab,
            vocab_size,
            digest: h.finish(),
        })
    }

    /// Tokens per probe sequence.
    pub fn len(&self) -> usize {
        self.sequences.first().map_or(0, Vec::len)
    }

    /// Whether there are no probes (never, for a derived set).
    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }

    /// Rows to score: for probe `i` and candidate `j` (row `i * candidates + j`), probe `i`
    /// with the candidate at position `q_i + 1`. The row's NLL at `q_i` is `-ln p(c | prefix)`.
    pub fn scoring_row(&self, row: usize) -> Option<Vec<u32>> {
        let per = self.candidates.len();
        let (i, j) = (row / per.max(1), row % per.max(1));
        let mut seq = self.sequences.get(i)?.clone();
        let q = *self.positions.get(i)?;
        *seq.get_mut(q + 1)? = *self.candidates.get(j)?;
        Some(seq)
    }

    /// Number of rows [`ProbeSet::scoring_row`] knows.
    pub fn scoring_rows(&self) -> usize {
        self.sequences.len() * self.candidates.len()
    }

    /// The position whose NLL is read for `row`.
    pub fn position_of_row(&self, row: usize) -> Option<usize> {
        self.positions
            .get(row / self.candidates.len().max(1))
            .copied()
    }

    /// The fingerprint from the NLL read at each row's position (`nll[row]`, nats).
    pub fn fingerprint(&self, nll: &[f32]) -> Result<Fingerprint, GateError> {
        let per = self.candidates.len();
        if nll.len() != self.scoring_rows() || per == 0 {
            return Err(GateError::Undecidable(format!(
                "{} probe losses for {} probe rows",
                nll.len(),
                self.scoring_rows()
            )));
        }
        let mut distributions = Vec::with_capacity(self.sequences.len());
        for chunk in nll.chunks_exact(per) {
            let mut p: Vec<f64> = chunk.iter().map(|&l| (-f64::from(l)).exp()).collect();
            if p.iter().any(|x| !x.is_finite()) {
                // The challenger passed the NaN/Inf check, so non-finite outputs are its own
                // numerics: a model whose predictions overflow is not a valid submission.
                return Err(GateError::Refused {
                    code: RejectCode::WeightsInvalid,
                    message: "the model's next-token probabilities on the probe inputs are not \
                              finite (its activations overflow)"
                        .into(),
                });
            }
            let sum: f64 = p.iter().sum();
            if !self.full_vocab {
                p.push((1.0 - sum).max(0.0));
            }
            let total: f64 = p.iter().sum();
            if !(total > 0.0 && total.is_finite()) {
                return Err(GateError::Undecidable(
                    "a probe distribution has no mass".into(),
                ));
            }
            distributions.push(p.iter().map(|x| (x / total) as f32).collect());
        }
        Ok(Fingerprint {
            format: FINGERPRINT_FORMAT,
            probe_digest: self.digest,
            distributions,
        })
    }
}

/// A checkpoint's behaviour on the secret probes: one next-token distribution per probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    pub format: u32,
    pub probe_digest: Digest,
    pub distributions: Vec<Vec<f32>>,
}

impl Fingerprint {
    /// sha256 of the canonical bytes (format, probe digest, every probability's f32 bits).
    pub fn digest(&self) -> Digest {
        let mut h = koth_core::Sha256Writer::new();
        h.update(b"koth/fingerprint/");
        h.update(&self.format.to_be_bytes());
        h.update(self.probe_digest.as_bytes());
        h.update(&(self.distributions.len() as u64).to_be_bytes());
        for d in &self.distributions {
            h.update(&(d.len() as u64).to_be_bytes());
            for x in d {
                h.update(&x.to_le_bytes());
            }
        }
        h.finish()
    }

    /// Whether the record is well formed for `probes` (same probes, right sizes, finite
    /// probabilities that sum to about 1).
    pub fn fits(&self, probes: &ProbeSet) -> bool {
        let width = probes.candidates.len() + usize::from(!probes.full_vocab);
        self.format == FINGERPRINT_FORMAT
            && self.probe_digest == probes.digest
            && self.distributions.len() == probes.sequences.len()
            && self.distributions.iter().all(|d| {
                d.len() == width
                    && d.iter().all(|x| x.is_finite() && *x >= 0.0)
                    && (d.iter().map(|&x| f64::from(x)).sum::<f64>() - 1.0).abs() < 1e-3
            })
    }
}

/// Jensen–Shannon distance between two distributions over the same buckets, base 2: the
/// square root of ½ KL(p‖m) + ½ KL(q‖m) with m = (p + q) / 2; 0 for equal, 1 for disjoint.
pub fn js_distance(p: &[f32], q: &[f32]) -> f64 {
    let mut divergence = 0.0f64;
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (f64::from(a), f64::from(b));
        let m = 0.5 * (a + b);
        if a > 0.0 {
            divergence += 0.5 * a * (a / m).log2();
        }
        if b > 0.0 {
            divergence += 0.5 * b * (b / m).log2();
        }
    }
    divergence.clamp(0.0, 1.0).sqrt()
}

/// Mean per-probe JS distance; undecidable for fingerprints taken on different probes.
pub fn distance(a: &Fingerprint, b: &Fingerprint) -> Result<f64, GateError> {
    let same_shape = a.distributions.len() == b.distributions.len()
        && !a.distributions.is_empty()
        && a.distributions
            .iter()
            .zip(&b.distributions)
            .all(|(x, y)| x.len() == y.len());
    if a.probe_digest != b.probe_digest || a.format != b.format || !same_shape {
        return Err(GateError::Undecidable(format!(
            "fingerprints on different probes ({} vs {}) cannot be compared",
            a.probe_digest, b.probe_digest
        )));
    }
    let sum: f64 = a
        .distributions
        .iter()
        .zip(&b.distributions)
        .map(|(p, q)| js_distance(p, q))
        .sum();
    Ok(sum / a.distributions.len() as f64)
}

/// An earlier checkpoint the challenger is compared with.
#[derive(Debug, Clone)]
pub struct Earlier {
    pub digest: Digest,
    /// How it is named to the miner: "the king (reign 3)", "submission #12".
    pub label: String,
    pub fingerprint: Fingerprint,
}

/// `near_copy`: refuse the challenger when its fingerprint lies closer than `max_distance` to
/// any earlier one; the sentence names the nearest such checkpoint, the distance and both
/// fingerprint digests. An earlier checkpoint with the challenger's own digest is skipped.
pub fn check_near_copy(
    challenger_digest: &Digest,
    challenger: &Fingerprint,
    earlier: &[Earlier],
    max_distance: f64,
) -> Result<(), GateError> {
    if !(max_distance.is_finite() && max_distance > 0.0) {
        return Err(GateError::Undecidable(format!(
            "near-copy threshold {max_distance} must be a finite number > 0"
        )));
    }
    let mut nearest: Option<(f64, &Earlier)> = None;
    for e in earlier.iter().filter(|e| &e.digest != challenger_digest) {
        let d = distance(challenger, &e.fingerprint)?;
        if nearest.is_none_or(|(best, _)| d < best) {
            nearest = Some((d, e));
        }
    }
    match nearest {
        Some((d, e)) if d < max_distance => Err(GateError::Refused {
            code: RejectCode::NearCopy,
            message: format!(
                "a near copy of {} {}: Jensen–Shannon distance {d:.6} on the validator's secret \
                 probes, below the competition's {max_distance} (fingerprints {} and {})",
                e.label,
                e.digest,
                challenger.digest(),
                e.fingerprint.digest()
            ),
        }),
        _ => Ok(()),
    }
}

/// The checkpoints a challenger's fingerprint is compared with, from the durable state: the
/// current king first, then up to `history` earlier kings (newest first, the genesis king
/// included), then the newest `history` finished submissions whose fingerprint gate ran (passed
/// or refused), newest first; each digest once and never the challenger's own.
pub fn earlier_checkpoints(
    state: &ValidatorState,
    history: usize,
    challenger: &Digest,
) -> Vec<(Digest, String)> {
    let mut out: Vec<(Digest, String)> = Vec::new();
    if let Some(king) = state.king() {
        if &king.digest != challenger {
            out.push((king.digest, format!("the king (reign {})", king.number)));
        }
    }
    let earlier_kings = state.reigns.iter().rev().skip(1).take(history);
    for reign in earlier_kings {
        if &reign.digest != challenger && out.iter().all(|(d, _)| d != &reign.digest) {
            let label = if reign.number == 0 {
                "the genesis king (reign 0)".to_string()
            } else {
                format!("the former king of reign {}", reign.number)
            };
            out.push((reign.digest, label));
        }
    }
    let fingerprinted = state
        .history
        .iter()
        .rev()
        .filter(|f| {
            f.gates.iter().any(|g| {
                g.gate == Gate::Fingerprint
                    && matches!(g.result, GateResult::Passed | GateResult::Failed)
            })
        })
        .filter_map(|f| f.digest.map(|d| (d, f.id)))
        .filter(|(d, _)| d != challenger);
    let mut submissions = 0;
    for (digest, id) in fingerprinted {
        if submissions == history {
            break;
        }
        if out.iter().all(|(d, _)| d != &digest) {
            out.push((digest, format!("submission #{id}")));
            submissions += 1;
        }
    }
    out
}

/// What the trainability probe measures of one checkpoint: the gradient of the mean loss on
/// the probe sequences, one backward step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradientSummary {
    /// The probe loss (mean NLL, nats).
    pub loss: f64,
    /// L2 norm over every parameter's gradient.
    pub global_norm: f64,
    /// Tensors whose gradient has a NaN or Inf.
    pub non_finite: Vec<String>,
    /// The tensor with the largest gradient norm, and that norm.
    pub largest: Option<(String, f64)>,
}

impl GradientSummary {
    /// Summarise per-tensor gradient norms (`None`: the tensor's gradient is not finite).
    pub fn from_norms(loss: f64, norms: &[(String, Option<f64>)]) -> Self {
        let mut sum_sq = 0.0f64;
        let mut non_finite = Vec::new();
        let mut largest: Option<(String, f64)> = None;
        for (name, norm) in norms {
            match norm {
                Some(n) if n.is_finite() => {
                    sum_sq += n * n;
                    if largest.as_ref().is_none_or(|(_, l)| n > l) {
                        largest = Some((name.clone(), *n));
                    }
                }
                _ => non_finite.push(name.clone()),
            }
        }
        Self {
            loss,
            global_norm: sum_sq.sqrt(),
            non_finite,
            largest,
        }
    }
}

/// The probe's verdict (`weights_invalid`): the challenger's loss and every gradient are
/// finite, and its global gradient norm is at most `max_ratio` times the king's on the same
/// probe tokens.
pub fn check_trainability(
    king: &GradientSummary,
    challenger: &GradientSummary,
    max_ratio: f64,
) -> Result<(), GateError> {
    if !(king.global_norm.is_finite() && king.global_norm > 0.0 && king.non_finite.is_empty()) {
        return Err(GateError::Undecidable(format!(
            "the king's probe gradient norm is {} (non-finite tensors: {:?}); nothing to bound \
             the challenger's by",
            king.global_norm, king.non_finite
        )));
    }
    if !(max_ratio.is_finite() && max_ratio > 1.0) {
        return Err(GateError::Undecidable(format!(
            "probe gradient ratio {max_ratio} must be a finite number > 1"
        )));
    }
    let refuse = |message: String| GateError::Refused {
        code: RejectCode::WeightsInvalid,
        message,
    };
    if !challenger.loss.is_finite() {
        return Err(refuse(format!(
            "trainability probe: the loss on the probe tokens is {}",
            challenger.loss
        )));
    }
    if !challenger.non_finite.is_empty() {
        return Err(refuse(format!(
            "trainability probe: one backward step gives NaN/Inf gradients for {} tensors \
             (first: {:?})",
            challenger.non_finite.len(),
            crate::event::truncate(&challenger.non_finite[0], 120)
        )));
    }
    let ratio = challenger.global_norm / king.global_norm;
    if !ratio.is_finite() || ratio > max_ratio {
        let largest = challenger
            .largest
            .as_ref()
            .map(|(n, v)| format!("; largest: {:?} at {v:.3e}", crate::event::truncate(n, 120)))
            .unwrap_or_default();
        return Err(refuse(format!(
            "trainability probe: the gradient norm on the probe tokens is {:.3e}, {ratio:.2}× \
             the king's {:.3e} (allowed up to {max_ratio}×){largest}; rescaled weights that \
             leave the function unchanged make a model this hard to train",
            challenger.global_norm, king.global_norm
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(vocab: usize) -> ProbeSet {
        ProbeSet::derive(b"secret", &Digest::of(b"competition"), vocab, 32).unwrap()
    }

    #[test]
    fn probes_are_deterministic_secret_and_in_range() {
        let a = probes(64);
        assert_eq!(a, probes(64));
        let other = ProbeSet::derive(b"other", &Digest::of(b"competition"), 64, 32).unwrap();
        assert_ne!(a.digest, other.digest);
        assert_ne!(a.sequences, other.sequences);
        let other_game = ProbeSet::derive(b"secret", &Digest::of(b"other"), 64, 32).unwrap();
        assert_ne!(a.digest, other_game.digest);
        assert_eq!(a.sequences.len(), PROBE_SEQUENCES);
        assert!(a.full_vocab);
        assert_eq!(a.candidates.len(), 64);
        for (s, &q) in a.sequences.iter().zip(&a.positions) {
            assert_eq!(s.len(), 32);
            assert!(q >= 16 && q + 1 < 32);
            assert!(s.iter().all(|&t| t < 64));
        }
        let big = probes(151_936);
        assert!(!big.full_vocab);
        assert_eq!(big.candidates.len(), SUBSET_CANDIDATES);
        assert!(big.candidates.windows(2).all(|w| w[0] < w[1]));
        assert!(big.candidates.iter().all(|&c| c < 151_936));
        // Rows put each candidate right after the read position, and nothing else changes.
        let row = a.scoring_row(64 + 5).unwrap();
        let q = a.position_of_row(64 + 5).unwrap();
        assert_eq!(q, a.positions[1]);
        assert_eq!(row[q + 1], 5);
        assert_eq!(row[..=q], a.sequences[1][..=q]);
        assert!(a.scoring_row(a.scoring_rows()).is_none());
        assert!(ProbeSet::derive(b"", &Digest::of(b"c"), 64, 32).is_err());
        assert!(ProbeSet::derive(b"s", &Digest::of(b"c"), 1, 32).is_err());
        assert_eq!(
            ProbeSet::derive(b"s", &Digest::of(b"c"), 64, 2)
                .unwrap()
                .len(),
            MIN_PROBE_LEN
        );
    }

    fn uniform_nll(p: &ProbeSet) -> Vec<f32> {
        vec![(p.candidates.len() as f32).ln(); p.scoring_rows()]
    }

    #[test]
    fn fingerprints_are_distributions_with_a_rest_bucket_for_subsets() {
        let p = probes(64);
        let f = p.fingerprint(&uniform_nll(&p)).unwrap();
        assert!(f.fits(&p));
        assert_eq!(f.distributions[0].len(), 64);
        assert!((f.distributions[0][3] - 1.0 / 64.0).abs() < 1e-6);
        // A subset that holds only half the mass: the rest bucket holds the other half.
        let big = probes(100_000);
        let nll = vec![(2.0 * SUBSET_CANDIDATES as f32).ln(); big.scoring_rows()];
        let g = big.fingerprint(&nll).unwrap();
        assert!(g.fits(&big));
        assert_eq!(g.distributions[0].len(), SUBSET_CANDIDATES + 1);
        assert!((g.distributions[0][SUBSET_CANDIDATES] - 0.5).abs() < 1e-4);
        assert!(!g.fits(&p));
        assert!(p.fingerprint(&[1.0]).is_err());
        // Overflowing outputs are the model's fault.
        let mut bad = uniform_nll(&p);
        bad[7] = f32::NEG_INFINITY;
        assert_eq!(
            p.fingerprint(&bad).unwrap_err().code(),
            Some(RejectCode::WeightsInvalid)
        );
        // The digest covers every probability.
        let mut h = f.clone();
        h.distributions[2][1] += 1e-7;
        assert_ne!(h.digest(), f.digest());
    }

    #[test]
    fn js_distance_is_a_bounded_symmetric_distance() {
        let p = [0.5f32, 0.5, 0.0];
        let q = [0.0f32, 0.0, 1.0];
        assert!(js_distance(&p, &p) < 1e-9);
        assert!((js_distance(&p, &q) - 1.0).abs() < 1e-9);
        let r = [0.4f32, 0.6, 0.0];
        assert!((js_distance(&p, &r) - js_distance(&r, &p)).abs() < 1e-12);
        assert!(js_distance(&p, &r) > 0.0 && js_distance(&p, &r) < 1.0);
        // Triangle inequality on a few points (JS distance is a metric).
        let s = [0.2f32, 0.3, 0.5];
        assert!(js_distance(&p, &s) <= js_distance(&p, &r) + js_distance(&r, &s) + 1e-12);
    }

    fn fp_from(p: &ProbeSet, seed: u64, noise: f32) -> Fingerprint {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let base: Vec<f32> = (0..p.scoring_rows())
            .map(|_| rng.random_range(0.5f32..6.0))
            .collect();
        let mut jitter = ChaCha20Rng::seed_from_u64(seed ^ 0xfeed);
        let nll: Vec<f32> = base
            .iter()
            .map(|x| x + noise * jitter.random_range(-1.0f32..1.0))
            .collect();
        p.fingerprint(&nll).unwrap()
    }

    #[test]
    fn near_copies_are_refused_naming_the_nearest_and_others_pass() {
        let p = probes(64);
        let king = fp_from(&p, 1, 0.0);
        let recent = fp_from(&p, 2, 0.0);
        let copy_of_recent = fp_from(&p, 2, 1e-3);
        let fresh = fp_from(&p, 3, 0.0);
        let earlier = vec![
            Earlier {
                digest: Digest::of(b"king"),
                label: "the king (reign 1)".into(),
                fingerprint: king.clone(),
            },
            Earlier {
                digest: Digest::of(b"recent"),
                label: "submission #4".into(),
                fingerprint: recent.clone(),
            },
        ];
        let d = Digest::of(b"challenger");
        let err = check_near_copy(&d, &copy_of_recent, &earlier, 0.01).unwrap_err();
        assert_eq!(err.code(), Some(RejectCode::NearCopy));
        let m = err.to_string();
        assert!(
            m.contains("submission #4") && m.contains(&Digest::of(b"recent").to_string()),
            "{m}"
        );
        assert!(m.contains(&copy_of_recent.digest().to_string()), "{m}");
        assert_eq!(check_near_copy(&d, &fresh, &earlier, 0.01), Ok(()));
        // Its own earlier record is not a copy of itself.
        assert_eq!(
            check_near_copy(&Digest::of(b"recent"), &recent, &earlier, 0.01),
            Ok(())
        );
        // Different probes: cannot decide, never a pass.
        let other = ProbeSet::derive(b"x", &Digest::of(b"competition"), 64, 32).unwrap();
        let foreign = fp_from(&other, 1, 0.0);
        assert!(matches!(
            check_near_copy(&d, &foreign, &earlier, 0.01),
            Err(GateError::Undecidable(_))
        ));
        assert!(check_near_copy(&d, &fresh, &earlier, f64::NAN).is_err());
    }

    #[test]
    fn earlier_checkpoints_are_the_kings_then_recent_fingerprinted_submissions() {
        use crate::event::Outcome;
        use crate::state::{Finished, GateRecord, Reign};
        let reign = |number: u64, tag: &[u8]| Reign {
            number,
            digest: Digest::of(tag),
            hotkey: None,
            uid: None,
            entry: None,
            location: None,
            block: number,
            block_hash: None,
        };
        let finished = |id: u64, tag: &[u8], result: Option<GateResult>| Finished {
            id,
            hotkey: format!("5H{id}"),
            uid: Some(1),
            digest: Some(Digest::of(tag)),
            location: None,
            commit_block: 1,
            reveal_block: 2,
            retries: 0,
            gates: result
                .map(|result| GateRecord {
                    gate: Gate::Fingerprint,
                    result,
                })
                .into_iter()
                .collect(),
            outcome: Outcome::Superseded { by: 99 },
            finished_block: 3,
        };
        let mut state = ValidatorState::new();
        state.reigns = vec![reign(0, b"genesis"), reign(1, b"k1"), reign(2, b"k2")];
        state.history.extend([
            finished(1, b"old", Some(GateResult::Passed)),
            finished(2, b"never fingerprinted", None),
            finished(3, b"skipped", Some(GateResult::NotEnabled)),
            finished(4, b"refused copy", Some(GateResult::Failed)),
            finished(5, b"k2", Some(GateResult::Passed)),
        ]);
        let labels: Vec<String> = earlier_checkpoints(&state, 16, &Digest::of(b"challenger"))
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        assert_eq!(
            labels,
            [
                "the king (reign 2)",
                "the former king of reign 1",
                "the genesis king (reign 0)",
                "submission #4",
                "submission #1",
            ]
        );
        // The limit applies to former kings and to submissions; the challenger's own digest is
        // never compared with itself.
        let limited = earlier_checkpoints(&state, 1, &Digest::of(b"refused copy"));
        let digests: Vec<Digest> = limited.iter().map(|(d, _)| *d).collect();
        assert_eq!(
            digests,
            [Digest::of(b"k2"), Digest::of(b"k1"), Digest::of(b"old")]
        );
    }

    fn grads(loss: f64, norms: &[(&str, Option<f64>)]) -> GradientSummary {
        let norms: Vec<(String, Option<f64>)> =
            norms.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        GradientSummary::from_norms(loss, &norms)
    }

    #[test]
    fn trainability_refuses_non_finite_or_exploding_gradients() {
        let king = grads(4.0, &[("a", Some(3.0)), ("b", Some(4.0))]);
        assert!((king.global_norm - 5.0).abs() < 1e-12);
        assert_eq!(king.largest, Some(("b".into(), 4.0)));
        let fine = grads(3.9, &[("a", Some(6.0)), ("b", Some(8.0))]);
        assert_eq!(check_trainability(&king, &fine, 3.0), Ok(()));
        let exploding = grads(3.9, &[("a", Some(30.0)), ("b", Some(4.0))]);
        let err = check_trainability(&king, &exploding, 3.0).unwrap_err();
        assert_eq!(err.code(), Some(RejectCode::WeightsInvalid));
        assert!(err.to_string().contains("\"a\""), "{err}");
        let nan = grads(3.9, &[("a", None), ("b", Some(4.0))]);
        assert_eq!(
            check_trainability(&king, &nan, 3.0).unwrap_err().code(),
            Some(RejectCode::WeightsInvalid)
        );
        let nan_loss = grads(f64::NAN, &[("a", Some(1.0))]);
        assert!(check_trainability(&king, &nan_loss, 3.0).is_err());
        // A king without a usable gradient gives nothing to compare with: never a pass.
        let dead = grads(4.0, &[("a", Some(0.0))]);
        assert!(matches!(
            check_trainability(&dead, &fine, 3.0),
            Err(GateError::Undecidable(_))
        ));
    }
}
