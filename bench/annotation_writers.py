"""A burst's annotation writers: one process that writes nodewatch's annotations onto many Nodes, each at its
planned moment, through nodewatch's own Node client (a fresh TLS connection per PATCH, as each node's agent makes).

It imports only nodewatch and the standard library (a process started by multiprocessing would re-import the
benchmark runner and the Kubernetes client: seconds of start-up competing with the writes it is meant to time).

Run as ``python -m bench.annotation_writers KUBECONFIG THREADS MODE`` (MODE ``notice`` or ``clear``):
stdin line 1, the plan as JSON ``[[offset_s, node, instance_id], ...]``; once connected it prints ``ready``;
stdin line 2, the start (seconds since the epoch); it writes each item at start + offset and prints the JSON list of
``[sent, answered]`` per item (sent -1 for a failed write, whose error goes to stderr).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from nodewatch import annotations as contract
from nodewatch.kube_connection import from_kubeconfig
from nodewatch.node import NodeClient

NOTICE, CLEAR = "notice", "clear"


def _changes(mode: str, instance: str) -> dict[str, str | None]:
    if mode == CLEAR:
        return {contract.REBALANCE_NOTICE_TIME: None, contract.INSTANCE_ID: None}
    return {
        contract.REBALANCE_NOTICE_TIME: contract.format_time(dt.datetime.now(dt.UTC)),
        contract.INSTANCE_ID: instance,
    }


def main(argv: list[str]) -> int:
    kubeconfig, threads, mode = argv[0], int(argv[1]), argv[2]
    if mode not in (NOTICE, CLEAR):
        print(f"mode {mode!r}: expected {NOTICE!r} or {CLEAR!r}", file=sys.stderr)
        return 2
    plan: list[tuple[float, str, str]] = [tuple(item) for item in json.loads(sys.stdin.readline())]
    client = NodeClient(from_kubeconfig(kubeconfig), timeout=30.0)
    print("ready", flush=True)
    start = float(sys.stdin.readline())

    def write(item: tuple[float, str, str]) -> tuple[float, float]:
        offset, node, instance = item
        time.sleep(max(0.0, start + offset - time.time()))
        sent = time.time()
        try:
            client.patch_annotations(node, _changes(mode, instance))
        except Exception as error:  # counted by the caller, which fails the round
            print(f"annotating {node} failed: {error!r}", file=sys.stderr)
            return -1.0, 0.0
        return sent, time.time()

    with ThreadPoolExecutor(threads) as pool:
        times = list(pool.map(write, plan))
    print(json.dumps(times), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
