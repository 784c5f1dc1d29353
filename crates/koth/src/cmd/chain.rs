//! `koth chain …`: the embedded chain (one SQLite file shared by the processes of one host),
//! and read-only views of a subtensor node (`--network ws://… --netuid N`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use koth_chain::{
    parse_duration, AccountId, Chain, ChainParams, EmbeddedChain, InitParams, Keypair, Keystore,
    SystemClock, RAO_PER_TOKEN,
};
use serde::Serialize;

use super::keys::KeystoreArg;

#[derive(Args, Clone)]
pub struct ChainArg {
    /// The chain file (created by `koth chain init`).
    #[arg(long, env = "KOTH_CHAIN")]
    pub chain: PathBuf,
}

impl ChainArg {
    fn open(&self) -> Result<EmbeddedChain> {
        EmbeddedChain::open(&self.chain)
            .with_context(|| format!("opening chain --chain {}", self.chain.display()))
    }
}

/// A chain to read: an embedded chain file, or a subtensor node and subnet.
#[derive(Args, Clone)]
pub struct ReadChainArg {
    /// The chain file (created by `koth chain init`).
    #[arg(long, env = "KOTH_CHAIN", conflicts_with_all = ["network", "netuid"], required_unless_present = "network")]
    pub chain: Option<PathBuf>,
    /// A subtensor node instead: ws://, wss://, http:// or https:// (read-only).
    #[arg(long, requires = "netuid")]
    pub network: Option<String>,
    /// The subnet on --network.
    #[arg(long, requires = "network")]
    pub netuid: Option<u16>,
}

impl ReadChainArg {
    /// Open the chain, and say what it is for messages.
    fn open(&self) -> Result<(Box<dyn Chain>, String)> {
        match (&self.chain, &self.network, self.netuid) {
            (Some(path), None, None) => {
                let chain = EmbeddedChain::open(path)
                    .with_context(|| format!("opening chain --chain {}", path.display()))?;
                Ok((Box::new(chain), chain_context(path)))
            }
            (None, Some(network), Some(netuid)) => {
                let what = format!("subtensor {network} netuid {netuid}");
                let chain = koth_subtensor::SubtensorChain::connect(
                    koth_subtensor::SubtensorConfig::new(network.clone(), netuid),
                )
                .with_context(|| format!("connecting to {what}"))?;
                Ok((Box::new(chain), what))
            }
            _ => bail!("give either --chain FILE, or --network URL with --netuid N"),
        }
    }
}

