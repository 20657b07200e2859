"""Named crash points for crash-safety tests (in the spirit of etcd's gofail).

``SPOTGUARD_FAILPOINTS=replacement:spot-requested`` (comma-separated) makes the process SIGKILL
itself the moment it reaches that point, exactly like a node dying there: no cleanup, no Lease
release. Unset (always, in production) a failpoint costs one set lookup. In-process tests (the model-based
tests) ``set_hook`` a function that is called at every failpoint instead, and may raise there.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)

_ACTIVE = frozenset(p.strip() for p in os.environ.get("SPOTGUARD_FAILPOINTS", "").split(",") if p.strip())

#: Every failpoint in the code, in the order a replacement reaches them.
REPLACEMENT_POINTS = (
    "replacement:spot-requested",  # intent written, SetDesiredCapacity(spot) not sent
    "replacement:spot-scaled",  # SetDesiredCapacity(spot) done, not yet confirmed on the record
    "replacement:withdrawing",  # fallback decided and written, spot increase not yet withdrawn
    "replacement:withdrawn",  # spot increase withdrawn, on-demand not yet requested
    "replacement:on-demand-requested",  # intent written, SetDesiredCapacity(on-demand) not sent
    "replacement:on-demand-scaled",  # SetDesiredCapacity(on-demand) done, not yet confirmed
    "replacement:event-created",  # SpotGuardFallbackEvent created, record not yet OnDemandReady
    "replacement:retiring",  # Retiring written, drain not started
    "replacement:terminated",  # old instance terminated, record not yet Retired
)


_hook: Callable[[str], None] | None = None


def set_hook(hook: Callable[[str], None] | None) -> None:
    """Call ``hook(name)`` at every failpoint (None: back to the environment's failpoints)."""
    global _hook  # noqa: PLW0603 - one process-wide switch, for in-process tests only
    _hook = hook


def hit(name: str) -> None:
    if _hook is not None:
        _hook(name)
        return
    if name in _ACTIVE:
        log.critical("failpoint %s reached: killing this process (SPOTGUARD_FAILPOINTS)", name)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
