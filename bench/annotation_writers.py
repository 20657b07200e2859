"""A burst's annotation writes: the PATCHes nodewatch agents make, each at its planned moment.

nodewatch's own Node client builds every request (path, headers with the token, merge-patch body); a small Go
program, ``bench/patch_sender/main.go``, sends them, each on a TLS connection of its own, as each node's agent
does. Sending them from Python (a few processes of threads, each PATCH through nodewatch's client) cost the
benchmark's 2 cores about 1 CPU-second per burst of 500 (2 ms a PATCH: handshake, http.client, threads),
a fifth of the machine while the API server was writing them; in a cluster that CPU is spread over 500 nodes.
The Go sender costs about half of that (0.5 CPU-s, its start-up included); the API server's side of each exchange is
unchanged (``tests/integration/test_burst_patch_sender.py`` compares the requests).

The sender is built with ``go build`` into the cache (``sandbox.binaries.cache_root()``), keyed by its source.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import resource
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from nodewatch import annotations as contract
from nodewatch.kube_connection import KubeConnection, from_kubeconfig
from nodewatch.node import NodeClient, patch_body
from sandbox.binaries import cache_root

NOTICE, CLEAR = "notice", "clear"
SOURCE = Path(__file__).with_name("patch_sender") / "main.go"
WORKERS = 64  # requests in flight at most: as many as the 4 processes x 16 threads of the Python writers had
START_LEAD = 0.2  # seconds between the sender reporting ready and the first planned moment


@dataclasses.dataclass(frozen=True)
class Write:
    """One agent's PATCH: ``offset`` seconds after the burst's start, ``changes`` to Node ``node``'s annotations."""

    offset: float
    node: str
    changes: Mapping[str, str | None]


def changes(mode: str, instance_id: str, notice_time: dt.datetime) -> dict[str, str | None]:
    """The annotations nodewatch writes for a rebalance recommendation (``NOTICE``) or removes (``CLEAR``)."""
    if mode == CLEAR:
        return {contract.REBALANCE_NOTICE_TIME: None, contract.INSTANCE_ID: None}
    if mode != NOTICE:
        raise ValueError(f"mode {mode!r}: expected {NOTICE!r} or {CLEAR!r}")
    return {contract.REBALANCE_NOTICE_TIME: contract.format_time(notice_time), contract.INSTANCE_ID: instance_id}


def sender_binary() -> Path:
    """The Go sender, built on first use (needs Go, as the sandbox's binaries do)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    binary = cache_root() / "bench" / f"patch_sender-{digest}" / "patch_sender"
    if os.access(binary, os.X_OK):
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"patch_sender.{os.getpid()}.tmp")
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GO111MODULE": "off"}
    try:
        subprocess.run(
            ["go", "build", "-trimpath", "-o", str(partial), str(SOURCE)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except FileNotFoundError:
        raise RuntimeError("building bench/patch_sender needs Go (as sandbox/build-binaries.sh does)") from None
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"go build of {SOURCE} failed: {error.stderr.strip()}") from None
    partial.replace(binary)
    return binary


def _ca_file(connection: KubeConnection, directory: Path) -> Path:
    """The CAs nodewatch's connection verifies the API server with, as a PEM file for the sender (one reading of the
    kubeconfig: nodewatch's)."""
    cas = connection.ssl_context.get_ca_certs(binary_form=True) if connection.ssl_context is not None else []
    if not cas:
        raise RuntimeError(f"{connection.description}: no CA to verify the server with; the PATCH sender needs one")
    path = directory / "ca.crt"
    path.write_text("".join(ssl.DER_cert_to_PEM_cert(ca) for ca in cas))
    return path


@dataclasses.dataclass(frozen=True)
class Sent:
    """``(sent, answered)`` per write, in order (seconds since the epoch; sent -1 for a failed one, whose error went
    to stderr), and the CPU seconds the sender used, start-up included."""

    times: list[tuple[float, float]]
    sender_cpu_s: float


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_annotations(kubeconfig: Path, writes: Sequence[Write], workers: int = WORKERS) -> Sent:
    """Make every write at the sender's start + its offset. The sender is started and has read every request before
    the start is set, so its start-up is not part of the writes' spread."""
    connection = from_kubeconfig(kubeconfig)
    client = NodeClient(connection)
    requests = []
    for write in writes:
        request = client.request("PATCH", write.node, patch_body(write.changes))
        body = (request.body or b"").decode()
        requests.append(
            {
                "offset": write.offset,
                "method": request.method,
                "path": request.path,
                "headers": request.headers,
                "body": body,
            }
        )
    server = f"{connection.scheme}://{connection.host}:{connection.port}"
    cpu_before = _children_cpu()
    with tempfile.TemporaryDirectory(prefix="patch-sender-") as directory:
        command = [str(sender_binary()), str(_ca_file(connection, Path(directory))), str(workers)]
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as sender:
            assert sender.stdin is not None and sender.stdout is not None
            try:
                sender.stdin.write(json.dumps({"server": server, "requests": requests}) + "\n")
                sender.stdin.flush()
                if sender.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"the PATCH sender did not start (exit {sender.wait(30)})")
                sender.stdin.write(f"{time.time() + START_LEAD}\n")
                sender.stdin.flush()
                times = json.loads(sender.stdout.readline())
                if sender.wait(30) != 0:
                    raise RuntimeError(f"the PATCH sender failed (exit {sender.returncode})")
            finally:
                if sender.poll() is None:
                    sender.kill()
    return Sent([(float(sent), float(answered)) for sent, answered in times], _children_cpu() - cpu_before)
