//! [`SubtensorChain`]: koth-chain's `Chain` on a subtensor node, for one subnet.
//!
//! Reads are made at the node's **finalized** head (each `Chain` method reads at one block
//! hash), so what a validator acts on cannot be reorganized away and the block hash it seeds
//! randomness from is final. Writes are signed extrinsics built against the node's own metadata
//! ([`crate::calls`], [`crate::tx`]), re-read after a runtime upgrade. [`Chain::sign_and_submit`]
//! submits once and returns once the node has included the extrinsic (the signer's nonce moved
//! past it, a block body holds it) and that block's `System.Events` say it dispatched.
//!
//! How koth's calls map onto subtensor's:
//!
//! | koth `Call` | subtensor |
//! | --- | --- |
//! | `Commit { payload }` | `Commitments.set_commitment(netuid, {fields: [TimelockEncrypted]})`, revealed by the chain when the drand round arrives (or `Raw`, public at once, with `commitment = "raw"`) |
//! | `SetWeights` | `SubtensorModule.set_weights` when `CommitRevealWeightsEnabled[netuid]` is false, else `commit_timelocked_mechanism_weights` |
//! | `Register`, `GrantValidatorPermit` | refused: registration costs TAO (use `btcli subnet register`); permits follow stake |

use std::sync::Mutex;
use std::time::{Duration, Instant};

use koth_chain::{
    AccountId, BlockRef, Call, Chain, ChainError, ChainParams, EmissionEntry, Keypair, Metagraph,
    Neuron, Receipt, Reveal, SignedExtrinsic, ValidatorWeights,
};
use koth_core::Digest;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subxt_core::dynamic::Value;
use subxt_core::Metadata;

use crate::calls::{encode_call, CommitmentData, SubtensorCall};
use crate::rpc::{self, RetryPolicy, RpcClient, RpcError};
use crate::storage::{key_account, Item, Reader, StorageError};
use crate::tx::{self, Era, TxParams};

/// subtensor's `GLOBAL_MAX_SUBNET_COUNT`: a mechanism's storage index is `mecid × this + netuid`.
pub const GLOBAL_MAX_SUBNET_COUNT: u16 = 4096;
/// Blocks a signed extrinsic stays valid (its mortal era), counted from the finalized head.
pub const ERA_PERIOD: u64 = 64;

mod items {
    use super::Item;
    pub const SUBNETWORK_N: Item = Item::new("SubtensorModule", "SubnetworkN");
    pub const KEYS: Item = Item::new("SubtensorModule", "Keys");
    pub const UIDS: Item = Item::new("SubtensorModule", "Uids");
    pub const OWNER: Item = Item::new("SubtensorModule", "Owner");
    pub const VALIDATOR_PERMIT: Item = Item::new("SubtensorModule", "ValidatorPermit");
    pub const BLOCK_AT_REGISTRATION: Item = Item::new("SubtensorModule", "BlockAtRegistration");
    pub const WEIGHTS: Item = Item::new("SubtensorModule", "Weights");
    pub const LAST_UPDATE: Item = Item::new("SubtensorModule", "LastUpdate");
    pub const COMMIT_REVEAL_ENABLED: Item =
        Item::new("SubtensorModule", "CommitRevealWeightsEnabled");
    pub const WEIGHTS_VERSION_KEY: Item = Item::new("SubtensorModule", "WeightsVersionKey");
    pub const WEIGHTS_RATE_LIMIT: Item = Item::new("SubtensorModule", "WeightsSetRateLimit");
    pub const TEMPO: Item = Item::new("SubtensorModule", "Tempo");
    pub const SUBNET_OWNER: Item = Item::new("SubtensorModule", "SubnetOwner");
    pub const IMMUNITY_PERIOD: Item = Item::new("SubtensorModule", "ImmunityPeriod");
    pub const MAX_ALLOWED_UIDS: Item = Item::new("SubtensorModule", "MaxAllowedUids");
    pub const EMISSION: Item = Item::new("SubtensorModule", "Emission");
    pub const REVEAL_PERIOD_EPOCHS: Item = Item::new("SubtensorModule", "RevealPeriodEpochs");
    pub const COMMIT_REVEAL_VERSION: Item =
        Item::new("SubtensorModule", "CommitRevealWeightsVersion");
    pub const LAST_EPOCH_BLOCK: Item = Item::new("SubtensorModule", "LastEpochBlock");
    pub const PENDING_EPOCH_AT: Item = Item::new("SubtensorModule", "PendingEpochAt");
    pub const SUBNET_EPOCH_INDEX: Item = Item::new("SubtensorModule", "SubnetEpochIndex");
    pub const BLOCKS_SINCE_LAST_STEP: Item = Item::new("SubtensorModule", "BlocksSinceLastStep");
    pub const REVEALED: Item = Item::new("Commitments", "RevealedCommitments");
    pub const COMMITMENT_OF: Item = Item::new("Commitments", "CommitmentOf");
    pub const LAST_STORED_ROUND: Item = Item::new("Drand", "LastStoredRound");
    pub const SYSTEM_ACCOUNT: Item = Item::new("System", "Account");
    pub const SYSTEM_EVENTS: Item = Item::new("System", "Events");
}

/// How a miner's commitment is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CommitmentMode {
    /// Timelock-encrypted to a drand round `blocks_until_reveal` blocks ahead, as Bittensor's
    /// `set_reveal_commitment` does: nobody (validators included) reads it before the reveal.
    #[default]
    Timelocked,
    /// `Data::Raw`, readable by everyone at once (at most 128 bytes). For test subnets.
    Raw,
}

/// Where the chain is and how koth plays on it: the `[chain]` section with `kind = "subtensor"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubtensorConfig {
    /// The node: `ws://`, `wss://`, `http://` or `https://` (spoken to over HTTP JSON-RPC).
    pub endpoint: String,
    pub netuid: u16,
    /// Blocks from a commitment to its reveal (Bittensor's `blocks_until_reveal`).
    #[serde(default = "default_blocks_until_reveal")]
    pub blocks_until_reveal: u64,
    /// The chain's block time in milliseconds (12 s on finney).
    #[serde(default = "default_block_time_ms")]
    pub block_time_ms: u64,
    #[serde(default)]
    pub commitment: CommitmentMode,
    /// The mechanism weights are set on (0 on subnets with one mechanism).
    #[serde(default)]
    pub mechanism: u8,
    /// Weights carry this version key; `None`: the subnet's `WeightsVersionKey`.
    #[serde(default)]
    pub weights_version_key: Option<u64>,
    /// The drand network timelocks are made to (quicknet, which subtensor follows, by default).
    #[serde(default)]
    pub drand: DrandConfig,
    /// How long `sign_and_submit` waits for the extrinsic to be included, in blocks.
    #[serde(default = "default_inclusion_blocks")]
    pub inclusion_blocks: u64,
    /// Transport attempts per call (the first included).
    #[serde(default = "default_attempts")]
    pub rpc_attempts: u32,
    /// The most one request may take, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub rpc_timeout_ms: u64,
}

