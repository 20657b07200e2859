"""Retiring a node once its replacement is Ready: cordon, drain (kubectl semantics), then terminate
exactly its instance with ``ShouldDecrementDesiredCapacity`` so the pair's capacity is neutral again.

Jobs run on a small thread pool, one per node at a time; a job that fails is retried by the
replacement controller on a later pass (the record stays ``Retiring`` until the instance is gone).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable

from controller.adapters.aws import AutoScaling, AwsError
from controller.checks.drain_plan import DrainOptions
from controller.clock import Cancellation
from controller.effects.drain import Drainer, DrainError

log = logging.getLogger(__name__)

# AWS's answer when the instance has already left the group (terminated by EC2 or by hand).
_ALREADY_GONE = ("Instance Id not found", "No managed instance found", "not part of Auto Scaling group")


class Retirer:
    def __init__(
        self,
        drainer: Drainer,
        asg: AutoScaling,
        options: DrainOptions,
        cancel: Cancellation,
        *,
        workers: int = 4,
        on_drain: Callable[[str], None] | None = None,
    ) -> None:
        self.on_drain = on_drain  # told each drain's outcome (metrics)
        self.drainer = drainer
        self.asg = asg
        self.options = options
        self.cancel = cancel
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retire")
        self._running: dict[str, concurrent.futures.Future[None]] = {}
        self._lock = threading.Lock()

    def busy(self, node: str) -> bool:
        with self._lock:
            future = self._running.get(node)
            return future is not None and not future.done()

    def submit(self, node: str, job: Callable[[], None]) -> bool:
        """Run ``job`` for ``node`` unless one is already running; False if skipped."""
        with self._lock:
            future = self._running.get(node)
            if future is not None and not future.done():
                return False
            self._running[node] = self._pool.submit(self._guard, node, job)
            return True

    def _guard(self, node: str, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:
            log.exception("retiring node %s failed; it will be retried", node)

    def drain(self, node: str) -> bool:
        """Cordon and drain; True when every evictable pod is gone."""
        try:
            result = self.drainer.drain(node, self.options, self.cancel)
        except DrainError as exc:
            if exc.status == 404:
                log.info("node %s is already gone; nothing to drain", node)
                return True
            raise
        if self.on_drain is not None:
            self.on_drain(str(result.outcome))
        if not result.drained:
            log.warning("drain of node %s ended %s: %s", node, result.outcome, result.message)
        return bool(result.drained)

    def uncordon(self, node: str) -> None:
        try:
            self.drainer.uncordon(node)
        except DrainError as exc:
            if exc.status != 404:
                raise

    def terminate(self, instance_id: str) -> None:
        """Terminate exactly ``instance_id`` and lower its group's desired capacity by one.

        A successor repeating this step after a crash first checks that the instance is still in a
        group: if it already left, the termination (and its decrement) happened; it is not repeated.
        """
        if instance_id not in self.asg.group_of_instances([instance_id]):
            log.info("instance %s is no longer in an Auto Scaling Group; nothing to terminate", instance_id)
            return
        try:
            self.asg.terminate_instance(instance_id, decrement=True)
        except AwsError as exc:
            if exc.code == "ValidationError" and any(text in exc.aws_message for text in _ALREADY_GONE):
                log.info("instance %s already left its Auto Scaling Group; nothing to terminate", instance_id)
                return
            raise

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