#[derive(Subcommand)]
pub enum ChainCommand {
    /// Create a new chain file (refuses if the path exists). Creates the owner key in the
    /// keystore if it is not there yet.
    Init {
        /// Where to create the chain file.
        #[arg(long)]
        path: PathBuf,
        /// Subnet id.
        #[arg(long)]
        netuid: u16,
        /// Time between blocks, e.g. 2s, 500ms, 1m.
        #[arg(long, default_value = "12s")]
        block_time: String,
        /// Blocks between a commitment's inclusion and its reveal.
        #[arg(long)]
        reveal_delay: u64,
        /// Tokens emitted per block (paid to hotkeys by validator weights).
        #[arg(long, default_value_t = 1.0)]
        emission: f64,
        /// Most uids the subnet holds.
        #[arg(long, default_value_t = 256)]
        max_uids: u16,
        /// Prune, as Bittensor does: once --max-uids are registered, a registration replaces the
        /// neuron with the least accrued emission (ties: older registration, then lower uid)
        /// among those registered at least K blocks ago and without a validator permit. Without
        /// this flag the chain never prunes and a full subnet refuses registrations.
        #[arg(long, value_name = "K")]
        immunity_blocks: Option<u64>,
        /// Keystore name of the subnet owner key (the only key that grants validator permits).
        #[arg(long, default_value = "owner")]
        owner: String,
        #[command(flatten)]
        keystore: KeystoreArg,
        #[arg(long)]
        json: bool,
    },
    /// Register a hotkey (signed by the hotkey). With --validator, the owner key then grants it a
    /// validator permit.
    Register {
        #[command(flatten)]
        chain: ChainArg,
        #[command(flatten)]
        keystore: KeystoreArg,
        /// Keystore name of the hotkey to register.
        #[arg(long)]
        hotkey: String,
        /// The coldkey that owns the hotkey: a keystore name or an SS58 address. Default: the
        /// hotkey's own address.
        #[arg(long)]
        coldkey: Option<String>,
        /// Also grant a validator permit, signed by the owner key.
        #[arg(long)]
        validator: bool,
        /// Keystore name of the subnet owner key (for --validator).
        #[arg(long, default_value = "owner")]
        owner: String,
        #[arg(long)]
        json: bool,
    },
    /// Grant a registered hotkey a validator permit (signed by the subnet owner key).
    GrantValidator {
        #[command(flatten)]
        chain: ChainArg,
        #[command(flatten)]
        keystore: KeystoreArg,
        /// The hotkey: a keystore name or an SS58 address.
        #[arg(long)]
        hotkey: String,
        /// Keystore name of the subnet owner key.
        #[arg(long, default_value = "owner")]
        owner: String,
        #[arg(long)]
        json: bool,
    },
    /// Commit a payload (revealed reveal-delay blocks after the block that includes it).
    Commit {
        #[command(flatten)]
        chain: ChainArg,
        #[command(flatten)]
        keystore: KeystoreArg,
        /// Keystore name of the registered hotkey that signs.
        #[arg(long)]
        hotkey: String,
        /// The payload, e.g. v4|<location>|<digest>|<hotkey>.
        #[arg(long)]
        payload: String,
        #[arg(long)]
        json: bool,
    },
    /// Set weights from a validator hotkey: --weights "0=0.7,3=0.3" (floats, normalized to u16
    /// as Bittensor does).
    SetWeights {
        #[command(flatten)]
        chain: ChainArg,
        #[command(flatten)]
        keystore: KeystoreArg,
        /// Keystore name of the validator hotkey.
        #[arg(long)]
        hotkey: String,
        /// Comma-separated uid=weight pairs.
        #[arg(long)]
        weights: String,
        #[arg(long)]
        json: bool,
    },
    /// Parameters, head block, metagraph and accrued emission.
    Status {
        #[command(flatten)]
        chain: ChainArg,
        #[arg(long)]
        json: bool,
    },
    /// The registered hotkeys: uid, validator permit, registration block, hotkey and coldkey.
    Metagraph {
        #[command(flatten)]
        chain: ReadChainArg,
        #[arg(long)]
        json: bool,
    },
    /// Revealed commitments: the newest per hotkey, or with --all every one in chain order.
    Reveals {
        #[command(flatten)]
        chain: ReadChainArg,
        /// Every revealed commitment, not only the newest per hotkey.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// The latest weights of every validator.
    Weights {
        #[command(flatten)]
        chain: ReadChainArg,
        #[arg(long)]
        json: bool,
    },
    /// Re-check the whole file: integrity, block hashes, signatures, and a replay of every
    /// extrinsic that must rebuild the stored state.
    Verify {
        #[command(flatten)]
        chain: ChainArg,
        #[arg(long)]
        json: bool,
    },
}

fn load_key(store: &Keystore, name: &str, flag: &str) -> Result<Keypair> {
    store.load(name).with_context(|| {
        format!(
            "loading {flag} {name:?} from keystore {}",
            store.dir().display()
        )
    })
}

/// A keystore name, or failing that an SS58 address / hex public key.
fn resolve_account(store: &Keystore, s: &str, flag: &str) -> Result<AccountId> {
    if store.path_of(s).exists() {
        return Ok(load_key(store, s, flag)?.account());
    }
    AccountId::parse_any(s).with_context(|| {
        format!(
            "{flag} {s:?} is neither a key in keystore {} nor an SS58 address",
            store.dir().display()
        )
    })
}

fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce()) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human();
    }
    Ok(())
}

fn parse_weights(s: &str) -> Result<Vec<(u16, f64)>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (uid, w) = pair
                .split_once('=')
                .with_context(|| format!("--weights entry {pair:?} must be uid=weight"))?;
            let uid: u16 = uid
                .trim()
                .parse()
                .with_context(|| format!("--weights entry {pair:?}: uid must be 0..65535"))?;
            let w: f64 = w
                .trim()
                .parse()
                .with_context(|| format!("--weights entry {pair:?}: weight must be a number"))?;
            Ok((uid, w))
        })
        .collect()
}

fn tokens(rao: u64) -> f64 {
    rao as f64 / RAO_PER_TOKEN as f64
}

/// How a full subnet takes a new registration, in words.
fn pruning(p: &ChainParams) -> String {
    match p.immunity_period {
        Some(k) => format!("immunity {k} blocks, then the least emission is replaced when full"),
        None => "none (a full subnet refuses registrations)".into(),
    }
}

fn chain_context(path: &Path) -> String {
    format!("chain {}", path.display())
}

