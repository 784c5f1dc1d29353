//! The log and the state together, in the one order that is safe: check, append, apply.
//!
//! The shell holds a [`Journal`] and feeds every event through [`Journal::record`]; nothing else
//! may change the state. Start-up is [`Journal::open`]: replay the log (refusing to start on any
//! error), make sure it belongs to the same competition file, then append `Recovered` so that
//! whatever was in flight when the process died is re-queued, deterministically, by the core.

use std::path::Path;

use koth_core::competition::Competition;
use koth_core::Digest;

use crate::core::{step, ApplyError};
use crate::event::{Effect, Event, Rules};
use crate::log::{EventLog, LogError};
use crate::state::ValidatorState;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(
        "event log {path} belongs to competition {logged}, but the competition file hashes to {file}; \
         use the log of that competition or a new log path"
    )]
    CompetitionMismatch {
        path: String,
        logged: Digest,
        file: Digest,
    },
    #[error("event log {path} has events but no `started` event")]
    NotStarted { path: String },
    /// The event does not fit the state; it was not logged.
    #[error("`{kind}` refused: {source}")]
    Refused {
        kind: &'static str,
        source: ApplyError,
    },
}

/// The event log and the state it determines.
#[derive(Debug)]
pub struct Journal {
    log: EventLog,
    state: ValidatorState,
}

impl Journal {
    /// Open (or create) the log at `path` for `competition`. Returns the journal and the effects
    /// the shell must carry out first: for a new log none; for an existing one, those of the
    /// `Recovered` event appended now (the interrupted entry's first gate, a crown to redo,
    /// weights still owed).
    pub fn open(
        path: &Path,
        competition: &Competition,
    ) -> Result<(Self, Vec<Effect>), JournalError> {
        let log = EventLog::open_or_create(path)?;
        if log.is_empty() {
            let mut journal = Journal {
                log,
                state: ValidatorState::new(),
            };
            let effects = journal.record(Event::Started {
                rules: Rules::from_competition(competition),
            })?;
            return Ok((journal, effects));
        }
        let state = log.load_state()?;
        let display = path.display().to_string();
        let Some(rules) = &state.rules else {
            return Err(JournalError::NotStarted { path: display });
        };
        if rules.competition_sha256 != competition.sha256() {
            return Err(JournalError::CompetitionMismatch {
                path: display,
                logged: rules.competition_sha256,
                file: competition.sha256(),
            });
        }
        // `load_state` replayed every event: the log is ours and consistent. Record the restart.
        let mut journal = Journal { log, state };
        let effects = journal.record(Event::Recovered)?;
        Ok((journal, effects))
    }

    /// Work out the state after `event`, append the event durably, then adopt that state. A
    /// refused event is not logged and changes nothing.
    pub fn record(&mut self, event: Event) -> Result<Vec<Effect>, JournalError> {
        let (next, effects) =
            step(&self.state, &event).map_err(|source| JournalError::Refused {
                kind: event.kind(),
                source,
            })?;
        self.log.append(&event)?;
        self.state = next;
        Ok(effects)
    }

    pub fn state(&self) -> &ValidatorState {
        &self.state
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }
}
