//! The pure core: `apply(state, event) -> effects`. No I/O, no clock, no randomness.
//!
//! Every rule of intake, queueing, gating, crowning and weights lives here and nowhere else, and
//! each event has one handler below (`on_tick`, `on_gate_passed`, …) that holds all of its
//! rules: first what the event must satisfy, then what it changes. An event that does not fit
//! the state (a gate result for an entry that is not being gated, a second crown, a block that
//! goes backwards) is refused with an [`ApplyError`] and leaves the state untouched: a handler
//! works on a copy that replaces the state only when it returns `Ok`. The shell checks with
//! [`check`] before it appends, so the log only ever holds events that applied, and replaying it
//! cannot fail unless the file was damaged.

use koth_core::{CommitmentPayload, Digest, RejectCode};

use crate::event::{
    truncate, Effect, EntryId, Event, Gate, Outcome, PoolSpec, Reveal, Rules, SeedMaterial,
    VerdictSummary, Weight, MAX_BACKOFF_BLOCKS, MAX_TEXT_BYTES,
};
use crate::state::{
    Active, DigestRecord, DuelBounds, Entry, Finished, GateRecord, GateResult, Phase, QueueClass,
    QueueKey, Reign, RevealMark, ValidatorState,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    #[error("the first event must be `started`, got `{0}`")]
    NotStarted(&'static str),
    #[error("`started` may appear only once in a log")]
    AlreadyStarted,
    #[error("block {got} is before the current block {current}")]
    BlockWentBack { current: u64, got: u64 },
    #[error("`{event}` for entry {entry}, but the active entry is {active:?}")]
    NotActive {
        event: &'static str,
        entry: EntryId,
        active: Option<EntryId>,
    },
    #[error("`{event}` does not fit entry {entry} in phase {phase}")]
    WrongPhase {
        event: &'static str,
        entry: EntryId,
        phase: String,
    },
    #[error("gate `{gate}` cannot refuse with code `{code}` (its codes: {allowed})")]
    CodeNotOfGate {
        gate: &'static str,
        code: RejectCode,
        allowed: String,
    },
    #[error("{field}: expected {expected}, got {got}")]
    Mismatch {
        field: &'static str,
        expected: String,
        got: String,
    },
    #[error("{0} must be a finite number")]
    NotFinite(&'static str),
    #[error("{field} is {len} bytes long; at most {MAX_TEXT_BYTES} are accepted")]
    TextTooLong { field: &'static str, len: usize },
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{0} must be a location: not empty, without whitespace or control characters")]
    BadLocation(&'static str),
    #[error("internal inconsistency: {0} (the log replays from scratch on restart)")]
    Internal(&'static str),
}

/// Apply one event. On `Err` the state is unchanged.
pub fn apply(state: &mut ValidatorState, event: &Event) -> Result<Vec<Effect>, ApplyError> {
    let (next, effects) = step(state, event)?;
    *state = next;
    Ok(effects)
}

/// Whether `event` would apply to `state`, without changing it. The shell calls this before it
/// appends an event to the log (a stale progress report from a cancelled duel, a duplicate crown
/// or a wrong gate is refused here and never logged). It runs the same handler as [`apply`], so
/// the two cannot disagree.
pub fn check(state: &ValidatorState, event: &Event) -> Result<(), ApplyError> {
    step(state, event).map(drop)
}

/// The state after `event` and the effects it causes, leaving `state` as it is: what [`apply`]
/// and [`check`] are made of, and what a journal uses to append an event between deciding it
/// applies and adopting the new state.
pub fn step(
    state: &ValidatorState,
    event: &Event,
) -> Result<(ValidatorState, Vec<Effect>), ApplyError> {
    let mut next = state.clone();
    let effects = handle(&mut next, event)?;
    Ok((next, effects))
}

/// Dispatch to the event's handler. A handler may leave `state` half-changed when it fails:
/// only [`step`] calls this, on a copy it drops on `Err`.
fn handle(state: &mut ValidatorState, event: &Event) -> Result<Vec<Effect>, ApplyError> {
    let Some(rules) = state.rules.clone() else {
        return match event {
            Event::Started { rules } => on_started(state, rules),
            other => Err(ApplyError::NotStarted(other.kind())),
        };
    };
    match event {
        Event::Started { .. } => Err(ApplyError::AlreadyStarted),
        Event::Recovered => on_recovered(state, &rules),
        Event::Tick { block } => on_tick(state, *block),
        Event::Revealed { block, reveals } => on_revealed(state, &rules, *block, reveals),
        Event::GateStarted { entry, gate } => on_gate_started(state, *entry, *gate),
        Event::GatePassed { entry, gate } => on_gate_passed(state, &rules, *entry, *gate),
        Event::GateFailed {
            entry,
            gate,
            code,
            message,
        } => on_gate_failed(state, *entry, *gate, *code, message),
        Event::InfraFault { entry, reason } => on_infra_fault(state, &rules, *entry, reason),
        Event::DuelStarted { entry, king, seed } => on_duel_started(state, *entry, king, seed),
        Event::DuelProgress {
            entry,
            n,
            mu_hat,
            lower,
            upper,
        } => on_duel_progress(
            state,
            *entry,
            DuelBounds {
                n: *n,
                mu_hat: *mu_hat,
                lower: *lower,
                upper: *upper,
            },
        ),
        Event::DuelFinished { entry, verdict } => on_duel_finished(state, *entry, verdict),
        Event::DuelRefused {
            entry,
            code,
            message,
        } => on_duel_refused(state, *entry, *code, message),
        Event::Crowned {
            entry,
            digest,
            hotkey,
            reign,
            block,
            block_hash,
            location,
        } => on_crowned(
            state,
            *entry,
            (digest, hotkey, *reign),
            (*block, block_hash),
            location.as_deref(),
        ),
        Event::WeightsSet { block, weights } => on_weights_set(state, *block, weights),
    }
}

/// `started`: the game and its rules; the genesis king reigns.
fn on_started(state: &mut ValidatorState, rules: &Rules) -> Result<Vec<Effect>, ApplyError> {
    check_rules(rules)?;
    start(state, rules);
    Ok(Vec::new())
}

/// `recovered`: whatever was in flight was interrupted by us.
fn on_recovered(state: &mut ValidatorState, rules: &Rules) -> Result<Vec<Effect>, ApplyError> {
    state.counters.recoveries += 1;
    let mut effects = Vec::new();
    match &mut state.active {
        Some(Active {
            phase: Phase::Crowning { requested, .. },
            ..
        }) => *requested = false,
        Some(_) => effects.extend(requeue_active(state, rules, false)?),
        None => {}
    }
    if state.weights.dirty {
        effects.extend(weights_if_due(state));
    }
    effects.extend(resume(state)?);
    Ok(effects)
}

/// `tick`: the chain head advanced; weights when due, and the queue goes on after a pause.
fn on_tick(state: &mut ValidatorState, block: u64) -> Result<Vec<Effect>, ApplyError> {
    check_block(state, block)?;
    state.block = block;
    let mut effects = weights_if_due(state);
    effects.extend(resume(state)?);
    Ok(effects)
}

/// `revealed`: the chain's reveals up to `block` have been read. Each new commitment is
/// received (ignored, refused as too late, or held), then every held one whose commit block + W
/// has been reached is decided, in (commit block, hotkey, payload) order: ownership of a digest
/// goes by commit block, not by who revealed first (PROTOCOL §3). The shell appends this event
/// with every commitment revealed at or before `block` that is new to the state, so nothing
/// that could come before a decided one is still unread. On the embedded chain every lag is
/// exactly W, so a reveal is decided in the event that brings it.
fn on_revealed(
    state: &mut ValidatorState,
    rules: &Rules,
    block: u64,
    reveals: &[Reveal],
) -> Result<Vec<Effect>, ApplyError> {
    check_block(state, block)?;
    for r in reveals {
        check_text("reveal.hotkey", &r.hotkey)?;
        check_text("reveal.payload", &r.payload)?;
        check_text("reveal.block_hash", &r.block_hash)?;
        if r.reveal_block < r.commit_block {
            return Err(ApplyError::Mismatch {
                field: "reveal.reveal_block",
                expected: format!(">= commit_block {}", r.commit_block),
                got: r.reveal_block.to_string(),
            });
        }
    }
    state.block = block;
    let mut effects = Vec::new();
    let mut ordered: Vec<&Reveal> = reveals.iter().collect();
    match rules.reveal_delay_blocks {
        Some(w) => {
            // The chain's order within one poll is not trusted.
            ordered.sort_by(|a, b| hold_order(a).cmp(&hold_order(b)));
            for reveal in ordered {
                if receive(state, rules, reveal) {
                    hold(state, reveal, w, &mut effects);
                }
            }
            for reveal in release(state, block) {
                effects.extend(decide(state, &reveal));
            }
        }
        None => {
            // A log from before reveals were held: its own order, as it was run.
            ordered.sort_by(|a, b| {
                (a.reveal_block, a.commit_block, &a.hotkey, &a.payload).cmp(&(
                    b.reveal_block,
                    b.commit_block,
                    &b.hotkey,
                    &b.payload,
                ))
            });
            for reveal in ordered {
                if receive(state, rules, reveal) {
                    effects.extend(decide(state, reveal));
                }
            }
        }
    }
    effects.extend(resume(state)?);
    Ok(effects)
}

/// The order in which held reveals are decided: commit block first (the earliest commitment of
/// a digest owns it), then hotkey and payload, which only order commitments of one block.
fn hold_order(r: &Reveal) -> (u64, &str, &str) {
    (r.commit_block, &r.hotkey, &r.payload)
}

/// Hold `reveal` until its commit block + `w`, unless it was revealed later than that: then
/// the earlier commitments it would be ordered against may already have been decided, and it
/// is refused `reveal_too_late`.
fn hold(state: &mut ValidatorState, reveal: &Reveal, w: u64, effects: &mut Vec<Effect>) {
    let lag = reveal.reveal_block - reveal.commit_block;
    if lag > w {
        let payload = reveal.payload.parse::<CommitmentPayload>().ok();
        effects.push(reject_at_intake(
            state,
            reveal,
            payload.as_ref(),
            RejectCode::RevealTooLate,
            format!(
                "committed at block {} and revealed at block {}, {lag} blocks later; the \
                 competition accepts at most {w} (intake.reveal_delay_blocks)",
                reveal.commit_block, reveal.reveal_block
            ),
        ));
        return;
    }
    let at = state
        .held
        .partition_point(|h| hold_order(h) <= hold_order(reveal));
    state.held.insert(at, reveal.clone());
}

/// Take out the held reveals whose commit block + W is at or before `block`, in decision order.
fn release(state: &mut ValidatorState, block: u64) -> Vec<Reveal> {
    let held = std::mem::take(&mut state.held);
    let (due, kept): (Vec<Reveal>, Vec<Reveal>) = held
        .into_iter()
        .partition(|r| state.release_block(r) <= block);
    state.held = kept;
    due
}

/// `gate_started`: the requested gate is running.
fn on_gate_started(
    state: &mut ValidatorState,
    entry: EntryId,
    gate: Gate,
) -> Result<Vec<Effect>, ApplyError> {
    let kind = "gate_started";
    match active_phase_mut(state, kind, entry)? {
        Phase::Gate {
            gate: g,
            started: started @ false,
        } if *g == gate => *started = true,
        p => return Err(wrong_phase(kind, entry, p)),
    }
    Ok(Vec::new())
}

/// `gate_passed`: on to the next enabled gate, or the duel.
fn on_gate_passed(
    state: &mut ValidatorState,
    rules: &Rules,
    entry: EntryId,
    gate: Gate,
) -> Result<Vec<Effect>, ApplyError> {
    check_gate_running(state, "gate_passed", entry, gate)?;
    record_gate(state, entry, gate, GateResult::Passed)?;
    Ok(vec![next_step(state, rules, gate_index(gate) + 1)?])
}

/// `gate_failed`: the submission is refused with one of the gate's own codes.
fn on_gate_failed(
    state: &mut ValidatorState,
    entry: EntryId,
    gate: Gate,
    code: RejectCode,
    message: &str,
) -> Result<Vec<Effect>, ApplyError> {
    check_gate_running(state, "gate_failed", entry, gate)?;
    check_code(gate, code)?;
    check_text("gate_failed.message", message)?;
    record_gate(state, entry, gate, GateResult::Failed)?;
    end_active(
        state,
        Outcome::Rejected {
            code,
            gate: Some(gate),
            message: message.to_string(),
        },
    )
}

/// `infra_fault`: our fault, never the submission's. The entry goes back to the head of the
/// queue (a crown whose verdict is final is retried instead), and the queue pauses.
fn on_infra_fault(
    state: &mut ValidatorState,
    rules: &Rules,
    entry: EntryId,
    reason: &str,
) -> Result<Vec<Effect>, ApplyError> {
    active_phase(state, "infra_fault", entry)?;
    check_text("infra_fault.reason", reason)?;
    state.counters.infra_faults += 1;
    if let Some(Active {
        phase: Phase::Crowning { requested, .. },
        ..
    }) = &mut state.active
    {
        // The verdict is final; only carrying out the crown failed. Try again after the pause.
        *requested = false;
        pause(state, 1);
        return resume(state);
    }
    let mut effects = requeue_active(state, rules, true)?;
    effects.extend(resume(state)?);
    Ok(effects)
}

/// `duel_started`: the requested duel runs, against the king and with the seed it was asked for.
fn on_duel_started(
    state: &mut ValidatorState,
    entry: EntryId,
    king: &Digest,
    seed: &SeedMaterial,
) -> Result<Vec<Effect>, ApplyError> {
    let kind = "duel_started";
    match active_phase_mut(state, kind, entry)? {
        Phase::Duel {
            king: k,
            seed: s,
            running: running @ false,
            ..
        } => {
            expect_eq("duel_started.king", k, king)?;
            expect_eq("duel_started.seed", s, seed)?;
            *running = true;
        }
        p => return Err(wrong_phase(kind, entry, p)),
    }
    state.counters.duels_started += 1;
    Ok(Vec::new())
}

/// `duel_progress`: the running duel's bounds after a batch; `n` never goes back.
fn on_duel_progress(
    state: &mut ValidatorState,
    entry: EntryId,
    bounds: DuelBounds,
) -> Result<Vec<Effect>, ApplyError> {
    let kind = "duel_progress";
    check_finite("duel_progress.mu_hat", bounds.mu_hat)?;
    if let Some(lower) = bounds.lower {
        check_finite("duel_progress.lower", lower)?;
    }
    if let Some(upper) = bounds.upper {
        check_finite("duel_progress.upper", upper)?;
    }
    match active_phase_mut(state, kind, entry)? {
        Phase::Duel {
            running: true,
            progress,
            ..
        } => {
            if let Some(p) = progress {
                if bounds.n < p.n {
                    return Err(ApplyError::Mismatch {
                        field: "duel_progress.n",
                        expected: format!(">= {}", p.n),
                        got: bounds.n.to_string(),
                    });
                }
            }
            *progress = Some(bounds);
        }
        p => return Err(wrong_phase(kind, entry, p)),
    }
    Ok(Vec::new())
}

/// `duel_finished`: the digest is final; an accepted challenger is to be crowned, a refused one
/// is answered.
fn on_duel_finished(
    state: &mut ValidatorState,
    entry: EntryId,
    verdict: &VerdictSummary,
) -> Result<Vec<Effect>, ApplyError> {
    check_duel_running(state, "duel_finished", entry)?;
    check_verdict(verdict)?;
    state.counters.duels_finished += 1;
    mark_dueled(state, entry)?;
    if !verdict.accepted {
        return end_active(
            state,
            Outcome::Dueled {
                verdict: verdict.clone(),
                crowned: None,
            },
        );
    }
    let reign = state.king().map_or(0, |k| k.number) + 1;
    set_phase(
        &mut state.active,
        Phase::Crowning {
            verdict: verdict.clone(),
            reign,
            requested: false,
        },
    );
    resume(state)
}

/// `duel_refused`: the challenger itself failed in the duel. The same bytes would fail again, so
/// the digest is final exactly as after a verdict.
fn on_duel_refused(
    state: &mut ValidatorState,
    entry: EntryId,
    code: RejectCode,
    message: &str,
) -> Result<Vec<Effect>, ApplyError> {
    check_duel_running(state, "duel_refused", entry)?;
    check_code(Gate::Duel, code)?;
    check_text("duel_refused.message", message)?;
    mark_dueled(state, entry)?;
    end_active(
        state,
        Outcome::Rejected {
            code,
            gate: Some(Gate::Duel),
            message: message.to_string(),
        },
    )
}

/// `crowned`: the shell carried out the crown the core asked for; a new reign starts and the
/// new king gets paid. The reign's location is the validator's own copy when the event names
/// one, else the location the winner committed.
fn on_crowned(
    state: &mut ValidatorState,
    entry: EntryId,
    (digest, hotkey, reign): (&Digest, &str, u64),
    (block, block_hash): (u64, &str),
    copy: Option<&str>,
) -> Result<Vec<Effect>, ApplyError> {
    let kind = "crowned";
    let verdict = match active_phase(state, kind, entry)? {
        Phase::Crowning {
            reign: r, verdict, ..
        } => {
            expect_eq("crowned.reign", r, &reign)?;
            verdict.clone()
        }
        p => return Err(wrong_phase(kind, entry, p)),
    };
    let e = state
        .entries
        .get(&entry)
        .ok_or(ApplyError::Internal("active entry missing"))?;
    expect_eq("crowned.digest", &e.digest, digest)?;
    expect_eq("crowned.hotkey", &e.hotkey.as_str(), &hotkey)?;
    check_text("crowned.block_hash", block_hash)?;
    if let Some(copy) = copy {
        check_location("crowned.location", copy)?;
    }
    let (location, uid) = (
        copy.map_or_else(|| e.location.clone(), str::to_string),
        e.uid,
    );
    state.reigns.push(Reign {
        number: reign,
        digest: *digest,
        hotkey: Some(hotkey.to_string()),
        uid: Some(uid),
        entry: Some(entry),
        location: Some(location),
        block,
        block_hash: Some(block_hash.to_string()),
    });
    state.block = state.block.max(block);
    state.counters.crowns += 1;
    state.weights.dirty = true;
    let mut effects = weights_if_due(state);
    effects.extend(end_active(
        state,
        Outcome::Dueled {
            verdict,
            crowned: Some(reign),
        },
    )?);
    Ok(effects)
}

/// `weights_set`: the chain accepted these weights; they are still owed if they are not the
/// ones the reward policy gives now.
fn on_weights_set(
    state: &mut ValidatorState,
    block: u64,
    weights: &[Weight],
) -> Result<Vec<Effect>, ApplyError> {
    for w in weights {
        check_text("weights_set.hotkey", &w.hotkey)?;
        check_finite("weights_set.weight", w.weight)?;
        if w.weight < 0.0 {
            return Err(ApplyError::Mismatch {
                field: "weights_set.weight",
                expected: ">= 0".into(),
                got: w.weight.to_string(),
            });
        }
    }
    state.weights.last_set_block = Some(block);
    state.weights.dirty = weights != state.expected_weights().as_slice();
    state.weights.last = weights.to_vec();
    Ok(Vec::new())
}

/// A gate (or the duel) may refuse only with its own codes.
fn check_code(gate: Gate, code: RejectCode) -> Result<(), ApplyError> {
    if gate.codes().contains(&code) {
        return Ok(());
    }
    Err(ApplyError::CodeNotOfGate {
        gate: gate.name(),
        code,
        allowed: gate
            .codes()
            .iter()
            .map(|c| c.code())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn check_rules(rules: &Rules) -> Result<(), ApplyError> {
    if rules.weights_interval_blocks == 0 {
        return Err(ApplyError::Mismatch {
            field: "rules.weights_interval_blocks",
            expected: ">= 1".into(),
            got: "0".into(),
        });
    }
    if rules.history_len == 0 {
        return Err(ApplyError::Mismatch {
            field: "rules.history_len",
            expected: ">= 1".into(),
            got: "0".into(),
        });
    }
    Ok(())
}

fn check_block(state: &ValidatorState, block: u64) -> Result<(), ApplyError> {
    if block < state.block {
        return Err(ApplyError::BlockWentBack {
            current: state.block,
            got: block,
        });
    }
    Ok(())
}

fn check_text(field: &'static str, text: &str) -> Result<(), ApplyError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(ApplyError::TextTooLong {
            field,
            len: text.len(),
        });
    }
    Ok(())
}

/// A location the shell reports: not empty, no whitespace or control characters (as a
/// commitment's location), and not over the text cap.
fn check_location(field: &'static str, location: &str) -> Result<(), ApplyError> {
    check_text(field, location)?;
    if location.is_empty()
        || location
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApplyError::BadLocation(field));
    }
    Ok(())
}

fn check_finite(field: &'static str, x: f64) -> Result<(), ApplyError> {
    // JSON has no NaN or infinity: a non-finite number would be written as `null` and the log
    // would no longer replay.
    if x.is_finite() {
        Ok(())
    } else {
        Err(ApplyError::NotFinite(field))
    }
}

/// Record that `entry`'s digest has had its duel: it is never dueled again (PROTOCOL §4).
fn mark_dueled(state: &mut ValidatorState, entry: u64) -> Result<(), ApplyError> {
    let digest = state
        .entries
        .get(&entry)
        .map(|e| e.digest)
        .ok_or(ApplyError::Internal("active entry missing"))?;
    if let Some(rec) = state.digests.get_mut(&digest) {
        rec.dueled = true;
    }
    Ok(())
}

fn check_verdict(v: &VerdictSummary) -> Result<(), ApplyError> {
    check_finite("verdict.mu_hat", v.mu_hat)?;
    if let Some(lower) = v.lower {
        check_finite("verdict.lower", lower)?;
    }
    if let Some(upper) = v.upper {
        check_finite("verdict.upper", upper)?;
    }
    if v.verdict_path.is_empty() {
        return Err(ApplyError::Empty("verdict.verdict_path"));
    }
    check_text("verdict.verdict_path", &v.verdict_path)
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(
    field: &'static str,
    expected: &T,
    got: &T,
) -> Result<(), ApplyError> {
    if expected == got {
        Ok(())
    } else {
        Err(ApplyError::Mismatch {
            field,
            expected: format!("{expected:?}"),
            got: format!("{got:?}"),
        })
    }
}

fn active_phase<'a>(
    state: &'a ValidatorState,
    event: &'static str,
    entry: EntryId,
) -> Result<&'a Phase, ApplyError> {
    match &state.active {
        Some(a) if a.entry == entry => Ok(&a.phase),
        other => Err(ApplyError::NotActive {
            event,
            entry,
            active: other.as_ref().map(|a| a.entry),
        }),
    }
}

fn active_phase_mut<'a>(
    state: &'a mut ValidatorState,
    event: &'static str,
    entry: EntryId,
) -> Result<&'a mut Phase, ApplyError> {
    let active = state.active.as_ref().map(|a| a.entry);
    match &mut state.active {
        Some(a) if a.entry == entry => Ok(&mut a.phase),
        _ => Err(ApplyError::NotActive {
            event,
            entry,
            active,
        }),
    }
}

