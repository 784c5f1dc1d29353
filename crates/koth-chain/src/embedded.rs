//! The embedded chain: one SQLite file (WAL, synchronous=FULL) shared by every process of a
//! network on one host, with no producer process.
//!
//! **Block model.** Block 0 is genesis (its hash is the genesis hash). Block `n ≥ 1` is sealed
//! once the wall clock reaches `genesis_time + n × block_time`, so the *head* (latest sealed
//! block) at time t is `floor((t − genesis_time) / block_time)`. Sealing is lazy: any process
//! that touches the chain, inside one `BEGIN IMMEDIATE` transaction, first seals every block
//! whose time has passed (hash = sha256(parent hash ‖ number as u64 BE ‖ contents hash), the
//! contents hash being sha256 over each included extrinsic as u32 BE length ‖ stored bytes, in
//! order) and pays those blocks' emission, then includes its own extrinsic in block head + 1.
//! Since writes only ever go into the one unsealed block and a block is only sealed after its
//! time has passed, every process computes the same hashes. A clock that steps backwards never
//! reopens a sealed block: the head is never lowered.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use koth_core::Digest;
use rand::RngCore;
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use sha2::{Digest as _, Sha256};

use crate::chain::Chain;
use crate::error::ChainError;
use crate::extrinsic::{Call, SignedExtrinsic};
use crate::keys::{AccountId, Keypair};
use crate::replay::{replay, Replayed, StoredCommitment, WeightsByValidator};
use crate::rules::{self, Effect, LedgerState};
use crate::types::{
    BlockRef, ChainParams, EmissionEntry, Metagraph, Neuron, Receipt, Reveal, ValidatorWeights,
};
use crate::weights::split_block_emission;

/// `PRAGMA application_id` of a koth chain file: ASCII "kOTH".
pub const APPLICATION_ID: i32 = 0x6b4f_5448;
/// `PRAGMA user_version`: the schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = 1;
const MAGIC: &str = "koth-chain";
/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the chain reads the time: [`SystemClock`] for real chains, a [`ManualClock`] for tests
/// and simulations (koth-core's clock, shared with the store cache).
pub use koth_core::clock::{Clock, ManualClock, SystemClock};

/// What `init` needs; the genesis time is the clock's now.
#[derive(Debug, Clone)]
pub struct InitParams {
    pub netuid: u16,
    pub block_time_ms: u64,
    pub reveal_delay: u64,
    pub emission_per_block_rao: u64,
    pub max_uids: u16,
    pub owner: AccountId,
}

/// The head at `now_ms`: the number of whole block intervals since genesis.
pub fn head_at(params: &ChainParams, now_ms: u64) -> u64 {
    now_ms.saturating_sub(params.genesis_time_ms) / params.block_time_ms.max(1)
}

/// The genesis hash: binds the chain's identity to its parameters and a random nonce, so two
/// chains initialized with the same parameters still differ.
pub fn genesis_hash(p: &InitParams, genesis_time_ms: u64, nonce: &[u8; 32]) -> Digest {
    genesis_hash_with(p, None, genesis_time_ms, nonce)
}

/// [`genesis_hash`] of a chain with an immunity period. `None` hashes exactly as chains made
/// before pruning existed, so their files keep opening; `Some(p)` is bound into the hash after
/// the other parameters.
pub fn genesis_hash_with(
    p: &InitParams,
    immunity_period: Option<u64>,
    genesis_time_ms: u64,
    nonce: &[u8; 32],
) -> Digest {
    let mut h = Sha256::new();
    h.update(b"koth-genesis-v1\0");
    h.update(p.netuid.to_be_bytes());
    h.update(genesis_time_ms.to_be_bytes());
    h.update(p.block_time_ms.to_be_bytes());
    h.update(p.reveal_delay.to_be_bytes());
    h.update(p.emission_per_block_rao.to_be_bytes());
    h.update(p.max_uids.to_be_bytes());
    h.update(p.owner.as_bytes());
    h.update(nonce);
    if let Some(immunity) = immunity_period {
        h.update(b"immunity_period\0");
        h.update(immunity.to_be_bytes());
    }
    Digest::from_bytes(h.finalize().into())
}

/// The hash of block `number` from its parent's hash and its contents hash.
pub fn block_hash(parent: &Digest, number: u64, contents: &Digest) -> Digest {
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    h.update(number.to_be_bytes());
    h.update(contents.as_bytes());
    Digest::from_bytes(h.finalize().into())
}

/// The contents hash of a block from its extrinsics' stored bytes, in order.
pub fn contents_hash<'a>(extrinsics: impl IntoIterator<Item = &'a [u8]>) -> Digest {
    let mut h = Sha256::new();
    for bytes in extrinsics {
        h.update((bytes.len() as u32).to_be_bytes());
        h.update(bytes);
    }
    Digest::from_bytes(h.finalize().into())
}

/// What `verify` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub head: BlockRef,
    pub blocks: u64,
    pub extrinsics: u64,
}

pub struct EmbeddedChain {
    path: PathBuf,
    conn: Mutex<Connection>,
    params: ChainParams,
    clock: Box<dyn Clock>,
}

