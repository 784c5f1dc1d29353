"""The state machine of the loopback subtensor node: one subnet, blocks, a transaction pool, and the
parts of subtensor's runtime that koth touches.

Semantics follow opentensor/subtensor at the commit whose runtime is spec_version 343 (3975359dd,
"bump spec", 2025-11-06), the version of the pinned metadata:
  - pallets/commitments/src/lib.rs            set_commitment, reveal_timelocked_commitments
  - pallets/commitments/src/types.rs          Data, len_for_rate_limit, size bounds
  - pallets/subtensor/src/subnets/weights.rs  internal_set_weights, internal_commit_timelocked_weights,
                                              check_rate_limit, check_validator_permit, check_length,
                                              get_epoch_index, max_weight_limited
  - pallets/subtensor/src/coinbase/reveal_commits.rs  reveal_crv3_commits (WeightsTlockPayload)
  - pallets/subtensor/src/coinbase/run_coinbase.rs    should_run_epoch, blocks_until_next_epoch,
                                                      BlocksSinceLastStep / LastMechansimStepBlock
  - pallets/subtensor/src/transaction_extension.rs    pool validation (min stake, reveal round)
  - pallets/subtensor/src/epoch/math.rs       vec_u16_max_upscale_to_u16, check_vec_max_limited
  - pallets/subtensor/src/subnets/mechanism.rs  storage index = mecid * 4096 + netuid
  - runtime/src/lib.rs, runtime/src/check_nonce.rs  MaxCommitFields 3, free deposits,
                                              BlockHashCount 2400, nonce rules (Pays::No calls need
                                              no account)
The runtime's storage layout comes from the metadata; every key and value is encoded by the SDK
(scale_env.Scale). What is not simulated is listed in the README section of loopback_node.py.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import bittensor_drand
from bittensor_wallet import Keypair

from scale_env import DecodeError, DecodedExtrinsic, Scale, blake2_256, hex0x, plain, unhex


def _scale_compact(n: int) -> bytes:
    if n < 1 << 6:
        return bytes([n << 2])
    if n < 1 << 14:
        return ((n << 2) | 1).to_bytes(2, "little")
    if n < 1 << 30:
        return ((n << 2) | 2).to_bytes(4, "little")
    body = n.to_bytes((n.bit_length() + 7) // 8, "little")
    return bytes([((len(body) - 4) << 2) | 3]) + body


def chain_decrypt(ciphertext: bytes, reveal_round: int, signature_hex: str) -> bytes:
    """Decrypt what the chain stores (a bare timelock ciphertext, as subtensor deserializes
    it in reveal_timelocked_commitments / reveal_crv3_commits) with the SDK.

    The SDK's decrypt_with_signature takes bittensor-drand's `UserData` envelope (SCALE
    `Vec<u8>` ciphertext, then the round as u64), never what is on chain; wrap the bare bytes
    in it, as the SDK's own encrypt_at_round would have."""
    envelope = (_scale_compact(len(ciphertext)) + bytes(ciphertext)
                + int(reveal_round).to_bytes(8, "little"))
    return bytes(bittensor_drand.decrypt_with_signature(envelope, signature_hex))


def bare_ciphertext(envelope: bytes) -> bytes:
    """The ciphertext inside an SDK `UserData` envelope (what goes on chain)."""
    b = bytes(envelope)
    mode = b[0] & 3
    if mode == 0:
        n, off = b[0] >> 2, 1
    elif mode == 1:
        n, off = int.from_bytes(b[:2], "little") >> 2, 2
    elif mode == 2:
        n, off = int.from_bytes(b[:4], "little") >> 2, 4
    else:
        k = (b[0] >> 2) + 4
        n, off = int.from_bytes(b[1:1 + k], "little"), 1 + k
    if off + n + 8 != len(b):
        raise ValueError(f"not an SDK envelope: {len(b)} bytes, ciphertext length {n}")
    return b[off:off + n]

GLOBAL_MAX_SUBNET_COUNT = 4096  # pallets/subtensor/src/subnets/mechanism.rs
BLOCK_HASH_COUNT = 2400  # runtime/src/lib.rs BlockHashCount
MAX_COMMIT_FIELDS = 3  # runtime/src/lib.rs MaxCommitFieldsInner
MAX_TIMELOCK_COMMITMENT_SIZE_BYTES = 1024  # pallets/commitments/src/types.rs
MAX_BIGRAW_COMMITMENT_SIZE_BYTES = 512
MAX_CRV3_COMMIT_SIZE_BYTES = 5000  # pallets/subtensor/src/lib.rs
MAX_REVEALS = 10  # pallets/commitments/src/lib.rs
MAX_UNREVEALED_TIMELOCKED_COMMITS = 10  # weights.rs internal_commit_timelocked_weights
BLOCK_HASH_STORAGE_WINDOW = 256  # System.BlockHash entries written to storage (see README)
U16_MAX = 0xFFFF

# sp_runtime InvalidTransaction, as the node's RPC prints it (code 1010).
INVALID_CALL = "Transaction call is not expected"
INVALID_STALE = "Transaction is outdated"
INVALID_BAD_PROOF = "Transaction has a bad signature"
INVALID_ANCIENT = "Transaction has an ancient birth block"
INVALID_BAD_SIGNER = "Invalid signing address"
# common/src/lib.rs CustomTransactionError at spec 343 (u8 codes)
CUSTOM_STAKE_AMOUNT_TOO_LOW = 1
CUSTOM_INVALID_REVEAL_ROUND = 15


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(f"{code} {message}: {data}")
        self.code, self.message, self.data = code, message, data

    def obj(self) -> dict:
        o = {"code": self.code, "message": self.message}
        if self.data is not None:
            o["data"] = self.data
        return o


def invalid(reason: str) -> RpcError:
    return RpcError(1010, "Invalid Transaction", reason)


class DispatchFailed(Exception):
    """A dispatch error: the extrinsic is in the block, its nonce is spent, its effects are not."""

    def __init__(self, pallet: str, error: str):
        super().__init__(f"{pallet}.{error}")
        self.pallet, self.error = pallet, error


# ---- I32F32 fixed point (substrate_fixed) for the weight upscaling checks ------------------------
FRAC = 32


def _fx(n: int) -> int:
    return n << FRAC


def _fx_div(a: int, b: int) -> int:  # operands non-negative; fixed's division truncates
    return (a << FRAC) // b


def _fx_mul(a: int, b: int) -> int:
    return (a * b) >> FRAC