fn check_duel_running(
    state: &ValidatorState,
    event: &'static str,
    entry: EntryId,
) -> Result<(), ApplyError> {
    match active_phase(state, event, entry)? {
        Phase::Duel { running: true, .. } => Ok(()),
        p => Err(wrong_phase(event, entry, p)),
    }
}

fn wrong_phase(event: &'static str, entry: EntryId, phase: &Phase) -> ApplyError {
    let phase = match phase {
        Phase::Gate { gate, started } => {
            format!(
                "gate {} ({})",
                gate.name(),
                if *started { "running" } else { "requested" }
            )
        }
        Phase::Duel { running, .. } => {
            format!("duel ({})", if *running { "running" } else { "requested" })
        }
        Phase::Crowning { .. } => "crowning".to_string(),
    };
    ApplyError::WrongPhase {
        event,
        entry,
        phase,
    }
}

fn check_gate_running(
    state: &ValidatorState,
    event: &'static str,
    entry: EntryId,
    gate: Gate,
) -> Result<(), ApplyError> {
    match active_phase(state, event, entry)? {
        Phase::Gate {
            gate: g,
            started: true,
        } if *g == gate => Ok(()),
        p => Err(wrong_phase(event, entry, p)),
    }
}

fn gate_index(gate: Gate) -> usize {
    Gate::PIPELINE
        .iter()
        .position(|g| *g == gate)
        .unwrap_or(Gate::PIPELINE.len())
}

