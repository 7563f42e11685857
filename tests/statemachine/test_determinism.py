"""Two processes with different hash seeds apply the same log and must agree byte for byte
(set/dict iteration order must never leak into results, snapshots or the hash)."""

from __future__ import annotations

import os
import subprocess
import sys

WORKLOAD = r"""
import random, sys
from raftkv import api
from raftkv.protocol import codec
from raftkv.state.fsm import KVStateMachine
rng = random.Random(1234)
f = KVStateMachine()
keys = [b"k%d" % i for i in range(12)]
out = []
for i in range(1, 600):
    x = rng.random()
    if x < 0.4:
        req = api.PutRequest(rng.choice(keys), b"v%d" % i, rng.choice([0, 0, 1, 2]))
    elif x < 0.5:
        req = api.DeleteRangeRequest(rng.choice(keys), rng.choice([b"", b"k5", api.ALL_KEYS]))
    elif x < 0.7:
        ops = tuple(api.PutRequest(rng.choice(keys)) for _ in range(rng.randint(0, 4)))
        ops += (api.DeleteRangeRequest(rng.choice(keys)),) * rng.randint(0, 1)
        req = api.TxnRequest((api.Compare(rng.choice(keys), api.CompareTarget.VERSION,
                              api.CompareResult.GREATER, 1),), ops, ops[::-1])
    elif x < 0.8:
        req = api.LeaseGrantRequest(10, rng.choice([1, 2]))
    elif x < 0.85:
        req = api.LeaseRevokeRequest(rng.choice([1, 2]))
    elif x < 0.9:
        cp = api.LeaseCheckpoint(rng.choice([1, 2]), rng.random() * 9)
        req = api.LeaseCheckpointRequest((cp,))
    elif x < 0.95:
        req = api.CompactionRequest(max(1, f.revision - rng.randint(0, 20)))
    else:
        req = api.LeaseExpireRequest((1, 2))
    cmd = api.Command(req, rng.randint(0, 5), rng.randint(1, 30), float(i))
    r = f.apply(i, codec.encode_command(cmd))
    out.append(repr((r.revision, r.response, r.error and (r.error.code, str(r.error)), r.events)))
import hashlib
h = hashlib.sha256("\n".join(out).encode())
h.update(f.snapshot())
print(h.hexdigest(), f.hash(), f.revision)
"""


def run(seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    res = subprocess.run(
        [sys.executable, "-c", WORKLOAD], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_same_log_same_results_snapshot_and_hash_across_hash_seeds() -> None:
    a, b = run("1"), run("2")
    assert a == b
    assert int(a.split()[2]) > 50  # the workload did write
