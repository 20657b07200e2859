"""Child processes of the sandbox: started in their own session, logged to files, never left behind.

Every child gets ``PR_SET_PDEATHSIG`` so that it dies with the Python process that started it even
when that process is killed with SIGKILL and has no chance to clean up.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: ask the kernel to SIGTERM us when the parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessFailedError(RuntimeError):
    """A sandbox component exited or never became ready."""


class Child:
    """One supervised child process with its output in ``<logdir>/<name>.log``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        logdir: Path,
        env: dict[str, str] | None = None,
        stdout: int | IO[bytes] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = logdir / f"{name}.log"
        self._log_file = self.log_path.open("ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else self._log_file,
            stderr=self._log_file,
            env=full_env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, safe between fork and exec
        )
        log.debug("started %s (pid %d): %s", name, self.proc.pid, " ".join(self.argv))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if not self.alive():
            raise ProcessFailedError(
                f"{self.name} exited with code {self.proc.returncode}; last lines of {self.log_path}:\n{self.tail()}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child's whole process group, then SIGKILL what is left after ``timeout``."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing it", self.name, self.proc.pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log_file.close()


def wait_until(
    what: str,
    ready: Callable[[], bool],
    timeout: float,
    children: Sequence[Child] = (),
    interval: float = 0.1,
) -> None:
    """Poll ``ready`` until it is true; fail early if a child died, and with its log on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        for child in children:
            child.check_alive()
        try:
            if ready():
                return
        except Exception as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        else:
            last_error = "not ready yet"
        if time.monotonic() >= deadline:
            logs = "\n".join(f"--- {c.name} ({c.log_path}):\n{c.tail()}" for c in children)
            raise ProcessFailedError(f"{what} was not ready after {timeout:.0f}s ({last_error})\n{logs}")
        time.sleep(interval)