fn start(state: &mut ValidatorState, rules: &Rules) {
    state.rules = Some(rules.clone());
    state.block = rules.start_block;
    state.reigns = vec![Reign {
        number: 0,
        digest: rules.genesis_king,
        hotkey: None,
        uid: None,
        entry: None,
        location: rules.genesis_location.clone(),
        block: rules.start_block,
        block_hash: None,
    }];
    // The genesis king is owned by nobody and never dueled as a challenger.
    state.digests.insert(
        rules.genesis_king,
        DigestRecord {
            owner: None,
            first_entry: None,
            commit_block: None,
            dueled: true,
            live: None,
        },
    );
}

fn pause(state: &mut ValidatorState, retries: u32) {
    let backoff = 1u64
        .checked_shl(retries.saturating_sub(1))
        .unwrap_or(MAX_BACKOFF_BLOCKS)
        .min(MAX_BACKOFF_BLOCKS);
    state.paused_until = Some(state.block.saturating_add(backoff));
}

/// Interruptions (infrastructure faults and restarts) after which an entry is answered with
/// `infra_exhausted` instead of being tried again: `max_infra_retries` at the head of the queue,
/// then as many again behind everyone else. With the pause of 1, 2, 4, … up to
/// [`MAX_BACKOFF_BLOCKS`] blocks after each fault, one entry can pause the queue for at most
/// [`max_pause_blocks`] blocks in all (223 with the default of 5).
pub fn infra_attempts_limit(max_infra_retries: u32) -> u32 {
    max_infra_retries.saturating_mul(2)
}

