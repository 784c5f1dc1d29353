"""Reference values for koth-timelock's legacy weights reveal (tests/legacy_reveal.rs), computed
by bittensor-drand 1.x itself at fixed clock readings.

bittensor-drand 1.x's get_encrypted_commit(uids, weights, version_key, tempo, current_block,
netuid, subnet_reveal_period_epochs, block_time, hotkey) reads the clock inside Rust
(SystemTime::now().as_secs_f64()); there is no pure function. The shim fixclock.c, preloaded,
makes clock_gettime(CLOCK_REALTIME) answer FIXCLOCK_NS, which this script sets before each call,
so every answer is a deterministic function of the inputs and the pinned time.

Run it with a Python that has a bittensor-drand 1.x wheel, in a throwaway venv (never the
SDK's 2.0.0 venv):

    python3 -m venv /tmp/drand1 && /tmp/drand1/bin/pip install bittensor-drand==1.2.0
    cc -O2 -shared -fPIC -o /tmp/fixclock.so fixclock.c -ldl
    FIXCLOCK_SO=/tmp/fixclock.so /tmp/drand1/bin/python generate.py > ../fixtures/drand1x_legacy_reveal.json

It re-executes itself with LD_PRELOAD set, checks that the pinned clock took effect, and checks
that the version is 1.x.
"""

import json
import os
import random
import struct
import sys
import time
from importlib.metadata import version

if "FIXCLOCK_NS" not in os.environ:
    so = os.environ.get("FIXCLOCK_SO")
    if not so:
        sys.exit("set FIXCLOCK_SO to the compiled fixclock.so")
    env = dict(os.environ, LD_PRELOAD=so, FIXCLOCK_NS="0")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import bittensor_drand  # noqa: E402  (after the re-exec, with the shim loaded)

GENESIS = 1692803367
NS = 1_000_000_000
U64_MAX = 2**64 - 1


def call(netuid, tempo, current_block, period, block_time, now_ns):
    os.environ["FIXCLOCK_NS"] = str(now_ns)
    if time.time_ns() != now_ns:
        sys.exit(f"the clock is not pinned: {time.time_ns()} != {now_ns}")
    try:
        _ct, rnd = bittensor_drand.get_encrypted_commit(
            [0, 1], [100, 200], 1, tempo, current_block, netuid, period, block_time,
            bytes([7] * 32),
        )
        return {"reveal_round": rnd}
    except BaseException as e:  # noqa: BLE001  (pyo3 panics are BaseException)
        return {"error": f"{type(e).__name__}: {e}"}


