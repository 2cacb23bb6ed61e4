"""A witness's cost per checkpoint: `add-checkpoint` over loopback HTTP, with a consistency
proof each time (the log grows by --step entries between checkpoints), as ICA's witness job
sends them. The witness persists each cosigned checkpoint (SQLite, synchronous=FULL) before it
answers, so the figure includes one fsync per request.

    .venv/bin/python bench/witness_roundtrip.py [--requests 300] [--step 100]

Prints the median and 95th percentile latency and the requests per second of one client.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from azdev_ica.ledger.cosignature import Cosigner
from azdev_ica.ledger.merkle import MemoryTree
from azdev_ica.ledger.note import Checkpoint, Signer, sign_checkpoint
from azdev_ica.ledger.witness import LogFamily, Witness, WitnessHTTPServer, add_checkpoint_body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--step", type=int, default=100)
    args = parser.parse_args()
    signer = Signer.generate("bench.example/audit")
    origin = "bench.example/audit/2026"
    tree = MemoryTree()
    with tempfile.TemporaryDirectory() as scratch:
        witness = Witness(
            Path(scratch) / "w.db",
            Cosigner.generate("bench.example/witness"),
            [LogFamily("bench.example/audit", (signer.verifier(),))],
        )
        server = WitnessHTTPServer(("127.0.0.1", 0), witness)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        latencies = []
        old = 0
        started = time.perf_counter()
        for _ in range(args.requests):
            tree.append_leaf_hashes(
                bytes(32 - len(str(i))) + str(i).encode() for i in range(args.step)
            )
            size = tree.size
            note = sign_checkpoint(Checkpoint(origin, size, tree.root()), [signer])
            proof = tree.consistency_proof(old, size) if old else []
            body = add_checkpoint_body(old, proof, note)
            url = f"{server.url}/add-checkpoint"
            request = urllib.request.Request(url, data=body)  # noqa: S310 - loopback
            begin = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                response.read()
            latencies.append(time.perf_counter() - begin)
            old = size
        elapsed = time.perf_counter() - started
        server.shutdown()
        server.server_close()
        witness.close()
    latencies.sort()
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(
        f"add-checkpoint: median {statistics.median(latencies) * 1000:.2f} ms, "
        f"p95 {p95 * 1000:.2f} ms, {args.requests / elapsed:.0f} requests/s (one client, "
        f"tree grown by {args.step} per request to {old} entries)"
    )


if __name__ == "__main__":
    main()