/// The most blocks one entry can hold the queue paused through its infrastructure faults before
/// it is answered `infra_exhausted`.
pub fn max_pause_blocks(max_infra_retries: u32) -> u64 {
    // The fault that exhausts the entry pauses the queue too (it may be our outage).
    (1..=infra_attempts_limit(max_infra_retries).saturating_add(1))
        .map(|r| {
            1u64.checked_shl(r - 1)
                .unwrap_or(MAX_BACKOFF_BLOCKS)
                .min(MAX_BACKOFF_BLOCKS)
        })
        .sum()
}

/// Put the active entry back in the queue: at the head, or at the back once it has been
/// interrupted more than `max_infra_retries` times. After [`infra_attempts_limit`] interruptions
/// it is answered `infra_exhausted` (not the miner's verdict: nothing was found wrong with the
/// checkpoint; it may be committed again), so no entry can keep the queue pausing forever. The
/// same hotkey's newer commitment, revealed meanwhile, replaces it as it would any queued entry.
fn requeue_active(
    state: &mut ValidatorState,
    rules: &Rules,
    pause_queue: bool,
) -> Result<Vec<Effect>, ApplyError> {
    let active = state
        .active
        .take()
        .ok_or(ApplyError::Internal("no active entry to requeue"))?;
    let entry = state
        .entries
        .get_mut(&active.entry)
        .ok_or(ApplyError::Internal("active entry missing"))?;
    entry.retries = entry.retries.saturating_add(1);
    entry.gates.clear();
    let retries = entry.retries;
    let hotkey = entry.hotkey.clone();
    let mut effects = Vec::new();
    if let Some(newer) = state.waiting.remove(&hotkey) {
        effects.push(finish(
            state,
            active.entry,
            Outcome::Superseded { by: newer },
        )?);
        state.slots.insert(hotkey, newer);
        enqueue(state, newer, QueueClass::Normal)?;
    } else if retries > infra_attempts_limit(rules.max_infra_retries) {
        let gate = match &active.phase {
            Phase::Gate { gate, .. } => Some(*gate),
            Phase::Duel { .. } => Some(Gate::Duel),
            Phase::Crowning { .. } => None,
        };
        effects.push(finish(
            state,
            active.entry,
            Outcome::Rejected {
                code: RejectCode::InfraExhausted,
                gate,
                message: format!(
                    "interrupted by our side {retries} times (the limit is {}); not a verdict on the checkpoint",
                    infra_attempts_limit(rules.max_infra_retries)
                ),
            },
        )?);
    } else {
        let class = if retries > rules.max_infra_retries {
            QueueClass::Demoted
        } else {
            QueueClass::Retry
        };
        enqueue(state, active.entry, class)?;
    }
    if pause_queue {
        pause(state, retries);
    }
    Ok(effects)
}

