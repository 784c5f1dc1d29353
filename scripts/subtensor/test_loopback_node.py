#!/usr/bin/env python3
"""Self-test of the loopback subtensor node, against Bittensor's Python SDK.

    PY=$(scripts/bittensor-venv.sh | tail -1); $PY scripts/subtensor/test_loopback_node.py

It starts loopback_node.py (--port 0, stopped by PID), then:
  - decodes the node's storage answers with the SDK's decoder from the pinned metadata, and reads
    them again through the SDK's own client (async_substrate_interface.SubstrateInterface over
    WebSocket: query, query_map);
  - builds set_commitment, set_weights and commit_timelocked_mechanism_weights extrinsics with the
    SDK itself (compose_call + create_signed_extrinsic, signed offline with bittensor_wallet
    keypairs; immortal and mortal eras), submits them with author_submitExtrinsic and sees them
    applied in storage; submits one through the SDK's submit_extrinsic and waits for inclusion;
  - checks refusals: bad signature, stale nonce, no validator permit, rate limit, version key;
  - timelock: a TimelockEncrypted commitment (bittensor_drand.encrypt_at_round) is revealed into
    Commitments.RevealedCommitments once the simulated drand round passes and the node has the
    round's signature (drand quicknet's published round-1000 signature); timelocked weights are
    revealed at the next epoch and land in Weights silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

from async_substrate_interface.sync_substrate import SubstrateInterface  # noqa: E402
from async_substrate_interface.types import Runtime  # noqa: E402
from async_substrate_interface.utils.storage import StorageKey  # noqa: E402
from bittensor_wallet import Keypair  # noqa: E402
from scalecodec.base import ScaleBytes  # noqa: E402
import bittensor_drand  # noqa: E402
from chain_sim import bare_ciphertext  # noqa: E402

METADATA = os.path.join(REPO, "crates", "koth-subtensor", "tests", "fixtures", "metadata.scale")
METADATA_INFO = os.path.join(os.path.dirname(METADATA), "metadata.json")
QUICKNET = os.path.join(REPO, "crates", "koth-timelock", "tests", "fixtures", "quicknet.json")
# drand quicknet's published round-123 beacon (a public test vector), used if the fixture is absent
ROUND_123 = (123, "b75c69d0b72a5d906e854e808ba7e2accb1542ac355ae486d591aa9d43765482"
                  "e26cd02df835d3546d23c4b13e0dfc92")
NETUID = 3


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def drand_pulse() -> tuple[int, str]:
    if os.path.exists(QUICKNET):
        p = read_json(QUICKNET)["pulse"]
        return int(p["round"]), p["signature"]
    return ROUND_123


def load_runtime() -> Runtime:
    info = read_json(METADATA_INFO)
    return Runtime.deserialize({
        "chain": "test", "type_registry": {}, "metadata_value": read_bytes(METADATA),
        "ss58_format": 42, "runtime_info": {"specVersion": info["spec_version"],
                                            "transactionVersion": info["transaction_version"]}})


class LoopbackNode:
    """loopback_node.py as a subprocess; stopped by PID."""

    def __init__(self, state: dict, *extra: str):
        self.dir = tempfile.mkdtemp(prefix="koth-loopback-test-")
        self.state_path = os.path.join(self.dir, "state.json")
        with open(self.state_path, "w") as f:
            json.dump(state, f)
        self.stderr = open(os.path.join(self.dir, "node.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "loopback_node.py"), "--port", "0",
             "--state", self.state_path, "--metadata", METADATA, *extra],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"node did not start: {line!r}; log: {self.log()}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._id = 0

    def log(self) -> str:
        with open(os.path.join(self.dir, "node.log")) as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()

    def raw(self, method: str, params=None) -> dict:
        self._id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method,
                           "params": params or []}).encode()
        req = urllib.request.Request(self.url, data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def rpc(self, method: str, params=None):
        resp = self.raw(method, params)
        if "error" in resp:
            raise RpcFailure(resp["error"])
        return resp["result"]


class RpcFailure(Exception):
    def __init__(self, err: dict):
        super().__init__(json.dumps(err))
        self.err = err


class Sdk:
    """The SDK's own extrinsic builder, run offline against the pinned metadata.

    SubstrateInterface is created in mock mode (no connection) with the metadata's Runtime; the
    few chain facts signing needs (genesis hash, the birth block of a mortal era) are supplied."""

    def __init__(self, rt: Runtime, node: LoopbackNode):
        s = SubstrateInterface("ws://127.0.0.1:9", _mock=True)
        s.runtime = rt
        s.runtime_config = rt.runtime_config
        s.init_runtime = lambda block_hash=None, block_id=None: rt
        genesis = node.rpc("chain_getBlockHash", [0])
        s.get_block_hash = lambda block_id=None: (
            genesis if not block_id else node.rpc("chain_getBlockHash", [block_id]))
        s.get_chain_finalised_head = lambda: node.rpc("chain_getFinalizedHead")
        s.get_block_number = lambda block_hash=None: int(
            node.rpc("chain_getHeader", [block_hash] if block_hash else [])["number"], 16)
        self.s, self.node = s, node

    def signed(self, kp: Keypair, pallet: str, call: str, params: dict, nonce: int = None,
               era=None) -> str:
        c = self.s.compose_call(pallet, call, params)
        if nonce is None:
            nonce = self.node.rpc("system_accountNextIndex", [kp.ss58_address])
        xt = self.s.create_signed_extrinsic(c, kp, nonce=nonce, era=era)
        return str(xt.data)


class LoopbackNodeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rt = load_runtime()
        cls.rc = cls.rt.runtime_config
        cls.md = cls.rt.metadata
        cls.alice = Keypair.create_from_uri("//Alice")  # validator, uid 0
        cls.bob = Keypair.create_from_uri("//Bob")  # miner, uid 1
        cls.charlie = Keypair.create_from_uri("//Charlie")  # miner without permit, uid 2
        cls.owner = Keypair.create_from_uri("//Ferdie")
        cls.round, cls.sig = drand_pulse()
        cls.state = {
            "netuid": NETUID, "tempo": 10, "commit_reveal_weights_enabled": False,
            "weights_set_rate_limit": 3, "weights_version_key": 5, "min_allowed_weights": 1,
            "subnet_owner_coldkey_ss58": cls.owner.ss58_address,
            "neurons": [
                {"hotkey_ss58": cls.alice.ss58_address, "coldkey_ss58": cls.owner.ss58_address,
                 "validator_permit": True, "stake": 5_000_000_000},
                {"hotkey_ss58": cls.bob.ss58_address, "coldkey_ss58": cls.owner.ss58_address,
                 "validator_permit": False, "stake": 1},
                {"hotkey_ss58": cls.charlie.ss58_address,
                 "coldkey_ss58": cls.owner.ss58_address, "validator_permit": False,
                 "stake": 7}],
            "revealed_commitments": [{"hotkey_ss58": cls.charlie.ss58_address,
                                      "data": "0x0c6162", "block": 0}],
        }
        # Blocks only on request (--block-time 0): each test step is deterministic.
        cls.node = LoopbackNode(cls.state, "--block-time", "0", "--finality-lag", "2",
                                "--drand-start-round", str(cls.round - 60),
                                "--drand-signature", f"{cls.round}={cls.sig}")
        cls.sdk = Sdk(cls.rt, cls.node)

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        assert cls.node.proc.returncode is not None

    # ---- helpers ---------------------------------------------------------------------------

    def key(self, pallet, item, params=()):
        return "0x" + bytes(StorageKey.create_from_storage_function(
            pallet, item, list(params), runtime_config=self.rc, metadata=self.md).data).hex()

    def read(self, pallet, item, params=(), at=None):
        """state_getStorage, decoded by the SDK's decoder with the metadata's value type."""
        sk = StorageKey.create_from_storage_function(pallet, item, list(params),
                                                     runtime_config=self.rc, metadata=self.md)
        raw = self.node.rpc("state_getStorage", [self.key(pallet, item, params)] + (
            [at] if at else []))
        if raw is None:
            return None
        obj = self.rc.create_scale_object(sk.value_scale_type, data=ScaleBytes(raw))
        return obj.decode()

    def produce(self, n=1) -> int:
        return self.node.rpc("koth_produceBlocks", [n])

    def events(self, at=None):
        return self.read("System", "Events", (), at) or []

    def submit(self, hexxt: str) -> str:
        return self.node.rpc("author_submitExtrinsic", [hexxt])

    def assert_refused(self, hexxt: str, code: int, data_part: str):
        with self.assertRaises(RpcFailure) as cm:
            self.submit(hexxt)
        self.assertEqual(cm.exception.err["code"], code, cm.exception.err)
        self.assertIn(data_part, str(cm.exception.err.get("data")), cm.exception.err)

    # ---- tests -----------------------------------------------------------------------------

    def test_01_chain_rpcs(self):
        g = self.node.rpc("chain_getBlockHash", [0])
        self.assertRegex(g, r"^0x[0-9a-f]{64}$")
        self.produce(5)
        best = self.node.rpc("chain_getHeader")
        self.assertEqual(int(best["number"], 16), 5)
        fin = self.node.rpc("chain_getFinalizedHead")
        self.assertEqual(self.node.rpc("chain_getHeader", [fin])["number"], "0x3")
        self.assertEqual(self.node.rpc("chain_getBlockHash", [3]), fin)
        self.assertIsNone(self.node.rpc("chain_getBlockHash", [99]))
        h4 = self.node.rpc("chain_getBlockHash", [4])
        self.assertEqual(self.node.rpc("chain_getHeader", [h4])["parentHash"],
                         self.node.rpc("chain_getBlockHash", [3]))
        rv = self.node.rpc("state_getRuntimeVersion")
        info = read_json(METADATA_INFO)
        self.assertEqual((rv["specName"], rv["specVersion"], rv["transactionVersion"]),
                         (info["spec_name"], info["spec_version"], info["transaction_version"]))
        self.assertEqual(self.node.rpc("state_getMetadata"), "0x" + read_bytes(METADATA).hex())
        self.assertEqual(self.node.rpc("system_chain"), "Bittensor (koth loopback)")
        self.assertEqual(self.node.rpc("system_accountNextIndex", [self.alice.ss58_address]), 0)
        # System.Number and storage "at" an older block
        self.assertEqual(self.read("System", "Number"), 5)
        self.assertEqual(self.read("System", "Number", (), at=h4), 4)
        self.assertEqual(self.node.raw("no_such_method")["error"]["code"], -32601)

    def test_02_metagraph_storage_decodes_with_sdk(self):
        n = len(self.state["neurons"])
        self.assertEqual(self.read("SubtensorModule", "SubnetworkN", (NETUID,)), n)
        for uid, kp in enumerate([self.alice, self.bob, self.charlie]):
            self.assertEqual(self.read("SubtensorModule", "Uids", (NETUID, kp.ss58_address)), uid)
            self.assertEqual(self.read("SubtensorModule", "Keys", (NETUID, uid)), kp.ss58_address)
            self.assertEqual(self.read("SubtensorModule", "Owner", (kp.ss58_address,)),
                             self.owner.ss58_address)
            self.assertEqual(self.read("SubtensorModule", "TotalHotkeyAlpha",
                                       (kp.ss58_address, NETUID)),
                             self.state["neurons"][uid]["stake"])
        self.assertEqual(self.read("SubtensorModule", "ValidatorPermit", (NETUID,)),
                         [True, False, False])
        self.assertIs(self.read("SubtensorModule", "CommitRevealWeightsEnabled", (NETUID,)), False)
        self.assertEqual(self.read("SubtensorModule", "WeightsSetRateLimit", (NETUID,)), 3)
        self.assertEqual(self.read("SubtensorModule", "WeightsVersionKey", (NETUID,)), 5)
        self.assertEqual(self.read("SubtensorModule", "Tempo", (NETUID,)), 10)
        self.assertEqual(self.read("SubtensorModule", "SubnetOwner", (NETUID,)),
                         self.owner.ss58_address)
        self.assertIsNone(self.read("SubtensorModule", "Uids", (NETUID, self.owner.ss58_address)))
        self.assertEqual(self.read("Commitments", "RevealedCommitments",
                                   (NETUID, self.charlie.ss58_address)), [("\x0cab", 0)])
        self.assertEqual(self.read("Drand", "LastStoredRound"),
                         self.round - 60 + self.read("System", "Number"))
        # paged keys and queryStorageAt over the Uids map
        prefix = self.key("SubtensorModule", "Uids", (NETUID,))
        keys = self.node.rpc("state_getKeysPaged", [prefix, 10])
        self.assertEqual(len(keys), n)
        self.assertEqual(self.node.rpc("state_getKeysPaged", [prefix, 10, keys[0]]), keys[1:])
        changes = self.node.rpc("state_queryStorageAt", [keys])[0]["changes"]
        uids = sorted(self.rc.create_scale_object("u16", data=ScaleBytes(v)).decode()
                      for _, v in changes)
        self.assertEqual(uids, list(range(n)))

    def test_03_sdk_client_over_websocket(self):
        """The SDK's own SubstrateInterface talks to the node (runtime, metadata, queries)."""
        si = SubstrateInterface(f"ws://127.0.0.1:{self.node.port}", ss58_format=42)
        try:
            self.assertEqual(si.query("SubtensorModule", "SubnetworkN", [NETUID]).value, 3)
            self.assertEqual(si.query("SubtensorModule", "Keys", [NETUID, 1]).value,
                             self.bob.ss58_address)
            got = {getattr(k, "value", k): getattr(v, "value", v)
                   for k, v in si.query_map("SubtensorModule", "Uids", [NETUID])}
            self.assertEqual(sorted(got.values()), [0, 1, 2])
            self.assertEqual(si.get_block_number(si.get_chain_head()),
                             int(self.node.rpc("chain_getHeader")["number"], 16))
        finally:
            si.close()

    def test_04_set_commitment_raw(self):
        xt = self.sdk.signed(self.bob, "Commitments", "set_commitment",
                             {"netuid": NETUID, "info": {"fields": [[{"Raw5": b"koth!"}]]}})
        h = self.submit(xt)
        self.assertEqual(h, "0x" + hashlib.blake2b(bytes.fromhex(xt[2:]),
                                                   digest_size=32).hexdigest())
        self.assertEqual(self.node.rpc("system_accountNextIndex", [self.bob.ss58_address]), 1)
        self.assert_refused(xt, 1013, "")  # already in the pool
        same_nonce = self.sdk.signed(self.bob, "Commitments", "set_commitment", {
            "netuid": NETUID, "info": {"fields": [[{"Raw1": b"y"}]]}}, nonce=0)
        self.assert_refused(same_nonce, 1014, "replace another transaction")
        b = self.produce()
        nonce = self.node.rpc("state_call", ["AccountNonceApi_account_nonce",
                                             "0x" + self.bob.public_key.hex()])
        self.assertEqual(self.rc.create_scale_object("u32", data=ScaleBytes(nonce)).decode(), 1)
        reg = self.read("Commitments", "CommitmentOf", (NETUID, self.bob.ss58_address))
        self.assertEqual(reg["block"], b)
        self.assertEqual(reg["info"]["fields"], [{"Raw5": "0x" + b"koth!".hex()}])
        self.assertEqual(self.read("Commitments", "LastCommitment",
                                   (NETUID, self.bob.ss58_address)), b)
        self.assertEqual(self.read("System", "Account", (self.bob.ss58_address,))["nonce"], 1)
        ev = self.events()
        self.assertEqual(ev[-1]["event_id"], "ExtrinsicSuccess")
        block = self.node.rpc("chain_getBlock")["block"]
        self.assertEqual(block["extrinsics"], [xt])
        # the same extrinsic again: its nonce is spent
        self.assert_refused(xt, 1010, "Transaction is outdated")
        # not registered: included, fails with the pallet's error
        xt2 = self.sdk.signed(self.owner, "Commitments", "set_commitment",
                              {"netuid": NETUID, "info": {"fields": [[{"Raw1": b"x"}]]}})
        self.submit(xt2)
        self.produce()
        self.assertEqual(self.events()[-1]["event_id"], "ExtrinsicFailed")
        self.assertIsNone(self.read("Commitments", "CommitmentOf",
                                    (NETUID, self.owner.ss58_address)))

    def test_05_set_weights_and_refusals(self):
        good = self.sdk.signed(self.alice, "SubtensorModule", "set_weights",
                               {"netuid": NETUID, "dests": [1, 2], "weights": [30000, 10000],
                                "version_key": 5})
        # a flipped signature bit: refused at submission, like a node's pool
        bad = bytearray(bytes.fromhex(good[2:]))
        bad[40] ^= 1
        self.assert_refused("0x" + bad.hex(), 1010, "bad signature")
        self.submit(good)
        b = self.produce()
        w = self.read("SubtensorModule", "Weights", (NETUID, 0))
        self.assertEqual(w, [(1, 65535), (2, 21845)])  # max-upscaled as subtensor does
        self.assertEqual(self.read("SubtensorModule", "LastUpdate", (NETUID,))[0], b)
        # too soon (rate limit 3): included, fails, weights unchanged
        again = self.sdk.signed(self.alice, "SubtensorModule", "set_weights",
                                {"netuid": NETUID, "dests": [1], "weights": [1],
                                 "version_key": 5})
        self.submit(again)
        self.produce()
        self.assertEqual(self.events()[-1]["event_id"], "ExtrinsicFailed")
        self.assertEqual(self.read("SubtensorModule", "Weights", (NETUID, 0)), w)
        # old version key, then no validator permit
        self.produce(3)
        old_key = self.sdk.signed(self.alice, "SubtensorModule", "set_weights",
                                  {"netuid": NETUID, "dests": [1], "weights": [1],
                                   "version_key": 4})
        self.submit(old_key)
        self.produce()
        self.assertEqual(self.events()[-1]["event_id"], "ExtrinsicFailed")
        nop = self.sdk.signed(self.charlie, "SubtensorModule", "set_weights",
                              {"netuid": NETUID, "dests": [0, 1], "weights": [1, 1],
                               "version_key": 5})
        self.submit(nop)
        self.produce()
        ev = self.events()[-1]
        self.assertEqual(ev["event_id"], "ExtrinsicFailed")
        err = ev["attributes"]["dispatch_error"]["Module"]
        self.assertEqual(err["index"], 7)  # SubtensorModule
        self.assertIsNone(self.read("SubtensorModule", "Weights", (NETUID, 2)))
        # mortal era, and a future nonce that waits for its gap
        n = self.node.rpc("system_accountNextIndex", [self.alice.ss58_address])
        later = self.sdk.signed(self.alice, "SubtensorModule", "set_weights",
                                {"netuid": NETUID, "dests": [1], "weights": [7],
                                 "version_key": 5}, nonce=n + 1, era={"period": 64})
        self.submit(later)
        self.produce()
        self.assertEqual(len(self.node.rpc("author_pendingExtrinsics")), 1)
        gap = self.sdk.signed(self.alice, "System", "remark", {"remark": b"gap"}, nonce=n,
                              era={"period": 64})
        self.submit(gap)
        self.produce()
        self.assertEqual(self.node.rpc("author_pendingExtrinsics"), [])
        self.assertEqual(self.read("SubtensorModule", "Weights", (NETUID, 0)), [(1, 65535)])

    def test_06_timelocked_commitment_is_revealed(self):
        payload = b"\x30koth:hf://org/model@rev"
        # On chain goes the bare ciphertext (what the SDK's get_encrypted_commitment returns),
        # not the SDK's UserData envelope that encrypt_at_round wraps it in.
        envelope, rnd = bittensor_drand.encrypt_at_round(payload, self.round)
        self.assertEqual(rnd, self.round)
        enc = bare_ciphertext(envelope)
        xt = self.sdk.signed(self.bob, "Commitments", "set_commitment", {
            "netuid": NETUID,
            "info": {"fields": [[{"TimelockEncrypted": {"encrypted": enc,
                                                        "reveal_round": self.round}}]]}})
        self.submit(xt)
        b = self.produce()
        reg = self.read("Commitments", "CommitmentOf", (NETUID, self.bob.ss58_address))
        self.assertIn("TimelockEncrypted", reg["info"]["fields"][0])
        self.assertIn((NETUID, self.bob.ss58_address),
                      self.read("Commitments", "TimelockedIndex"))
        last = self.read("Drand", "LastStoredRound")
        self.assertLess(last, self.round, "the test needs the round to be in the future")
        self.assertIsNone(self.read("Commitments", "RevealedCommitments",
                                    (NETUID, self.bob.ss58_address)))
        # produce until the pulse is stored, then one more block for on_initialize to see it
        while self.read("Drand", "LastStoredRound") < self.round:
            b = self.produce()
        self.assertIsNotNone(self.read("Drand", "Pulses", (self.round,)))
        self.assertIsNone(self.read("Commitments", "RevealedCommitments",
                                    (NETUID, self.bob.ss58_address)))
        b = self.produce()
        got = self.node.rpc("state_getStorage", [self.key(
            "Commitments", "RevealedCommitments", (NETUID, self.bob.ss58_address))])
        # decode with the SDK, keeping bytes raw: Vec<(Vec<u8>, u64)>
        sk = StorageKey.create_from_storage_function(
            "Commitments", "RevealedCommitments", [NETUID, self.bob.ss58_address],
            runtime_config=self.rc, metadata=self.md)
        obj = self.rc.create_scale_object(sk.value_scale_type, data=ScaleBytes(got))
        obj.decode()
        from scale_env import plain
        self.assertEqual(plain(obj), [[payload, b]])
        self.assertIsNone(self.read("Commitments", "CommitmentOf",
                                    (NETUID, self.bob.ss58_address)))
        self.assertNotIn((NETUID, self.bob.ss58_address),
                         self.read("Commitments", "TimelockedIndex") or [])

    def test_07_sdk_submit_and_watch(self):
        """The SDK's submit_extrinsic over WebSocket, waiting for inclusion (node on a timer)."""
        node = LoopbackNode(self.state, "--block-time", "0.2", "--finality-lag", "2")
        try:
            si = SubstrateInterface(f"ws://127.0.0.1:{node.port}", ss58_format=42)
            try:
                call = si.compose_call("SubtensorModule", "set_weights", {
                    "netuid": NETUID, "dests": [1], "weights": [3], "version_key": 5})
                xt = si.create_signed_extrinsic(call, self.alice, era={"period": 32})
                receipt = si.submit_extrinsic(xt, wait_for_inclusion=True,
                                              wait_for_finalization=True)
                self.assertTrue(receipt.is_success, receipt.error_message)
                self.assertEqual(si.query("SubtensorModule", "Weights", [NETUID, 0]).value,
                                 [(1, 65535)])
            finally:
                si.close()
            b1 = int(node.rpc("chain_getHeader")["number"], 16)
            time.sleep(0.7)
            b2 = int(node.rpc("chain_getHeader")["number"], 16)
            self.assertGreater(b2, b1)
            fin = node.rpc("chain_getHeader", [node.rpc("chain_getFinalizedHead")])
            self.assertLessEqual(int(fin["number"], 16), b2 - 2)
        finally:
            node.stop()

    def test_08_timelocked_weights_are_revealed(self):
        state = dict(self.state, commit_reveal_weights_enabled=True, tempo=4,
                     reveal_period_epochs=1, weights_set_rate_limit=1)
        node = LoopbackNode(state, "--block-time", "0", "--drand-start-round",
                            str(self.round - 3), "--drand-signature", f"{self.round}={self.sig}")
        try:
            sdk = Sdk(self.rt, node)
            # WeightsTlockPayload { hotkey, uids, values, version_key }, SCALE by the SDK
            wp = {"hotkey": "0x" + self.alice.public_key.hex(), "uids": [1, 2],
                  "values": [65535, 100], "version_key": 5}
            self.rc.update_type_registry_types({"TestWeightsTlockPayload": {
                "type": "struct", "type_mapping": [["hotkey", "Vec<u8>"], ["uids", "Vec<u16>"],
                                                   ["values", "Vec<u16>"],
                                                   ["version_key", "u64"]]}})
            plain_payload = bytes(self.rc.create_scale_object("TestWeightsTlockPayload").encode(
                wp).data)
            commit = bare_ciphertext(bittensor_drand.encrypt_at_round(plain_payload,
                                                                      self.round)[0])
            xt = sdk.signed(self.alice, "SubtensorModule", "commit_timelocked_mechanism_weights",
                            {"netuid": NETUID, "mecid": 0, "commit": commit,
                             "reveal_round": self.round, "commit_reveal_version": 4})
            node.rpc("author_submitExtrinsic", [xt])
            b = node.rpc("koth_produceBlocks", [1])
            lu = self.read_at(node, "SubtensorModule", "LastUpdate", (NETUID,))
            self.assertEqual(lu[0], b)
            self.assertIsNone(self.read_at(node, "SubtensorModule", "Weights", (NETUID, 0)))
            state_now = node.rpc("koth_debugState")
            self.assertEqual(len(state_now["timelocked_weight_commits"]), 1)
            # run to the end of the next epoch: the reveal is silent and lands in Weights
            for _ in range(12):
                node.rpc("koth_produceBlocks", [1])
                if self.read_at(node, "SubtensorModule", "Weights", (NETUID, 0)):
                    break
            self.assertEqual(self.read_at(node, "SubtensorModule", "Weights", (NETUID, 0)),
                             [(1, 65535), (2, 100)])
            # LastUpdate stays the commit block (the reveal does not touch it under CR)
            self.assertEqual(self.read_at(node, "SubtensorModule", "LastUpdate", (NETUID,))[0], b)
            self.assertEqual(node.rpc("koth_debugState")["timelocked_weight_commits"], [])
        finally:
            node.stop()

    def read_at(self, node, pallet, item, params=()):
        sk = StorageKey.create_from_storage_function(pallet, item, list(params),
                                                     runtime_config=self.rc, metadata=self.md)
        raw = node.rpc("state_getStorage", ["0x" + bytes(sk.data).hex()])
        if raw is None:
            return None
        return self.rc.create_scale_object(sk.value_scale_type, data=ScaleBytes(raw)).decode()


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
