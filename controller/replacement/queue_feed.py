"""The queue feed: EC2's events (EventBridge -> SQS) as a second source of notices, beside nodewatch.

Only the leader runs it (``controller.app.run``). It long-polls the queue (``SPOT_GUARD_QUEUE_URL``), reads each
message (``controller.model.ec2_event``), finds the instance's Node through ``spec.providerID`` (the Node cache),
and records what EC2 said on that Node (``controller.model.queue_notice``, the annotation
``spotguard.io/queue-notice``). The replacement road reads it beside nodewatch's annotations: the notice is one
whichever source speaks first (``controller.replacement.decisions.same_notice``).

A message is deleted only once its effect is recorded on the Node (or it is known to ask for none: malformed,
another account's or region's, too old, an instance of no Node or of a group Spot Guard does not manage). Recording
is idempotent (the first time of each notice is kept), so a redelivery, or a successor that receives a message its
predecessor recorded but did not delete, changes nothing and deletes it. A message whose effect could not be
recorded (the API server or AWS failing) stays in the queue and comes back after its visibility timeout.

A queue that cannot be read (AccessDenied, a missing queue, throttling, no network) is reported once per outage,
with what to do, counted, and read again with backoff; readiness is not touched: nodewatch's notices still work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from controller import failpoints
from controller.adapters.aws import AwsError
from controller.adapters.kube import MERGE_PATCH, Kube
from controller.adapters.sqs import EventQueue, Message, QueueError
from controller.capacity.groups import GroupResolver
from controller.clock import Cancellation, Clock
from controller.model import ec2_event
from controller.model.asg import instance_id_from_provider_id
from controller.model.ec2_event import Ec2Event, Rejected
from controller.model.queue_notice import ANNOTATION, QueueNotice, after
from controller.model.record import ANNOTATION as RECORD_ANNOTATION
from controller.model.record import ReplacementRecord
from nodewatch import annotations as contract

log = logging.getLogger("controller.queue")

#: Receives in flight at once: a burst of events (20 receives of 10 for 200) reaches the Nodes in two rounds,
#: about as fast as nodewatch's annotations would, so it is batched alike (one poller, then four, left gaps
#: between rounds that closed batches early: three calls for 200 events on a quiet 2-core machine).
POLLERS = 10
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 60.0
#: A message whose effect could not be recorded is left for SQS to deliver again; this many times it is tried.
WRITE_ATTEMPTS = 5
#: The failpoint between the effect (recorded on the Nodes) and the message's deletion.
RECORDED = "queue:recorded"
#: A write to a Node failed: retry the message later (left in the queue).
RETRY = "retry"


class QueueReporter(Protocol):
    def queue_message(self, outcome: str) -> None: ...

    def queue_failed(self, kind: str) -> None: ...

    def set_queue_readable(self, readable: bool) -> None: ...


def disposition(parsed: Ec2Event | Rejected, node: str | None, managed: bool | None, replacing: bool) -> str:
    """What one message asks (pure): an outcome of ``controller.model.ec2_event.OUTCOMES`` to acknowledge and count,
    ``ACTED`` (record it on ``node``) or ``RETRY`` (what it needs could not be looked up now).

    ``node``: the Node of the event's instance (None: no Node); ``managed``: its group is a spot group Spot Guard
    manages (None: not known now); ``replacing``: the Node carries an unended replacement record."""
    if isinstance(parsed, Rejected):
        return parsed.outcome
    if node is None:
        return ec2_event.NO_NODE
    if parsed.kind == "state":
        if parsed.state not in ec2_event.GONE_STATES or not replacing:
            return ec2_event.NOT_REPLACING
        return ec2_event.ACTED
    if managed is None:
        return RETRY
    return ec2_event.ACTED if managed else ec2_event.UNMANAGED


class QueueFeed:
    def __init__(
        self,
        queue: EventQueue,
        *,
        kube: Kube,
        resolver: GroupResolver,
        nodes: Callable[[], dict[str, Any]],
        clock: Clock,
        reporter: QueueReporter,
        account: str = "",
        region: str = "",
        parallel: Callable[[Callable[[Message], str], list[Message]], list[str]] | None = None,
    ) -> None:
        self.queue = queue
        self.kube = kube
        self.resolver = resolver
        self.nodes = nodes  # the Node cache: name -> NodeView
        self.clock = clock
        self.reporter = reporter
        self.account = account
        self.region = region
        self.parallel = parallel or (lambda fn, items: [fn(item) for item in items])
        self._outage = ""  # the kind of failure being reported (once per outage, by any poller), "" while read
        self._lock = threading.Lock()
        self._warned: set[str] = set()  # outcomes already logged as warnings (each kind once per process)

    def run(self, cancel: Cancellation) -> None:
        """One poller: receive and handle messages until ``cancel`` fires (``POLLERS`` of them run at once)."""
        log.debug("reading EC2 events from queue %s", self.queue.queue_url)
        backoff = INITIAL_BACKOFF
        while not cancel.cancelled:
            try:
                messages = self.queue.receive()
            except QueueError as exc:
                self._failed(exc)
                if self.clock.sleep(backoff, cancel):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = INITIAL_BACKOFF
            self._readable()
            if cancel.wait(0):
                return  # not ours to act on any more: the messages come back to the next leader
            if messages:
                try:
                    self.handle(messages)
                except QueueError as exc:
                    self._failed(exc)
                except Exception:  # a bug or an unexpected answer must not end the feed: the messages come back
                    log.exception("could not handle %d EC2 events from the queue; they come back", len(messages))
                    if self.clock.sleep(INITIAL_BACKOFF, cancel):
                        return

    def handle(self, messages: Sequence[Message]) -> dict[str, str]:
        """Handle one receive's messages: record each effect, then delete what is done. Returns message id ->
        outcome (``RETRY``: left in the queue)."""
        now = self.clock.now()
        parsed = {
            m.message_id: ec2_event.read(m.body, account=self.account, region=self.region, now=now) for m in messages
        }
        snapshot = self.nodes()
        instance_nodes = {
            instance: name
            for name, view in snapshot.items()
            if (instance := instance_id_from_provider_id(view.provider_id))
        }
        events = [p for p in parsed.values() if isinstance(p, Ec2Event)]
        managed = self._managed(
            [e.instance_id for e in events if e.kind != "state" and e.instance_id in instance_nodes]
        )

        def one(message: Message) -> str:
            found = parsed[message.message_id]
            node = instance_nodes.get(found.instance_id) if isinstance(found, Ec2Event) else None
            replacing = node is not None and _replacing(snapshot.get(node))
            outcome = disposition(
                found, node, managed.get(found.instance_id) if isinstance(found, Ec2Event) else None, replacing
            )
            if outcome == ec2_event.ACTED:
                assert isinstance(found, Ec2Event) and node is not None
                outcome = self._record(node, found, snapshot.get(node))
            if outcome != RETRY:
                self._explain(message, found, outcome, node)
            return outcome

        # The Nodes' writes of one receive at once (a burst of events is a burst of notices: batched alike).
        outcomes = dict(zip((m.message_id for m in messages), self.parallel(one, list(messages)), strict=True))
        failpoints.hit(RECORDED)
        done = [m for m in messages if outcomes[m.message_id] != RETRY]
        for start in range(0, len(done), 10):
            for message_id in self.queue.delete(done[start : start + 10]):
                log.info(
                    "message %s was handled but SQS did not delete it: it comes back and changes nothing", message_id
                )
        for message in done:
            self.reporter.queue_message(outcomes[message.message_id])
        return outcomes

    # -- the effect ------------------------------------------------------------------------------------------

    def _record(self, node: str, event: Ec2Event, seen: Any = None) -> str:
        """Write ``event`` into the Node's queue notice (compare-and-swap on the resourceVersion); ACTED once it is
        there, NO_NODE if the Node is gone or is another instance's now, RETRY if it could not be written.

        ``seen`` (the cached NodeView) saves the first read: its resourceVersion makes the write conditional all the
        same, and a 409 falls back to reading the Node."""
        path = f"/api/v1/nodes/{node}"
        for attempt in range(WRITE_ATTEMPTS):
            if attempt == 0 and seen is not None:
                provider_id, version, annotations = seen.provider_id, seen.resource_version, seen.annotations
            else:
                try:
                    current = self.kube.request("GET", path)
                except ApiException as exc:
                    if exc.status == 404:
                        return ec2_event.NO_NODE
                    log.warning(
                        "node %s: could not read it to record %s of %s: %s", node, event.kind, event.instance_id, exc
                    )
                    return RETRY
                meta = current.get("metadata") or {}
                provider_id = (current.get("spec") or {}).get("providerID", "")
                version, annotations = meta.get("resourceVersion"), meta.get("annotations") or {}
            if instance_id_from_provider_id(provider_id) != event.instance_id:
                return ec2_event.NO_NODE
            try:
                before = QueueNotice.of(annotations, node)
            except contract.MalformedAnnotationError as exc:
                log.warning("%s; Spot Guard writes it anew", exc)
                before = None
            new = after(before, event)
            if new == before:
                return ec2_event.ACTED  # recorded already: a redelivery, or the other leader's
            patch = {"metadata": {"resourceVersion": version, "annotations": {ANNOTATION: new.to_json()}}}
            try:
                self.kube.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
                return ec2_event.ACTED
            except ApiException as exc:
                if exc.status == 404:
                    return ec2_event.NO_NODE
                if exc.status != 409:
                    log.warning("node %s: could not record %s of %s: %s", node, event.kind, event.instance_id, exc)
                    return RETRY
        return RETRY

    def _managed(self, instances: list[str]) -> dict[str, bool | None]:
        """instance -> whether its group is a spot group Spot Guard manages (None: could not be looked up)."""
        if not instances:
            return {}
        try:
            self.resolver.prefetch(instances)
            pairs = self.resolver.pairs()
        except AwsError as exc:
            log.warning(
                "could not look up the groups of %d instances named by EC2 events: %s; retried", len(instances), exc
            )
            return dict.fromkeys(instances)
        return {i: (self.resolver.known_group(i) or "") in pairs for i in instances}

    # -- reporting -------------------------------------------------------------------------------------------

    def _explain(self, message: Message, found: Ec2Event | Rejected, outcome: str, node: str | None) -> None:
        if isinstance(found, Ec2Event) and outcome == ec2_event.ACTED:
            log.info(
                "node %s: EC2 event %s of instance %s (%s) recorded from the queue",
                node,
                found.kind,
                found.instance_id,
                contract.format_time(found.time),
            )
            return
        what = found.message if isinstance(found, Rejected) else f"{found.kind} of instance {found.instance_id}"
        text = f"queue message {message.message_id}: {what}: {outcome}, deleted without effect"
        if outcome in (ec2_event.MALFORMED, ec2_event.FOREIGN, ec2_event.UNKNOWN_TYPE) and outcome not in self._warned:
            self._warned.add(outcome)
            log.warning(
                "%s (check the EventBridge rules that feed the queue; later ones are counted in "
                "spotguard_queue_messages_total only)",
                text,
            )
        else:
            log.debug("%s", text)

    def _failed(self, exc: QueueError) -> None:
        self.reporter.queue_failed(exc.kind)
        self.reporter.set_queue_readable(False)
        with self._lock:
            first = self._outage != exc.kind
            self._outage = exc.kind
        if first:
            log.error(
                "cannot read EC2 events: %s; %s (nodewatch's notices still work; retrying with backoff)",
                exc,
                exc.advice,
            )

    def _readable(self) -> None:
        self.reporter.set_queue_readable(True)
        with self._lock:
            ended, self._outage = self._outage, ""
        if ended:
            log.info("queue %s readable again", self.queue.queue_url)


def _replacing(view: Any) -> bool:
    if view is None:
        return False
    raw = view.annotations.get(RECORD_ANNOTATION)
    if raw is None:
        return False
    try:
        return not ReplacementRecord.from_json(raw).terminal
    except ValueError:
        return False