fn enqueue(state: &mut ValidatorState, id: EntryId, class: QueueClass) -> Result<(), ApplyError> {
    let e = state
        .entries
        .get(&id)
        .ok_or(ApplyError::Internal("queued entry missing"))?;
    state.queue.insert(QueueKey {
        class,
        reveal_block: e.reveal_block,
        hotkey: e.hotkey.clone(),
        id,
    });
    Ok(())
}

fn remove_from_queue(state: &mut ValidatorState, id: EntryId) {
    state.queue.retain(|k| k.id != id);
}

/// Carry on: after a pause ends, request the pending crown, or start the head of the queue.
fn resume(state: &mut ValidatorState) -> Result<Vec<Effect>, ApplyError> {
    if state.is_paused() {
        return Ok(Vec::new());
    }
    state.paused_until = None;
    let rules = state
        .rules
        .clone()
        .ok_or(ApplyError::Internal("not started"))?;
    match &mut state.active {
        Some(Active {
            entry,
            phase: Phase::Crowning {
                reign, requested, ..
            },
        }) => {
            if *requested {
                return Ok(Vec::new());
            }
            *requested = true;
            let (id, reign) = (*entry, *reign);
            let e = state
                .entries
                .get(&id)
                .ok_or(ApplyError::Internal("crowning entry missing"))?;
            Ok(vec![Effect::Crown {
                entry: id,
                digest: e.digest,
                hotkey: e.hotkey.clone(),
                reign,
                location: e.location.clone(),
                previous: state.king().map(|r| r.digest),
            }])
        }
        Some(_) => Ok(Vec::new()),
        None => {
            let Some(head) = state.queue.pop_first() else {
                return Ok(Vec::new());
            };
            state.active = Some(Active {
                entry: head.id,
                // Replaced by `next_step` at once.
                phase: Phase::Gate {
                    gate: Gate::Fetch,
                    started: false,
                },
            });
            Ok(vec![next_step(state, &rules, 0)?])
        }
    }
}

