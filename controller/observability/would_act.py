"""Observe-only mode's voice: each change the controller would have made, said once as a log line, an Event and a
metric (``controller.adapters.dry_run`` makes the ``WouldAct`` values).

Events have the one reason ``SpotGuardWouldAct`` (``kubectl get events -A --field-selector
reason=SpotGuardWouldAct``, or ``spotguard events would``); the message says the action and what it would have
changed. A change about a Node goes on that Node; a change of a group (a scale-up, a scale-down, a termination)
goes on the controller's Lease, the one object it owns whatever the group. The replacement's own record writes
are bookkeeping: logged and counted, no Event (a user sees the phases in the Events the road writes anyway).

The same would-be change of a Node, a pod or an SGFE seen again within ``repeat_window`` seconds is announced once,
so a step that is retried makes no Event storm. A group's scale-up or scale-down is always announced: two that read
alike are two changes (3 to 4 for one notice, back to 3, and 3 to 4 again for the next); the Event recorder counts
identical Events in one (``count``).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from controller.clock import Clock
from controller.model.would_act import WouldAct
from controller.observability.events import EventRecorder, ObjectRef, node_ref
from controller.observability.metrics import Metrics

log = logging.getLogger("controller.dry_run")

REASON = "SpotGuardWouldAct"
#: Would-be changes remembered for de-duplication at most (the oldest are forgotten first).
REMEMBERED = 10000


def lease_ref(namespace: str, name: str) -> ObjectRef:
    """The controller's Lease (the object group-level would-be changes are reported on)."""
    return ObjectRef(kind="Lease", name=name, namespace=namespace, api_version="coordination.k8s.io/v1")


class WouldActAnnouncer:
    """Thread-safe; ``announce`` never raises (the Event is written by the recorder's own thread)."""

    def __init__(
        self,
        events: EventRecorder | None,
        metrics: Metrics | None,
        clock: Clock,
        owner: ObjectRef,
        *,
        repeat_window: float = 600.0,
    ) -> None:
        self.events = events
        self.metrics = metrics
        self.clock = clock
        self.owner = owner
        self.repeat_window = repeat_window
        self._seen: OrderedDict[tuple[str, str, str, str], float] = OrderedDict()
        self._lock = threading.Lock()
        self.announced: list[WouldAct] = []  # every announcement, in order (for tests and the demo)

    def announce(self, would: WouldAct) -> None:
        now = self.clock.monotonic()
        with self._lock:
            last = self._seen.get(would.key)
            if last is not None and now - last < self.repeat_window and not would.action.counted:
                return
            self._seen[would.key] = now
            self._seen.move_to_end(would.key)
            while len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
            self.announced.append(would)
            del self.announced[:-REMEMBERED]
        try:
            log.info(
                "observe-only: %s",
                would.message,
                extra={"action": str(would.action), "object": f"{would.kind}/{would.name}", "asg": would.asg},
            )
            if self.metrics is not None:
                self.metrics.dry_run_action(str(would.action), would.asg)
            if self.events is not None and not would.action.quiet:
                target = node_ref(would.node) if would.node else self.owner
                self.events.record(target, "Normal", REASON, f"{would.action}: {would.message}")
        except Exception:  # reporting must never stop the road
            log.exception("could not announce the would-be change %s", would.key)
