//! What the rules' tests share: a game's rules and a revealed commitment.

use koth_core::competition::RewardPolicy;
use koth_core::Digest;
use koth_hill::{Reveal, Rules};

/// The game's start block.
pub const START: u64 = 100;

/// A game from `START` with reveal delay `w` (`None`: a log from before reveals were held).
pub fn rules(w: Option<u64>) -> Rules {
    Rules {
        competition_sha256: Digest::of(b"competition"),
        genesis_king: Digest::of(b"genesis"),
        genesis_location: None,
        start_block: START,
        weights_interval_blocks: 1000,
        reward: RewardPolicy::WinnerTakeAll,
        max_infra_retries: 3,
        history_len: 64,
        near_copy: false,
        trainability_probe: false,
        reveal_delay_blocks: w,
        near_copy_history: 16,
        king_pool_batches: 0,
    }
}

/// `hotkey`'s commitment of `digest` in block `commit`, revealed in block `revealed`.
pub fn reveal(hotkey: &str, uid: u16, digest: Digest, commit: u64, revealed: u64) -> Reveal {
    Reveal {
        hotkey: hotkey.into(),
        uid: Some(uid),
        payload: format!("v4|file:///store/{hotkey}|{digest}|{hotkey}"),
        commit_block: commit,
        reveal_block: revealed,
        block_hash: format!("0x{revealed:064x}"),
    }
}
