#!/usr/bin/env python3
"""Loopback subtensor node: a test double of a subtensor node for ONE subnet.

README
======
koth-subtensor's contract tests (issue 17) start this node, point `SubtensorChain` at it, and stop
it by PID. It answers JSON-RPC 2.0 over HTTP POST (and over WebSocket, same port, same methods plus
subscriptions) on 127.0.0.1. Every storage key and value it serves is SCALE-encoded by Bittensor's
Python SDK (bittensor==10.5.0: async-substrate-interface + cyscale) from the pinned runtime
metadata, crates/koth-subtensor/tests/fixtures/metadata.scale (V15, spec 343); no bytes are written
by hand. Run it with the SDK's venv:

    PY=$(scripts/bittensor-venv.sh | tail -1)
    $PY scripts/subtensor/loopback_node.py --port 0 --state state.json \
        --metadata crates/koth-subtensor/tests/fixtures/metadata.scale --block-time 0.25
    # stdout: one line "LISTENING <port>" once it serves; stderr: its log; SIGTERM stops it.

CLI
---
  --port N                 TCP port on --host (0: pick a free one). Prints `LISTENING <port>`.
  --host H                 bind address (default 127.0.0.1; keep it on loopback).
  --state FILE             initial subnet state (JSON, schema below). Required.
  --metadata PATH          runtime metadata (b"meta"... bytes, or Option<OpaqueMetadata>).
                           Default: crates/koth-subtensor/tests/fixtures/metadata.scale.
  --metadata-info PATH     provenance JSON with spec_version/transaction_version/spec_name.
                           Default: metadata.json beside --metadata; else System.Version.
  --block-time S           seconds per block (float, default 0.25). 0: no timer, blocks only
                           through the koth_produceBlocks RPC.
  --finality-lag N         finalized head = best - N (default 2).
  --seed TEXT              genesis hash seed (default "koth-loopback").
  --drand-start-round R0   Drand.LastStoredRound at block 0 (default 1000).
  --drand-rounds-per-block K  LastStoredRound at block n = R0 + K*n (default 1).
  --drand-signature R=HEX  a drand quicknet signature the node knows (repeatable).
  --drand-fixture PATH     JSON with {round, signature} objects (default:
                           crates/koth-timelock/tests/fixtures/quicknet.json when present).
  --keep-blocks N          blocks whose state stays queryable (default 1200; older: pruned).
  --chain-name NAME        system_chain answer (default "Bittensor (koth loopback)").

State file
----------
scripts/subtensor/example_state.json is a working one (hotkeys //Alice = validator, //Bob = miner,
coldkey //Ferdie). Schema:
  {
    "netuid": 3,                                  # required, 1..4095
    "tempo": 10,                                  # every other key: the metadata default if absent
    "commit_reveal_weights_enabled": false,       #   (note: CommitRevealWeightsEnabled defaults true)
    "weights_set_rate_limit": 2, "weights_version_key": 0,
    "min_allowed_weights": 1, "max_weights_limit": 65535, "max_allowed_uids": 256,
    "reveal_period_epochs": 1, "commit_reveal_weights_version": 4,
    "stake_threshold": 0, "max_space": 3100, "mechanism_count": 1,
    "subnet_owner_coldkey_ss58": "5...", "subnet_owner_hotkey_ss58": "5...",
    "neurons": [                                   # uid = position
      {"hotkey_ss58": "5...", "coldkey_ss58": "5...", "validator_permit": true,
       "stake": 1000000000, "block_at_registration": 0}],
    "balances": {"5...": 0},                       # System.Account free balance (optional)
    "weights": [{"uid": 0, "mecid": 0, "weights": [[1, 65535]]}],
    "last_update": {"3": [0, 0]},                  # by NetUidStorageIndex
    "revealed_commitments": [{"hotkey_ss58": "5...", "data": "0x.. or text", "block": 1}],
    "commitments": [{"hotkey_ss58": "5...", "block": 1, "fields": [
        {"kind": "Raw", "text": "..."}, {"kind": "TimelockEncrypted", "encrypted": "0x..",
                                          "reveal_round": 1234}]}],
    "genesis_time_ms": 1700000000000
  }

Storage served (what koth reads): SubtensorModule.{SubnetworkN, NetworksAdded, Uids, Keys, Owner,
ValidatorPermit, Active, BlockAtRegistration, Weights, LastUpdate (keyed by NetUidStorageIndex =
mecid*4096+netuid), CommitRevealWeightsEnabled, WeightsSetRateLimit, WeightsVersionKey, Tempo,
SubnetOwner, SubnetOwnerHotkey, TotalHotkeyAlpha (stake), StakeThreshold, MinAllowedWeights,
MaxWeightsLimit, MaxAllowedUids, RevealPeriodEpochs, CommitRevealWeightsVersion,
MechanismCountCurrent, BlocksSinceLastStep, LastMechansimStepBlock, TimelockedWeightCommits,
IsNetworkMember, TotalNetworks, NetworkRegisteredAt}, Commitments.{CommitmentOf, LastCommitment,
LastBondsReset, UsedSpaceOf, TimelockedIndex, RevealedCommitments, MaxSpace},
Drand.{LastStoredRound, OldestStoredRound, Pulses}, System.{Number, ParentHash, BlockHash, Account,
Events, EventCount}, Timestamp.Now.

RPC methods
-----------
chain_getBlockHash([n]) (chain_getHead), chain_getFinalizedHead (chain_getFinalisedHead),
chain_getHeader([hash?]), chain_getBlock([hash?]), state_getRuntimeVersion([hash?])
(chain_getRuntimeVersion), state_getMetadata([hash?]), state_call([method, data, hash?]) for
Metadata_metadata_at_version / Metadata_metadata_versions / Metadata_metadata /
AccountNonceApi_account_nonce,
state_getStorage([key, hash?]) (state_getStorageAt), state_getStorageHash, state_getStorageSize,
state_getKeysPaged([prefix, count, startKey?, hash?]) (state_getKeysPagedAt), state_getKeys,
state_queryStorageAt([[keys], hash?]), system_accountNextIndex([ss58]), system_chain, system_name,
system_version, system_properties, system_health, system_chainType, rpc_methods,
author_submitExtrinsic([hex]) -> "0x"+blake2_256(extrinsic), author_pendingExtrinsics.
WebSocket only: chain_subscribeNewHeads / chain_subscribeAllHeads / chain_subscribeFinalizedHeads
(+ unsubscribe), author_submitAndWatchExtrinsic (ready, inBlock, finalized | invalid).
Test helpers: koth_debugState([]) (JSON view of the state), koth_produceBlocks([n]),
koth_addDrandSignature([round, hex]).
Errors are JSON-RPC error objects as Substrate's: 1010 "Invalid Transaction" (data: "Transaction
has a bad signature", "Transaction is outdated", "Transaction has an ancient birth block",
"Custom error: N", "Transaction call is not expected", "Invalid signing address"), 1002
undecodable extrinsic, 1011 unknown transaction, 1013 already imported, 1014 same signer and
nonce already in the pool, 4003 unknown/pruned block, -32601 unknown method, -32602 bad
params.

What it simulates (semantics of opentensor/subtensor at spec 343, commit 3975359dd; see
chain_sim.py for the files): signed extrinsics (sr25519/ed25519 over the metadata's signing
payload: call ++ extension bytes ++ spec/tx version, genesis, birth-block hash, metadata-hash None,
blake2-256 above 256 bytes; immortal and mortal eras; nonces; the future-nonce queue);
Commitments.set_commitment (registration, MaxFields 3, MaxSpace per epoch, CommitmentOf,
LastCommitment, TimelockedIndex) and the on_initialize reveal of TimelockEncrypted fields once
Drand.Pulses holds the round (bittensor_drand.decrypt_with_signature; the plaintext bytes are
appended as (bytes, block) to RevealedCommitments, last 10 kept; undecryptable fields dropped);
set_weights / set_mechanism_weights (all of internal_set_weights' checks and max-upscaling;
LastUpdate only when commit-reveal is off); commit_timelocked_(mechanism_)weights (stored in
TimelockedWeightCommits under the epoch index, LastUpdate set at commit) and their silent reveal
at the start of epoch commit_epoch + RevealPeriodEpochs (WeightsTlockPayload, hotkey check, legacy
payload); pool validation errors of SubtensorTransactionExtension (min stake: Custom 1; reveal
round < LastStoredRound for commit_timelocked_weights: Custom 15). Dispatch errors are like the
chain's: the extrinsic is included, its nonce spent, System.Events has ExtrinsicFailed with the
pallet's error index.

Approximations: one subnet, no forks (finalized = best - lag); no fees, balances, emission, Yuma
consensus, registration, staking or validator-permit recomputation (state file values stay);
stake = TotalHotkeyAlpha only (no root/child stake, no TaoWeight); only the calls above (others:
1010 "Transaction call is not expected"); the drand pulse for a round exists only when the node
knows its signature; state and extrinsics roots are blake2 digests, not trie roots; System.BlockHash
holds genesis + the last 256 blocks (mortality checks use the in-memory 2400); events only
ExtrinsicSuccess/ExtrinsicFailed; the metadata is V15 only (Metadata_metadata_at_version(14) is
None).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

from aiohttp import WSMsgType, web  # noqa: E402

from chain_sim import Block, Chain, RpcError  # noqa: E402
from scale_env import Scale, blake2_256, hex0x, unhex  # noqa: E402

DEFAULT_METADATA = os.path.join(REPO, "crates", "koth-subtensor", "tests", "fixtures",
                                "metadata.scale")
DEFAULT_DRAND_FIXTURE = os.path.join(REPO, "crates", "koth-timelock", "tests", "fixtures",
                                     "quicknet.json")


def log(msg: str) -> None:
    print(f"[loopback-subtensor] {msg}", file=sys.stderr, flush=True)


def find_drand_rounds(obj: Any, out: dict) -> None:
    """Collects {round: signature} from any JSON shape holding objects with both keys, skipping
    those under a key that names them invalid (the fixture keeps a forged pulse as a negative)."""
    if isinstance(obj, dict):
        r, sig = obj.get("round"), obj.get("signature")
        if isinstance(r, int) and isinstance(sig, str):
            out[r] = sig
        for k, v in obj.items():
            if "invalid" not in str(k).lower():
                find_drand_rounds(v, out)
    elif isinstance(obj, list):
        for v in obj:
            find_drand_rounds(v, out)


class Node:
    def __init__(self, chain: Chain, scale: Scale, runtime_version: dict, block_time: float):
        self.chain = chain
        self.s = scale
        self.runtime_version = runtime_version
        self.block_time = block_time
        self.subs: dict[str, tuple] = {}  # id -> (kind, ws, extra)
        self.watch: dict[bytes, list] = {}  # tx hash -> [(sub id, ws)]
        self.watch_blocks: dict[bytes, int] = {}  # tx hash -> block number included
        self.last_finalized = chain.finalized.number
        chain.block_listeners.append(self._on_block)
        chain.drop_listeners.append(self._on_drop)
        self.methods = {
            "chain_getBlockHash": self.chain_getBlockHash,
            "chain_getHead": self.chain_getBlockHash,
            "chain_getFinalizedHead": self.chain_getFinalizedHead,
            "chain_getFinalisedHead": self.chain_getFinalizedHead,
            "chain_getHeader": self.chain_getHeader,
            "chain_getBlock": self.chain_getBlock,
            "state_getRuntimeVersion": self.state_getRuntimeVersion,
            "chain_getRuntimeVersion": self.state_getRuntimeVersion,
            "state_getMetadata": self.state_getMetadata,
            "state_call": self.state_call,
            "state_callAt": self.state_call,
            "state_getStorage": self.state_getStorage,
            "state_getStorageAt": self.state_getStorage,
            "state_getStorageHash": self.state_getStorageHash,
            "state_getStorageHashAt": self.state_getStorageHash,
            "state_getStorageSize": self.state_getStorageSize,
            "state_getStorageSizeAt": self.state_getStorageSize,
            "state_getKeysPaged": self.state_getKeysPaged,
            "state_getKeysPagedAt": self.state_getKeysPaged,
            "state_getKeys": self.state_getKeys,
            "state_queryStorageAt": self.state_queryStorageAt,
            "system_accountNextIndex": self.system_accountNextIndex,
            "account_nextIndex": self.system_accountNextIndex,
            "system_chain": lambda p: chain.chain_name,
            "system_name": lambda p: "koth-loopback-subtensor",
            "system_version": lambda p: "0.1.0-loopback",
            "system_chainType": lambda p: "Development",
            "system_properties": lambda p: {"ss58Format": scale.ss58_format,
                                            "tokenDecimals": 9, "tokenSymbol": "TAO"},
            "system_health": lambda p: {"peers": 0, "isSyncing": False,
                                        "shouldHavePeers": False},
            "rpc_methods": lambda p: {"methods": sorted(self.methods) + sorted(self.ws_methods)},
            "author_submitExtrinsic": self.author_submitExtrinsic,
            "author_pendingExtrinsics": lambda p: [hex0x(t.xt.raw)
                                                   for t in chain.pool.values()],
            "koth_debugState": lambda p: chain.debug_state(),
            "koth_produceBlocks": self.koth_produceBlocks,
            "koth_addDrandSignature": self.koth_addDrandSignature,
        }
        self.ws_methods = {
            "chain_subscribeNewHeads": "chain_newHead",
            "chain_subscribeNewHead": "chain_newHead",
            "chain_subscribeAllHeads": "chain_allHead",
            "chain_subscribeFinalizedHeads": "chain_finalizedHead",
            "chain_subscribeFinalisedHeads": "chain_finalizedHead",
            "author_submitAndWatchExtrinsic": "author_extrinsicUpdate",
        }

    # ---- helpers --------------------------------------------------------------------------

    @staticmethod
    def header_json(b: Block) -> dict:
        h = b.header
        return {"parentHash": h["parent_hash"], "number": hex(h["number"]),
                "stateRoot": h["state_root"], "extrinsicsRoot": h["extrinsics_root"],
                "digest": {"logs": []}}

    def block_at(self, h: Optional[str], *, need_state: bool = False) -> Block:
        if h is None:
            b = self.chain.best
        else:
            try:
                hb = unhex(h)
            except (ValueError, TypeError):
                raise RpcError(-32602, "Invalid params", f"bad block hash {h!r}")
            b = self.chain.block_by_hash(hb)
            if b is None:
                raise RpcError(4003, "Client error: UnknownBlock: Header was not found in the "
                                     f"local chain: {h}")
        if need_state and b.storage is None:
            raise RpcError(4003, f"Client error: State already discarded for {hex0x(b.hash)}")
        return b

    @staticmethod
    def arg(params: list, i: int, default=None):
        return params[i] if len(params) > i and params[i] is not None else default

    @staticmethod
    def key_bytes(k: str) -> bytes:
        try:
            return unhex(k)
        except (ValueError, TypeError):
            raise RpcError(-32602, "Invalid params", f"bad storage key {k!r}")

    # ---- chain ----------------------------------------------------------------------------

    def chain_getBlockHash(self, p):
        n = self.arg(p, 0)
        if isinstance(n, list):
            return [self.chain_getBlockHash([x]) for x in n]
        if n is None:
            return hex0x(self.chain.best.hash)
        if isinstance(n, str):
            n = int(n, 16) if n.startswith("0x") else int(n)
        if not isinstance(n, int) or n < 0:
            raise RpcError(-32602, "Invalid params", f"bad block number {n!r}")
        return hex0x(self.chain.blocks[n].hash) if n < len(self.chain.blocks) else None

    def chain_getFinalizedHead(self, p):
        return hex0x(self.chain.finalized.hash)

    def chain_getHeader(self, p):
        try:
            return self.header_json(self.block_at(self.arg(p, 0)))
        except RpcError as e:
            if e.code == 4003:
                return None
            raise

    def chain_getBlock(self, p):
        try:
            b = self.block_at(self.arg(p, 0))
        except RpcError as e:
            if e.code == 4003:
                return None
            raise
        return {"block": {"header": self.header_json(b),
                          "extrinsics": [hex0x(x) for x in b.extrinsics]},
                "justifications": None}

    def state_getRuntimeVersion(self, p):
        self.block_at(self.arg(p, 0))
        return self.runtime_version

    def state_getMetadata(self, p):
        self.block_at(self.arg(p, 0))
        return hex0x(self.s.metadata_bytes)

    def state_call(self, p):
        method, data = self.arg(p, 0), self.arg(p, 1, "0x")
        self.block_at(self.arg(p, 2))
        if method == "Metadata_metadata_at_version":
            version = self.s.decode("u32", unhex(data))
            if version == self.s.metadata_version:
                return hex0x(self.s.encode("Option<Vec<u8>>", hex0x(self.s.metadata_bytes)))
            return hex0x(self.s.encode("Option<Vec<u8>>", None))
        if method == "Metadata_metadata_versions":
            return hex0x(self.s.encode("Vec<u32>", [self.s.metadata_version]))
        if method == "Metadata_metadata":
            return hex0x(self.s.encode("Vec<u8>", hex0x(self.s.metadata_bytes)))
        if method == "AccountNonceApi_account_nonce":
            who = self.s.account(hex0x(unhex(data)[:32]))
            return hex0x(self.s.encode("u32", self.chain.account_nonce(who)))
        raise RpcError(4003, "Client error: Execution failed: Other: Exported method "
                             f"{method} is not found (the loopback node answers only "
                             "Metadata_* and AccountNonceApi runtime calls)")

    # ---- state ----------------------------------------------------------------------------

    def state_getStorage(self, p):
        k = self.key_bytes(self.arg(p, 0))
        v = self.block_at(self.arg(p, 1), need_state=True).storage.get(k)
        return hex0x(v) if v is not None else None

    def state_getStorageHash(self, p):
        v = self.state_getStorage(p)
        return hex0x(blake2_256(unhex(v))) if v is not None else None

    def state_getStorageSize(self, p):
        v = self.state_getStorage(p)
        return len(unhex(v)) if v is not None else None

    def state_getKeysPaged(self, p):
        prefix = self.key_bytes(self.arg(p, 0, "0x"))
        count = int(self.arg(p, 1, 1000))
        start = self.arg(p, 2)
        start_b = self.key_bytes(start) if start else None
        st = self.block_at(self.arg(p, 3), need_state=True).storage
        keys = sorted(k for k in st if k.startswith(prefix) and (start_b is None or k > start_b))
        return [hex0x(k) for k in keys[:max(0, count)]]

    def state_getKeys(self, p):
        prefix = self.key_bytes(self.arg(p, 0, "0x"))
        st = self.block_at(self.arg(p, 1), need_state=True).storage
        return [hex0x(k) for k in sorted(k for k in st if k.startswith(prefix))]

    def state_queryStorageAt(self, p):
        keys = self.arg(p, 0, [])
        if not isinstance(keys, list):
            raise RpcError(-32602, "Invalid params", "keys must be a list")
        b = self.block_at(self.arg(p, 1), need_state=True)
        changes = []
        for k in keys:
            v = b.storage.get(self.key_bytes(k))
            changes.append([k, hex0x(v) if v is not None else None])
        return [{"block": hex0x(b.hash), "changes": changes}]

    # ---- system / author ------------------------------------------------------------------

    def system_accountNextIndex(self, p):
        a = self.arg(p, 0)
        try:
            who = self.s.account(a)
        except Exception:  # noqa: BLE001
            raise RpcError(-32602, "Invalid params", f"bad account {a!r}")
        return self.chain.account_next_index(who)

    def author_submitExtrinsic(self, p):
        x = self.arg(p, 0)
        try:
            raw = unhex(x)
        except (ValueError, TypeError):
            raise RpcError(-32602, "Invalid params", "extrinsic must be 0x-hex")
        return hex0x(self.chain.submit(raw))

    def koth_produceBlocks(self, p):
        n = int(self.arg(p, 0, 1))
        for _ in range(max(0, min(n, 10_000))):
            self.chain.produce_block()
        return self.chain.best.number

    def koth_addDrandSignature(self, p):
        r, sig = int(self.arg(p, 0)), str(self.arg(p, 1))
        unhex(sig)
        self.chain.drand_signatures[r] = sig.lower().removeprefix("0x")
        log(f"drand signature for round {r} added")
        return True

    # ---- dispatch -------------------------------------------------------------------------

    def call(self, req: Any, ws=None) -> Optional[dict]:
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or "method" not in req:
            return {"jsonrpc": "2.0", "id": None,
                    "error": {"code": -32600, "message": "Invalid request"}}
        rid, method = req.get("id"), req["method"]
        params = req.get("params", [])
        if params is None:
            params = []
        if isinstance(params, dict):
            params = list(params.values())
        try:
            if method in self.ws_methods or method.startswith(("chain_unsubscribe",
                                                                 "author_unwatch")):
                if ws is None:
                    raise RpcError(-32601, "Method not found",
                                   f"{method} needs a WebSocket connection")
                result = self.subscribe(method, params, ws)
            elif method in self.methods:
                result = self.methods[method](params)
            else:
                raise RpcError(-32601, "Method not found", None)
            return {"jsonrpc": "2.0", "id": rid, "result": result}
        except RpcError as e:
            return {"jsonrpc": "2.0", "id": rid, "error": e.obj()}
        except Exception as e:  # noqa: BLE001 - a bug here must not kill the server
            log(f"internal error in {method}: {e!r}")
            return {"jsonrpc": "2.0", "id": rid,
                    "error": {"code": -32603, "message": "Internal error", "data": str(e)}}

    def handle_payload(self, body: Any, ws=None):
        if isinstance(body, list):
            if not body:
                return {"jsonrpc": "2.0", "id": None,
                        "error": {"code": -32600, "message": "Invalid request"}}
            return [self.call(r, ws) for r in body]
        return self.call(body, ws)

    # ---- subscriptions (WebSocket) ----------------------------------------------------------

    def subscribe(self, method: str, params: list, ws) -> Any:
        if method.startswith(("chain_unsubscribe", "author_unwatch")):
            sid = self.arg(params, 0)
            return self.subs.pop(sid, None) is not None
        kind = self.ws_methods[method]
        sid = secrets.token_hex(8)
        if method == "author_submitAndWatchExtrinsic":
            h = unhex(self.author_submitExtrinsic(params))
            self.subs[sid] = (kind, ws, h)
            self.watch.setdefault(h, []).append(sid)
            asyncio.get_event_loop().call_soon(self._notify, sid, "ready")
            return sid
        self.subs[sid] = (kind, ws, None)
        head = self.chain.finalized if kind == "chain_finalizedHead" else self.chain.best
        asyncio.get_event_loop().call_soon(self._notify, sid, self.header_json(head))
        return sid

    def _notify(self, sid: str, result: Any) -> None:
        sub = self.subs.get(sid)
        if sub is None:
            return
        kind, ws, _ = sub
        if ws.closed:
            self.subs.pop(sid, None)
            return
        msg = {"jsonrpc": "2.0", "method": kind, "params": {"subscription": sid,
                                                            "result": result}}
        asyncio.ensure_future(self._send(ws, msg))

    @staticmethod
    async def _send(ws, msg):
        try:
            await ws.send_str(json.dumps(msg))
        except Exception:  # noqa: BLE001
            pass

    def _on_block(self, b: Block) -> None:
        for sid, (kind, ws, extra) in list(self.subs.items()):
            if kind in ("chain_newHead", "chain_allHead"):
                self._notify(sid, self.header_json(b))
        for h in b.tx_hashes:
            if h in self.watch:
                self.watch_blocks[h] = b.number
                for sid in self.watch[h]:
                    self._notify(sid, {"inBlock": hex0x(b.hash)})
        fin = self.chain.finalized
        if fin.number != self.last_finalized:
            self.last_finalized = fin.number
            for sid, (kind, ws, extra) in list(self.subs.items()):
                if kind == "chain_finalizedHead":
                    self._notify(sid, self.header_json(fin))
            for h, n in list(self.watch_blocks.items()):
                if n <= fin.number:
                    for sid in self.watch.pop(h, []):
                        self._notify(sid, {"finalized": hex0x(self.chain.blocks[n].hash)})
                        self.subs.pop(sid, None)
                    del self.watch_blocks[h]

    def _on_drop(self, h: bytes, reason: str) -> None:
        for sid in self.watch.pop(h, []):
            self._notify(sid, reason)
            self.subs.pop(sid, None)

    # ---- HTTP / WS ------------------------------------------------------------------------

    async def http(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.websocket(request)
        if request.method == "GET":
            return web.json_response({"name": "koth-loopback-subtensor",
                                      "best": self.chain.best.number})
        try:
            body = json.loads(await request.text())
        except json.JSONDecodeError:
            return web.json_response({"jsonrpc": "2.0", "id": None,
                                      "error": {"code": -32700, "message": "Parse error"}})
        return web.json_response(self.handle_payload(body))

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                body = json.loads(msg.data)
            except json.JSONDecodeError:
                await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": None, "error": {
                    "code": -32700, "message": "Parse error"}}))
                continue
            await ws.send_str(json.dumps(self.handle_payload(body, ws)))
        for sid in [s for s, v in self.subs.items() if v[1] is ws]:
            self.subs.pop(sid, None)
        return ws

    async def produce_forever(self) -> None:
        loop = asyncio.get_event_loop()
        next_at = loop.time() + self.block_time
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += self.block_time
            if next_at < loop.time():  # fell behind (a slow machine): do not burst
                next_at = loop.time() + self.block_time
            try:
                self.chain.produce_block()
            except Exception as e:  # noqa: BLE001
                log(f"block production failed: {e!r}")


def runtime_version_json(scale: Scale, info: dict) -> dict:
    """state_getRuntimeVersion's answer: the metadata's System.Version constant, with the
    provenance file's spec/transaction version when it gives them."""
    version = {}
    p = scale.md.get_metadata_pallet("System")
    for c in p.value_object["constants"].value_object:
        if c.value["name"] == "Version":
            version = scale.decode(f"scale_info::{c.value['type']}",
                                   bytes(c.value_object["value"].value_object))
    return {
        "specName": info.get("spec_name", version.get("spec_name", "node-subtensor")),
        "implName": version.get("impl_name", "node-subtensor"),
        "authoringVersion": version.get("authoring_version", 1),
        "specVersion": int(info.get("spec_version", version.get("spec_version", 0))),
        "implVersion": version.get("impl_version", 1),
        "apis": [[a, v] for a, v in version.get("apis", [])],
        "transactionVersion": int(info.get("transaction_version",
                                           version.get("transaction_version", 1))),
        "stateVersion": version.get("system_version", 1),
    }


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--state", required=True)
    ap.add_argument("--metadata", default=DEFAULT_METADATA)
    ap.add_argument("--metadata-info", default=None)
    ap.add_argument("--block-time", type=float, default=0.25)
    ap.add_argument("--finality-lag", type=int, default=2)
    ap.add_argument("--seed", default="koth-loopback")
    ap.add_argument("--drand-start-round", type=int, default=1000)
    ap.add_argument("--drand-rounds-per-block", type=int, default=1)
    ap.add_argument("--drand-signature", action="append", default=[], metavar="ROUND=HEX")
    ap.add_argument("--drand-fixture", default=None)
    ap.add_argument("--keep-blocks", type=int, default=1200)
    ap.add_argument("--chain-name", default="Bittensor (koth loopback)")
    return ap.parse_args(argv)