fn default_blocks_until_reveal() -> u64 {
    3
}
fn default_block_time_ms() -> u64 {
    12_000
}
fn default_inclusion_blocks() -> u64 {
    10
}
fn default_attempts() -> u32 {
    5
}
fn default_timeout_ms() -> u64 {
    30_000
}

/// The drand beacon timelocks target: its genesis and period (the public key is quicknet's,
/// the only one subtensor follows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrandConfig {
    pub genesis_time: u64,
    pub period: u64,
}

impl Default for DrandConfig {
    fn default() -> Self {
        let q = koth_timelock::DrandNetwork::quicknet();
        Self {
            genesis_time: q.genesis_time,
            period: q.period,
        }
    }
}

impl SubtensorConfig {
    pub fn new(endpoint: impl Into<String>, netuid: u16) -> Self {
        Self {
            endpoint: endpoint.into(),
            netuid,
            blocks_until_reveal: default_blocks_until_reveal(),
            block_time_ms: default_block_time_ms(),
            commitment: CommitmentMode::default(),
            mechanism: 0,
            weights_version_key: None,
            drand: DrandConfig::default(),
            inclusion_blocks: default_inclusion_blocks(),
            rpc_attempts: default_attempts(),
            rpc_timeout_ms: default_timeout_ms(),
        }
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.rpc_attempts.max(1),
            first_backoff: Duration::from_millis(500),
            timeout: Duration::from_millis(self.rpc_timeout_ms.max(1)),
        }
    }
}

/// The clock timelocks are computed from (unix seconds, fractional as bittensor-drand reads
/// it); injected so tests can fix it.
pub type UnixClock = Box<dyn Fn() -> f64 + Send + Sync>;

fn system_unix_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One revealed commitment as read: the hotkey, the revealed bytes, the commit block, the
/// reveal block.
type RevealedBytes = (AccountId, Vec<u8>, u64, u64);
/// Revealed commitments under one storage key: (map keys, [(bytes, reveal block)]).
type RevealedEntry = (Vec<Value>, Vec<(Vec<u8>, u64)>);

/// Commit blocks by (hotkey, reveal block); `None` where the chain's history is gone.
type CommitBlocks = std::collections::HashMap<([u8; 32], u64), Option<u64>>;

/// A subtensor node, one subnet of it.
pub struct SubtensorChain {
    cfg: SubtensorConfig,
    rpc: RpcClient,
    /// The runtime the node runs: re-read when its spec version changes (a runtime upgrade),
    /// so calls and storage keep being encoded against the live metadata.
    runtime: std::sync::RwLock<Runtime>,
    genesis: [u8; 32],
    params: ChainParams,
    clock: UnixClock,
    /// One writer at a time per process: nonces are taken and used under it.
    submit_lock: Mutex<()>,
    /// Commit blocks already looked up, by (hotkey, reveal block), `None` where the history
    /// is gone: neither ever changes, so each reveal costs one historical read per process.
    commit_blocks: Mutex<CommitBlocks>,
    /// The highest finalized block seen: finality never goes back, so a hash at or below it
    /// needs no fresh look at the head.
    finalized_floor: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SubtensorChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubtensorChain")
            .field("endpoint", &self.cfg.endpoint)
            .field("netuid", &self.cfg.netuid)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeVersion {
    spec_version: u32,
    transaction_version: u32,
}

/// A runtime's metadata and versions (`subxt_core::Metadata` is reference-counted: clones are
/// cheap).
#[derive(Clone)]
struct Runtime {
    metadata: Metadata,
    spec_version: u32,
    transaction_version: u32,
}

impl SubtensorChain {
    /// Connect: read the genesis hash, the runtime version and the metadata, and the subnet's
    /// fixed parameters. Fails if the subnet does not exist.
    pub fn connect(cfg: SubtensorConfig) -> Result<Self, ChainError> {
        Self::connect_with_clock(cfg, Box::new(system_unix_secs))
    }

    pub fn connect_with_clock(cfg: SubtensorConfig, clock: UnixClock) -> Result<Self, ChainError> {
        let endpoint = cfg.endpoint.clone();
        let node = |e: RpcError| node_error(&endpoint, e);
        let rpc = RpcClient::new(&cfg.endpoint, cfg.retry()).map_err(node)?;
        let genesis_hex: String = rpc.call("chain_getBlockHash", json!([0])).map_err(node)?;
        let genesis = rpc::hash_from_hex("chain_getBlockHash", &genesis_hex).map_err(node)?;
        let version: RuntimeVersion = rpc
            .call("state_getRuntimeVersion", json!([]))
            .map_err(node)?;
        let metadata = fetch_metadata(&rpc, &endpoint)?;
        let mut chain = Self {
            params: ChainParams {
                netuid: cfg.netuid,
                genesis_hash: Digest::from_bytes(genesis),
                genesis_time_ms: 0,
                block_time_ms: cfg.block_time_ms,
                reveal_delay: cfg.blocks_until_reveal,
                emission_per_block_rao: 0,
                max_uids: 0,
                immunity_period: None,
                owner: AccountId::from_bytes([0; 32]),
            },
            cfg,
            rpc,
            runtime: std::sync::RwLock::new(Runtime {
                metadata,
                spec_version: version.spec_version,
                transaction_version: version.transaction_version,
            }),
            genesis,
            clock,
            submit_lock: Mutex::new(()),
            commit_blocks: Mutex::new(Default::default()),
            finalized_floor: std::sync::atomic::AtomicU64::new(0),
        };
        chain.load_subnet_params()?;
        Ok(chain)
    }

    fn load_subnet_params(&mut self) -> Result<(), ChainError> {
        let head = self.finalized()?;
        let r = self.reader(head.hash.as_bytes());
        let n = self.netuid_value();
        let owner: [u8; 32] = r
            .get(items::SUBNET_OWNER, vec![n.clone()])
            .map_err(|e| self.storage_err(e))?;
        if owner == [0u8; 32] {
            return Err(ChainError::BadParams(format!(
                "subnet {} does not exist on {} (it has no owner)",
                self.cfg.netuid, self.cfg.endpoint
            )));
        }
        let max_uids: u16 = r
            .get(items::MAX_ALLOWED_UIDS, vec![n.clone()])
            .map_err(|e| self.storage_err(e))?;
        let immunity: u16 = r
            .get(items::IMMUNITY_PERIOD, vec![n])
            .map_err(|e| self.storage_err(e))?;
        self.params.owner = AccountId::from_bytes(owner);
        self.params.max_uids = max_uids;
        self.params.immunity_period = Some(u64::from(immunity));
        Ok(())
    }