/// Request the first enabled gate at or after `from` in the pipeline, or the duel when none is
/// left. Gates that are off are recorded as such on the entry.
fn next_step(state: &mut ValidatorState, rules: &Rules, from: usize) -> Result<Effect, ApplyError> {
    let id = state
        .active
        .as_ref()
        .map(|a| a.entry)
        .ok_or(ApplyError::Internal("no active entry"))?;
    let (king, king_location) = state
        .king()
        .map(|k| (k.digest, k.location.clone()))
        .ok_or(ApplyError::Internal("no king"))?;
    // King-loss reuse: the reign's pool is named by the competition, the reign and its crowning
    // block's hash (the competition's start block for the genesis king), so every validator and
    // every duel of the reign draws the same windows.
    let king_pool = state
        .king()
        .filter(|_| rules.king_pool_batches > 0)
        .map(|k| PoolSpec {
            seed_material: format!(
                "koth/reign-pool/1\n{}\nreign {}\n{}",
                rules.competition_sha256,
                k.number,
                k.block_hash
                    .clone()
                    .unwrap_or_else(|| format!("start block {}", rules.start_block))
            ),
            batches: rules.king_pool_batches,
        });
    // The fingerprint gate's references, chosen here (from the reigns and the history) so that
    // the shell reads nothing of the state.
    let fingerprint_references = match state.entries.get(&id) {
        Some(e) if Gate::Fingerprint.enabled(rules) => crate::fingerprint::earlier_checkpoints(
            state,
            rules.near_copy_history as usize,
            &e.digest,
        ),
        _ => Vec::new(),
    };
    let entry = state
        .entries
        .get_mut(&id)
        .ok_or(ApplyError::Internal("active entry missing"))?;
    for gate in Gate::PIPELINE.iter().skip(from).copied() {
        if gate.enabled(rules) {
            let references = if gate == Gate::Fingerprint {
                fingerprint_references
            } else {
                Vec::new()
            };
            let effect = Effect::RunGate {
                entry: id,
                gate,
                challenger: entry.digest,
                location: entry.location.clone(),
                king,
                king_location: king_location.clone(),
                references,
            };
            set_phase(
                &mut state.active,
                Phase::Gate {
                    gate,
                    started: false,
                },
            );
            return Ok(effect);
        }
        entry.gates.push(GateRecord {
            gate,
            result: GateResult::NotEnabled,
        });
    }
    let seed = SeedMaterial {
        competition_sha256: rules.competition_sha256,
        reveal_block_hash: entry.block_hash.clone(),
        hotkey: entry.hotkey.clone(),
    };
    let effect = Effect::StartDuel {
        entry: id,
        challenger: entry.digest,
        location: entry.location.clone(),
        king,
        king_location,
        seed: seed.clone(),
        king_pool,
    };
    set_phase(
        &mut state.active,
        Phase::Duel {
            king,
            seed,
            running: false,
            progress: None,
        },
    );
    Ok(effect)
}

