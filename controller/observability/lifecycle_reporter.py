"""Where the lifecycle controller reports what it did to an SGFE: Kubernetes Events and metrics in production
(wired by ``controller.app``), logs only by default.

``phase_changed`` is called synchronously, in the thread that wrote the new phase, right after the write
succeeded and before the controller takes any further step for that event. Both calls must be quick and must
not raise (an exception is logged and ignored).
"""

from __future__ import annotations

import logging
from typing import Protocol

from controller.model.sgfe import FallbackEvent

log = logging.getLogger(__name__)


class LifecycleRecorder(Protocol):
    def sgfe_event(self, event: FallbackEvent, kind: str, reason: str, message: str) -> None:
        """An Event about ``event``: ``kind`` Normal or Warning, a CamelCase ``reason``, a sentence."""
        ...

    def phase_changed(self, event: FallbackEvent, old: str, new: str) -> None:
        """``event`` (as written) moved from phase ``old`` to ``new``."""
        ...


class LogLifecycleRecorder:
    """Logs only (unit tests, and the default when nothing is wired)."""

    def sgfe_event(self, event: FallbackEvent, kind: str, reason: str, message: str) -> None:
        level = logging.WARNING if kind == "Warning" else logging.INFO
        log.log(level, "SpotGuardFallbackEvent %s/%s: %s: %s", event.namespace, event.name, reason, message)

    def phase_changed(self, event: FallbackEvent, old: str, new: str) -> None:
        log.info("SpotGuardFallbackEvent %s/%s: phase %s -> %s", event.namespace, event.name, old, new)


class SafeRecorder:
    """Wraps a recorder so that its failures never break the lifecycle work."""

    def __init__(self, inner: LifecycleRecorder) -> None:
        self.inner = inner

    def sgfe_event(self, event: FallbackEvent, kind: str, reason: str, message: str) -> None:
        try:
            self.inner.sgfe_event(event, kind, reason, message)
        except Exception:
            log.exception("recording event %s for SpotGuardFallbackEvent %s failed; ignoring it", reason, event.name)

    def phase_changed(self, event: FallbackEvent, old: str, new: str) -> None:
        try:
            self.inner.phase_changed(event, old, new)
        except Exception:
            log.exception("recording phase %s -> %s of SpotGuardFallbackEvent %s failed", old, new, event.name)