def _fx_round_to_u16(raw: int) -> int:  # round half away from zero, saturate to u16
    return max(0, min(U16_MAX, (raw + (1 << (FRAC - 1))) >> FRAC))


def vec_u16_max_upscale_to_u16(values: list[int]) -> list[int]:
    """epoch/math.rs vec_max_upscale_to_u16 on I32F32."""
    if not values:
        return []
    vmax = max(values)
    if vmax == 0:
        return [0 for _ in values]
    if vmax > 32768:
        factor = _fx_div(_fx(U16_MAX), _fx(vmax))
        return [_fx_round_to_u16(_fx_mul(_fx(e), factor)) for e in values]
    return [_fx_round_to_u16(_fx_div(_fx(e * U16_MAX), _fx(vmax))) for e in values]


def check_vec_max_limited(values: list[int], max_limit: int) -> bool:
    """epoch/math.rs check_vec_max_limited."""
    limit = _fx_div(_fx(max_limit), _fx(U16_MAX))
    total = sum(values)
    if not values:
        return True
    if total == 0:
        return max(_fx(v) for v in values) <= limit
    return max(_fx_div(_fx(v), _fx(total)) for v in values) <= limit


# ---- state -------------------------------------------------------------------------------------


@dataclass
class Neuron:
    uid: int
    hotkey: bytes
    coldkey: bytes
    validator_permit: bool
    stake: int
    block_at_registration: int = 0


@dataclass
class Block:
    number: int
    hash: bytes
    header: dict
    extrinsics: list  # raw bytes
    storage: Optional[dict]  # key bytes -> value bytes; None once pruned
    tx_hashes: list = field(default_factory=list)


@dataclass
class PoolTx:
    xt: DecodedExtrinsic
    submitted_at: float