    pub fn config(&self) -> &SubtensorConfig {
        &self.cfg
    }

    /// The metadata of the runtime the node runs (as of the last check).
    pub fn metadata(&self) -> Metadata {
        self.runtime().metadata
    }

    fn runtime(&self) -> Runtime {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-read the runtime version; after an upgrade, fetch and check the new metadata (a
    /// transaction signed with the old spec version would be refused as a bad proof).
    fn refresh_runtime(&self) -> Result<Runtime, ChainError> {
        let version: RuntimeVersion = self
            .rpc
            .call("state_getRuntimeVersion", json!([]))
            .map_err(|e| self.node(e))?;
        let current = self.runtime();
        if version.spec_version == current.spec_version
            && version.transaction_version == current.transaction_version
        {
            return Ok(current);
        }
        tracing::info!(
            "{}: runtime upgraded from spec {} to {}; reloading its metadata",
            self.cfg.endpoint,
            current.spec_version,
            version.spec_version
        );
        let metadata = fetch_metadata(&self.rpc, &self.cfg.endpoint)?;
        let fresh = Runtime {
            metadata,
            spec_version: version.spec_version,
            transaction_version: version.transaction_version,
        };
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    fn netuid_value(&self) -> Value {
        Value::u128(u128::from(self.cfg.netuid))
    }

    /// The storage index of this subnet's mechanism (Weights and LastUpdate are keyed by it).
    fn mechanism_index(&self) -> Value {
        let idx = u128::from(self.cfg.mechanism) * u128::from(GLOBAL_MAX_SUBNET_COUNT)
            + u128::from(self.cfg.netuid);
        Value::u128(idx)
    }

    fn reader<'a>(&'a self, at: &[u8; 32]) -> Reader<'a> {
        Reader {
            rpc: &self.rpc,
            metadata: self.metadata(),
            at: *at,
        }
    }

    fn node(&self, e: RpcError) -> ChainError {
        node_error(&self.cfg.endpoint, e)
    }

    fn storage_err(&self, e: StorageError) -> ChainError {
        match e {
            StorageError::Rpc(e) => self.node(e),
            other => ChainError::Node {
                endpoint: self.cfg.endpoint.clone(),
                message: other.to_string(),
            },
        }
    }

    /// The finalized head.
    fn finalized(&self) -> Result<BlockRef, ChainError> {
        let hash_hex: String = self
            .rpc
            .call("chain_getFinalizedHead", json!([]))
            .map_err(|e| self.node(e))?;
        let hash =
            rpc::hash_from_hex("chain_getFinalizedHead", &hash_hex).map_err(|e| self.node(e))?;
        let number = self.header_number(Some(&hash_hex))?;
        self.finalized_floor
            .fetch_max(number, std::sync::atomic::Ordering::Relaxed);
        Ok(BlockRef {
            number,
            hash: Digest::from_bytes(hash),
        })
    }

    /// The number of the block `hash` (the best block when `None`).
    fn header_number(&self, hash: Option<&str>) -> Result<u64, ChainError> {
        let header: serde_json::Value = self
            .rpc
            .call("chain_getHeader", json!([hash]))
            .map_err(|e| self.node(e))?;
        let number = header.get("number").ok_or_else(|| {
            self.node(RpcError::BadAnswer {
                method: "chain_getHeader".into(),
                message: "a header without `number`".into(),
            })
        })?;
        rpc::number_from_json("chain_getHeader", number).map_err(|e| self.node(e))
    }

    /// Every neuron of the subnet at block `at`.
    fn neurons(&self, r: &Reader<'_>) -> Result<Vec<Neuron>, ChainError> {
        let n = self.netuid_value();
        let count: u16 = r
            .get(items::SUBNETWORK_N, vec![n.clone()])
            .map_err(|e| self.storage_err(e))?;
        let uid_keys = |uid: u16| vec![n.clone(), Value::u128(u128::from(uid))];
        let hotkeys: Vec<[u8; 32]> = r
            .get_many(items::KEYS, (0..count).map(uid_keys).collect())
            .map_err(|e| self.storage_err(e))?;
        let registered: Vec<u64> = r
            .get_many(
                items::BLOCK_AT_REGISTRATION,
                (0..count).map(uid_keys).collect(),
            )
            .map_err(|e| self.storage_err(e))?;
        let coldkeys: Vec<[u8; 32]> = r
            .get_many(
                items::OWNER,
                hotkeys.iter().map(|h| vec![Value::from_bytes(h)]).collect(),
            )
            .map_err(|e| self.storage_err(e))?;
        let permits: Vec<bool> = r
            .get(items::VALIDATOR_PERMIT, vec![n.clone()])
            .map_err(|e| self.storage_err(e))?;
        Ok((0..count)
            .map(|uid| {
                let i = usize::from(uid);
                Neuron {
                    uid,
                    hotkey: AccountId::from_bytes(hotkeys[i]),
                    coldkey: AccountId::from_bytes(coldkeys[i]),
                    validator_permit: permits.get(i).copied().unwrap_or(false),
                    registered_block: registered[i],
                }
            })
            .collect())
    }

    /// Every revealed commitment of the subnet at `at`: (hotkey, payload bytes, reveal block),
    /// all that the chain keeps (the last ten per hotkey), plus `Raw` commitments (public from
    /// the block that included them).
    fn reveals_at(&self, r: &Reader<'_>) -> Result<Vec<RevealedBytes>, ChainError> {
        let mut out = Vec::new();
        let revealed: Vec<RevealedEntry> = r
            .iter(items::REVEALED, vec![self.netuid_value()])
            .map_err(|e| self.storage_err(e))?;
        for (keys, entries) in revealed {
            let Some(hotkey) = keys.get(1).and_then(key_account) else {
                continue;
            };
            for (bytes, block) in entries {
                let commit = self.commit_block_of(&hotkey, block)?.unwrap_or(block);
                out.push((AccountId::from_bytes(hotkey), bytes, commit, block));
            }
        }
        let raw: Vec<(Vec<Value>, Value)> = r
            .iter(items::COMMITMENT_OF, vec![self.netuid_value()])
            .map_err(|e| self.storage_err(e))?;
        for (keys, registration) in raw {
            let Some(hotkey) = keys.get(1).and_then(key_account) else {
                continue;
            };
            let Some((block, fields)) = raw_commitment_fields(&registration) else {
                continue;
            };
            // A Raw field is public from the block that included it.
            for bytes in fields {
                out.push((AccountId::from_bytes(hotkey), bytes, block, block));
            }
        }
        Ok(out)
    }

    fn to_reveals(
        &self,
        r: &Reader<'_>,
        head: u64,
        raw: Vec<RevealedBytes>,
    ) -> Result<Vec<Reveal>, ChainError> {
        let meta = self.neurons(r)?;
        let mut out: Vec<Reveal> = raw
            .into_iter()
            .filter(|(_, _, _, reveal)| *reveal <= head)
            .filter_map(|(hotkey, bytes, commit, reveal)| {
                // Only registered hotkeys have a uid; a deregistered one's reveals are ignored.
                let uid = meta.iter().find(|n| n.hotkey == hotkey)?.uid;
                Some(Reveal {
                    hotkey,
                    uid,
                    payload: revealed_payload(&bytes),
                    commit_block: commit,
                    reveal_block: reveal,
                })
            })
            .collect();
        // Chain order: reveal block, then commit block (then uid and payload, for a total order).
        out.sort_by(|a, b| {
            (a.reveal_block, a.commit_block, a.uid, &a.payload).cmp(&(
                b.reveal_block,
                b.commit_block,
                b.uid,
                &b.payload,
            ))
        });
        Ok(out)
    }

    /// The block that included the timelocked commitment `hotkey` revealed at `reveal_block`.
    ///
    /// subtensor keeps only the reveal block with the revealed bytes, and removes the
    /// timelocked field from `CommitmentOf` when it reveals it (at the start of the reveal
    /// block). So the commitment is read as it stood one block before: its `Registration.block`
    /// is the block of the `set_commitment` that holds the field. `None` when that state is
    /// gone (a node prunes old state; an archive node keeps it) or holds no timelocked field:
    /// the caller then uses the reveal block, as a chain without this history would.
    fn commit_block_of(
        &self,
        hotkey: &[u8; 32],
        reveal_block: u64,
    ) -> Result<Option<u64>, ChainError> {
        let key = (*hotkey, reveal_block);
        if let Some(known) = self
            .commit_blocks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(*known);
        }
        let found = self.read_commit_block(hotkey, reveal_block)?;
        self.commit_blocks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, found);
        Ok(found)
    }