pub fn run(c: ChainCommand) -> Result<()> {
    match c {
        ChainCommand::Init {
            path,
            netuid,
            block_time,
            reveal_delay,
            emission,
            max_uids,
            immunity_blocks,
            owner,
            keystore,
            json,
        } => {
            let block_time = parse_duration(&block_time).context("--block-time")?;
            let block_time_ms =
                u64::try_from(block_time.as_millis()).context("--block-time is too long")?;
            if block_time_ms == 0 {
                bail!("--block-time must be at least 1ms");
            }
            if !emission.is_finite() || !(0.0..=1e9).contains(&emission) {
                bail!("--emission {emission} must be a number of tokens between 0 and 1e9");
            }
            let emission_per_block_rao = (emission * RAO_PER_TOKEN as f64).round() as u64;
            if path.exists() {
                bail!(
                    "--path {} already exists; a chain file is never re-initialized (choose a new path)",
                    path.display()
                );
            }
            let store = keystore.open();
            let (owner_key, created) = if store.path_of(&owner).exists() {
                (load_key(&store, &owner, "--owner")?, false)
            } else {
                let (k, _) = store.create(&owner).with_context(|| {
                    format!("creating owner key {owner:?} in {}", store.dir().display())
                })?;
                (k, true)
            };
            let chain = EmbeddedChain::init_with_pruning(
                &path,
                &InitParams {
                    netuid,
                    block_time_ms,
                    reveal_delay,
                    emission_per_block_rao,
                    max_uids,
                    owner: owner_key.account(),
                },
                immunity_blocks,
                Box::new(SystemClock),
            )
            .with_context(|| format!("initializing chain --path {}", path.display()))?;
            let params = chain.params().clone();
            print(json, &params, || {
                println!("created chain {}", path.display());
                println!("  netuid:        {}", params.netuid);
                println!("  genesis hash:  {}", params.genesis_hash);
                println!("  block time:    {} ms", params.block_time_ms);
                println!("  reveal delay:  {} blocks", params.reveal_delay);
                println!(
                    "  emission:      {} tokens/block",
                    tokens(params.emission_per_block_rao)
                );
                println!("  max uids:      {}", params.max_uids);
                println!("  pruning:       {}", pruning(&params));
                println!(
                    "  owner:         {} (key {owner:?}{})",
                    params.owner,
                    if created { ", created now" } else { "" }
                );
            })
        }
        ChainCommand::Register {
            chain,
            keystore,
            hotkey,
            coldkey,
            validator,
            owner,
            json,
        } => {
            let store = keystore.open();
            let hot = load_key(&store, &hotkey, "--hotkey")?;
            let cold = match &coldkey {
                Some(c) => resolve_account(&store, c, "--coldkey")?,
                None => hot.account(),
            };
            let owner_key = if validator {
                Some(load_key(&store, &owner, "--owner")?)
            } else {
                None
            };
            let ch = chain.open()?;
            let mut receipts = vec![ch.register(&hot, &cold).with_context(|| {
                format!(
                    "registering hotkey {hotkey:?} on {}",
                    chain_context(&chain.chain)
                )
            })?];
            if let Some(owner_key) = owner_key {
                receipts.push(
                    ch.grant_validator_permit(&owner_key, &hot.account())
                        .with_context(|| {
                            format!(
                                "granting {hotkey:?} a validator permit with owner key {owner:?}"
                            )
                        })?,
                );
            }
            print(json, &receipts, || {
                println!(
                    "registered {} (key {hotkey:?}, coldkey {cold}) in block {}",
                    hot.account(),
                    receipts[0].block
                );
                if receipts.len() > 1 {
                    println!("granted a validator permit in block {}", receipts[1].block);
                }
            })
        }
        ChainCommand::GrantValidator {
            chain,
            keystore,
            hotkey,
            owner,
            json,
        } => {
            let store = keystore.open();
            let account = resolve_account(&store, &hotkey, "--hotkey")?;
            let owner_key = load_key(&store, &owner, "--owner")?;
            let receipt = chain
                .open()?
                .grant_validator_permit(&owner_key, &account)
                .with_context(|| {
                    format!(
                        "granting {account} a validator permit on {}",
                        chain_context(&chain.chain)
                    )
                })?;
            print(json, &receipt, || {
                println!(
                    "granted {account} a validator permit in block {}",
                    receipt.block
                )
            })
        }
        ChainCommand::Commit {
            chain,
            keystore,
            hotkey,
            payload,
            json,
        } => {
            let store = keystore.open();
            let key = load_key(&store, &hotkey, "--hotkey")?;
            let ch = chain.open()?;
            let receipt = ch.commit(&key, &payload).with_context(|| {
                format!(
                    "committing from hotkey {hotkey:?} on {}",
                    chain_context(&chain.chain)
                )
            })?;
            let reveal = receipt.block + ch.params().reveal_delay;
            print(json, &receipt, || {
                println!(
                    "committed in block {} (extrinsic {}); revealed from block {reveal}",
                    receipt.block, receipt.extrinsic_hash
                )
            })
        }
        ChainCommand::SetWeights {
            chain,
            keystore,
            hotkey,
            weights,
            json,
        } => {
            let store = keystore.open();
            let key = load_key(&store, &hotkey, "--hotkey")?;
            let weights = parse_weights(&weights)?;
            let receipt = chain.open()?.set_weights(&key, &weights).with_context(|| {
                format!(
                    "setting weights from hotkey {hotkey:?} on {}",
                    chain_context(&chain.chain)
                )
            })?;
            print(json, &receipt, || {
                println!("weights set in block {}", receipt.block)
            })
        }
        ChainCommand::Status { chain, json } => {
            let ch = chain.open()?;
            let metagraph = ch
                .metagraph()
                .with_context(|| chain_context(&chain.chain))?;
            let emission = ch.emission().with_context(|| chain_context(&chain.chain))?;
            #[derive(Serialize)]
            struct Status<'a> {
                params: &'a ChainParams,
                metagraph: &'a koth_chain::Metagraph,
                emission: &'a [koth_chain::EmissionEntry],
            }
            let status = Status {
                params: ch.params(),
                metagraph: &metagraph,
                emission: &emission,
            };
            print(json, &status, || {
                let p = ch.params();
                println!("chain {}", chain.chain.display());
                println!("  netuid {}  genesis {}", p.netuid, p.genesis_hash);
                println!(
                    "  block time {} ms  reveal delay {} blocks  emission {} tokens/block  owner {}",
                    p.block_time_ms,
                    p.reveal_delay,
                    tokens(p.emission_per_block_rao),
                    p.owner
                );
                println!("  max uids {}  pruning: {}", p.max_uids, pruning(p));
                println!(
                    "  head block {}  {}",
                    metagraph.block.number, metagraph.block.hash
                );
                println!("  {} registered", metagraph.neurons.len());
                if !metagraph.neurons.is_empty() {
                    println!("  uid  validator  registered  emission(tokens)  hotkey / coldkey");
                    for n in &metagraph.neurons {
                        let rao = emission
                            .iter()
                            .find(|e| e.uid == n.uid)
                            .map_or(0, |e| e.rao);
                        println!(
                            "  {:>3}  {:>9}  {:>10}  {:>16.9}  {} / {}",
                            n.uid,
                            if n.validator_permit { "yes" } else { "no" },
                            n.registered_block,
                            tokens(rao),
                            n.hotkey,
                            n.coldkey
                        );
                    }
                }
            })
        }
        ChainCommand::Metagraph { chain, json } => {
            let (ch, what) = chain.open()?;
            let metagraph = ch.metagraph().with_context(|| what.clone())?;
            print(json, &metagraph, || {
                println!(
                    "{what}: netuid {} at block {} ({}), {} registered",
                    metagraph.netuid,
                    metagraph.block.number,
                    metagraph.block.hash,
                    metagraph.neurons.len()
                );
                if !metagraph.neurons.is_empty() {
                    println!("  uid  validator  registered  hotkey / coldkey");
                }
                for n in &metagraph.neurons {
                    println!(
                        "  {:>3}  {:>9}  {:>10}  {} / {}",
                        n.uid,
                        if n.validator_permit { "yes" } else { "no" },
                        n.registered_block,
                        n.hotkey,
                        n.coldkey
                    );
                }
            })
        }
        ChainCommand::Reveals { chain, all, json } => {
            let (ch, what) = chain.open()?;
            let reveals = if all {
                ch.revealed_since(0)
            } else {
                ch.revealed_commitments()
            }
            .with_context(|| what.clone())?;
            print(json, &reveals, || {
                if reveals.is_empty() {
                    println!("no revealed commitments");
                }
                for r in &reveals {
                    println!(
                        "uid {:>3}  committed {:>6}  revealed {:>6}  {}  {}",
                        r.uid, r.commit_block, r.reveal_block, r.hotkey, r.payload
                    );
                }
            })
        }
        ChainCommand::Weights { chain, json } => {
            let (ch, what) = chain.open()?;
            let weights = ch.weights().with_context(|| what.clone())?;
            print(json, &weights, || {
                if weights.is_empty() {
                    println!("no weights set");
                }
                for v in &weights {
                    let list: Vec<String> =
                        v.weights.iter().map(|(u, w)| format!("{u}={w}")).collect();
                    println!(
                        "validator uid {} ({}) set in block {}: {}",
                        v.validator_uid,
                        v.validator_hotkey,
                        v.set_block,
                        list.join(",")
                    );
                }
            })
        }
        ChainCommand::Verify { chain, json } => {
            let ch = chain.open()?;
            let report = ch
                .verify()
                .with_context(|| format!("verifying {}", chain_context(&chain.chain)))?;
            print(json, &report, || {
                println!(
                    "ok: {} blocks chain from genesis to head {} ({}); {} extrinsics replay to the stored state",
                    report.blocks, report.head.number, report.head.hash, report.extrinsics
                )
            })
        }
    }
}