fn set_phase(active: &mut Option<Active>, phase: Phase) {
    if let Some(a) = active {
        a.phase = phase;
    }
}

fn record_gate(
    state: &mut ValidatorState,
    id: EntryId,
    gate: Gate,
    result: GateResult,
) -> Result<(), ApplyError> {
    let e = state
        .entries
        .get_mut(&id)
        .ok_or(ApplyError::Internal("active entry missing"))?;
    e.gates.push(GateRecord { gate, result });
    Ok(())
}

/// The active entry is done: answer it, let the hotkey's waiting entry into the queue, go on.
fn end_active(state: &mut ValidatorState, outcome: Outcome) -> Result<Vec<Effect>, ApplyError> {
    let active = state
        .active
        .take()
        .ok_or(ApplyError::Internal("no active entry to end"))?;
    let hotkey = state
        .entries
        .get(&active.entry)
        .map(|e| e.hotkey.clone())
        .ok_or(ApplyError::Internal("active entry missing"))?;
    let mut effects = vec![finish(state, active.entry, outcome)?];
    if let Some(newer) = state.waiting.remove(&hotkey) {
        state.slots.insert(hotkey, newer);
        enqueue(state, newer, QueueClass::Normal)?;
    }
    effects.extend(resume(state)?);
    Ok(effects)
}

/// Remove a live entry, record how it ended and produce its one answer. The caller has taken it
/// out of the queue or out of `active`.
fn finish(state: &mut ValidatorState, id: EntryId, outcome: Outcome) -> Result<Effect, ApplyError> {
    let e = state
        .entries
        .remove(&id)
        .ok_or(ApplyError::Internal("finished entry missing"))?;
    if state.slots.get(&e.hotkey) == Some(&id) {
        state.slots.remove(&e.hotkey);
    }
    if state.waiting.get(&e.hotkey) == Some(&id) {
        state.waiting.remove(&e.hotkey);
    }
    if let Some(rec) = state.digests.get_mut(&e.digest) {
        if rec.live == Some(id) {
            rec.live = None;
        }
    }
    let finished = Finished {
        id,
        hotkey: e.hotkey.clone(),
        uid: Some(e.uid),
        digest: Some(e.digest),
        location: Some(e.location),
        commit_block: e.commit_block,
        reveal_block: e.reveal_block,
        retries: e.retries,
        gates: e.gates,
        outcome: outcome.clone(),
        finished_block: state.block,
    };
    Ok(record_finished(state, finished))
}

fn record_finished(state: &mut ValidatorState, finished: Finished) -> Effect {
    state.counters.answered += 1;
    match &finished.outcome {
        Outcome::Rejected { code, .. } => {
            *state
                .counters
                .rejected
                .entry(code.code().to_string())
                .or_insert(0) += 1;
        }
        Outcome::Superseded { .. } => state.counters.superseded += 1,
        Outcome::Dueled { .. } => {}
    }
    let effect = Effect::Answer {
        entry: finished.id,
        hotkey: finished.hotkey.clone(),
        outcome: finished.outcome.clone(),
    };
    let cap = state.rules.as_ref().map_or(1, |r| r.history_len.max(1)) as usize;
    state.history.push_back(finished);
    while state.history.len() > cap {
        state.history.pop_front();
    }
    effect
}

/// Weights, when a crown has not been paid yet or W blocks have passed since the last set.
fn weights_if_due(state: &ValidatorState) -> Vec<Effect> {
    let Some(rules) = &state.rules else {
        return Vec::new();
    };
    let due = state.weights.dirty
        || state
            .weights
            .last_set_block
            .is_none_or(|last| state.block >= last.saturating_add(rules.weights_interval_blocks));
    if !due {
        return Vec::new();
    }
    let weights = state.expected_weights();
    if weights.is_empty() {
        return Vec::new();
    }
    vec![Effect::SetWeights { weights }]
}

/// The first look at a revealed commitment (PROTOCOL §4): whether it is news to the core and
/// part of this game. Returns whether it goes on (to be held, or decided at once).
fn receive(state: &mut ValidatorState, rules: &Rules, reveal: &Reveal) -> bool {
    if !state.needs_intake(reveal) {
        state.counters.reveals_ignored += 1;
        return false;
    }
    state.last_reveal.insert(
        reveal.hotkey.clone(),
        RevealMark {
            commit_block: reveal.commit_block,
            payload_sha256: Digest::of(reveal.payload.as_bytes()),
        },
    );
    if reveal.commit_block <= rules.start_block {
        // Committed before the game started: not a submission to this competition.
        state.counters.reveals_ignored += 1;
        return false;
    }
    true
}