class Chain:
    """One subnet of subtensor, with blocks produced by `produce_block()`."""

    def __init__(self, scale: Scale, state: dict, *, seed: str = "koth-loopback",
                 finality_lag: int = 2, drand_start_round: int = 1000,
                 drand_rounds_per_block: int = 1, drand_signatures: Optional[dict] = None,
                 keep_blocks: int = 1200, log: Callable[[str], None] = print,
                 chain_name: str = "Bittensor (koth loopback)"):
        self.s = scale
        self.log = log
        self.seed = seed
        self.chain_name = chain_name
        self.finality_lag = max(0, int(finality_lag))
        self.drand_start_round = int(drand_start_round)
        self.drand_rounds_per_block = int(drand_rounds_per_block)
        self.drand_signatures = {int(r): s.lower().removeprefix("0x")
                                 for r, s in (drand_signatures or {}).items()}
        self.keep_blocks = max(8, int(keep_blocks))
        self._load_state(state)
        self.pool: "OrderedDict[bytes, PoolTx]" = OrderedDict()
        self.blocks: list[Block] = []
        self.storage: dict[bytes, bytes] = {}
        self._desired: dict = {}
        self.events: list = []
        self.block_listeners: list = []  # callables(Block) after each new block
        self.drop_listeners: list = []  # callables(tx hash, reason) when the pool drops a tx
        self.number = 0
        self.timestamp_ms = int(state.get("genesis_time_ms", int(time.time() * 1000)))
        self.block_time_ms = 0
        self.last_stored_round = self._drand_round_at(0)
        self._genesis()

    # ---- initial state ---------------------------------------------------------------------

    def _load_state(self, st: dict) -> None:
        s = self.s
        self.netuid = int(st["netuid"])
        if self.netuid == 0 or self.netuid >= GLOBAL_MAX_SUBNET_COUNT:
            raise ValueError("netuid must be in 1..4095 (0 is the root network)")

        def param(name, item, pallet="SubtensorModule"):
            return st[name] if name in st else s.default(pallet, item)

        self.tempo = int(param("tempo", "Tempo"))
        self.commit_reveal_enabled = bool(st.get("commit_reveal_weights_enabled",
                                                 s.default("SubtensorModule",
                                                           "CommitRevealWeightsEnabled")))
        self.weights_set_rate_limit = int(param("weights_set_rate_limit", "WeightsSetRateLimit"))
        self.weights_version_key = int(param("weights_version_key", "WeightsVersionKey"))
        self.min_allowed_weights = int(param("min_allowed_weights", "MinAllowedWeights"))
        self.max_weights_limit = int(param("max_weights_limit", "MaxWeightsLimit"))
        self.max_allowed_uids = int(param("max_allowed_uids", "MaxAllowedUids"))
        self.reveal_period_epochs = int(param("reveal_period_epochs", "RevealPeriodEpochs"))
        self.commit_reveal_version = int(param("commit_reveal_weights_version",
                                               "CommitRevealWeightsVersion"))
        self.stake_threshold = int(param("stake_threshold", "StakeThreshold"))
        self.mechanism_count = int(param("mechanism_count", "MechanismCountCurrent"))
        self.max_space = int(param("max_space", "MaxSpace", "Commitments"))
        self.subnet_owner = s.account(st["subnet_owner_coldkey_ss58"]) if st.get(
            "subnet_owner_coldkey_ss58") else None
        self.subnet_owner_hotkey = s.account(st["subnet_owner_hotkey_ss58"]) if st.get(
            "subnet_owner_hotkey_ss58") else None
        self.neurons: list[Neuron] = []
        for uid, n in enumerate(st.get("neurons", [])):
            self.neurons.append(Neuron(
                uid=uid, hotkey=s.account(n["hotkey_ss58"]),
                coldkey=s.account(n.get("coldkey_ss58") or n["hotkey_ss58"]),
                validator_permit=bool(n.get("validator_permit", False)),
                stake=int(n.get("stake", 0)),
                block_at_registration=int(n.get("block_at_registration", 0))))
        if len({n.hotkey for n in self.neurons}) != len(self.neurons):
            raise ValueError("a hotkey is registered twice")
        if self.subnet_owner is None and self.neurons:
            self.subnet_owner = self.neurons[0].coldkey
        self.uid_of = {n.hotkey: n.uid for n in self.neurons}
        self.balances = {s.account(a): int(v) for a, v in st.get("balances", {}).items()}
        self.nonces: dict[bytes, int] = {}
        for n in self.neurons:
            self.balances.setdefault(n.coldkey, 0)
        # Weights and LastUpdate are keyed by NetUidStorageIndex (mecid * 4096 + netuid).
        self.weights: dict[tuple[int, int], list] = {}
        self.last_update: dict[int, list[int]] = {}
        for w in st.get("weights", []):
            idx = int(w.get("mecid", 0)) * GLOBAL_MAX_SUBNET_COUNT + self.netuid
            self.weights[(idx, int(w["uid"]))] = [(int(u), int(v)) for u, v in w["weights"]]
        for idx_s, lu in st.get("last_update", {}).items():
            self.last_update[int(idx_s)] = [int(x) for x in lu]
        # subnets/uids.rs append_neuron: registration sets LastUpdate[uid] = registration block.
        for mec in range(self.mechanism_count):
            self.last_update.setdefault(mec * GLOBAL_MAX_SUBNET_COUNT + self.netuid,
                                        [n.block_at_registration for n in self.neurons])
        self.commitments: dict[bytes, dict] = {}  # hotkey -> {deposit, block, fields}
        self.last_commitment: dict[bytes, int] = {}
        self.last_bonds_reset: dict[bytes, int] = {}
        self.used_space: dict[bytes, dict] = {}
        self.timelocked_index: set[tuple[int, bytes]] = set()
        self.revealed: dict[bytes, list] = {}
        for r in st.get("revealed_commitments", []):
            hk = s.account(r["hotkey_ss58"])
            data = r["data"]
            raw = unhex(data) if isinstance(data, str) and data.startswith("0x") else (
                data.encode() if isinstance(data, str) else bytes(data))
            self.revealed.setdefault(hk, []).append((raw, int(r.get("block", 0))))
        for c in st.get("commitments", []):
            hk = s.account(c["hotkey_ss58"])
            fields = [self._data_from_json(f) for f in c["fields"]]
            self.commitments[hk] = {"deposit": 0, "block": int(c.get("block", 0)),
                                    "fields": fields}
            if any(f[0] == "TimelockEncrypted" for f in fields):
                self.timelocked_index.add((self.netuid, hk))
        # TimelockedWeightCommits[(netuid_index, epoch)] = [(who, commit_block, bytes, round)]
        self.tl_weight_commits: dict[tuple[int, int], list] = {}
        self.blocks_since_last_step = int(st.get("blocks_since_last_step", 0))
        self.last_mechanism_step_block = int(st.get("last_mechanism_step_block", 0))

    @staticmethod
    def _data_from_json(f: dict) -> tuple:
        kind = f["kind"]
        if kind == "Raw":
            return ("Raw", unhex(f["hex"]) if "hex" in f else f["text"].encode())
        if kind == "TimelockEncrypted":
            return ("TimelockEncrypted", unhex(f["encrypted"]), int(f["reveal_round"]))
        raise ValueError(f"unsupported commitment field kind in state file: {kind}")

    # ---- derived facts ---------------------------------------------------------------------

    def _drand_round_at(self, number: int) -> int:
        return self.drand_start_round + self.drand_rounds_per_block * number

    def pulses(self) -> dict[int, str]:
        """Drand.Pulses as stored: the rounds up to LastStoredRound whose signature we know."""
        return {r: sig for r, sig in self.drand_signatures.items()
                if r <= self.last_stored_round}

    def storage_index(self, mecid: int) -> int:
        return mecid * GLOBAL_MAX_SUBNET_COUNT + self.netuid

    def get_epoch_index(self, block: int) -> int:
        """weights.rs get_epoch_index (spec 343: (block + netuid + 1) / (tempo + 1))."""
        return (block + self.netuid + 1) // (self.tempo + 1)

    def blocks_until_next_epoch(self, block: int) -> int:
        if self.tempo == 0:
            return 2**64 - 1
        rem = (block + self.netuid + 1) % (self.tempo + 1)
        return self.tempo - rem

    def should_run_epoch(self, block: int) -> bool:
        return self.blocks_until_next_epoch(block) == 0

    def stake_of(self, hotkey: bytes) -> int:
        uid = self.uid_of.get(hotkey)
        return self.neurons[uid].stake if uid is not None else 0

    def check_weights_min_stake(self, hotkey: bytes) -> bool:
        # spec 343: no subnet-owner exemption; stake = alpha only (no root/tao weight modelled)
        return self.stake_of(hotkey) >= self.stake_threshold

    # ---- storage ---------------------------------------------------------------------------

    def _desired_storage(self) -> dict:
        """Every storage entry the node keeps, as {(pallet, item, params): python value}."""
        s, nu = self.s, self.netuid
        d: dict = {}
        ss = s.ss58
        d[("System", "Number", ())] = self.number
        parent = self.blocks[-1].hash if self.blocks else b"\x00" * 32
        if self.number > 0:
            d[("System", "ParentHash", ())] = hex0x(parent)
        lo = max(1, self.number - BLOCK_HASH_STORAGE_WINDOW)
        if self.blocks:
            d[("System", "BlockHash", (0,))] = hex0x(self.blocks[0].hash)
        for n in range(lo, self.number):
            d[("System", "BlockHash", (n,))] = hex0x(self.blocks[n].hash)
        accounts = set(self.balances) | set(self.nonces)
        for a in accounts:
            d[("System", "Account", (ss(a),))] = {
                "nonce": self.nonces.get(a, 0), "consumers": 0, "providers": 1,
                "sufficients": 0, "data": {"free": self.balances.get(a, 0), "reserved": 0,
                                           "frozen": 0, "flags": 1 << 127}}
        if self.events:
            d[("System", "Events", ())] = list(self.events)
            d[("System", "EventCount", ())] = len(self.events)
        d[("Timestamp", "Now", ())] = self.timestamp_ms
        sm = "SubtensorModule"
        d[(sm, "TotalNetworks", ())] = 1
        d[(sm, "NetworksAdded", (nu,))] = True
        d[(sm, "NetworkRegisteredAt", (nu,))] = 0
        d[(sm, "Tempo", (nu,))] = self.tempo
        d[(sm, "SubnetworkN", (nu,))] = len(self.neurons)
        d[(sm, "MaxAllowedUids", (nu,))] = self.max_allowed_uids
        d[(sm, "CommitRevealWeightsEnabled", (nu,))] = self.commit_reveal_enabled
        d[(sm, "WeightsSetRateLimit", (nu,))] = self.weights_set_rate_limit
        d[(sm, "WeightsVersionKey", (nu,))] = self.weights_version_key
        d[(sm, "MinAllowedWeights", (nu,))] = self.min_allowed_weights
        d[(sm, "MaxWeightsLimit", (nu,))] = self.max_weights_limit
        d[(sm, "RevealPeriodEpochs", (nu,))] = self.reveal_period_epochs
        d[(sm, "CommitRevealWeightsVersion", ())] = self.commit_reveal_version
        d[(sm, "StakeThreshold", ())] = self.stake_threshold
        d[(sm, "MechanismCountCurrent", (nu,))] = self.mechanism_count
        d[(sm, "BlocksSinceLastStep", (nu,))] = self.blocks_since_last_step
        d[(sm, "LastMechansimStepBlock", (nu,))] = self.last_mechanism_step_block
        if self.subnet_owner is not None:
            d[(sm, "SubnetOwner", (nu,))] = ss(self.subnet_owner)
        if self.subnet_owner_hotkey is not None:
            d[(sm, "SubnetOwnerHotkey", (nu,))] = ss(self.subnet_owner_hotkey)
        d[(sm, "ValidatorPermit", (nu,))] = [n.validator_permit for n in self.neurons]
        d[(sm, "Active", (nu,))] = [True for _ in self.neurons]
        for n in self.neurons:
            hk = ss(n.hotkey)
            d[(sm, "Uids", (nu, hk))] = n.uid
            d[(sm, "Keys", (nu, n.uid))] = hk
            d[(sm, "Owner", (hk,))] = ss(n.coldkey)
            d[(sm, "IsNetworkMember", (hk, nu))] = True
            d[(sm, "BlockAtRegistration", (nu, n.uid))] = n.block_at_registration
            d[(sm, "TotalHotkeyAlpha", (hk, nu))] = n.stake
        for mec in range(self.mechanism_count):
            idx = self.storage_index(mec)
            lu = self.last_update.get(idx)
            if lu is not None:
                d[(sm, "LastUpdate", (idx,))] = list(lu)  # copies: compared with last block's
        for (idx, uid), w in self.weights.items():
            d[(sm, "Weights", (idx, uid))] = list(w)
        for (idx, epoch), commits in self.tl_weight_commits.items():
            if commits:
                d[(sm, "TimelockedWeightCommits", (idx, epoch))] = [
                    (ss(who), blk, hex0x(c), rnd) for who, blk, c, rnd in commits]
        cm = "Commitments"
        d[(cm, "MaxSpace", ())] = self.max_space
        for hk, reg in self.commitments.items():
            d[(cm, "CommitmentOf", (nu, ss(hk)))] = {
                "deposit": reg["deposit"], "block": reg["block"],
                "info": {"fields": [[self._data_to_sdk(f) for f in reg["fields"]]]}}
        for hk, blk in self.last_commitment.items():
            d[(cm, "LastCommitment", (nu, ss(hk)))] = blk
        for hk, blk in self.last_bonds_reset.items():
            d[(cm, "LastBondsReset", (nu, ss(hk)))] = blk
        for hk, u in self.used_space.items():
            d[(cm, "UsedSpaceOf", (nu, ss(hk)))] = dict(u)
        if self.timelocked_index:
            d[(cm, "TimelockedIndex", ())] = [
                (n, ss(a)) for n, a in sorted(self.timelocked_index)]
        for hk, reveals in self.revealed.items():
            d[(cm, "RevealedCommitments", (nu, ss(hk)))] = [
                (hex0x(b), blk) for b, blk in reveals]
        d[("Drand", "LastStoredRound", ())] = self.last_stored_round
        pulses = self.pulses()
        if pulses:
            d[("Drand", "OldestStoredRound", ())] = min(pulses)
        for r, sig in pulses.items():
            sig_b = unhex(sig)
            d[("Drand", "Pulses", (r,))] = {"round": r,
                                            "randomness": hex0x(hashlib.sha256(sig_b).digest()),
                                            "signature": hex0x(sig_b)}
        return d

    @staticmethod
    def _data_to_sdk(f: tuple) -> dict:
        kind = f[0]
        if kind == "Raw":
            return {f"Raw{len(f[1])}": hex0x(f[1])}
        if kind == "TimelockEncrypted":
            return {"TimelockEncrypted": {"encrypted": hex0x(f[1]), "reveal_round": f[2]}}
        if kind in ("BlakeTwo256", "Sha256", "Keccak256", "ShaThree256", "BigRaw"):
            return {kind: hex0x(f[1])}
        return {kind: None}  # None, ResetBondsFlag

    def _flush_storage(self) -> None:
        """Re-encodes (with the SDK) the entries whose value changed since the last block."""
        desired = self._desired_storage()
        old = self._desired
        for k in old.keys() - desired.keys():
            self.storage.pop(self.s.key(*k), None)
        for k, v in desired.items():
            if k not in old or old[k] != v:
                pallet, item, params = k
                self.storage[self.s.key(pallet, item, params)] = self.s.encode_value(
                    pallet, item, v)
        self._desired = desired

    # ---- blocks ------------------------------------------------------------------------------

    def _genesis(self) -> None:
        self.number = 0
        self._flush_storage()
        header = {"parent_hash": hex0x(b"\x00" * 32), "number": 0,
                  "state_root": hex0x(blake2_256(b"koth-loopback-genesis:" + self.seed.encode())),
                  "extrinsics_root": hex0x(blake2_256(b"")), "digest": {"logs": []}}
        h = self.s.header_hash(header)
        self.blocks.append(Block(0, h, header, [], dict(self.storage)))
        self.log(f"genesis {hex0x(h)} netuid {self.netuid} with {len(self.neurons)} neurons")

    @property
    def genesis_hash(self) -> bytes:
        return self.blocks[0].hash

    @property
    def best(self) -> Block:
        return self.blocks[-1]

    @property
    def finalized(self) -> Block:
        return self.blocks[max(0, len(self.blocks) - 1 - self.finality_lag)]

    def block_by_hash(self, h: bytes) -> Optional[Block]:
        n = self._hash_index.get(h) if hasattr(self, "_hash_index") else None
        if n is None:
            self._hash_index = {b.hash: b.number for b in self.blocks}
            n = self._hash_index.get(h)
        return self.blocks[n] if n is not None else None

    def produce_block(self, now_ms: Optional[int] = None) -> Block:
        b = self.best.number + 1
        self.number = b
        self.timestamp_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        self.events = []
        # on_initialize, in pallet order: SubtensorModule (7) then Commitments (18). Pulses seen
        # here are those stored by the previous blocks.
        self._subtensor_block_step(b)
        self._reveal_timelocked_commitments(b)
        included, tx_hashes = self._apply_pool(b)
        # Drand pulses written in this block (write_pulse unsigned extrinsics).
        self.last_stored_round = self._drand_round_at(b)
        self._flush_storage()
        state_root = blake2_256(b"".join(
            len(k).to_bytes(4, "little") + k + len(v).to_bytes(4, "little") + v
            for k, v in sorted(self.storage.items())))
        header = {"parent_hash": hex0x(self.best.hash), "number": b,
                  "state_root": hex0x(state_root),
                  "extrinsics_root": hex0x(blake2_256(b"".join(blake2_256(x) for x in included))),
                  "digest": {"logs": []}}
        h = self.s.header_hash(header)
        blk = Block(b, h, header, included, dict(self.storage), tx_hashes)
        self.blocks.append(blk)
        if hasattr(self, "_hash_index"):
            self._hash_index[h] = b
        old = b - self.keep_blocks
        if old > 0 and self.blocks[old].storage is not None:
            self.blocks[old].storage = None
        for listener in list(self.block_listeners):
            try:
                listener(blk)
            except Exception as e:  # noqa: BLE001
                self.log(f"block listener failed: {e!r}")
        return blk

    # ---- the transaction pool ----------------------------------------------------------------

    def account_nonce(self, who: bytes) -> int:
        return self.nonces.get(who, 0)

    def account_next_index(self, who: bytes) -> int:
        """system_accountNextIndex: the state nonce, moved past this account's ready pool txs."""
        n = self.account_nonce(who)
        pending = {t.xt.nonce for t in self.pool.values() if t.xt.signer == who}
        while n in pending:
            n += 1
        return n

    def submit(self, raw: bytes) -> bytes:
        try:
            xt = self.s.decode_extrinsic(raw)
        except DecodeError as e:
            self.log(f"refused extrinsic: {e}")
            raise RpcError(1002, "Verification Error: Runtime error: Could not decode "
                                 "`RuntimeCall` / extrinsic", str(e))
        if xt.hash in self.pool:
            raise RpcError(1013, "Transaction Already Imported", None)
        if any(t.xt.signer == xt.signer and t.xt.nonce == xt.nonce for t in self.pool.values()):
            raise RpcError(1014, "Priority is too low: (0 vs 0)",
                           "The transaction has too low priority to replace another transaction "
                           "already in the pool.")
        try:
            self._validate(xt, self.best.number + 1)
        except RpcError as e:
            self.log(f"refused {xt.pallet}.{xt.call} from {xt.signer_ss58} nonce {xt.nonce}: "
                     f"{e.message}: {e.data}")
            raise
        self.pool[xt.hash] = PoolTx(xt, time.time())
        self.log(f"accepted into pool {hex0x(xt.hash)}: {xt.pallet}.{xt.call} from "
                 f"{xt.signer_ss58} nonce {xt.nonce}")
        return xt.hash

    SUPPORTED_CALLS = {
        ("Commitments", "set_commitment"),
        ("SubtensorModule", "set_weights"),
        ("SubtensorModule", "set_mechanism_weights"),
        ("SubtensorModule", "commit_timelocked_weights"),
        ("SubtensorModule", "commit_timelocked_mechanism_weights"),
        ("System", "remark"),
    }

    def _validate(self, xt: DecodedExtrinsic, current: int) -> None:
        """The checks a node's pool (and block builder) runs: signed payload, nonce, the
        subtensor transaction extension. Raises RpcError (1010) like Substrate's RPC."""
        if (xt.pallet, xt.call) not in self.SUPPORTED_CALLS:
            raise invalid(f"{INVALID_CALL} (the loopback node only implements "
                          f"{sorted(f'{p}.{c}' for p, c in self.SUPPORTED_CALLS)})")
        self._check_size_bounds(xt)
        if xt.signer == b"\x00" * 32:  # CheckNonZeroSender
            raise invalid(INVALID_BAD_SIGNER)
        # CheckMortality::implicit: the birth block must still be in BlockHash.
        birth = 0 if xt.era_value in ("00", None) else xt.era.birth(current)
        if birth != 0 and not (current - BLOCK_HASH_COUNT <= birth < current):
            raise invalid(INVALID_ANCIENT)
        if birth >= len(self.blocks):
            raise invalid(INVALID_ANCIENT)
        if xt.metadata_hash_mode != "Disabled":
            raise RpcError(1011, "Unknown Transaction",
                           "Could not lookup information required to validate the transaction "
                           "(CheckMetadataHash mode Enabled: the loopback node has no metadata "
                           "hash)")
        additional = {"CheckSpecVersion": self.s.spec_version,
                      "CheckTxVersion": self.s.transaction_version,
                      "CheckGenesis": hex0x(self.genesis_hash),
                      "CheckMortality": hex0x(self.blocks[birth].hash),
                      "CheckMetadataHash": None}
        try:
            payload = self.s.signing_payload(xt, additional)
        except KeyError as e:
            raise RpcError(1011, "Unknown Transaction", f"unknown transaction extension {e}")
        if not self._verify(xt, payload):
            raise invalid(INVALID_BAD_PROOF)
        if xt.nonce < self.account_nonce(xt.signer):
            raise invalid(INVALID_STALE)
        # pallet_subtensor SubtensorTransactionExtension::validate (spec 343)
        if xt.pallet == "SubtensorModule" and xt.call in ("set_weights",
                                                          "commit_timelocked_weights"):
            if int(xt.args["netuid"]) == self.netuid and not self.check_weights_min_stake(
                    xt.signer):
                raise invalid(f"Custom error: {CUSTOM_STAKE_AMOUNT_TOO_LOW}")
            if xt.call == "commit_timelocked_weights" and int(
                    xt.args["reveal_round"]) < self.last_stored_round:
                raise invalid(f"Custom error: {CUSTOM_INVALID_REVEAL_ROUND}")

    def _check_size_bounds(self, xt: DecodedExtrinsic) -> None:
        """BoundedVec limits the runtime enforces while decoding the call."""
        a = xt.args
        if xt.pallet == "Commitments":
            fields = a["info"]["fields"]
            if len(fields) > MAX_COMMIT_FIELDS:
                raise RpcError(1002, "Verification Error: Runtime error: Could not decode "
                                     "`RuntimeCall`", "BoundedVec exceeds its limit (fields)")
            for kind, inner in fields:
                if kind == "TimelockEncrypted" and len(
                        inner["encrypted"]) > MAX_TIMELOCK_COMMITMENT_SIZE_BYTES:
                    raise RpcError(1002, "Verification Error: Runtime error: Could not decode "
                                         "`RuntimeCall`", "BoundedVec exceeds its limit")
                if kind == "BigRaw" and len(inner) > MAX_BIGRAW_COMMITMENT_SIZE_BYTES:
                    raise RpcError(1002, "Verification Error: Runtime error: Could not decode "
                                         "`RuntimeCall`", "BoundedVec exceeds its limit")
        if "commit" in a and isinstance(a["commit"], bytes) and len(
                a["commit"]) > MAX_CRV3_COMMIT_SIZE_BYTES:
            raise RpcError(1002, "Verification Error: Runtime error: Could not decode "
                                 "`RuntimeCall`", "BoundedVec exceeds its limit (commit)")

    @staticmethod
    def _verify(xt: DecodedExtrinsic, payload: bytes) -> bool:
        kinds = {"Sr25519": 1, "Ed25519": 0}
        if xt.signature_kind not in kinds:
            return False
        try:
            kp = Keypair(public_key=xt.signer.hex(), ss58_format=42,
                         crypto_type=kinds[xt.signature_kind])
            return bool(kp.verify(payload, xt.signature))
        except Exception:  # noqa: BLE001
            return False

    def _apply_pool(self, b: int) -> tuple[list, list]:
        included, hashes = [], []
        progress = True
        while progress:
            progress = False
            for h, tx in list(self.pool.items()):
                xt = tx.xt
                nonce = self.account_nonce(xt.signer)
                if xt.nonce > nonce:
                    continue  # future: waits for the gap to fill
                del self.pool[h]
                try:
                    self._validate(xt, b)
                except RpcError as e:
                    self.log(f"dropped from pool {hex0x(h)} ({xt.pallet}.{xt.call} nonce "
                             f"{xt.nonce}): {e.message}: {e.data}")
                    for listener in list(self.drop_listeners):
                        listener(h, "invalid")
                    continue
                idx = len(included)
                included.append(xt.raw)
                self.nonces[xt.signer] = nonce + 1
                try:
                    self._dispatch(xt, b)
                    self.log(f"block {b}: applied {xt.pallet}.{xt.call} from {xt.signer_ss58} "
                             f"nonce {xt.nonce}")
                    self._event_extrinsic(idx, None)
                except DispatchFailed as e:
                    self.log(f"block {b}: {xt.pallet}.{xt.call} from {xt.signer_ss58} nonce "
                             f"{xt.nonce} failed: {e.pallet}.{e.error}")
                    self._event_extrinsic(idx, e)
                hashes.append(h)
                progress = True
        return included, hashes

    def _event_extrinsic(self, idx: int, err: Optional[DispatchFailed]) -> None:
        info = {"weight": {"ref_time": 0, "proof_size": 0}, "class": "Normal", "pays_fee": "No"}
        if err is None:
            ev = {"System": {"ExtrinsicSuccess": {"dispatch_info": info}}}
        else:
            ev = {"System": {"ExtrinsicFailed": {
                "dispatch_error": {"Module": {"index": self.s.pallet_index[err.pallet],
                                              "error": hex0x(self._error_index(err) + b"\0\0\0")}},
                "dispatch_info": info}}}
        self.events.append({"phase": {"ApplyExtrinsic": idx}, "event": ev, "topics": []})

    def _error_index(self, err: DispatchFailed) -> bytes:
        p = self.s.md.get_metadata_pallet(err.pallet)
        t = self.s.md.portable_registry["types"][p.value["error"]["ty"]].value
        for v in t["type"]["def"]["variant"]["variants"]:
            if v["name"] == err.error:
                return bytes([v["index"]])
        raise KeyError(err.error)

    # ---- dispatch ----------------------------------------------------------------------------

    def _dispatch(self, xt: DecodedExtrinsic, b: int) -> None:
        a, who = xt.args, xt.signer
        if xt.pallet == "System":
            return
        if xt.pallet == "Commitments":
            return self._set_commitment(who, int(a["netuid"]), a["info"]["fields"], b)
        if xt.call in ("set_weights", "set_mechanism_weights"):
            return self._set_weights(who, int(a["netuid"]), int(a.get("mecid", 0)),
                                     list(a["dests"]), list(a["weights"]),
                                     int(a["version_key"]), b)
        if xt.call in ("commit_timelocked_weights", "commit_timelocked_mechanism_weights"):
            return self._commit_timelocked(who, int(a["netuid"]), int(a.get("mecid", 0)),
                                           a["commit"], int(a["reveal_round"]),
                                           int(a["commit_reveal_version"]), b)
        raise DispatchFailed("System", "CallFiltered")

    def _subnet_exists(self, netuid: int) -> bool:
        return netuid == self.netuid

    # Commitments.set_commitment (pallets/commitments/src/lib.rs)
    def _set_commitment(self, who: bytes, netuid: int, fields: list, b: int) -> None:
        if not (self._subnet_exists(netuid) and who in self.uid_of):
            raise DispatchFailed("Commitments", "AccountNotAllowedCommit")
        if len(fields) > MAX_COMMIT_FIELDS:
            raise DispatchFailed("Commitments", "TooManyFieldsInCommitmentInfo")
        norm = [self._data_from_call(f) for f in fields]
        required = max(100, sum(self._len_for_rate_limit(f) for f in norm))
        usage = dict(self.used_space.get(who, {"last_epoch": 0, "used_space": 0}))
        epoch = self.get_epoch_index(b)
        if usage["last_epoch"] != epoch:
            usage = {"last_epoch": epoch, "used_space": 0}
        if any(f[0] == "ResetBondsFlag" for f in norm):
            self.last_bonds_reset[who] = b
        if usage["used_space"] + required > self.max_space:
            raise DispatchFailed("Commitments", "SpaceLimitExceeded")
        usage["used_space"] += required
        self.used_space[who] = usage
        self.commitments[who] = {"deposit": 0, "block": b, "fields": norm}
        self.last_commitment[who] = b
        if any(f[0] == "TimelockEncrypted" for f in norm):
            self.timelocked_index.add((netuid, who))
        else:
            self.timelocked_index.discard((netuid, who))

    @staticmethod
    def _data_from_call(f) -> tuple:
        kind, inner = f
        if kind.startswith("Raw"):
            return ("Raw", bytes(inner) if inner is not None else b"")
        if kind == "TimelockEncrypted":
            return ("TimelockEncrypted", bytes(inner["encrypted"]), int(inner["reveal_round"]))
        if kind in ("BlakeTwo256", "Sha256", "Keccak256", "ShaThree256", "BigRaw"):
            return (kind, bytes(inner))
        return (kind,)

    @staticmethod
    def _len_for_rate_limit(f: tuple) -> int:
        kind = f[0]
        if kind in ("Raw", "BigRaw", "BlakeTwo256", "Sha256", "Keccak256", "ShaThree256",
                    "TimelockEncrypted"):
            return len(f[1])
        return 0

    # Commitments on_initialize: reveal_timelocked_commitments
    def _reveal_timelocked_commitments(self, b: int) -> None:
        pulses = self.pulses()
        for netuid, who in sorted(self.timelocked_index):
            reg = self.commitments.get(who)
            if reg is None:
                self.timelocked_index.discard((netuid, who))
                continue
            remain, revealed = [], []
            saw = processed = False
            for f in reg["fields"]:
                if f[0] != "TimelockEncrypted":
                    remain.append(f)
                    continue
                saw = True
                sig = pulses.get(f[2])
                if sig is None:
                    remain.append(f)
                    continue
                processed = True
                try:
                    plain_bytes = chain_decrypt(f[1], f[2], sig)
                except Exception as e:  # noqa: BLE001 - the chain logs and drops the field
                    self.log(f"block {b}: commitment of {self.s.ss58(who)} for round {f[2]} "
                             f"does not decrypt ({e}); field dropped as on chain")
                    continue
                if not plain_bytes:
                    self.log(f"block {b}: commitment of {self.s.ss58(who)} decrypted to nothing;"
                             f" field dropped as on chain")
                    continue
                revealed.append(bytes(plain_bytes))
            if not saw:
                self.timelocked_index.discard((netuid, who))
                continue
            if not processed:
                continue
            if revealed:
                lst = self.revealed.setdefault(who, [])
                for r in revealed:
                    lst.append((r, b))
                    self.log(f"block {b}: revealed commitment of {self.s.ss58(who)} "
                             f"({len(r)} bytes)")
                del lst[:max(0, len(lst) - MAX_REVEALS)]
            reg["fields"] = remain
            if not remain:
                del self.commitments[who]
                self.timelocked_index.discard((netuid, who))
            elif not any(f[0] == "TimelockEncrypted" for f in remain):
                self.timelocked_index.discard((netuid, who))

    # SubtensorModule.set_weights / set_mechanism_weights (weights.rs internal_set_weights)
    def _set_weights(self, who: bytes, netuid: int, mecid: int, uids: list, values: list,
                     version_key: int, b: int) -> None:
        err = lambda e: DispatchFailed("SubtensorModule", e)  # noqa: E731
        idx = mecid * GLOBAL_MAX_SUBNET_COUNT + netuid
        if netuid == 0:
            raise err("CanNotSetRootNetworkWeights")
        if len(uids) != len(values):
            raise err("WeightVecNotEqualSize")
        if not self._subnet_exists(netuid) or mecid >= self.mechanism_count:
            raise err("MechanismDoesNotExist")
        n = len(self.neurons)
        if len(uids) > n:
            raise err("UidsLengthExceedUidsInSubNet")
        if who not in self.uid_of:
            raise err("HotKeyNotRegisteredInSubNet")
        if not self.check_weights_min_stake(who):
            raise err("NotEnoughStakeToSetWeights")
        if not (self.weights_version_key == 0 or version_key >= self.weights_version_key):
            raise err("IncorrectWeightVersionKey")
        uid = self.uid_of[who]
        if not self.commit_reveal_enabled and not self._check_rate_limit(idx, uid, b):
            raise err("SettingWeightsTooFast")
        is_self = len(values) == 1 and uids and uids[0] == uid
        if not (is_self or self.neurons[uid].validator_permit):
            raise err("NeuronNoValidatorPermit")
        if len(set(uids)) != len(uids):
            raise err("DuplicateUids")
        if any(u >= n for u in uids):
            raise err("UidVecContainInvalidOne")
        min_allowed = min(n, self.min_allowed_weights)
        if not (is_self or len(values) >= min_allowed):
            raise err("WeightVecLengthIsLow")
        upscaled = vec_u16_max_upscale_to_u16(values)
        if not (is_self or self.max_weights_limit == U16_MAX
                or check_vec_max_limited(upscaled, self.max_weights_limit)):
            raise err("MaxWeightExceeded")
        self.weights[(idx, uid)] = list(zip(uids, upscaled))
        if not self.commit_reveal_enabled:
            self._set_last_update(idx, uid, b)

    def _check_rate_limit(self, idx: int, uid: int, b: int) -> bool:
        mecid, netuid = divmod(idx, GLOBAL_MAX_SUBNET_COUNT)
        if not (self._subnet_exists(netuid) and mecid < self.mechanism_count
                and uid < len(self.neurons)):
            return False
        lu = self.last_update.get(idx, [])
        last = lu[uid] if uid < len(lu) else 0
        if last == 0:
            return True
        return b - last >= self.weights_set_rate_limit

    def _set_last_update(self, idx: int, uid: int, b: int) -> None:
        lu = self.last_update.setdefault(idx, [])
        if uid >= len(lu):
            lu.extend([0] * (len(self.neurons) - len(lu)))
        lu[uid] = b

    # SubtensorModule.commit_timelocked_(mechanism_)weights (internal_commit_timelocked_weights)
    def _commit_timelocked(self, who: bytes, netuid: int, mecid: int, commit: bytes,
                           reveal_round: int, version: int, b: int) -> None:
        err = lambda e: DispatchFailed("SubtensorModule", e)  # noqa: E731
        if not self._subnet_exists(netuid) or mecid >= self.mechanism_count:
            raise err("MechanismDoesNotExist")
        idx = mecid * GLOBAL_MAX_SUBNET_COUNT + netuid
        if not self.commit_reveal_enabled:
            raise err("CommitRevealDisabled")
        if version != self.commit_reveal_version:
            raise err("IncorrectCommitRevealVersion")
        if who not in self.uid_of:
            raise err("HotKeyNotRegisteredInSubNet")
        uid = self.uid_of[who]
        if not self._check_rate_limit(idx, uid, b):
            raise err("CommittingWeightsTooFast")
        epoch = self.get_epoch_index(b) + (1 if self.should_run_epoch(b) else 0)
        commits = self.tl_weight_commits.setdefault((idx, epoch), [])
        if sum(1 for c in commits if c[0] == who) >= MAX_UNREVEALED_TIMELOCKED_COMMITS:
            raise err("TooManyUnrevealedCommits")
        commits.append((who, b, bytes(commit), reveal_round))
        self._set_last_update(idx, uid, b)
        self.log(f"block {b}: timelocked weights commit of {self.s.ss58(who)} for epoch {epoch},"
                 f" drand round {reveal_round}")

    # SubtensorModule on_initialize: block_step -> run_coinbase (the parts koth can observe)
    def _subtensor_block_step(self, b: int) -> None:
        self._reveal_crv3_commits(b)
        if self.should_run_epoch(b):
            self.blocks_since_last_step = 0
            self.last_mechanism_step_block = b
            self.log(f"block {b}: epoch of netuid {self.netuid} (emission and consensus are not "
                     f"simulated)")
        else:
            self.blocks_since_last_step += 1

    def _reveal_crv3_commits(self, b: int) -> None:
        """coinbase/reveal_commits.rs reveal_crv3_commits at spec 343."""
        cur_epoch = self.get_epoch_index(b)
        reveal_epoch = max(0, cur_epoch - self.reveal_period_epochs)
        pulses = self.pulses()
        for mecid in range(self.mechanism_count):
            idx = self.storage_index(mecid)
            for key in [k for k in self.tl_weight_commits if k[0] == idx and k[1] < reveal_epoch]:
                dropped = self.tl_weight_commits.pop(key)
                for who, blk, _c, rnd in dropped:
                    self.log(f"block {b}: timelocked weights of {self.s.ss58(who)} (block {blk},"
                             f" round {rnd}) expired unrevealed")
            if cur_epoch < self.reveal_period_epochs:
                return
            entries = self.tl_weight_commits.pop((idx, reveal_epoch), [])
            unrevealed = []
            for who, commit_block, commit, rnd in entries:
                sig = pulses.get(rnd)
                if sig is None:
                    unrevealed.append((who, commit_block, commit, rnd))
                    continue
                try:
                    dec = chain_decrypt(commit, rnd, sig)
                except Exception as e:  # noqa: BLE001
                    self.log(f"block {b}: timelocked weights of {self.s.ss58(who)} do not "
                             f"decrypt ({e}); dropped silently as on chain")
                    continue
                parsed = self._parse_weights_payload(who, dec)
                if parsed is None:
                    continue
                uids, values, version_key = parsed
                try:
                    self._set_weights(who, self.netuid, mecid, uids, values, version_key, b)
                    self.log(f"block {b}: revealed timelocked weights of {self.s.ss58(who)}: "
                             f"{list(zip(uids, values))}")
                except DispatchFailed as e:
                    self.log(f"block {b}: revealed weights of {self.s.ss58(who)} refused "
                             f"silently: {e.error}")
            if unrevealed:
                self.tl_weight_commits[(idx, reveal_epoch)] = unrevealed

    def _parse_weights_payload(self, who: bytes, dec: bytes):
        """WeightsTlockPayload { hotkey, uids, values, version_key }, else the legacy payload."""
        def legacy():
            try:
                p = plain(self.s.decode_obj("KothLegacyWeightsTlockPayload", dec,
                                            check_remaining=False))
                return list(p["uids"]), list(p["values"]), int(p["version_key"])
            except Exception:  # noqa: BLE001
                self.log(f"timelocked weights of {self.s.ss58(who)}: payload does not decode")
                return None
        try:
            p = plain(self.s.decode_obj("KothWeightsTlockPayload", dec, check_remaining=False))
        except Exception:  # noqa: BLE001
            return legacy()
        hk = bytes(p["hotkey"])
        if len(hk) < 32:  # AccountId32::decode fails: try the legacy payload
            return legacy()
        if hk[:32] != who:
            self.log(f"timelocked weights of {self.s.ss58(who)}: hotkey mismatch in payload")
            return None
        return list(p["uids"]), list(p["values"]), int(p["version_key"])

    # ---- reads ------------------------------------------------------------------------------

    def debug_state(self) -> dict:
        ss = self.s.ss58
        return {
            "best": {"number": self.best.number, "hash": hex0x(self.best.hash)},
            "finalized": {"number": self.finalized.number, "hash": hex0x(self.finalized.hash)},
            "genesis": hex0x(self.genesis_hash),
            "netuid": self.netuid, "tempo": self.tempo,
            "epoch_index": self.get_epoch_index(self.best.number),
            "blocks_until_next_epoch": self.blocks_until_next_epoch(self.best.number),
            "commit_reveal_weights_enabled": self.commit_reveal_enabled,
            "weights_set_rate_limit": self.weights_set_rate_limit,
            "weights_version_key": self.weights_version_key,
            "drand": {"last_stored_round": self.last_stored_round,
                      "known_rounds": sorted(self.drand_signatures),
                      "stored_pulses": sorted(self.pulses())},
            "neurons": [{"uid": n.uid, "hotkey": ss(n.hotkey), "coldkey": ss(n.coldkey),
                         "validator_permit": n.validator_permit, "stake": n.stake,
                         "nonce": self.account_nonce(n.hotkey)} for n in self.neurons],
            "weights": [{"netuid_index": i, "uid": u, "weights": w}
                        for (i, u), w in sorted(self.weights.items())],
            "last_update": {str(k): v for k, v in self.last_update.items()},
            "commitments": {ss(hk): {"block": r["block"], "fields": [
                [f[0]] + [hex0x(x) if isinstance(x, bytes) else x for x in f[1:]]
                for f in r["fields"]]} for hk, r in self.commitments.items()},
            "revealed_commitments": {ss(hk): [[hex0x(x), blk] for x, blk in v]
                                     for hk, v in self.revealed.items()},
            "timelocked_weight_commits": [
                {"netuid_index": i, "epoch": e, "commits": [
                    {"who": ss(w), "block": blk, "reveal_round": r, "bytes": len(c)}
                    for w, blk, c, r in v]} for (i, e), v in sorted(self.tl_weight_commits.items())],
            "pool": [{"hash": hex0x(h), "call": f"{t.xt.pallet}.{t.xt.call}",
                      "signer": t.xt.signer_ss58, "nonce": t.xt.nonce}
                     for h, t in self.pool.items()],
        }