    /// [`Self::commit_block_of`]'s read of the chain, uncached. Errors only for transport
    /// failures (worth a retry); what the node answers is final.
    fn read_commit_block(
        &self,
        hotkey: &[u8; 32],
        reveal_block: u64,
    ) -> Result<Option<u64>, ChainError> {
        let Some(before) = reveal_block.checked_sub(1) else {
            return Ok(None);
        };
        let Some(hash) = self.block_hash_any(before)? else {
            return Ok(None);
        };
        let storage_key = items::COMMITMENT_OF
            .key(
                &self.metadata(),
                vec![self.netuid_value(), Value::from_bytes(hotkey)],
            )
            .map_err(|e| self.storage_err(e))?;
        let raw = match self.reader(&hash).raw(&storage_key) {
            Ok(v) => v,
            // State the node no longer keeps ("State already discarded"): not recoverable.
            Err(StorageError::Rpc(RpcError::Node { message, .. })) => {
                tracing::debug!("commit block of a reveal at {reveal_block}: {message}");
                return Ok(None);
            }
            Err(e) => return Err(self.storage_err(e)),
        };
        let Some(bytes) = raw else { return Ok(None) };
        let registration: Value = items::COMMITMENT_OF
            .decode(&self.metadata(), &bytes)
            .map_err(|e| self.storage_err(e))?;
        let Some(commit) = timelocked_commitment_block(&registration) else {
            return Ok(None);
        };
        Ok((commit < reveal_block).then_some(commit))
    }

    /// Sign `call` with `signer` at its next nonce, submit it, and wait until it is included.
    fn submit_call(
        &self,
        signer: &Keypair,
        call: &SubtensorCall,
        kind: &str,
    ) -> Result<(u64, u32, u64, [u8; 32]), ChainError> {
        let _guard = self.submit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let refused = |reason: String| ChainError::Refused {
            endpoint: self.cfg.endpoint.clone(),
            call: kind.into(),
            reason,
        };
        let runtime = self.refresh_runtime()?;
        let call_bytes =
            encode_call(&runtime.metadata, call).map_err(|e| refused(e.to_string()))?;
        let head = self.finalized()?;
        let nonce = self.nonce(&signer.account())?;
        let params = TxParams {
            genesis_hash: self.genesis,
            spec_version: runtime.spec_version,
            transaction_version: runtime.transaction_version,
            nonce,
            era: Era::Mortal {
                period: ERA_PERIOD,
                current: head.number,
                block_hash: *head.hash.as_bytes(),
            },
            tip: 0,
        };
        let extrinsic = tx::signed_extrinsic(&runtime.metadata, &call_bytes, &params, signer)
            .map_err(|e| refused(e.to_string()))?;
        let tx_hash = tx::extrinsic_hash(&extrinsic);
        // The best block before submitting: the block that includes it comes after.
        let start = self.header_number(None)?;
        // Submitted once, never retried: a submission whose answer was lost may be in the pool
        // already (a retry would be refused as already imported, or as outdated once included);
        // whether it went in is read from the chain below.
        match self
            .rpc
            .call_once::<String>("author_submitExtrinsic", json!([rpc::to_hex(&extrinsic)]))
        {
            Ok(_) => {}
            // 1013: the pool already holds these very bytes.
            Err(RpcError::Node { code: 1013, .. }) => {}
            Err(RpcError::Node { message, data, .. }) => {
                return Err(refused(match data {
                    Some(d) => format!("{message}: {d}"),
                    None => message,
                }))
            }
            Err(e @ RpcError::Transport { .. }) => {
                tracing::warn!("{e}; checking whether the {kind} extrinsic went in anyway");
            }
            Err(e) => return Err(self.node(e)),
        }
        self.wait_for_nonce(&signer.account(), nonce, kind)?;
        let (block, index) = self.find_inclusion(start, &extrinsic, kind)?;
        self.check_dispatch(block, index, kind)?;
        Ok((block, index, nonce, tx_hash))
    }