def cases():
    t0 = (GENESIS + 3 * 36_000_000) * NS  # a quicknet round boundary, in 2027
    out = []

    def add(name, netuid, tempo, block, period, block_time, now_ns):
        out.append(dict(name=name, netuid=netuid, tempo=tempo, current_block=block,
                        reveal_period_epochs=period, block_time=block_time, now_ns=now_ns))

    # The inputs of bittensor-drand 1.x's own tests (src/drand.rs, tests/test_commit_reveal.py).
    add("drand_rs_generate_commit_structure", 1, 20, 1000, 3, 12.0, t0)
    add("py_get_encrypted_commits", 1, 100, 1000, 2, 12.0, t0)
    add("py_generate_commit_success", 100, 50, 500, 2, 12.0, t0)
    for tempo in [10, 50, 100, 250, 360, 500, 750, 1000]:
        add(f"py_various_tempos_{tempo}", 1, tempo, 100_000, 1, 12.0, t0)
    # A mainnet-like subnet (tempo 360) around an epoch boundary: with netuid 3, epoch e starts
    # at block 361 e - 4; 18837 * 361 - 4 = 6_800_153.
    for block in [6_800_150, 6_800_151, 6_800_152, 6_800_153, 6_800_154, 6_800_500, 6_800_513]:
        add(f"mainnet_like_{block}", 3, 360, block, 1, 12.0, t0 + 123_456_789)
    # Fast blocks (a local or test chain), several reveal periods, the chain's limits.
    add("fast_blocks", 2, 10, 12_345, 1, 0.25, t0 + 250_000_000)
    add("fast_blocks_period_4", 2, 10, 12_345, 4, 0.25, t0 + 250_000_000)
    add("period_max", 7, 99, 1_000_000, 100, 12.0, t0)
    add("period_zero", 7, 99, 1_000_050, 0, 12.0, t0)
    add("period_zero_first_block", 7, 99, 999_992, 0, 12.0, t0)
    add("tempo_one", 0, 1, 5, 1, 12.0, t0)
    add("block_zero", 0, 360, 0, 1, 12.0, t0)
    add("netuid_max", 65535, 360, 1_000, 1, 12.0, t0)
    add("tempo_max", 65535, 65535, 70_000, 2, 12.0, t0)
    add("block_huge", 3, 360, 10**15, 3, 12.0, t0)
    add("block_time_zero", 3, 360, 1_000, 1, 0.0, t0 + 999_999_999)
    add("block_time_odd", 3, 360, 1_000, 1, 12.345, t0 + 1)
    # The floor: an exact round boundary, just below it by more than an f64 ulp (~0.24 us at
    # 1.8e9 s), and by 1 ns (below an ulp: as_secs_f64 rounds it onto the boundary).
    add("floor_exact", 1, 100, 1000, 2, 12.0, t0)
    add("floor_below_1us", 1, 100, 1000, 2, 12.0, t0 - 1_000)
    add("floor_below_1ns", 1, 100, 1000, 2, 12.0, t0 - 1)
    add("floor_top_of_round", 1, 100, 1000, 2, 12.0, t0 + 2_999_999_999)
    # Before genesis: the round clamps to 1.
    add("before_genesis", 1, 100, 1000, 2, 12.0, 1_000_000_000 * NS)
    add("unix_epoch", 1, 100, 1000, 2, 12.0, 0)
    # Outside what the chain accepts: koth refuses these (TempoZero, RevealPeriodTooLarge,
    # BlockOverflow); 1.x answers or panics.
    add("refused_tempo_zero", 1, 0, 1000, 2, 12.0, t0)
    add("refused_period_101", 1, 100, 1000, 101, 12.0, t0)
    add("refused_block_overflow", 1, 100, U64_MAX - 1, 2, 12.0, t0)
    # Seeded random inputs over the whole chain range.
    rng = random.Random(20251106)
    for i in range(120):
        tempo = rng.choice([1, 2, 10, 99, 100, 360, 1000, rng.randint(1, 65535)])
        add(f"random_{i}", rng.randint(0, 65535) if i % 3 else rng.randint(0, 64), tempo,
            rng.randint(0, 20_000_000), rng.randint(1, 100) if i % 4 else rng.randint(0, 3),
            rng.choice([12.0, 0.25, 1.0, 6.0, rng.uniform(0.01, 30.0)]),
            rng.randint(GENESIS * NS, 2_100_000_000 * NS))
    return out


def main():
    v = version("bittensor-drand")
    if not v.startswith("1."):
        sys.exit(f"bittensor-drand {v} is not 1.x")
    rows = []
    for c in cases():
        r = call(c["netuid"], c["tempo"], c["current_block"], c["reveal_period_epochs"],
                 c["block_time"], c["now_ns"])
        bits = struct.unpack("<Q", struct.pack("<d", c["block_time"]))[0]
        rows.append({**c, "block_time_bits": bits, **r})
    json.dump({
        "about": "bittensor-drand 1.x get_encrypted_commit's reveal_round at pinned clock "
                 "readings (now_ns, unix nanoseconds; the function reads as_secs_f64), by "
                 "tests/legacy_reference/generate.py; block_time_bits is the exact f64 passed "
                 "(IEEE 754 bits), block_time its decimal form.",
        "bittensor_drand_version": v,
        "cases": rows,
    }, sys.stdout, indent=1)
    sys.stdout.write("\n")


main()
