"""The one owner of each managed Auto Scaling group's capacity in this process.

Every capacity change Spot Guard makes goes through here, whichever controller wants it: raising desired
capacity for a claim (a replacement's spot scale-up, its on-demand request, an SGFE's return to spot), giving a
claim back, and terminating exactly one instance (a retirement, a release, a scale-down). The owner

* serializes the changes of each group (a lock per group) and computes each from a read made after its own
  last change of that group, so no change of this process overwrites another (an absolute target read by one
  controller and sent after another's change was the lost update);
* never lets AWS choose an instance: capacity Spot Guard added leaves only by terminating exactly its instances
  (``ShouldDecrementDesiredCapacity``), draining their Node first; desired capacity is lowered only for
  launches that never happened, and never below what the live instances and the other claims need;
* knows its changes in flight and every open claim (``claims_from``: derived from the records each time), so a
  group whose desired capacity is what the live instances and open claims justify has drift 0, its own changes
  never look like someone else's, and a change by anyone else (a person, another autoscaler) is reported once;
* tells from a change's token whether a change recorded as intent was made (``finish``): a successor that finds
  an intent repeats nothing. A new owner makes no increase until every controller has finished the intents its
  predecessor left (``hold_until``/``recovered``; ``ChangesHeldError`` meanwhile), so no new change lands between
  an old intent and its check.

The token is ``<epoch>:<position>``: this owner's epoch and how many of its own changes of that group had
completed when the intent was written. An owner knows the tokens of the increases it made; for any other token,
the desired capacity now, less this owner's own changes since the position (all of them, for a predecessor's
token), is what it would be had the intent's call never been sent: at or below ``before``, it was not sent.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import enum
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from controller.adapters.aws import AutoScaling, AwsError
from controller.checks.arrivals import GroupClaims, assign
from controller.checks.left_undecremented import ACTIVITIES_READ, Owed, Owes, owed
from controller.clock import Clock
from controller.model.asg import LEAVING_STATES, Group
from controller.model.claim import Claims

log = logging.getLogger(__name__)

#: AWS's answers when the instance has already left its group (terminated by EC2 or by hand).
ALREADY_GONE = ("Instance Id not found", "No managed instance found", "not part of Auto Scaling group")
#: A read of a group serves a change only while no older than this (and no change of ours came since).
READ_MAX_AGE = 1.0
#: A give-back looks again this many times when new instances of its claim appear while it removes others.
GIVE_BACK_ROUNDS = 3
#: After this long, increases go on even if a controller has not said it finished its predecessor's intents.
RECOVERY_WAIT = 60.0


class ChangesHeldError(RuntimeError):
    """No increase yet: a controller is still finishing the intents its predecessor left (try again soon)."""


@dataclasses.dataclass(frozen=True)
class Change:
    """An increase of desired capacity, as its intent records it."""

    group: str
    before: int | None  # desired capacity when the change was computed (None: a record of an older version)
    target: int
    token: str = ""

    @property
    def amount(self) -> int:
        return self.target - (self.before if self.before is not None else self.target)


@dataclasses.dataclass(frozen=True)
class Read:
    """A group as read for a change, with the start time of its newest scaling activity then."""

    group: Group | None  # None: AWS does not know the group
    newest_activity: str  # RFC 3339 ("" when it has none, or they could not be read)
    started: float  # monotonic
    position: int  # the group's change counter when the read started


@dataclasses.dataclass(frozen=True)
class Plan:
    """A raise about to be made: the group as read, how many instances it has room for, the change's token."""

    read: Read
    group: Group
    granted: int
    token: str

    def change(self, count: int) -> Change:
        """The change that asks for ``count`` (at most ``granted``) more instances."""
        return Change(self.group.name, self.group.desired, self.group.desired + count, self.token)


class Outcome(enum.StrEnum):
    TERMINATED = "terminated"
    ALREADY_GONE = "already_gone"  # not in a group any more, or on its way out: nothing to do
    NOT_DRAINED = "not_drained"  # its Node could not be drained: nothing terminated, try again later
    REFUSED = "refused"  # not an instance Spot Guard may terminate (another group): nothing done


@dataclasses.dataclass(frozen=True)
class Removal:
    instance: str
    outcome: Outcome
    group: str = ""
    message: str = ""  # why nothing was done (for ALREADY_GONE: "gone" or its lifecycle state)


@dataclasses.dataclass(frozen=True)
class GiveBack:
    """What giving a claim back did: its instances terminated exactly, and desired lowered by ``lowered``."""

    removed: tuple[Removal, ...]
    lowered: int
    done: bool  # nothing of the claim is left in the group (False: a drain did not finish; try again)


