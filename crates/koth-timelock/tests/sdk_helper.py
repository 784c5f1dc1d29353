"""The reference client's side of koth-timelock's cross-checks.

Runs Bittensor's own timelock extension (bittensor_drand, behind the Python SDK) and the SDK's
SCALE codec (scalecodec) on requests from koth's Rust tests. Offline: nothing here fetches a
drand pulse; decryption always takes a signature given in the request.

    python sdk_helper.py < requests.json    # a JSON list of requests -> a JSON list of answers
    python sdk_helper.py fixtures           # prints tests/fixtures/sdk_round1000.json

Requests are objects with an "op"; bytes travel as hex. Ops:
  encrypt_at_round        {data_hex, round}               -> {envelope_hex, round}
  decrypt_with_signature  {envelope_hex, signature_hex}   -> {plaintext_hex} or {error}
  commitment              {data, blocks_until_reveal, block_time}
                              -> {ciphertext_hex, reveal_round, t_before, t_after}
  commit_v2               {uids, weights, version_key, state, reveal_period_epochs, block_time,
                           hotkey_hex} -> {ciphertext_hex, reveal_round, t_before, t_after}
  scale_str               {data}                          -> {hex}
  scale_weights           {hotkey_hex, uids, values, version_key} -> {hex}
Any op the SDK refuses (ValueError) answers {error}.
t_before/t_after are time.time() read just before and after the SDK call: the SDK reads the
clock itself, so koth checks its own rule at both ends.
"""

import json
import sys
import time

import bittensor_drand
from scalecodec.base import RuntimeConfiguration
from scalecodec.type_registry import load_type_registry_preset

# subtensor's WeightsTlockPayload (pallets/subtensor/src/coinbase/reveal_commits.rs).
WEIGHTS_TYPE = {
    "type": "struct",
    "type_mapping": [
        ["hotkey", "Vec<u8>"],
        ["uids", "Vec<u16>"],
        ["values", "Vec<u16>"],
        ["version_key", "u64"],
    ],
}


def scale_runtime():
    rc = RuntimeConfiguration()
    rc.update_type_registry(load_type_registry_preset("legacy"))
    rc.update_type_registry({"types": {"KothWeightsTlockPayload": WEIGHTS_TYPE}})
    return rc


RC = scale_runtime()


def scale_hex(type_name, value):
    return RC.create_scale_object(type_name).encode(value).to_hex().removeprefix("0x")


def handle(req):
    op = req["op"]
    if op == "encrypt_at_round":
        envelope, rnd = bittensor_drand.encrypt_at_round(bytes.fromhex(req["data_hex"]), req["round"])
        return {"envelope_hex": envelope.hex(), "round": rnd}
    if op == "decrypt_with_signature":
        plain = bittensor_drand.decrypt_with_signature(bytes.fromhex(req["envelope_hex"]), req["signature_hex"])
        return {"plaintext_hex": plain.hex()}
    if op == "commitment":
        t_before = time.time()
        ct, rnd = bittensor_drand.get_encrypted_commitment(
            req["data"], req["blocks_until_reveal"], req["block_time"]
        )
        t_after = time.time()
        return {"ciphertext_hex": ct.hex(), "reveal_round": rnd, "t_before": t_before, "t_after": t_after}
    if op == "commit_v2":
        s = req["state"]
        t_before = time.time()
        ct, rnd = bittensor_drand.get_encrypted_commit_v2(
            uids=req["uids"],
            weights=req["weights"],
            version_key=req["version_key"],
            last_epoch_block=s["last_epoch_block"],
            pending_epoch_at=s["pending_epoch_at"],
            subnet_epoch_index=s["subnet_epoch_index"],
            tempo=s["tempo"],
            blocks_since_last_step=s["blocks_since_last_step"],
            current_block=s["current_block"],
            subnet_reveal_period_epochs=req["reveal_period_epochs"],
            block_time=req["block_time"],
            hotkey=bytes.fromhex(req["hotkey_hex"]),
        )
        t_after = time.time()
        return {"ciphertext_hex": ct.hex(), "reveal_round": rnd, "t_before": t_before, "t_after": t_after}
    if op == "scale_str":
        return {"hex": scale_hex("Str", req["data"])}
    if op == "scale_weights":
        value = {
            "hotkey": "0x" + req["hotkey_hex"],
            "uids": req["uids"],
            "values": req["values"],
            "version_key": req["version_key"],
        }
        return {"hex": scale_hex("KothWeightsTlockPayload", value)}
    raise SystemExit(f"sdk_helper.py: unknown op {op!r}")


def answer(req):
    """The SDK refuses bad input with ValueError: that is an answer too ({error}); the test
    decides whether it expected one."""
    try:
        return handle(req)
    except ValueError as e:
        return {"error": f"ValueError: {e}"}


def fixtures():
    """SDK ciphertexts to drand quicknet round 1000, kept in the repository so that koth's
    offline tests decrypt what the reference client wrote."""
    commitment = "koth:v1 hf://example/king@0123abcd sha256:" + "ab" * 32
    hotkey = bytes(range(32))
    weights = {"hotkey_hex": hotkey.hex(), "uids": [0, 1, 7, 65535], "values": [65535, 0, 12, 1], "version_key": 42}
    cases = [
        {"name": "bytes", "plaintext_hex": b"hello from the bittensor SDK".hex()},
        {"name": "empty", "plaintext_hex": ""},
        {"name": "commitment", "commitment": commitment, "plaintext_hex": scale_hex("Str", commitment)},
        {
            "name": "weights",
            "weights": weights,
            "plaintext_hex": scale_hex("KothWeightsTlockPayload", {**weights, "hotkey": "0x" + hotkey.hex()}),
        },
    ]
    for case in cases:
        envelope, rnd = bittensor_drand.encrypt_at_round(bytes.fromhex(case["plaintext_hex"]), 1000)
        case["round"] = rnd
        case["sdk_envelope_hex"] = envelope.hex()
    from importlib.metadata import version

    return {
        "about": "Written by crates/koth-timelock/tests/sdk_helper.py fixtures, with "
        f"bittensor_drand {version('bittensor-drand')} (bittensor {version('bittensor')}): "
        "encrypt_at_round(plaintext, 1000) envelopes; plaintexts SCALE-encoded by scalecodec.",
        "cases": cases,
    }


def main():
    if sys.argv[1:] == ["fixtures"]:
        json.dump(fixtures(), sys.stdout, indent=2)
        print()
        return
    requests = json.load(sys.stdin)
    json.dump([answer(r) for r in requests], sys.stdout)


if __name__ == "__main__":
    main()