/// Intake of one revealed commitment (gate 1 of PROTOCOL §5): its payload, its signer's uid and
/// who owns its digest decide whether it is admitted.
fn decide(state: &mut ValidatorState, reveal: &Reveal) -> Vec<Effect> {
    let payload = match reveal.payload.parse::<CommitmentPayload>() {
        Ok(p) => p,
        Err(e) => {
            return vec![reject_at_intake(
                state,
                reveal,
                None,
                RejectCode::PayloadMalformed,
                format!("payload {:?}: {e}", truncate(&reveal.payload, 200)),
            )]
        }
    };
    let Some(uid) = reveal.uid else {
        return vec![reject_at_intake(
            state,
            reveal,
            Some(&payload),
            RejectCode::HotkeyUnregistered,
            format!(
                "hotkey {} had no uid on the subnet when its commitment was read at block {}",
                reveal.hotkey, state.block
            ),
        )];
    };
    if let Some(rec) = state.digests.get(&payload.digest) {
        let refusal = if rec.owner.is_none() {
            Some(format!(
                "{} is the genesis king's digest; it cannot be submitted",
                payload.digest
            ))
        } else if rec.owner.as_deref() != Some(reveal.hotkey.as_str()) {
            let (owner, entry) = (
                rec.owner.as_deref().unwrap_or("?"),
                rec.first_entry.map_or("?".to_string(), |e| e.to_string()),
            );
            Some(match rec.commit_block {
                Some(b) if b == reveal.commit_block => format!(
                    "{} was committed in the same block ({b}) by hotkey {owner} (entry {entry}); \
                     within one block the hotkey that sorts first owns a digest",
                    payload.digest
                ),
                Some(b) if b < reveal.commit_block => format!(
                    "{} was committed at block {b} by hotkey {owner} (entry {entry}); this \
                     commitment, at block {}, is a copy",
                    payload.digest, reveal.commit_block
                ),
                _ => format!(
                    "{} was first committed by hotkey {owner} (entry {entry}); a later \
                     commitment of the same digest is a copy",
                    payload.digest
                ),
            })
        } else if rec.dueled {
            Some(format!(
                "{} was already dueled; a digest is dueled at most once",
                payload.digest
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            return vec![reject_at_intake(
                state,
                reveal,
                Some(&payload),
                RejectCode::DigestOwned,
                message,
            )];
        }
        if rec.live.is_some() {
            // The same hotkey re-committed a checkpoint that is already waiting its turn.
            state.counters.reveals_ignored += 1;
            return Vec::new();
        }
    }
    admit(state, reveal, uid, payload)
}

fn admit(
    state: &mut ValidatorState,
    reveal: &Reveal,
    uid: u16,
    payload: CommitmentPayload,
) -> Vec<Effect> {
    let id = state.next_entry;
    state.next_entry += 1;
    state.counters.reveals_processed += 1;
    state.counters.admitted += 1;
    let digest = payload.digest;
    state
        .digests
        .entry(digest)
        .or_insert(DigestRecord {
            owner: Some(reveal.hotkey.clone()),
            first_entry: Some(id),
            commit_block: Some(reveal.commit_block),
            dueled: false,
            live: None,
        })
        .live = Some(id);
    state.entries.insert(
        id,
        Entry {
            id,
            hotkey: reveal.hotkey.clone(),
            uid,
            location: payload.location,
            digest,
            commit_block: reveal.commit_block,
            reveal_block: reveal.reveal_block,
            block_hash: reveal.block_hash.clone(),
            retries: 0,
            gates: Vec::new(),
        },
    );
    let mut effects = Vec::new();
    let is_active =
        |state: &ValidatorState, e: EntryId| state.active.as_ref().is_some_and(|a| a.entry == e);
    match state.slots.get(&reveal.hotkey).copied() {
        None => {
            state.slots.insert(reveal.hotkey.clone(), id);
            push_queue(state, id);
        }
        Some(slot) if is_active(state, slot) => {
            // Never replace an entry in its gates or duel: the newer one waits for it.
            if let Some(older) = state.waiting.insert(reveal.hotkey.clone(), id) {
                effects.extend(finish(state, older, Outcome::Superseded { by: id }).ok());
            }
        }
        Some(slot) => {
            remove_from_queue(state, slot);
            state.slots.insert(reveal.hotkey.clone(), id);
            push_queue(state, id);
            effects.extend(finish(state, slot, Outcome::Superseded { by: id }).ok());
        }
    }
    effects
}

fn push_queue(state: &mut ValidatorState, id: EntryId) {
    if let Some(e) = state.entries.get(&id) {
        state.queue.insert(QueueKey {
            class: QueueClass::Normal,
            reveal_block: e.reveal_block,
            hotkey: e.hotkey.clone(),
            id,
        });
    }
}

fn reject_at_intake(
    state: &mut ValidatorState,
    reveal: &Reveal,
    payload: Option<&CommitmentPayload>,
    code: RejectCode,
    message: String,
) -> Effect {
    let id = state.next_entry;
    state.next_entry += 1;
    state.counters.reveals_processed += 1;
    let finished = Finished {
        id,
        hotkey: reveal.hotkey.clone(),
        uid: reveal.uid,
        digest: payload.map(|p| p.digest),
        location: payload.map(|p| p.location.clone()),
        commit_block: reveal.commit_block,
        reveal_block: reveal.reveal_block,
        retries: 0,
        gates: Vec::new(),
        outcome: Outcome::Rejected {
            code,
            gate: None,
            message,
        },
        finished_block: state.block,
    };
    record_finished(state, finished)
}