async def amain(args) -> int:
    info_path = args.metadata_info or os.path.join(os.path.dirname(args.metadata),
                                                   "metadata.json")
    info = {}
    if os.path.exists(info_path):
        with open(info_path) as f:
            info = json.load(f)
    # Spec/tx version for the Runtime object first come from the provenance file; without it
    # they are read back from the metadata's System.Version below.
    scale = Scale(args.metadata, int(info.get("spec_version", 0)),
                  int(info.get("transaction_version", 1)))
    rv = runtime_version_json(scale, info)
    scale.spec_version, scale.transaction_version = rv["specVersion"], rv["transactionVersion"]

    sigs: dict[int, str] = {}
    fixture = args.drand_fixture or (DEFAULT_DRAND_FIXTURE if os.path.exists(
        DEFAULT_DRAND_FIXTURE) else None)
    if fixture:
        with open(fixture) as f:
            find_drand_rounds(json.load(f), sigs)
        log(f"drand signatures from {fixture}: rounds {sorted(sigs)}")
    for item in args.drand_signature:
        r, _, sig = item.partition("=")
        sigs[int(r)] = sig
    with open(args.state) as f:
        state = json.load(f)
    chain = Chain(scale, state, seed=args.seed, finality_lag=args.finality_lag,
                  drand_start_round=args.drand_start_round,
                  drand_rounds_per_block=args.drand_rounds_per_block, drand_signatures=sigs,
                  keep_blocks=args.keep_blocks, log=log, chain_name=args.chain_name)
    node = Node(chain, scale, rv, args.block_time)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/", node.http)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    log(f"spec {rv['specVersion']} tx {rv['transactionVersion']}, block time "
        f"{args.block_time}s, finality lag {args.finality_lag}, drand round "
        f"{args.drand_start_round} + {args.drand_rounds_per_block}/block, on "
        f"{args.host}:{port}")
    print(f"LISTENING {port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    producer = asyncio.ensure_future(node.produce_forever()) if args.block_time > 0 else None
    await stop.wait()
    log("stopping")
    if producer:
        producer.cancel()
    await runner.cleanup()
    return 0


def main(argv=None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