    /// Wait until the account's on-chain nonce (at the best block) passes `nonce`: the
    /// extrinsic is in a block. Returns that block's number.
    fn wait_for_nonce(
        &self,
        account: &AccountId,
        nonce: u64,
        kind: &str,
    ) -> Result<u64, ChainError> {
        let start = self.header_number(None)?;
        let deadline_blocks = start.saturating_add(self.cfg.inclusion_blocks);
        let wall_deadline = Instant::now()
            + Duration::from_millis(
                self.cfg
                    .block_time_ms
                    .saturating_mul(self.cfg.inclusion_blocks.saturating_add(2)),
            );
        loop {
            let best_hex: String = self
                .rpc
                .call("chain_getBlockHash", json!([]))
                .map_err(|e| self.node(e))?;
            let best =
                rpc::hash_from_hex("chain_getBlockHash", &best_hex).map_err(|e| self.node(e))?;
            let number = self.header_number(Some(&best_hex))?;
            let on_chain = self.account_nonce(&best, account)?;
            if on_chain > nonce {
                return Ok(number);
            }
            if number > deadline_blocks || Instant::now() > wall_deadline {
                return Err(ChainError::Refused {
                    endpoint: self.cfg.endpoint.clone(),
                    call: kind.into(),
                    reason: format!(
                        "not included within {} blocks of block {start} (nonce {nonce} still unused)",
                        self.cfg.inclusion_blocks
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(
                (self.cfg.block_time_ms / 4).clamp(50, 3000),
            ));
        }
    }

    /// The block (from `from` on, up to the best) whose body holds `extrinsic`, and its
    /// position there.
    fn find_inclusion(
        &self,
        from: u64,
        extrinsic: &[u8],
        kind: &str,
    ) -> Result<(u64, u32), ChainError> {
        let best = self.header_number(None)?;
        let want = rpc::to_hex(extrinsic);
        // A node that claims a best block far ahead is not searched block by block forever.
        let last = best.min(
            from.saturating_add(
                self.cfg
                    .inclusion_blocks
                    .saturating_mul(2)
                    .saturating_add(64),
            ),
        );
        for number in from.saturating_sub(1)..=last {
            let Some(hash) = self
                .rpc
                .call::<Option<String>>("chain_getBlockHash", json!([number]))
                .map_err(|e| self.node(e))?
            else {
                continue;
            };
            let block: serde_json::Value = self
                .rpc
                .call("chain_getBlock", json!([hash]))
                .map_err(|e| self.node(e))?;
            let extrinsics = block
                .pointer("/block/extrinsics")
                .and_then(serde_json::Value::as_array)
                .ok_or_else(|| {
                    self.node(RpcError::BadAnswer {
                        method: "chain_getBlock".into(),
                        message: "no block.extrinsics".into(),
                    })
                })?;
            if let Some(i) = extrinsics
                .iter()
                .position(|x| x.as_str().is_some_and(|h| h.eq_ignore_ascii_case(&want)))
            {
                return Ok((number, i as u32));
            }
        }
        Err(ChainError::Refused {
            endpoint: self.cfg.endpoint.clone(),
            call: kind.into(),
            reason: format!(
                "the signer's nonce moved but no block from {from} to {best} holds the \
                 extrinsic (another extrinsic with the same nonce won?)"
            ),
        })
    }

    /// Whether the extrinsic at (`block`, `index`) dispatched: `System.Events` of that block
    /// has `ExtrinsicSuccess` for it, or `ExtrinsicFailed` with the pallet error named.
    fn check_dispatch(&self, block: u64, index: u32, kind: &str) -> Result<(), ChainError> {
        use subxt_core::events::Phase;
        let hash = self
            .block_hash_any(block)?
            .ok_or_else(|| ChainError::Node {
                endpoint: self.cfg.endpoint.clone(),
                message: format!("block {block} vanished"),
            })?;
        let key = items::SYSTEM_EVENTS
            .key(&self.metadata(), vec![])
            .map_err(|e| self.storage_err(e))?;
        let bytes = self
            .reader(&hash)
            .raw(&key)
            .map_err(|e| self.storage_err(e))?
            .unwrap_or_default();
        let events = subxt_core::events::Events::<subxt_core::config::SubstrateConfig>::decode_from(
            bytes,
            self.metadata(),
        );
        for ev in events.iter() {
            let ev = ev.map_err(|e| ChainError::Node {
                endpoint: self.cfg.endpoint.clone(),
                message: format!("System.Events of block {block} do not decode: {e}"),
            })?;
            if ev.phase() != Phase::ApplyExtrinsic(index) || ev.pallet_name() != "System" {
                continue;
            }
            match ev.variant_name() {
                "ExtrinsicSuccess" => return Ok(()),
                "ExtrinsicFailed" => {
                    return Err(ChainError::Refused {
                        endpoint: self.cfg.endpoint.clone(),
                        call: kind.into(),
                        reason: format!(
                            "included in block {block} but failed: {}",
                            self.dispatch_error(ev.field_bytes())
                        ),
                    })
                }
                _ => {}
            }
        }
        Err(ChainError::Node {
            endpoint: self.cfg.endpoint.clone(),
            message: format!(
                "block {block} holds the {kind} extrinsic at {index}, but its events say \
                 neither success nor failure"
            ),
        })
    }

    /// A `DispatchError` as `Pallet::Error` when it is a module error, else its variant.
    fn dispatch_error(&self, field_bytes: &[u8]) -> String {
        // DispatchError: variant 3 is Module(ModuleError { index: u8, error: [u8; 4] }).
        match field_bytes {
            [3, pallet, error, ..] => {
                let metadata = self.metadata();
                metadata
                    .pallet_by_index(*pallet)
                    .and_then(|p| {
                        p.error_variant_by_index(*error)
                            .map(|v| format!("{}::{}", p.name(), v.name))
                    })
                    .unwrap_or_else(|| format!("module error {pallet}/{error}"))
            }
            [v, ..] => {
                const NAMES: [&str; 14] = [
                    "Other",
                    "CannotLookup",
                    "BadOrigin",
                    "Module",
                    "ConsumerRemaining",
                    "NoProviders",
                    "TooManyConsumers",
                    "Token",
                    "Arithmetic",
                    "Transactional",
                    "Exhausted",
                    "Corruption",
                    "Unavailable",
                    "RootNotAllowed",
                ];
                NAMES
                    .get(usize::from(*v))
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| format!("dispatch error {v}"))
            }
            [] => "an undecodable dispatch error".into(),
        }
    }

    /// The hash of block `number` (finalized or not).
    fn block_hash_any(&self, number: u64) -> Result<Option<[u8; 32]>, ChainError> {
        let h: Option<String> = self
            .rpc
            .call("chain_getBlockHash", json!([number]))
            .map_err(|e| self.node(e))?;
        h.map(|h| rpc::hash_from_hex("chain_getBlockHash", &h).map_err(|e| self.node(e)))
            .transpose()
    }

    /// `System.Account[account].nonce` at block `at`.
    fn account_nonce(&self, at: &[u8; 32], account: &AccountId) -> Result<u64, ChainError> {
        #[derive(subxt_core::ext::scale_decode::DecodeAsType)]
        #[decode_as_type(crate_path = "subxt_core::ext::scale_decode")]
        struct AccountInfo {
            nonce: u32,
        }
        let info: AccountInfo = self
            .reader(at)
            .get(
                items::SYSTEM_ACCOUNT,
                vec![Value::from_bytes(account.as_bytes())],
            )
            .map_err(|e| self.storage_err(e))?;
        Ok(u64::from(info.nonce))
    }

    /// The commitment koth writes for `payload`.
    fn commitment_data(&self, payload: &str) -> Result<CommitmentData, ChainError> {
        match self.cfg.commitment {
            CommitmentMode::Raw if payload.len() <= crate::calls::MAX_RAW_COMMITMENT => {
                Ok(CommitmentData::Raw(payload.as_bytes().to_vec()))
            }
            // A koth payload (`v4|location|sha256:…|ss58`) is longer than Raw's 128 bytes.
            CommitmentMode::Raw => Ok(CommitmentData::BigRaw(payload.as_bytes().to_vec())),
            CommitmentMode::Timelocked => {
                let net = self.drand_network();
                let timelock = |e: koth_timelock::TimelockError| {
                    ChainError::BadParams(format!("timelocking the commitment: {e}"))
                };
                let round = koth_timelock::commitment_reveal_round(
                    &net,
                    self.cfg.blocks_until_reveal,
                    self.block_time_secs(),
                    (self.clock)() as u64,
                )
                .map_err(timelock)?;
                let plaintext = koth_timelock::commitment_plaintext(payload);
                let encrypted = koth_timelock::encrypt_with_os_rng(&net, &plaintext, round)
                    .map_err(timelock)?;
                Ok(CommitmentData::TimelockEncrypted {
                    encrypted,
                    reveal_round: round,
                })
            }
        }
    }

    fn drand_network(&self) -> koth_timelock::DrandNetwork {
        koth_timelock::DrandNetwork {
            genesis_time: self.cfg.drand.genesis_time,
            period: self.cfg.drand.period,
            ..koth_timelock::DrandNetwork::quicknet()
        }
    }

    /// Whether the runtime has the storage item `pallet.entry`.
    fn has_storage(&self, pallet: &str, entry: &str) -> bool {
        self.metadata()
            .pallet_by_name(pallet)
            .and_then(|p| p.storage())
            .and_then(|s| s.entry_by_name(entry))
            .is_some()
    }

    fn block_time_secs(&self) -> f64 {
        self.cfg.block_time_ms as f64 / 1000.0
    }

    /// Refuse, without sending anything, weights the chain would refuse for its rate limit
    /// (`WeightsSetRateLimit` blocks since the validator's `LastUpdate`): a validator that
    /// retries every tick would otherwise put a failing extrinsic in every block. Also refuses
    /// a validator that is not registered on the subnet.
    fn check_weights_rate_limit(
        &self,
        r: &Reader<'_>,
        head: u64,
        validator: &Keypair,
    ) -> Result<(), ChainError> {
        let refuse = |reason: String| ChainError::Refused {
            endpoint: self.cfg.endpoint.clone(),
            call: "set_weights".into(),
            reason,
        };
        let Some(uid) = self.uid_at(r, &validator.account())? else {
            return Err(refuse(format!(
                "{} is not registered on subnet {}",
                validator.account(),
                self.cfg.netuid
            )));
        };
        let limit: u64 = r
            .get(items::WEIGHTS_RATE_LIMIT, vec![self.netuid_value()])
            .map_err(|e| self.storage_err(e))?;
        let last_update: Vec<u64> = r
            .get(items::LAST_UPDATE, vec![self.mechanism_index()])
            .map_err(|e| self.storage_err(e))?;
        let last = last_update.get(usize::from(uid)).copied().unwrap_or(0);
        // subtensor (check_rate_limit): allowed when last_update is 0 (never set), the limit is
        // 0, or current_block - last_update >= limit. The earliest block that can include this
        // write is the best block + 1; `head` is that.
        if limit > 0 && last > 0 && head.saturating_sub(last) < limit {
            return Err(refuse(format!(
                "the subnet's WeightsSetRateLimit is {limit} blocks and uid {uid} last set \
                 weights (or registered) at block {last}: not before block {} (nothing was sent)",
                last.saturating_add(limit)
            )));
        }
        Ok(())
    }

    /// The weights call for this subnet: plain, or timelocked when commit-reveal is on.
    fn weights_call(
        &self,
        validator: &Keypair,
        weights: &[(u16, u16)],
    ) -> Result<SubtensorCall, ChainError> {
        let head = self.finalized()?;
        let r = self.reader(head.hash.as_bytes());
        let n = self.netuid_value();
        let subnet_key: u64 = r
            .get(items::WEIGHTS_VERSION_KEY, vec![n.clone()])
            .map_err(|e| self.storage_err(e))?;
        let version_key = self.cfg.weights_version_key.unwrap_or(subnet_key);
        // subtensor accepts a key when the subnet's is 0 or the key is at least the subnet's; a
        // timelocked commit with a lower key would be dropped silently at its reveal.
        if subnet_key != 0 && version_key < subnet_key {
            return Err(ChainError::Refused {
                endpoint: self.cfg.endpoint.clone(),
                call: "set_weights".into(),
                reason: format!(
                    "the configured weights_version_key {version_key} is below the subnet's \
                     WeightsVersionKey {subnet_key} (nothing was sent)"
                ),
            });
        }
        let next_block = self.header_number(None)?.saturating_add(1);
        self.check_weights_rate_limit(&r, next_block, validator)?;
        let commit_reveal: bool = r
            .get(items::COMMIT_REVEAL_ENABLED, vec![n.clone()])
            .map_err(|e| self.storage_err(e))?;
        let (dests, values): (Vec<u16>, Vec<u16>) = weights.iter().copied().unzip();
        if !commit_reveal {
            return Ok(SubtensorCall::SetWeights {
                netuid: self.cfg.netuid,
                dests,
                weights: values,
                version_key,
            });
        }
        let get_u64 = |item: Item| -> Result<u64, ChainError> {
            r.get(item, vec![n.clone()])
                .map_err(|e| self.storage_err(e))
        };
        let tempo: u16 = r
            .get(items::TEMPO, vec![n.clone()])
            .map_err(|e| self.storage_err(e))?;
        let reveal_epochs = get_u64(items::REVEAL_PERIOD_EPOCHS)?;
        let commit_reveal_version: u16 = r
            .get(items::COMMIT_REVEAL_VERSION, vec![])
            .map_err(|e| self.storage_err(e))?;
        let timelock = |e: koth_timelock::TimelockError| {
            ChainError::BadParams(format!("timelocking the weights: {e}"))
        };
        let net = self.drand_network();
        let reveal = if self.has_storage("SubtensorModule", "LastEpochBlock") {
            // The stateful epoch schedule the SDK reads to predict the reveal block
            // (get_epoch_schedule_state, bittensor-drand 2.x's get_encrypted_commit_v2).
            let state = koth_timelock::EpochScheduleState {
                last_epoch_block: get_u64(items::LAST_EPOCH_BLOCK)?,
                pending_epoch_at: get_u64(items::PENDING_EPOCH_AT)?,
                subnet_epoch_index: get_u64(items::SUBNET_EPOCH_INDEX)?,
                tempo,
                blocks_since_last_step: get_u64(items::BLOCKS_SINCE_LAST_STEP)?,
                current_block: head.number,
            };
            koth_timelock::weights_reveal(
                &net,
                &state,
                reveal_epochs,
                self.block_time_secs(),
                (self.clock)(),
            )
        } else {
            // A runtime from before that scheduler (epoch = (block + netuid + 1) / (tempo + 1)),
            // as bittensor-drand 1.x's get_encrypted_commit computed it.
            koth_timelock::legacy_weights_reveal(
                &net,
                &koth_timelock::LegacyEpoch {
                    netuid: self.cfg.netuid,
                    tempo,
                    current_block: head.number,
                    reveal_period_epochs: reveal_epochs,
                },
                self.block_time_secs(),
                (self.clock)(),
            )
        }
        .map_err(timelock)?;
        let payload = koth_timelock::WeightsTlockPayload::new(
            *validator.account().as_bytes(),
            dests,
            values,
            version_key,
        );
        let commit =
            koth_timelock::encrypt_with_os_rng(&net, &payload.to_bytes(), reveal.reveal_round)
                .map_err(timelock)?;
        Ok(SubtensorCall::CommitTimelockedMechanismWeights {
            netuid: self.cfg.netuid,
            mecid: self.cfg.mechanism,
            commit,
            reveal_round: reveal.reveal_round,
            commit_reveal_version,
        })
    }
}

/// The node's runtime metadata: V15 through `Metadata_metadata_at_version` when the node has
/// it (what subxt and the SDK ask for), else the default version from `state_getMetadata`
/// (V14 on nodes that predate the versioned API). Every call and storage item koth uses must be
/// in it.
fn fetch_metadata(rpc: &RpcClient, endpoint: &str) -> Result<Metadata, ChainError> {
    let node = |message: String| ChainError::Node {
        endpoint: endpoint.to_string(),
        message,
    };
    // The runtime API's argument: the version as a SCALE u32.
    let versioned: Result<String, RpcError> = rpc.call(
        "state_call",
        json!([
            "Metadata_metadata_at_version",
            rpc::to_hex(&15u32.to_le_bytes())
        ]),
    );
    let metadata = match versioned {
        Ok(answer) => {
            let bytes = rpc::from_hex("state_call", &answer).map_err(|e| node(e.to_string()))?;
            crate::metadata::decode_metadata_at_version_answer(&bytes)
                .map_err(|e| node(format!("Metadata_metadata_at_version(15): {e}")))?
        }
        // A node without the runtime API answers with an error object: fall back.
        Err(RpcError::Node { .. }) => None,
        Err(e) => return Err(node(e.to_string())),
    };
    let metadata = match metadata {
        Some(m) => m,
        None => {
            let hex: String = rpc
                .call("state_getMetadata", json!([]))
                .map_err(|e| node(e.to_string()))?;
            let bytes =
                rpc::from_hex("state_getMetadata", &hex).map_err(|e| node(e.to_string()))?;
            crate::metadata::decode(&bytes).map_err(|e| node(format!("state_getMetadata: {e}")))?
        }
    };
    crate::metadata::check_koth_items(&metadata).map_err(|e| node(e.to_string()))?;
    Ok(metadata)
}

/// The payload of a revealed commitment as text. The SDK commits a SCALE-encoded string
/// (compact length, then UTF-8); a chain that stored the plaintext as is gives the bytes
/// themselves. Anything not UTF-8 is kept visible (lossily) so the validator can refuse it
/// with a reason rather than never see it.
pub fn revealed_payload(bytes: &[u8]) -> String {
    if let Ok(s) = koth_timelock::decode_commitment_plaintext(bytes) {
        return s;
    }
    String::from_utf8_lossy(bytes).into_owned()
}

/// The block and the `Raw` fields of a `Commitments.CommitmentOf` value
/// (`Registration { deposit, block, info: CommitmentInfo { fields } }`); timelocked fields are
/// not readable until the chain reveals them into `RevealedCommitments`.
fn raw_commitment_fields(registration: &Value) -> Option<(u64, Vec<Vec<u8>>)> {
    use subxt_core::ext::scale_value::{Composite, Primitive, ValueDef};
    fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
        match &v.value {
            ValueDef::Composite(Composite::Named(fs)) => {
                fs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
            }
            _ => None,
        }
    }
    fn items(v: &Value) -> Option<&[Value]> {
        match &v.value {
            ValueDef::Composite(Composite::Unnamed(vs)) => match vs.as_slice() {
                // A BoundedVec is a one-field wrapper around the Vec.
                [inner] if matches!(inner.value, ValueDef::Composite(_)) => items(inner),
                vs => Some(vs),
            },
            _ => None,
        }
    }
    fn bytes(v: &Value) -> Option<Vec<u8>> {
        items(v)?
            .iter()
            .map(|b| match b.value {
                ValueDef::Primitive(Primitive::U128(n)) => u8::try_from(n).ok(),
                _ => None,
            })
            .collect()
    }
    let block = match field(registration, "block")?.value {
        ValueDef::Primitive(Primitive::U128(n)) => u64::try_from(n).ok()?,
        _ => return None,
    };
    let fields = items(field(field(registration, "info")?, "fields")?)?;
    let raw = fields
        .iter()
        .filter_map(|f| match &f.value {
            ValueDef::Variant(var) if var.name.starts_with("Raw") || var.name == "BigRaw" => {
                match &var.values {
                    Composite::Unnamed(vs) if vs.len() == 1 => bytes(&vs[0]),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    Some((block, raw))
}

/// The block of a `CommitmentOf` value that holds a `TimelockEncrypted` field.
fn timelocked_commitment_block(registration: &Value) -> Option<u64> {
    use subxt_core::ext::scale_value::{Composite, Primitive, ValueDef};
    let ValueDef::Composite(Composite::Named(fields)) = &registration.value else {
        return None;
    };
    let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let block = match get("block")?.value {
        ValueDef::Primitive(Primitive::U128(n)) => u64::try_from(n).ok()?,
        _ => return None,
    };
    // info.fields: a (bounded) vector of Data variants.
    fn has_timelocked(v: &Value) -> bool {
        match &v.value {
            ValueDef::Variant(var) => var.name == "TimelockEncrypted",
            ValueDef::Composite(Composite::Unnamed(vs)) => vs.iter().any(has_timelocked),
            ValueDef::Composite(Composite::Named(vs)) => {
                vs.iter().any(|(n, v)| n == "fields" && has_timelocked(v))
            }
            _ => false,
        }
    }
    has_timelocked(get("info")?).then_some(block)
}

fn node_error(endpoint: &str, e: RpcError) -> ChainError {
    ChainError::Node {
        endpoint: endpoint.to_string(),
        message: e.to_string(),
    }
}

impl Chain for SubtensorChain {
    fn params(&self) -> &ChainParams {
        &self.params
    }

    fn block(&self) -> Result<BlockRef, ChainError> {
        self.finalized()
    }

    fn block_hash(&self, number: u64) -> Result<Option<Digest>, ChainError> {
        // Only a block beyond the finality already seen needs a look at the head.
        let floor = self
            .finalized_floor
            .load(std::sync::atomic::Ordering::Relaxed);
        if number > floor && number > self.finalized()?.number {
            return Ok(None);
        }
        Ok(self.block_hash_any(number)?.map(Digest::from_bytes))
    }

    fn nonce(&self, account: &AccountId) -> Result<u64, ChainError> {
        self.rpc
            .call("system_accountNextIndex", json!([account.to_ss58()]))
            .map_err(|e| self.node(e))
    }

    fn submit(&self, _extrinsic: &SignedExtrinsic) -> Result<Receipt, ChainError> {
        Err(ChainError::Unsupported {
            what: "submitting a koth-format signed extrinsic".into(),
            chain: "subtensor",
            hint: "subtensor takes its own extrinsics; use sign_and_submit (koth signs them \
                   against the node's metadata)"
                .into(),
        })
    }

    fn sign_and_submit(&self, signer: &Keypair, call: Call) -> Result<Receipt, ChainError> {
        let kind = call.kind();
        let sub = match &call {
            Call::Commit { payload } => SubtensorCall::SetCommitment {
                netuid: self.cfg.netuid,
                data: self.commitment_data(payload)?,
            },
            Call::SetWeights { weights } => self.weights_call(signer, weights)?,
            Call::Register { .. } => {
                return Err(ChainError::Unsupported {
                    what: "registering a hotkey".into(),
                    chain: "subtensor",
                    hint: "registration costs TAO: run `btcli subnet register`, then import the \
                           hotkey with `koth keys import`"
                        .into(),
                })
            }
            Call::GrantValidatorPermit { .. } => {
                return Err(ChainError::Unsupported {
                    what: "granting a validator permit".into(),
                    chain: "subtensor",
                    hint: "subtensor gives permits to the hotkeys with the most stake".into(),
                })
            }
        };
        let (block, index, nonce, tx_hash) = self.submit_call(signer, &sub, kind)?;
        Ok(Receipt {
            block,
            index,
            extrinsic_hash: Digest::from_bytes(tx_hash),
            nonce,
            kind: kind.to_string(),
        })
    }

    fn revealed_commitments(&self) -> Result<Vec<Reveal>, ChainError> {
        let head = self.finalized()?;
        let r = self.reader(head.hash.as_bytes());
        let all = self.reveals_at(&r)?;
        let reveals = self.to_reveals(&r, head.number, all)?;
        // The newest per hotkey.
        let mut newest: std::collections::BTreeMap<u16, Reveal> = Default::default();
        for rv in reveals {
            match newest.get(&rv.uid) {
                Some(old) if old.reveal_block > rv.reveal_block => {}
                _ => {
                    newest.insert(rv.uid, rv);
                }
            }
        }
        Ok(newest.into_values().collect())
    }

    fn revealed_since(&self, after_block: u64) -> Result<Vec<Reveal>, ChainError> {
        let head = self.finalized()?;
        let r = self.reader(head.hash.as_bytes());
        let all = self.reveals_at(&r)?;
        Ok(self
            .to_reveals(&r, head.number, all)?
            .into_iter()
            .filter(|rv| rv.reveal_block > after_block)
            .collect())
    }

    fn weights(&self) -> Result<Vec<ValidatorWeights>, ChainError> {
        let head = self.finalized()?;
        let r = self.reader(head.hash.as_bytes());
        let neurons = self.neurons(&r)?;
        let idx = self.mechanism_index();
        let last_update: Vec<u64> = r
            .get(items::LAST_UPDATE, vec![idx.clone()])
            .map_err(|e| self.storage_err(e))?;
        let rows: Vec<Vec<(u16, u16)>> = r
            .get_many(
                items::WEIGHTS,
                neurons
                    .iter()
                    .map(|n| vec![idx.clone(), Value::u128(u128::from(n.uid))])
                    .collect(),
            )
            .map_err(|e| self.storage_err(e))?;
        Ok(neurons
            .iter()
            .zip(rows)
            .filter(|(_, w)| !w.is_empty())
            .map(|(n, weights)| ValidatorWeights {
                validator_uid: n.uid,
                validator_hotkey: n.hotkey,
                set_block: last_update.get(usize::from(n.uid)).copied().unwrap_or(0),
                weights,
            })
            .collect())
    }

    fn metagraph(&self) -> Result<Metagraph, ChainError> {
        let head = self.finalized()?;
        let r = self.reader(head.hash.as_bytes());
        Ok(Metagraph {
            netuid: self.cfg.netuid,
            block: head,
            neurons: self.neurons(&r)?,
        })
    }

    fn emission(&self) -> Result<Vec<EmissionEntry>, ChainError> {
        let head = self.finalized()?;
        let r = self.reader(head.hash.as_bytes());
        let neurons = self.neurons(&r)?;
        let emission: Vec<u64> = r
            .get(items::EMISSION, vec![self.netuid_value()])
            .map_err(|e| self.storage_err(e))?;
        Ok(neurons
            .iter()
            .map(|n| EmissionEntry {
                uid: n.uid,
                hotkey: n.hotkey,
                rao: emission.get(usize::from(n.uid)).copied().unwrap_or(0),
            })
            .collect())
    }
}

impl SubtensorChain {
    /// The latest drand round the chain has stored (`Drand.LastStoredRound`), at the finalized
    /// head: reveals up to it have been processed.
    pub fn last_drand_round(&self) -> Result<u64, ChainError> {
        let head = self.finalized()?;
        self.reader(head.hash.as_bytes())
            .get(items::LAST_STORED_ROUND, vec![])
            .map_err(|e| self.storage_err(e))
    }

    /// The subnet's weights rate limit in blocks (`WeightsSetRateLimit`).
    pub fn weights_rate_limit(&self) -> Result<u64, ChainError> {
        let head = self.finalized()?;
        self.reader(head.hash.as_bytes())
            .get(items::WEIGHTS_RATE_LIMIT, vec![self.netuid_value()])
            .map_err(|e| self.storage_err(e))
    }

    /// The uid of `hotkey` on this subnet, if registered (`Uids`).
    pub fn uid_of(&self, hotkey: &AccountId) -> Result<Option<u16>, ChainError> {
        let head = self.finalized()?;
        self.uid_at(&self.reader(head.hash.as_bytes()), hotkey)
    }

    /// The uid of `hotkey` on this subnet as `r` reads it (`Uids`).
    fn uid_at(&self, r: &Reader<'_>, hotkey: &AccountId) -> Result<Option<u16>, ChainError> {
        r.get_opt(
            items::UIDS,
            vec![self.netuid_value(), Value::from_bytes(hotkey.as_bytes())],
        )
        .map_err(|e| self.storage_err(e))
    }
}
