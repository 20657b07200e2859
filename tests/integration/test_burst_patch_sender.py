"""The burst benchmark's PATCH sender (bench/patch_sender, Go) sends exactly what nodewatch's own client sends, each
PATCH on a TLS connection of its own: the API server's side of a benchmark burst is the one 500 agents cause.

Needs Go (the sender is built on first use, as the sandbox's binaries are), not the sandbox: a local TLS server
records the requests.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bench import annotation_writers as writers
from nodewatch.kube_connection import from_kubeconfig
from nodewatch.node import NodeClient
from sandbox import pki
from sandbox.cluster import write_kubeconfig

MISSING = "ip-10-0-9-9.ec2.internal"


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]]

    def do_PATCH(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        connection: Any = self.connection
        self.seen.append(
            {
                "request_line": self.requestline,
                "headers": sorted((name.lower(), value) for name, value in self.headers.items()),
                "body": body,
                "tls": connection.version(),
                "client": self.client_address,
            }
        )
        missing = self.path.endswith(MISSING)
        answer = json.dumps({"metadata": {"annotations": {}}} if not missing else {"kind": "Status"}).encode()
        self.send_response(404 if missing else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """A TLS server that records every PATCH, and a kubeconfig (token auth) for it."""
    keys = pki.generate(tmp_path / "pki")
    seen: list[dict[str, Any]] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(keys.serving_cert, keys.serving_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, f"https://127.0.0.1:{server.server_address[1]}", keys.ca_cert, "a-token")
    try:
        yield kubeconfig, seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_sender_makes_the_patch_nodewatch_makes_on_a_connection_of_its_own(
    recorder: tuple[Path, list[dict[str, Any]]],
) -> None:
    kubeconfig, seen = recorder
    changes = writers.changes(writers.NOTICE, "i-0123456789abcdef0", dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC))
    NodeClient(from_kubeconfig(kubeconfig)).patch_annotations("ip-10-0-1-1.ec2.internal", changes)
    (by_nodewatch,) = seen

    sent = writers.write_annotations(
        kubeconfig,
        [
            writers.Write(0.0, "ip-10-0-1-1.ec2.internal", changes),
            writers.Write(0.05, "ip-10-0-1-1.ec2.internal", changes),
        ],
    )

    assert len(seen) == 3
    for by_sender in seen[1:]:
        assert {k: v for k, v in by_sender.items() if k != "client"} == {
            k: v for k, v in by_nodewatch.items() if k != "client"
        }
    assert len({request["client"] for request in seen}) == 3  # a connection each
    assert by_nodewatch["request_line"] == "PATCH /api/v1/nodes/ip-10-0-1-1.ec2.internal HTTP/1.1"
    assert ("authorization", "Bearer a-token") in by_nodewatch["headers"]
    assert all(0 < at <= answered for at, answered in sent.times)
    assert sent.sender_cpu_s > 0


def test_the_sender_reports_a_refused_patch_and_makes_the_others(recorder: tuple[Path, list[dict[str, Any]]]) -> None:
    kubeconfig, seen = recorder
    clear = writers.changes(writers.CLEAR, "", dt.datetime.now(dt.UTC))

    sent = writers.write_annotations(
        kubeconfig, [writers.Write(0.0, MISSING, clear), writers.Write(0.0, "ip-10-0-1-2.ec2.internal", clear)]
    )

    assert sent.times[0] == (-1.0, 0.0)
    assert sent.times[1][0] > 0
    assert [json.loads(request["body"]) for request in seen] == [
        {"metadata": {"annotations": {"spotguard.io/instance-id": None, "spotguard.io/rebalance-notice-time": None}}}
    ] * 2