impl std::fmt::Debug for EmbeddedChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedChain")
            .field("path", &self.path)
            .field("params", &self.params)
            .finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE blocks(
    number INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    parent BLOB NOT NULL,
    contents BLOB NOT NULL,
    extrinsic_count INTEGER NOT NULL
) STRICT;
CREATE TABLE extrinsics(
    block INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    signer BLOB NOT NULL,
    nonce INTEGER NOT NULL,
    kind TEXT NOT NULL,
    hash BLOB NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY(block, idx)
) STRICT;
CREATE TABLE accounts(account BLOB PRIMARY KEY, nonce INTEGER NOT NULL) STRICT;
CREATE TABLE neurons(
    uid INTEGER PRIMARY KEY,
    hotkey BLOB NOT NULL UNIQUE,
    coldkey BLOB NOT NULL,
    validator_permit INTEGER NOT NULL,
    registered_block INTEGER NOT NULL
) STRICT;
CREATE TABLE commitments(
    id INTEGER PRIMARY KEY,
    uid INTEGER NOT NULL,
    hotkey BLOB NOT NULL,
    payload TEXT NOT NULL,
    commit_block INTEGER NOT NULL,
    reveal_block INTEGER NOT NULL
) STRICT;
CREATE INDEX commitments_by_reveal ON commitments(reveal_block);
CREATE TABLE weights(validator_uid INTEGER PRIMARY KEY, set_block INTEGER NOT NULL, weights TEXT NOT NULL) STRICT;
CREATE TABLE emission(uid INTEGER PRIMARY KEY, rao INTEGER NOT NULL) STRICT;
";

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl EmbeddedChain {
    /// Create a new chain file at `path`. Refuses if anything exists there.
    pub fn init(path: &Path, p: &InitParams) -> Result<Self, ChainError> {
        Self::init_with_clock(path, p, Box::new(SystemClock))
    }

    pub fn init_with_clock(
        path: &Path,
        p: &InitParams,
        clock: Box<dyn Clock>,
    ) -> Result<Self, ChainError> {
        Self::init_with_pruning(path, p, None, clock)
    }

    /// Create a chain that prunes: once `max_uids` are registered, a registration replaces the
    /// neuron with the lowest pruning score outside its `immunity_period` blocks
    /// ([`crate::rules::prune_candidate`]). `None` makes a chain that never prunes (as
    /// [`EmbeddedChain::init`] does).
    pub fn init_with_pruning(
        path: &Path,
        p: &InitParams,
        immunity_period: Option<u64>,
        clock: Box<dyn Clock>,
    ) -> Result<Self, ChainError> {
        if p.block_time_ms == 0 {
            return Err(ChainError::BadParams(
                "block time must be at least 1 ms".into(),
            ));
        }
        if p.max_uids == 0 {
            return Err(ChainError::BadParams("max uids must be at least 1".into()));
        }
        // create_new is the atomic "does not exist yet" check: two inits racing cannot both win,
        // and an existing file (a chain or anything else) is never touched.
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ChainError::AlreadyExists {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(ChainError::Io {
                    path: path.to_path_buf(),
                    what: "creating the chain file",
                    source,
                })
            }
        }
        let made = Self::write_genesis(path, p, immunity_period, clock.as_ref());
        if made.is_err() {
            // We created this file a moment ago and it holds no chain: remove it and its WAL so a
            // retry is possible.
            for suffix in ["", "-wal", "-shm"] {
                let _ = fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
        made?;
        Self::open_with_clock(path, clock)
    }

    fn write_genesis(
        path: &Path,
        p: &InitParams,
        immunity_period: Option<u64>,
        clock: &dyn Clock,
    ) -> Result<(), ChainError> {
        let sql = |what: &'static str| {
            let path = path.to_path_buf();
            move |source| ChainError::Sqlite {
                path,
                what,
                source: Box::new(source),
            }
        };
        let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(sql("opening the new chain file"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("enabling WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("setting synchronous=FULL"))?;
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sql("setting application_id"))?;
        let genesis_time_ms = clock.now_ms();
        let mut nonce = [0u8; 32];
        rand::rng().fill_bytes(&mut nonce);
        let genesis = genesis_hash_with(p, immunity_period, genesis_time_ms, &nonce);
        let tx = conn
            .transaction()
            .map_err(sql("starting the genesis transaction"))?;
        tx.execute_batch(SCHEMA)
            .map_err(sql("creating the schema"))?;
        let mut meta: Vec<(&str, String)> = vec![
            ("magic", MAGIC.to_string()),
            ("netuid", p.netuid.to_string()),
            ("genesis_hash", genesis.hex()),
            ("genesis_nonce", hex::encode(nonce)),
            ("genesis_time_ms", genesis_time_ms.to_string()),
            ("block_time_ms", p.block_time_ms.to_string()),
            ("reveal_delay", p.reveal_delay.to_string()),
            (
                "emission_per_block_rao",
                p.emission_per_block_rao.to_string(),
            ),
            ("max_uids", p.max_uids.to_string()),
            ("owner", p.owner.to_ss58()),
            (
                "created_by",
                format!("koth-chain {}", env!("CARGO_PKG_VERSION")),
            ),
        ];
        // Only pruning chains carry the key: a file without it is a chain that never prunes.
        if let Some(immunity) = immunity_period {
            meta.push(("immunity_period", immunity.to_string()));
        }
        for (k, v) in meta {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2)",
                params![k, v],
            )
            .map_err(sql("writing meta"))?;
        }
        let empty = contents_hash(std::iter::empty());
        tx.execute(
            "INSERT INTO blocks(number, hash, parent, contents, extrinsic_count) VALUES (0, ?1, ?2, ?3, 0)",
            params![genesis.as_bytes().as_slice(), [0u8; 32].as_slice(), empty.as_bytes().as_slice()],
        )
        .map_err(sql("writing the genesis block"))?;
        // The schema version goes in last: a file without it was never a finished chain.
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql("setting user_version"))?;
        tx.commit().map_err(sql("committing genesis"))?;
        Ok(())
    }

    /// Open an existing chain file. Never creates one; a missing, foreign or corrupt file is an
    /// error that says which.
    pub fn open(path: &Path) -> Result<Self, ChainError> {
        Self::open_with_clock(path, Box::new(SystemClock))
    }

    pub fn open_with_clock(path: &Path, clock: Box<dyn Clock>) -> Result<Self, ChainError> {
        let not_a_chain = |reason: String| ChainError::NotAChain {
            path: path.to_path_buf(),
            reason,
        };
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ChainError::Missing {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(ChainError::Io {
                    path: path.to_path_buf(),
                    what: "reading",
                    source,
                })
            }
        };
        if !meta.is_file() {
            return Err(not_a_chain("it is not a regular file".into()));
        }
        // Check the SQLite header ourselves: SQLite would happily treat an empty file as a new
        // database, and its own message for garbage ("file is not a database") names no file.
        let mut header = [0u8; 100];
        let read = fs::File::open(path)
            .and_then(|mut f| f.read(&mut header))
            .map_err(|source| ChainError::Io {
                path: path.to_path_buf(),
                what: "reading the header",
                source,
            })?;
        if read < 100 {
            return Err(not_a_chain(format!(
                "it is {read} bytes long, too short to be an SQLite database"
            )));
        }
        if &header[..16] != b"SQLite format 3\0" {
            return Err(not_a_chain(
                "it is not an SQLite database (its first bytes are not the SQLite header)".into(),
            ));
        }
        let app_id = i32::from_be_bytes([header[68], header[69], header[70], header[71]]);
        if app_id != APPLICATION_ID {
            return Err(not_a_chain(format!(
                "it is an SQLite database of another application (application_id {app_id:#x}, a koth chain has {APPLICATION_ID:#x})"
            )));
        }
        let sql = |what: &'static str| {
            let path = path.to_path_buf();
            move |source: rusqlite::Error| classify(&path, what, source)
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql("opening"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("setting busy_timeout"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("setting synchronous=FULL"))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql("reading user_version"))?;
        if version != SCHEMA_VERSION {
            return Err(ChainError::SchemaVersion {
                path: path.to_path_buf(),
                found: version,
                expected: SCHEMA_VERSION,
            });
        }
        let journal: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .map_err(sql("reading journal_mode"))?;
        if !journal.eq_ignore_ascii_case("wal") {
            return Err(ChainError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("journal mode is {journal}, expected wal"),
            });
        }
        let params = read_params(&conn, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            params,
            clock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> ChainError + '_ {
        move |source| classify(&self.path, what, source)
    }

    fn corrupt(&self, reason: String) -> ChainError {
        ChainError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned mutex is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` in a transaction after sealing every block whose time has passed. Reads use a
    /// deferred transaction when nothing needs sealing; writes always take the write lock.
    fn with_head<T>(
        &self,
        write: bool,
        f: impl FnOnce(&Transaction<'_>, BlockRef) -> Result<T, ChainError>,
    ) -> Result<T, ChainError> {
        let mut conn = self.lock();
        let target = head_at(&self.params, self.clock.now_ms());
        let seal_first = write || {
            let sealed: i64 = conn
                .query_row("SELECT MAX(number) FROM blocks", [], |r| r.get(0))
                .map_err(self.sql("reading the head"))?;
            u64::try_from(sealed).unwrap_or(0) < target
        };
        let behavior = if seal_first {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let tx = conn
            .transaction_with_behavior(behavior)
            .map_err(self.sql("starting a transaction"))?;
        let head = if seal_first {
            self.seal(&tx, target)?
        } else {
            self.read_head(&tx)?
        };
        let out = f(&tx, head)?;
        tx.commit().map_err(self.sql("committing"))?;
        Ok(out)
    }

    fn read_head(&self, tx: &Transaction<'_>) -> Result<BlockRef, ChainError> {
        let (number, hash): (i64, Vec<u8>) = tx
            .query_row(
                "SELECT number, hash FROM blocks ORDER BY number DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.sql("reading the head"))?
            .ok_or_else(|| self.corrupt("it has no blocks, not even genesis".into()))?;
        Ok(BlockRef {
            number: self.u64_col(number, "block number")?,
            hash: self.digest_col(&hash, "block hash")?,
        })
    }

    fn u64_col(&self, v: i64, what: &str) -> Result<u64, ChainError> {
        u64::try_from(v).map_err(|_| self.corrupt(format!("negative {what} {v}")))
    }

    fn u16_col(&self, v: i64, what: &str) -> Result<u16, ChainError> {
        u16::try_from(v).map_err(|_| self.corrupt(format!("{what} {v} is out of range")))
    }

    fn digest_col(&self, v: &[u8], what: &str) -> Result<Digest, ChainError> {
        let arr: [u8; 32] = v
            .try_into()
            .map_err(|_| self.corrupt(format!("{what} is {} bytes, not 32", v.len())))?;
        Ok(Digest::from_bytes(arr))
    }

    fn account_col(&self, v: &[u8], what: &str) -> Result<AccountId, ChainError> {
        Ok(AccountId::from_bytes(*self.digest_col(v, what)?.as_bytes()))
    }

    /// Seal every block up to `target` (never lowering the head) and pay their emission.
    fn seal(&self, tx: &Transaction<'_>, target: u64) -> Result<BlockRef, ChainError> {
        let head = self.read_head(tx)?;
        if target <= head.number {
            return Ok(head);
        }
        // Only block head+1 can hold extrinsics (writes go into the block after the head, and
        // the head has not moved since they were written); later blocks are empty.
        let pending: Vec<Vec<u8>> = {
            let mut stmt = tx
                .prepare("SELECT bytes FROM extrinsics WHERE block = ?1 ORDER BY idx")
                .map_err(self.sql("reading pending extrinsics"))?;
            let rows = stmt
                .query_map([to_i64(head.number + 1)], |r| r.get::<_, Vec<u8>>(0))
                .map_err(self.sql("reading pending extrinsics"))?;
            rows.collect::<Result<_, _>>()
                .map_err(self.sql("reading pending extrinsics"))?
        };
        let stray: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM extrinsics WHERE block > ?1",
                [to_i64(head.number + 1)],
                |r| r.get(0),
            )
            .map_err(self.sql("checking for extrinsics beyond the next block"))?;
        if stray != 0 {
            return Err(self.corrupt(format!(
                "{stray} extrinsics lie beyond block {}, the next block",
                head.number + 1
            )));
        }
        let empty = contents_hash(std::iter::empty());
        let mut insert = tx
            .prepare("INSERT INTO blocks(number, hash, parent, contents, extrinsic_count) VALUES (?1, ?2, ?3, ?4, ?5)")
            .map_err(self.sql("sealing blocks"))?;
        let mut parent = head.hash;
        for number in head.number + 1..=target {
            let (contents, count) = if number == head.number + 1 {
                (
                    contents_hash(pending.iter().map(Vec::as_slice)),
                    pending.len(),
                )
            } else {
                (empty, 0)
            };
            let hash = block_hash(&parent, number, &contents);
            insert
                .execute(params![
                    to_i64(number),
                    hash.as_bytes().as_slice(),
                    parent.as_bytes().as_slice(),
                    contents.as_bytes().as_slice(),
                    count as i64
                ])
                .map_err(self.sql("sealing blocks"))?;
            parent = hash;
        }
        // Emission for the newly sealed blocks: the weights in force at the end of each of them
        // are the current ones (see `seal`'s first comment), so every block pays the same split.
        let split = split_block_emission(
            self.params.emission_per_block_rao,
            &load_voting_weights(self, tx)?,
        );
        let blocks = target - head.number;
        for (uid, amount) in split {
            let add = to_i64(amount.saturating_mul(blocks));
            tx.execute(
                "INSERT INTO emission(uid, rao) VALUES (?1, ?2)
                 ON CONFLICT(uid) DO UPDATE SET rao = MIN(rao + ?2, 9223372036854775807)",
                params![i64::from(uid), add],
            )
            .map_err(self.sql("paying emission"))?;
        }
        Ok(BlockRef {
            number: target,
            hash: parent,
        })
    }

    fn load_state(&self, tx: &Transaction<'_>) -> Result<LedgerState, ChainError> {
        let neurons = load_neurons(self, tx)?;
        let mut nonces = BTreeMap::new();
        let mut stmt = tx
            .prepare("SELECT account, nonce FROM accounts")
            .map_err(self.sql("reading nonces"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
            .map_err(self.sql("reading nonces"))?;
        for row in rows {
            let (account, nonce) = row.map_err(self.sql("reading nonces"))?;
            nonces.insert(
                self.account_col(&account, "account")?,
                self.u64_col(nonce, "nonce")?,
            );
        }
        Ok(LedgerState {
            genesis: self.params.genesis_hash,
            owner: self.params.owner,
            max_uids: self.params.max_uids,
            reveal_delay: self.params.reveal_delay,
            immunity_period: self.params.immunity_period,
            neurons,
            nonces,
            emission: load_emission(self, tx)?.into_iter().collect(),
        })
    }

    /// Check, include and persist one extrinsic into the block after `head`.
    fn include(
        &self,
        tx: &Transaction<'_>,
        head: BlockRef,
        state: &LedgerState,
        ext: &SignedExtrinsic,
    ) -> Result<Receipt, ChainError> {
        let block = head.number + 1;
        let effect = rules::check(state, ext, block)?;
        let index: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM extrinsics WHERE block = ?1",
                [to_i64(block)],
                |r| r.get(0),
            )
            .map_err(self.sql("counting extrinsics"))?;
        let bytes = ext.encode();
        let hash = Digest::of(&bytes);
        tx.execute(
            "INSERT INTO extrinsics(block, idx, signer, nonce, kind, hash, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                to_i64(block),
                index,
                ext.signer.as_bytes().as_slice(),
                to_i64(ext.nonce),
                ext.call.kind(),
                hash.as_bytes().as_slice(),
                bytes
            ],
        )
        .map_err(self.sql("storing the extrinsic"))?;
        tx.execute(
            "INSERT INTO accounts(account, nonce) VALUES (?1, 1) ON CONFLICT(account) DO UPDATE SET nonce = nonce + 1",
            [ext.signer.as_bytes().as_slice()],
        )
        .map_err(self.sql("advancing the nonce"))?;
        persist_effect(self, tx, &effect)?;
        Ok(Receipt {
            block,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            extrinsic_hash: hash,
            nonce: ext.nonce,
            kind: ext.call.kind().to_string(),
        })
    }

    /// Re-check the whole file: SQLite's own integrity check, every block hash from genesis,
    /// every signature, and a replay of every extrinsic through the rules that must rebuild the
    /// stored neurons, nonces, commitments, weights and emission exactly.
    pub fn verify(&self) -> Result<VerifyReport, ChainError> {
        self.with_head(false, |tx, head| {
            let check: String = tx
                .query_row("PRAGMA quick_check", [], |r| r.get(0))
                .map_err(self.sql("running quick_check"))?;
            if check != "ok" {
                return Err(self.corrupt(format!("SQLite quick_check: {check}")));
            }
            let raw = self.read_all_extrinsics(tx)?;
            self.check_block_chain(tx, &raw, head)?;
            let mut decoded = BTreeMap::new();
            for (&block, list) in &raw {
                let mut exts = Vec::with_capacity(list.len());
                for (idx, bytes) in list.iter().enumerate() {
                    exts.push(
                        SignedExtrinsic::decode(bytes)
                            .map_err(|e| self.corrupt(format!("extrinsic {block}/{idx}: {e}")))?,
                    );
                }
                decoded.insert(block, exts);
            }
            let replayed = replay(&self.params, &decoded, head.number)
                .map_err(|e| self.corrupt(e.to_string()))?;
            self.compare_with_replay(tx, &replayed)?;
            Ok(VerifyReport {
                head,
                blocks: head.number + 1,
                extrinsics: raw.values().map(|l| l.len() as u64).sum(),
            })
        })
    }

    /// Every stored extrinsic's bytes by block, in order, each checked against its stored hash.
    fn read_all_extrinsics(
        &self,
        tx: &Transaction<'_>,
    ) -> Result<BTreeMap<u64, Vec<Vec<u8>>>, ChainError> {
        let mut stmt = tx
            .prepare("SELECT block, idx, bytes, hash FROM extrinsics ORDER BY block, idx")
            .map_err(self.sql("reading extrinsics"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(self.sql("reading extrinsics"))?;
        let mut by_block: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
        for row in rows {
            let (block, idx, bytes, hash) = row.map_err(self.sql("reading extrinsics"))?;
            let block = self.u64_col(block, "extrinsic block")?;
            let list = by_block.entry(block).or_default();
            if idx != list.len() as i64 {
                return Err(self.corrupt(format!(
                    "block {block} skips extrinsic index {}",
                    list.len()
                )));
            }
            if Digest::of(&bytes).as_bytes().as_slice() != hash.as_slice() {
                return Err(self.corrupt(format!(
                    "extrinsic {block}/{idx} does not match its stored hash"
                )));
            }
            list.push(bytes);
        }
        Ok(by_block)
    }

    /// Blocks 0..=head exist, block 0 is genesis, and each later block's hash follows from its
    /// parent and the extrinsics stored for it.
    fn check_block_chain(
        &self,
        tx: &Transaction<'_>,
        extrinsics: &BTreeMap<u64, Vec<Vec<u8>>>,
        head: BlockRef,
    ) -> Result<(), ChainError> {
        let mut stmt = tx
            .prepare("SELECT number, hash, parent, contents, extrinsic_count FROM blocks ORDER BY number")
            .map_err(self.sql("reading blocks"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(self.sql("reading blocks"))?;
        let mut expected_number = 0u64;
        let mut prev = Digest::from_bytes([0; 32]);
        let none: Vec<Vec<u8>> = Vec::new();
        for row in rows {
            let (number, hash, parent, contents, count) =
                row.map_err(self.sql("reading blocks"))?;
            let number = self.u64_col(number, "block number")?;
            if number != expected_number {
                return Err(self.corrupt(format!("block {expected_number} is missing")));
            }
            let hash = self.digest_col(&hash, "block hash")?;
            let parent = self.digest_col(&parent, "parent hash")?;
            let contents = self.digest_col(&contents, "contents hash")?;
            let list = extrinsics.get(&number).unwrap_or(&none);
            if number == 0 {
                if hash != self.params.genesis_hash || !list.is_empty() {
                    return Err(self.corrupt("block 0 is not the genesis block".into()));
                }
            } else {
                let chains = parent == prev
                    && contents == contents_hash(list.iter().map(Vec::as_slice))
                    && count == list.len() as i64
                    && hash == block_hash(&prev, number, &contents);
                if !chains {
                    return Err(self.corrupt(format!(
                        "block {number} does not chain: its hash, parent or contents do not match"
                    )));
                }
            }
            prev = hash;
            expected_number += 1;
        }
        if expected_number != head.number + 1 {
            return Err(self.corrupt("the block table does not end at the head".into()));
        }
        Ok(())
    }

    fn compare_with_replay(
        &self,
        tx: &Transaction<'_>,
        replayed: &Replayed,
    ) -> Result<(), ChainError> {
        let differs =
            |what: &str| self.corrupt(format!("{what} differ from a replay of the extrinsics"));
        if load_neurons(self, tx)? != replayed.state.neurons {
            return Err(differs("the registered neurons"));
        }
        if self.load_state(tx)?.nonces != replayed.state.nonces {
            return Err(differs("the account nonces"));
        }
        if load_all_commitments(self, tx)? != replayed.commitments {
            return Err(differs("the stored commitments"));
        }
        let stored_weights: WeightsByValidator = load_weights(self, tx)?
            .into_iter()
            .map(|w| (w.validator_uid, (w.set_block, w.weights)))
            .collect();
        if stored_weights != replayed.weights {
            return Err(differs("the stored weights"));
        }
        let stored_emission: BTreeMap<u16, u64> = load_emission(self, tx)?
            .into_iter()
            .filter(|&(_, r)| r > 0)
            .collect();
        if stored_emission != replayed.emission {
            return Err(differs("the accrued emission amounts"));
        }
        Ok(())
    }
}

/// Map SQLite's corruption and not-a-database codes to clear errors.
fn classify(path: &Path, what: &'static str, source: rusqlite::Error) -> ChainError {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(e, _) = &source {
        match e.code {
            ErrorCode::DatabaseCorrupt => {
                return ChainError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("{what}: {source}"),
                }
            }
            ErrorCode::NotADatabase => {
                return ChainError::NotAChain {
                    path: path.to_path_buf(),
                    reason: format!("{what}: {source}"),
                }
            }
            _ => {}
        }
    }
    ChainError::Sqlite {
        path: path.to_path_buf(),
        what,
        source: Box::new(source),
    }
}

fn read_params(conn: &Connection, path: &Path) -> Result<ChainParams, ChainError> {
    let corrupt = |reason: String| ChainError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut stmt = conn.prepare("SELECT key, value FROM meta").map_err(|e| {
        match classify(path, "reading meta", e) {
            ChainError::Sqlite { .. } => ChainError::NotAChain {
                path: path.to_path_buf(),
                reason: "it has no koth meta table".into(),
            },
            other => other,
        }
    })?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(|e| classify(path, "reading meta", e))?;
    let mut meta = BTreeMap::new();
    for row in rows {
        let (k, v) = row.map_err(|e| classify(path, "reading meta", e))?;
        meta.insert(k, v);
    }
    if meta.get("magic").map(String::as_str) != Some(MAGIC) {
        return Err(ChainError::NotAChain {
            path: path.to_path_buf(),
            reason: "its meta table has no koth-chain magic".into(),
        });
    }
    let get = |k: &str| {
        meta.get(k)
            .ok_or_else(|| corrupt(format!("meta key {k:?} is missing")))
    };
    fn num<T: std::str::FromStr>(
        v: &str,
        k: &str,
        corrupt: &dyn Fn(String) -> ChainError,
    ) -> Result<T, ChainError> {
        v.parse()
            .map_err(|_| corrupt(format!("meta key {k:?} has value {v:?}, not a number")))
    }
    let stated_genesis = Digest::from_hex(get("genesis_hash")?)
        .map_err(|e| corrupt(format!("meta genesis_hash: {e}")))?;
    let owner =
        AccountId::from_ss58(get("owner")?).map_err(|e| corrupt(format!("meta owner: {e}")))?;
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(get("genesis_nonce")?, &mut nonce)
        .map_err(|_| corrupt("meta genesis_nonce is not 32 bytes of hex".into()))?;
    let params = ChainParams {
        netuid: num(get("netuid")?, "netuid", &corrupt)?,
        genesis_hash: stated_genesis,
        genesis_time_ms: num(get("genesis_time_ms")?, "genesis_time_ms", &corrupt)?,
        block_time_ms: num(get("block_time_ms")?, "block_time_ms", &corrupt)?,
        reveal_delay: num(get("reveal_delay")?, "reveal_delay", &corrupt)?,
        emission_per_block_rao: num(
            get("emission_per_block_rao")?,
            "emission_per_block_rao",
            &corrupt,
        )?,
        max_uids: num(get("max_uids")?, "max_uids", &corrupt)?,
        immunity_period: match meta.get("immunity_period") {
            Some(v) => Some(num(v, "immunity_period", &corrupt)?),
            None => None,
        },
        owner,
    };
    let init = InitParams {
        netuid: params.netuid,
        block_time_ms: params.block_time_ms,
        reveal_delay: params.reveal_delay,
        emission_per_block_rao: params.emission_per_block_rao,
        max_uids: params.max_uids,
        owner: params.owner,
    };
    if params.block_time_ms == 0
        || genesis_hash_with(
            &init,
            params.immunity_period,
            params.genesis_time_ms,
            &nonce,
        ) != params.genesis_hash
    {
        return Err(corrupt(
            "the parameters in meta do not hash to the genesis hash (edited by hand?)".into(),
        ));
    }
    Ok(params)
}

fn load_neurons(chain: &EmbeddedChain, tx: &Transaction<'_>) -> Result<Vec<Neuron>, ChainError> {
    let mut stmt = tx
        .prepare("SELECT uid, hotkey, coldkey, validator_permit, registered_block FROM neurons ORDER BY uid")
        .map_err(chain.sql("reading neurons"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(chain.sql("reading neurons"))?;
    let mut out = Vec::new();
    for row in rows {
        let (uid, hotkey, coldkey, permit, block) = row.map_err(chain.sql("reading neurons"))?;
        let uid = chain.u16_col(uid, "uid")?;
        if usize::from(uid) != out.len() {
            return Err(chain.corrupt(format!(
                "uid {} is missing from the neuron table",
                out.len()
            )));
        }
        out.push(Neuron {
            uid,
            hotkey: chain.account_col(&hotkey, "hotkey")?,
            coldkey: chain.account_col(&coldkey, "coldkey")?,
            validator_permit: permit != 0,
            registered_block: chain.u64_col(block, "registration block")?,
        });
    }
    Ok(out)
}

fn load_all_commitments(
    chain: &EmbeddedChain,
    tx: &Transaction<'_>,
) -> Result<Vec<StoredCommitment>, ChainError> {
    query_commitments(
        chain,
        tx,
        "SELECT uid, hotkey, payload, commit_block, reveal_block FROM commitments ORDER BY id",
        [],
    )
}

fn query_commitments<P: rusqlite::Params>(
    chain: &EmbeddedChain,
    tx: &Transaction<'_>,
    sql: &str,
    p: P,
) -> Result<Vec<StoredCommitment>, ChainError> {
    let mut stmt = tx.prepare(sql).map_err(chain.sql("reading commitments"))?;
    let rows = stmt
        .query_map(p, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(chain.sql("reading commitments"))?;
    let mut out = Vec::new();
    for row in rows {
        let (uid, hotkey, payload, commit_block, reveal_block) =
            row.map_err(chain.sql("reading commitments"))?;
        out.push(StoredCommitment {
            uid: chain.u16_col(uid, "uid")?,
            hotkey: chain.account_col(&hotkey, "hotkey")?,
            payload,
            commit_block: chain.u64_col(commit_block, "commit block")?,
            reveal_block: chain.u64_col(reveal_block, "reveal block")?,
        });
    }
    Ok(out)
}

/// Only for rows whose reveal block is sealed: every caller's SQL filters on it.
fn to_reveal(c: StoredCommitment) -> Reveal {
    Reveal {
        hotkey: c.hotkey,
        uid: c.uid,
        payload: c.payload,
        commit_block: c.commit_block,
        reveal_block: c.reveal_block,
    }
}

fn load_weights(
    chain: &EmbeddedChain,
    tx: &Transaction<'_>,
) -> Result<Vec<ValidatorWeights>, ChainError> {
    let mut stmt = tx
        .prepare("SELECT w.validator_uid, n.hotkey, w.set_block, w.weights FROM weights w JOIN neurons n ON n.uid = w.validator_uid ORDER BY w.validator_uid")
        .map_err(chain.sql("reading weights"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(chain.sql("reading weights"))?;
    let mut out = Vec::new();
    for row in rows {
        let (uid, hotkey, block, json) = row.map_err(chain.sql("reading weights"))?;
        let weights: Vec<(u16, u16)> = serde_json::from_str(&json)
            .map_err(|e| chain.corrupt(format!("weights of uid {uid}: {e}")))?;
        out.push(ValidatorWeights {
            validator_uid: chain.u16_col(uid, "uid")?,
            validator_hotkey: chain.account_col(&hotkey, "hotkey")?,
            set_block: chain.u64_col(block, "weights block")?,
            weights,
        });
    }
    Ok(out)
}

/// Weights of validators that hold a permit, as the emission split wants them.
fn load_voting_weights(
    chain: &EmbeddedChain,
    tx: &Transaction<'_>,
) -> Result<BTreeMap<u16, Vec<(u16, u16)>>, ChainError> {
    let neurons = load_neurons(chain, tx)?;
    Ok(load_weights(chain, tx)?
        .into_iter()
        .filter(|w| {
            neurons
                .get(usize::from(w.validator_uid))
                .is_some_and(|n| n.validator_permit)
        })
        .map(|w| (w.validator_uid, w.weights))
        .collect())
}

fn load_emission(
    chain: &EmbeddedChain,
    tx: &Transaction<'_>,
) -> Result<Vec<(u16, u64)>, ChainError> {
    let mut stmt = tx
        .prepare("SELECT uid, rao FROM emission ORDER BY uid")
        .map_err(chain.sql("reading emission"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .map_err(chain.sql("reading emission"))?;
    let mut out = Vec::new();
    for row in rows {
        let (uid, rao) = row.map_err(chain.sql("reading emission"))?;
        out.push((chain.u16_col(uid, "uid")?, chain.u64_col(rao, "emission")?));
    }
    Ok(out)
}

fn persist_effect(
    chain: &EmbeddedChain,
    tx: &Transaction<'_>,
    effect: &Effect,
) -> Result<(), ChainError> {
    match effect {
        Effect::Registered(n) => {
            tx.execute(
                "INSERT INTO neurons(uid, hotkey, coldkey, validator_permit, registered_block) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    i64::from(n.uid),
                    n.hotkey.as_bytes().as_slice(),
                    n.coldkey.as_bytes().as_slice(),
                    i64::from(n.validator_permit),
                    to_i64(n.registered_block)
                ],
            )
            .map_err(chain.sql("registering"))?;
        }
        Effect::Replaced { neuron: n, .. } => {
            tx.execute(
                "UPDATE neurons SET hotkey = ?2, coldkey = ?3, validator_permit = ?4, registered_block = ?5 WHERE uid = ?1",
                params![
                    i64::from(n.uid),
                    n.hotkey.as_bytes().as_slice(),
                    n.coldkey.as_bytes().as_slice(),
                    i64::from(n.validator_permit),
                    to_i64(n.registered_block)
                ],
            )
            .map_err(chain.sql("replacing a pruned neuron"))?;
            // The uid starts afresh: no accrued emission, and no weights of the pruned hotkey.
            tx.execute("DELETE FROM emission WHERE uid = ?1", [i64::from(n.uid)])
                .map_err(chain.sql("resetting a pruned uid's emission"))?;
            tx.execute(
                "DELETE FROM weights WHERE validator_uid = ?1",
                [i64::from(n.uid)],
            )
            .map_err(chain.sql("dropping a pruned uid's weights"))?;
        }
        Effect::PermitGranted { uid } => {
            tx.execute(
                "UPDATE neurons SET validator_permit = 1 WHERE uid = ?1",
                [i64::from(*uid)],
            )
            .map_err(chain.sql("granting a permit"))?;
        }
        Effect::Committed {
            uid,
            hotkey,
            payload,
            commit_block,
            reveal_block,
        } => {
            tx.execute(
                "INSERT INTO commitments(uid, hotkey, payload, commit_block, reveal_block) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![i64::from(*uid), hotkey.as_bytes().as_slice(), payload, to_i64(*commit_block), to_i64(*reveal_block)],
            )
            .map_err(chain.sql("storing the commitment"))?;
        }
        Effect::WeightsSet {
            validator_uid,
            weights,
        } => {
            let json = serde_json::to_string(weights)
                .map_err(|e| chain.corrupt(format!("encoding weights: {e}")))?;
            let block: i64 = tx
                .query_row("SELECT MAX(number) + 1 FROM blocks", [], |r| r.get(0))
                .map_err(chain.sql("storing weights"))?;
            tx.execute(
                "INSERT INTO weights(validator_uid, set_block, weights) VALUES (?1, ?2, ?3)
                 ON CONFLICT(validator_uid) DO UPDATE SET set_block = ?2, weights = ?3",
                params![i64::from(*validator_uid), block, json],
            )
            .map_err(chain.sql("storing weights"))?;
        }
    }
    Ok(())
}

impl Chain for EmbeddedChain {
    fn params(&self) -> &ChainParams {
        &self.params
    }

    fn block(&self) -> Result<BlockRef, ChainError> {
        self.with_head(false, |_, head| Ok(head))
    }

    fn block_hash(&self, number: u64) -> Result<Option<Digest>, ChainError> {
        self.with_head(false, |tx, _| {
            let hash: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT hash FROM blocks WHERE number = ?1",
                    [to_i64(number)],
                    |r| r.get(0),
                )
                .optional()
                .map_err(self.sql("reading a block hash"))?;
            hash.map(|h| self.digest_col(&h, "block hash")).transpose()
        })
    }

    fn nonce(&self, account: &AccountId) -> Result<u64, ChainError> {
        self.with_head(false, |tx, _| {
            let nonce: Option<i64> = tx
                .query_row(
                    "SELECT nonce FROM accounts WHERE account = ?1",
                    [account.as_bytes().as_slice()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(self.sql("reading a nonce"))?;
            nonce.map_or(Ok(0), |n| self.u64_col(n, "nonce"))
        })
    }

    fn submit(&self, extrinsic: &SignedExtrinsic) -> Result<Receipt, ChainError> {
        self.with_head(true, |tx, head| {
            let state = self.load_state(tx)?;
            self.include(tx, head, &state, extrinsic)
        })
    }

    fn sign_and_submit(&self, signer: &Keypair, call: Call) -> Result<Receipt, ChainError> {
        self.with_head(true, |tx, head| {
            let state = self.load_state(tx)?;
            let ext = SignedExtrinsic::sign(
                signer,
                self.params.genesis_hash,
                state.nonce(&signer.account()),
                call,
            );
            self.include(tx, head, &state, &ext)
        })
    }

    fn revealed_commitments(&self) -> Result<Vec<Reveal>, ChainError> {
        self.with_head(false, |tx, head| {
            let rows = query_commitments(
                self,
                tx,
                "SELECT uid, hotkey, payload, commit_block, reveal_block FROM commitments
                 WHERE reveal_block <= ?1 ORDER BY uid, commit_block, id",
                [to_i64(head.number)],
            )?;
            // Rows are ordered by uid then age: the last row of each uid is its newest reveal.
            let mut newest: BTreeMap<u16, Reveal> = BTreeMap::new();
            for row in rows {
                newest.insert(row.uid, to_reveal(row));
            }
            Ok(newest.into_values().collect())
        })
    }

    fn revealed_since(&self, after_block: u64) -> Result<Vec<Reveal>, ChainError> {
        self.with_head(false, |tx, head| {
            let rows = query_commitments(
                self,
                tx,
                "SELECT uid, hotkey, payload, commit_block, reveal_block FROM commitments
                 WHERE reveal_block <= ?1 AND reveal_block > ?2 ORDER BY reveal_block, commit_block, id",
                [to_i64(head.number), to_i64(after_block)],
            )?;
            Ok(rows.into_iter().map(to_reveal).collect())
        })
    }

    fn weights(&self) -> Result<Vec<ValidatorWeights>, ChainError> {
        self.with_head(false, |tx, _| load_weights(self, tx))
    }

    fn metagraph(&self) -> Result<Metagraph, ChainError> {
        self.with_head(false, |tx, head| {
            Ok(Metagraph {
                netuid: self.params.netuid,
                block: head,
                neurons: load_neurons(self, tx)?,
            })
        })
    }

    fn emission(&self) -> Result<Vec<EmissionEntry>, ChainError> {
        self.with_head(false, |tx, _| {
            let paid: BTreeMap<u16, u64> = load_emission(self, tx)?.into_iter().collect();
            Ok(load_neurons(self, tx)?
                .into_iter()
                .map(|n| EmissionEntry {
                    uid: n.uid,
                    hotkey: n.hotkey,
                    rao: paid.get(&n.uid).copied().unwrap_or(0),
                })
                .collect())
        })
    }
}
