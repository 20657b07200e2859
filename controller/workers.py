"""The loop every controller runs: a pass, then sleep until the time it asked for or until woken."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from controller.clock import Cancellation
from controller.fence import NotLeaderError

log = logging.getLogger(__name__)


def run_passes(
    what: str, reconcile: Callable[[], float], wake: threading.Event, cancel: Cancellation, retry: float
) -> None:
    """Run ``reconcile`` (which returns the seconds until its next pass) until ``cancel`` fires or this
    process may no longer act (NotLeaderError); a failed pass is logged and retried after ``retry``."""
    cancel.add_callback(wake.set)
    while not cancel.cancelled:
        try:
            delay = reconcile()
        except NotLeaderError as exc:
            log.error("stopping %s: %s", what, exc)
            return
        except Exception:
            log.exception("%s: a pass failed; retrying in %gs", what, retry)
            delay = retry
        wake.wait(max(0.0, delay))
        wake.clear()