class CapacityReporter(Protocol):
    def outside_change(self, group: str, desired: int, justified: int, claims: tuple[str, ...]) -> None:
        """``group``'s desired capacity is not what Spot Guard's instances and claims justify."""
        ...

    def refused_effect(self, what: str, message: str) -> None:
        """An effect was refused because what it would touch is not Spot Guard's to touch."""
        ...


class LogCapacityReporter:
    def outside_change(self, group: str, desired: int, justified: int, claims: tuple[str, ...]) -> None:
        log.warning(
            "ASG %s: desired capacity %d, but Spot Guard's instances and claims justify %d: changed by someone else",
            group,
            desired,
            justified,
        )

    def refused_effect(self, what: str, message: str) -> None:
        log.warning("refused %s: %s", what, message)


@dataclasses.dataclass
class _Ledger:
    """One group's state in this owner."""

    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)
    changes: int = 0  # moves when a change of ours begins and when it ends (odd: one is in flight)
    journal: list[int] = dataclasses.field(default_factory=list)  # net desired change of each completed change
    made: set[str] = dataclasses.field(default_factory=set)  # tokens of the increases this owner made
    ahead: concurrent.futures.Future[Read] | None = None
    reported: int = 0  # the unexplained desired capacity last reported


class CapacityOwner:
    def __init__(
        self,
        asg: AutoScaling,
        clock: Clock,
        *,
        reporter: CapacityReporter | None = None,
        managed: Callable[[], Iterable[str]] | None = None,
        node_of: Callable[[str], str | None] = lambda instance: None,
        drain: Callable[[str], bool] = lambda node: True,
        read_ahead: Callable[[Callable[[], Read]], concurrent.futures.Future[Read]] | None = None,
    ) -> None:
        self.asg = asg
        self.clock = clock
        self.reporter: CapacityReporter = reporter or LogCapacityReporter()
        self.managed = managed  # the groups Spot Guard may change (None: any)
        self.node_of = node_of  # instance -> the Node it registered as, if any
        self.drain = drain  # cordon and drain a Node; True when its pods are gone
        self._read_ahead = read_ahead
        self.epoch = uuid.uuid4().hex[:8]
        self._sources: list[Callable[[], Claims]] = []
        self._ledgers: dict[str, _Ledger] = {}
        self._ledgers_lock = threading.Lock()
        self._holds = 0  # group locks held right now
        self._waiting_for: set[str] = set()  # controllers still finishing their predecessor's intents
        self._held_since: float | None = None
        self._recovered = threading.Lock()

    # -- claims and recovery --------------------------------------------------------------------------------
    def claims_from(self, source: Callable[[], Claims]) -> None:
        """Add a source of open claims (a controller's view of its records; called whenever claims matter)."""
        self._sources.append(source)

    def claims(self) -> Claims:
        total = Claims()
        for source in self._sources:
            total = total + source()
        return total

    def hold_until(self, *controllers: str) -> None:
        """Make no increase until each of ``controllers`` said it finished its predecessor's intents."""
        with self._recovered:
            self._waiting_for.update(controllers)

    def recovered(self, controller: str) -> None:
        with self._recovered:
            self._waiting_for.discard(controller)

    def _settled(self) -> bool:
        """No controller is still finishing a predecessor's intent: the records say what AWS was asked for."""
        with self._recovered:
            return not self._waiting_for

    def _check_recovered(self) -> None:
        with self._recovered:
            if not self._waiting_for:
                return
            if self._held_since is None:
                self._held_since = self.clock.monotonic()
            if self.clock.monotonic() - self._held_since < RECOVERY_WAIT:
                raise ChangesHeldError(f"waiting for {', '.join(sorted(self._waiting_for))} to finish earlier intents")
            log.warning("%s did not finish earlier intents in time; going on", sorted(self._waiting_for))
            self._waiting_for.clear()

    # -- reads ----------------------------------------------------------------------------------------------
    def describe(self, names: Iterable[str]) -> dict[str, GroupClaims]:
        """Read the groups (one call) with their open claims' arrivals. A claim is counted short only on a read
        that no change of ours overlapped, once every intent a predecessor left is finished; a group whose desired
        capacity someone else changed is reported once."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        positions = {name: self._ledger(name).changes for name in wanted}
        groups = self.asg.describe_groups(wanted)
        claims = self.claims()
        states: dict[str, GroupClaims] = {}
        for name, group in groups.items():
            state = assign(group, claims.on(name), claims.bound, claims.ready)
            ledger = self._ledger(name)
            if ledger.changes == positions[name] and positions[name] % 2 == 0 and self._settled():
                self._observe(ledger, state)
            else:
                state = dataclasses.replace(state, short={})
            states[name] = state
        return states

    def prefetch(self, name: str, needed_at: float) -> None:
        """Start reading ``name`` (and its newest activity) now unless a read will still be current at
        ``needed_at`` (monotonic): a scale-up due then finds it ready instead of reading on its path."""
        if self._read_ahead is None:
            return
        ledger = self._ledger(name)
        with self._ledgers_lock:
            ahead = ledger.ahead
            if ahead is not None and not ahead.done():
                return
            if ahead is not None and ahead.exception() is None:
                read = ahead.result()
                if read.position == ledger.changes and needed_at - read.started <= READ_MAX_AGE:
                    return
        future = self._read_ahead(lambda: self._read(name))
        with self._ledgers_lock:
            ledger.ahead = future

    def _read(self, name: str) -> Read:
        ledger = self._ledger(name)
        started, position = self.clock.monotonic(), ledger.changes
        newest = self._read_ahead(lambda: _read_nothing(self._newest_activity(name))) if self._read_ahead else None
        group = self.asg.describe_groups([name]).get(name)
        activity = newest.result().newest_activity if newest is not None else self._newest_activity(name)
        if group is not None and ledger.changes == position and position % 2 == 0 and self._settled():
            claims = self.claims()
            self._observe(ledger, assign(group, claims.on(name), claims.bound, claims.ready))
        return Read(group, activity, started, position)

    def _current_read(self, name: str) -> Read:
        """A read that no change of ours has outdated and at most READ_MAX_AGE old (one made ahead, or a new one)."""
        ledger = self._ledger(name)
        with self._ledgers_lock:
            ahead, ledger.ahead = ledger.ahead, None
        if ahead is not None:
            try:
                read = ahead.result()
            except AwsError as exc:
                log.debug("reading ASG %s ahead failed (%s); reading it again", name, exc)
            else:
                if read.position == ledger.changes and self.clock.monotonic() - read.started <= READ_MAX_AGE:
                    return read
        return self._read(name)

    def _newest_activity(self, name: str) -> str:
        try:
            newest = self.asg.activities(name, max_records=1)
        except AwsError as exc:
            log.warning("could not read the scaling activities of %s before changing it: %s", name, exc)
            return ""
        return newest[0].start_time.isoformat() if newest else ""

    def _observe(self, ledger: _Ledger, state: GroupClaims) -> None:
        if state.withdrawing:
            return  # a give-back is under way: desired capacity is between two states
        unexplained = state.unexplained
        if unexplained != ledger.reported:
            ledger.reported = unexplained
            if unexplained:
                group = state.group
                self.reporter.outside_change(group.name, group.desired, state.justified, tuple(state.outstanding))

    # -- changes --------------------------------------------------------------------------------------------
    def raise_by(self, name: str, wanted: int, intent: Callable[[Plan], int]) -> tuple[Read, Change | None]:
        """Ask ``name`` for up to ``wanted`` more instances (no more than its MaxSize allows).

        ``intent(plan)`` records the change before it is made and returns how many instances it recorded (at
        most ``plan.granted``; 0: nothing recorded, nothing is done). Returns the read the plan was computed from
        and the change made (None when the group does not exist or nothing was recorded). Raises AwsError when
        the call fails: the intent stays, and ``finish`` makes the change later. Raises ChangesHeldError while a
        controller still finishes its predecessor's intents.
        """
        self._check_recovered()
        ledger = self._ledger(name)
        with self._holding(ledger):
            read = self._current_read(name)
            group = read.group
            if group is None:
                return read, None
            granted = max(0, min(wanted, group.max_size - group.desired))
            plan = Plan(read, group, granted, self._token(ledger))
            self._begin(ledger)  # from the intent on, the claim is in the records and the call not yet made
            try:
                recorded = min(intent(plan), granted)
                if recorded <= 0:
                    return read, None
                change = plan.change(recorded)
                self.asg.set_desired_capacity(name, change.target)
                ledger.journal.append(recorded)
                ledger.made.add(change.token)
            finally:
                self._end(ledger)
            return read, change

    def finish(self, change: Change) -> bool:
        """Make sure a recorded increase was made: made already (by this process or a predecessor) -> nothing;
        not made -> make it now, on top of whatever desired capacity is now. Returns whether a call was made."""
        if change.before is not None and change.amount <= 0:
            return False
        ledger = self._ledger(change.group)
        if change.token in ledger.made:
            return False  # this owner made it
        with self._holding(ledger):
            group = self._read(change.group).group
            if group is None:
                return False
            if change.before is None:  # an intent written before tokens: only its absolute target is known
                if group.desired >= change.target:
                    return False
                target = change.target
            else:
                without_ours = group.desired - self._own_since(ledger, change.token)
                if without_ours > change.before:
                    return False  # made (or someone else changed it since: the capacity check tells)
                target = group.desired + change.amount
            target = min(target, group.max_size)
            if target <= group.desired:
                return False
            log.info(
                "ASG %s: the increase recorded as %s (desired %s -> %d) was not made; making it now (%d -> %d)",
                change.group,
                change.token or "an intent",
                change.before,
                change.target,
                group.desired,
                target,
            )
            self._set_desired(ledger, change.group, target, target - group.desired)
            ledger.made.add(change.token)
            return True

    def give_back(self, name: str, claim_key: str) -> GiveBack:
        """Give claim ``claim_key`` of group ``name`` back: terminate exactly its instances (draining their Nodes),
        then lower desired capacity by its launches that never happened, never below what the live instances and
        the other open claims need. Idempotent: a successor repeating it finds nothing more to do."""
        removed: list[Removal] = []
        for _ in range(GIVE_BACK_ROUNDS):
            state = self.state_of(name)
            if state is None:
                return GiveBack(tuple(removed), 0, True)
            instances = [i.instance_id for i in state.arrivals.get(claim_key, ())]
            # A claim owns at most its count: once its own are leaving, the next new instance is someone else's
            # (the group's own replacement of an instance AWS reclaimed, say), never more of this claim's.
            mine = [c for c in self.claims().on(name) if c.key == claim_key]
            instances = instances[: max(0, (mine[0].count if mine else 0) - len(removed))]
            if not instances:
                break
            for instance in instances:
                removal = self.remove(instance, expect_group=name, drain=True)
                removed.append(removal)
                if removal.outcome in (Outcome.NOT_DRAINED, Outcome.REFUSED):
                    return GiveBack(tuple(removed), 0, False)
        ledger = self._ledger(name)
        with self._holding(ledger):
            read = self._read(name)
            if read.group is None:
                return GiveBack(tuple(removed), 0, True)
            claims = self.claims()
            mine = [c for c in claims.on(name) if c.key == claim_key]
            state = assign(read.group, claims.on(name), claims.bound, claims.ready)
            # Its launches that came late and were removed just now count as got: a claim gets at most its count,
            # so a new instance after those is someone else's (the group's own in place of one EC2 took, say).
            late = len([r for r in removed if not mine or r.instance not in mine[0].taken])
            unlaunched = max(0, mine[0].count - len(mine[0].taken) - late) if mine else 0
            if state.arrivals.get(claim_key) and unlaunched > 0:
                return GiveBack(tuple(removed), 0, False)  # one more launched meanwhile: the next call removes it
            others = state.justified - state.outstanding.get(claim_key, 0)  # what the other claims still need
            lowered = max(0, min(unlaunched, read.group.desired - others))
            if lowered:
                desired = read.group.desired
                self._set_desired(ledger, name, desired - lowered, -lowered)
                log.info(
                    "ASG %s: gave back %d launch(es) of %s that never happened (desired %d -> %d)",
                    name,
                    lowered,
                    claim_key,
                    desired,
                    desired - lowered,
                )
            return GiveBack(tuple(removed), lowered, True)

    def remove(self, instance: str, *, expect_group: str = "", drain: bool = True) -> Removal:
        """Terminate exactly ``instance`` with ``ShouldDecrementDesiredCapacity``, whatever its lifecycle state,
        draining its Node first (``drain``) if it registered one. An instance already gone or leaving is not
        terminated twice; one outside the managed groups (or not in ``expect_group``) is refused."""
        membership = self.asg.memberships([instance]).get(instance)
        if membership is None:
            return Removal(instance, Outcome.ALREADY_GONE, message="gone")
        group = membership.group
        if membership.lifecycle_state in LEAVING_STATES:
            return Removal(instance, Outcome.ALREADY_GONE, group, membership.lifecycle_state)
        refusal = self._refusal(instance, group, expect_group)
        if refusal:
            self.reporter.refused_effect(f"terminate instance {instance}", refusal)
            return Removal(instance, Outcome.REFUSED, group, refusal)
        node = self.node_of(instance) if drain else None
        if node and not self.drain(node):
            return Removal(instance, Outcome.NOT_DRAINED, group, f"node {node} of instance {instance} is not drained")
        ledger = self._ledger(group)
        with self._holding(ledger):
            self._begin(ledger)
            try:
                self.asg.terminate_instance(instance, decrement=True)
            except AwsError as exc:
                if exc.code == "ValidationError" and any(text in exc.aws_message for text in ALREADY_GONE):
                    return Removal(instance, Outcome.ALREADY_GONE, group, "gone")
                raise
            finally:
                self._end(ledger)
            ledger.journal.append(-1)
        log.info("ASG %s: terminated exactly instance %s with decrement", group, instance)
        return Removal(instance, Outcome.TERMINATED, group)

    def settle_left(self, left: str, name: str) -> Owed:
        """What group ``name`` owes back for instance ``left``, which left it before Spot Guard terminated it
        (``controller.checks.left_undecremented``), from a fresh read of the group and its newest activities; a
        LOWER is applied here (``_lower_unlaunched``). TERMINATE is the caller's to apply: it records which instance
        first, then ``remove``s it; WAIT, to look again later."""
        state = self.state_of(name)
        if state is None:
            return Owed(Owes.NOTHING, f"ASG {name} does not exist any more")
        activities = self.asg.activities(name, max_records=ACTIVITIES_READ)
        verdict = owed(left, state, activities, self.claims().bound)
        if verdict.owes is Owes.LOWER:
            self._lower_unlaunched(name)
        return verdict

    def _lower_unlaunched(self, name: str) -> bool:
        """Lower desired capacity by one for a launch the group owes but cannot make (``Owes.LOWER``), only while
        desired capacity is above what the live instances and the open claims justify: it terminates nothing.
        Idempotent: once lowered, nothing more is owed. Returns whether it lowered it."""
        ledger = self._ledger(name)
        with self._holding(ledger):
            read = self._read(name)
            if read.group is None:
                return False
            claims = self.claims()
            if assign(read.group, claims.on(name), claims.bound, claims.ready).unexplained <= 0:
                return False
            desired = read.group.desired
            self._set_desired(ledger, name, desired - 1, -1)
        log.info(
            "ASG %s: lowered desired capacity %d -> %d for a launch it owes but cannot make", name, desired, desired - 1
        )
        return True

    def state_of(self, name: str) -> GroupClaims | None:
        """A fresh read of ``name`` with its claims' arrivals (None when AWS does not know the group)."""
        group = self._read(name).group
        if group is None:
            return None
        claims = self.claims()
        return assign(group, claims.on(name), claims.bound, claims.ready)

    # -- plumbing -------------------------------------------------------------------------------------------
    def _refusal(self, instance: str, group: str, expect_group: str) -> str:
        if expect_group and group != expect_group:
            return f"instance {instance} is in ASG {group}, not in {expect_group} where Spot Guard expects it"
        if self.managed is not None and group not in set(self.managed()):
            return f"instance {instance} is in ASG {group}, which is not a group Spot Guard manages"
        return ""

    def _set_desired(self, ledger: _Ledger, name: str, target: int, delta: int) -> None:
        self._begin(ledger)
        try:
            self.asg.set_desired_capacity(name, target)
        finally:
            self._end(ledger)
        ledger.journal.append(delta)

    @contextlib.contextmanager
    def _holding(self, ledger: _Ledger) -> Iterator[None]:
        with ledger.lock:
            with self._ledgers_lock:
                self._holds += 1
            try:
                yield
            finally:
                with self._ledgers_lock:
                    self._holds -= 1

    @property
    def changing(self) -> bool:
        """A change of some group is being made right now (its lock is held)."""
        with self._ledgers_lock:
            return self._holds > 0

    def _begin(self, ledger: _Ledger) -> None:
        ledger.changes += 1

    def _end(self, ledger: _Ledger) -> None:
        ledger.changes += 1

    def _token(self, ledger: _Ledger) -> str:
        return f"{self.epoch}:{len(ledger.journal)}"

    def _own_since(self, ledger: _Ledger, token: str) -> int:
        epoch, _, position = token.partition(":")
        if epoch == self.epoch and position.isdigit():
            return sum(ledger.journal[int(position) :])
        return sum(ledger.journal)  # a predecessor's intent: every change of ours came after it

    def _ledger(self, name: str) -> _Ledger:
        with self._ledgers_lock:
            ledger = self._ledgers.get(name)
            if ledger is None:
                ledger = self._ledgers[name] = _Ledger()
            return ledger


def _read_nothing(activity: str) -> Read:
    return Read(None, activity, 0.0, 0)
