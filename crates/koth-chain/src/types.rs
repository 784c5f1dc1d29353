//! The records a chain hands out. All serialize to JSON for `--json` output and the dashboard.

use koth_core::Digest;
use serde::{Deserialize, Serialize};

use crate::keys::AccountId;

/// Rao per token: like TAO, one token is 10⁹ rao, and all emission arithmetic is in integer rao.
pub const RAO_PER_TOKEN: u64 = 1_000_000_000;

/// A sealed block: its number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    pub number: u64,
    pub hash: Digest,
}

/// The fixed parameters of a chain, chosen at init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainParams {
    pub netuid: u16,
    /// Identity of the chain: signatures bind to it, block 0's hash is it.
    pub genesis_hash: Digest,
    /// Unix time of genesis in milliseconds; block n is sealed at genesis + n × block_time.
    pub genesis_time_ms: u64,
    pub block_time_ms: u64,
    /// A commitment included in block b is revealed at block b + reveal_delay.
    pub reveal_delay: u64,
    /// Emission per block in rao (10⁹ rao = 1 token).
    pub emission_per_block_rao: u64,
    /// Once this many uids exist, a registration prunes a neuron (see `immunity_period`).
    pub max_uids: u16,
    /// Blocks after registration during which a neuron cannot be pruned. `None` (chains made
    /// before pruning existed, or without it): a full subnet refuses registrations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immunity_period: Option<u64>,
    /// The subnet owner: the only account that may grant validator permits.
    pub owner: AccountId,
}

/// A registered hotkey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neuron {
    pub uid: u16,
    pub hotkey: AccountId,
    pub coldkey: AccountId,
    pub validator_permit: bool,
    pub registered_block: u64,
}

/// All registered hotkeys as of a sealed block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metagraph {
    pub netuid: u16,
    pub block: BlockRef,
    pub neurons: Vec<Neuron>,
}

impl Metagraph {
    pub fn by_hotkey(&self, hotkey: &AccountId) -> Option<&Neuron> {
        self.neurons.iter().find(|n| &n.hotkey == hotkey)
    }
    pub fn by_uid(&self, uid: u16) -> Option<&Neuron> {
        self.neurons.iter().find(|n| n.uid == uid)
    }
}

/// A revealed commitment. Only ever constructed for commitments whose reveal block is sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reveal {
    pub hotkey: AccountId,
    pub uid: u16,
    pub payload: String,
    /// The block that included the commitment.
    pub commit_block: u64,
    /// commit_block + reveal_delay: the block from which the payload is readable.
    pub reveal_block: u64,
}

/// One validator's weights as stored on chain (after max-upscaling: the largest is 65535).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorWeights {
    pub validator_uid: u16,
    pub validator_hotkey: AccountId,
    /// The block that included the last set_weights of this validator.
    pub set_block: u64,
    pub weights: Vec<(u16, u16)>,
}

/// Emission accrued by one hotkey since genesis, up to the latest sealed block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmissionEntry {
    pub uid: u16,
    pub hotkey: AccountId,
    pub rao: u64,
}

impl EmissionEntry {
    pub fn tokens(&self) -> f64 {
        self.rao as f64 / RAO_PER_TOKEN as f64
    }
}

/// Where an accepted extrinsic went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The block that includes it (not yet sealed when the call returns).
    pub block: u64,
    /// Its position within that block.
    pub index: u32,
    /// sha256 of the stored extrinsic bytes.
    pub extrinsic_hash: Digest,
    /// The nonce it used (the signer's next nonce is this + 1).
    pub nonce: u64,
    pub kind: String,
}
