"""Spot Guard removes only capacity it added, and leaves no dead end: five situations of issue 16, black box.

The real controller process (``python -m controller.app.cli run``) against the sandbox (real API server, kwok
kubelets, the capacity simulator in front of moto, with AWS's default termination policy), driven only from
outside: the Node annotations nodewatch writes, the simulator's capacity controls, kubelets that have not
reported Ready yet (``KubeletHold``). Each test asserts what a user would see: which instances were terminated
and how, the groups' desired capacity, whether on-demand was asked for, the SpotGuardFallbackEvent, cordons.

1. A retirement of one batch's old node (terminate with decrement) while another batch of the same group still
   waits for its instance is Spot Guard's own change: the waiting batch does not fall back to on-demand.
2. A spot scale-up withdrawn at the capacity check's deadline (its instance InService, its Node not Ready)
   terminates exactly that instance: the group's termination policy never picks an old, serving node.
3. An on-demand replacement given back (keep-until-interruption, or its old node's drain abandoned) ends its SGFE:
   no spot instance is added for it.
4. A new interruption notice after a Released replacement starts a new one.
5. A node cordoned for an interruption whose replacement Failed is uncordoned when the interruption clears.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from controller.model.sgfe import GROUP, PLURAL, VERSION
from nodewatch import annotations as contract
from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox
from tests.integration.controller_process import (
    ON_DEMAND_ASG,
    SPOT_ASG,
    ControllerLauncher,
    ControllerProcess,
    SpotNode,
    annotate_rebalance,
    controller_env,
    replacement_phase,
    spot_nodes,
)
from tests.integration.kubelet_hold import KubeletHold

pytestmark = pytest.mark.timeout(180)

#: Durations compressed to seconds (the lifecycle's timeline as in the overlapping-replacements test).
FAST = {
    "SPOT_GUARD_BATCH_WINDOW": "0.3",
    "SPOT_GUARD_CAPACITY_POLL_INTERVAL": "0.5",
    "SPOT_GUARD_DRAIN_TIMEOUT": "10",
    "SPOT_GUARD_SAFETY_RETRY_INTERVAL": "1",
    "SPOT_GUARD_MINIMUM_WAIT_DURATION": "2",
    "SPOT_GUARD_STABILITY_WINDOW": "3",
    "SPOT_GUARD_LIFECYCLE_POLL_INTERVAL": "0.5",
    "SPOT_GUARD_MONITORING_BACKOFF_INITIAL": "1",
    "SPOT_GUARD_MONITORING_BACKOFF_MAX": "2",
    "SPOT_GUARD_COMPLETED_TTL": "600",  # Completed SGFEs stay for the assertions
}
KEEP = {"SPOT_GUARD_RETIRE_POLICY": "keep-until-interruption", "SPOT_GUARD_KEEP_GRACE_PERIOD": "3"}
TERMINATE = "TerminateInstanceInAutoScalingGroup"


@pytest.fixture
def launcher(
    sandbox: Sandbox, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api, namespace: str, tmp_path: Path
) -> Iterator[ControllerLauncher]:
    # Depends on aws_sim and namespace: the controller is gone before the groups are reset and the SGFEs deleted.
    aws_sim.set_capacity(SPOT_ASG, pending_seconds=1, retry_seconds=1, capacity_short=False)
    aws_sim.set_capacity(ON_DEMAND_ASG, pending_seconds=1, retry_seconds=1, capacity_short=False)
    aws_sim.reset_calls()
    env = controller_env(sandbox.env(), SPOT_GUARD_NAMESPACE=namespace, **FAST)
    with ControllerLauncher(env, tmp_path, core=core) as launcher:
        yield launcher


@pytest.fixture
def hold(aws_sim: SandboxAWSClient, api_client: k8s.ApiClient, core: k8s.CoreV1Api) -> Iterator[KubeletHold]:
    """From here on, every new spot Node stays NotReady until released (removed before the groups are reset)."""
    with KubeletHold(api_client, SPOT_ASG, known={n.name for n in spot_nodes(core)}) as held:
        yield held


# -- looking ------------------------------------------------------------------------------------------------------


def _desired(sim: SandboxAWSClient, group: str) -> int:
    return int(sim.group(group)["desired_capacity"])


def _live(sim: SandboxAWSClient, group: str) -> set[str]:
    """Instances of the group that are not leaving it."""
    return {i["instance_id"] for i in sim.instances(group) if not i["lifecycle_state"].startswith("Terminating")}


def _in_service(sim: SandboxAWSClient, group: str) -> set[str]:
    return {i["instance_id"] for i in sim.instances(group, "InService")}


def _terminated(sim: SandboxAWSClient) -> list[tuple[str, str]]:
    """(instance, ShouldDecrementDesiredCapacity) of every TerminateInstanceInAutoScalingGroup call, in order."""
    return [(c["params"]["InstanceId"], c["params"]["ShouldDecrementDesiredCapacity"]) for c in sim.calls(TERMINATE)]


def _desired_set(sim: SandboxAWSClient, group: str) -> list[int]:
    return [int(c["params"]["DesiredCapacity"]) for c in sim.calls("SetDesiredCapacity", asg=group)]


def _gone(core: k8s.CoreV1Api, name: str) -> bool:
    return replacement_phase(core, name) == "Gone"


def _cordoned(core: k8s.CoreV1Api, name: str) -> bool:
    return bool(core.read_node(name).spec.unschedulable)


def _node_of(core: k8s.CoreV1Api, instance: str) -> str | None:
    for node in core.list_node(label_selector=f"spotguard.io/asg={SPOT_ASG}").items:
        if str(node.spec.provider_id or "").endswith("/" + instance):
            return str(node.metadata.name)
    return None


def _sgfes(core: k8s.CoreV1Api, namespace: str) -> list[dict[str, Any]]:
    custom = k8s.CustomObjectsApi(core.api_client)
    return list(custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"])


def _notice_interruption(core: k8s.CoreV1Api, node: SpotNode) -> None:
    """What nodewatch writes when IMDS shows an interruption notice (two minutes ahead)."""
    now = dt.datetime.now(dt.UTC)
    core.patch_node(
        node.name,
        {
            "metadata": {
                "annotations": {
                    contract.INTERRUPTION_ACTION: "terminate",
                    contract.INTERRUPTION_TIME: contract.format_time(now + dt.timedelta(minutes=2)),
                    contract.INTERRUPTION_FIRST_SEEN: contract.format_time(now),
                    contract.INSTANCE_ID: node.instance_id,
                }
            }
        },
    )


class Scene:
    """Waiting with the whole picture in the failure message: both groups, the AWS calls, the controller's log."""

    def __init__(self, sim: SandboxAWSClient, controller: ControllerProcess) -> None:
        self.sim = sim
        self.controller = controller

    def describe(self) -> str:
        lines = []
        for name in (SPOT_ASG, ON_DEMAND_ASG):
            group = self.sim.group(name)
            states = sorted(f"{i['instance_id']}:{i['lifecycle_state']}" for i in group["instances"])
            lines.append(f"{name}: desired {group['desired_capacity']}, instances {states}")
        lines.append(f"terminations (instance, decrement): {_terminated(self.sim)}")
        lines.append(f"SetDesiredCapacity spot {_desired_set(self.sim, SPOT_ASG)}")
        lines.append(f"SetDesiredCapacity on-demand {_desired_set(self.sim, ON_DEMAND_ASG)}")
        lines.append("controller log (tail):")
        lines.append(self.controller.log_tail(25))
        return "\n".join(lines)

    def wait(self, what: str, condition: Callable[[], object], timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up after {timeout:g} s waiting for {what}\n{self.describe()}")
            time.sleep(0.1)

    def check(self, ok: object, what: str) -> None:
        if not ok:
            raise AssertionError(f"{what}\n{self.describe()}")


# -- 1. our own retirement is not someone else's lowering ----------------------------------------------------------


def test_a_retirement_while_another_batch_waits_does_not_make_it_fall_back(
    launcher: ControllerLauncher, hold: KubeletHold, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api
) -> None:
    """Batches A and B of the spot group are both waiting for their instances (desired 3 -> 4 -> 5, their Nodes
    not Ready yet). A's Node becomes Ready and A's old node is retired (terminated with decrement: desired 4, below
    B's target 5). B keeps waiting: when its Node becomes Ready it is B's replacement; no on-demand is asked for
    and B's instance is never terminated."""
    a, b = spot_nodes(core)[:2]
    originals = _live(aws_sim, SPOT_ASG)
    scene = Scene(aws_sim, launcher.start("owner", SPOT_GUARD_CAPACITY_CHECK_TIMEOUT="60"))

    annotate_rebalance(core, a)
    scene.wait("A's instance InService", lambda: len(_in_service(aws_sim, SPOT_ASG) - originals) == 1)
    (new_a,) = _in_service(aws_sim, SPOT_ASG) - originals
    annotate_rebalance(core, b)
    scene.wait("B's instance InService", lambda: len(_in_service(aws_sim, SPOT_ASG) - originals) == 2)
    (new_b,) = _in_service(aws_sim, SPOT_ASG) - originals - {new_a}
    scene.check(_desired(aws_sim, SPOT_ASG) == 5, "two scale-ups, one per batch: desired 5")

    scene.wait("A's new Node registered", lambda: _node_of(core, new_a))
    hold.release(str(_node_of(core, new_a)))
    scene.wait("A's old node retired", lambda: _gone(core, a.name))
    scene.check((a.instance_id, "true") in _terminated(aws_sim), f"A's old instance {a.instance_id} terminated")
    time.sleep(4)  # B's capacity check polls (every 0.5 s) with desired 4 below its target 5

    scene.check(new_b in _live(aws_sim, SPOT_ASG), f"B's launching instance {new_b} is still there")
    scene.check(_desired_set(aws_sim, ON_DEMAND_ASG) == [], "no on-demand capacity asked for")
    scene.wait("B's new Node registered", lambda: _node_of(core, new_b))
    hold.release(str(_node_of(core, new_b)))
    scene.wait("B's old node retired", lambda: _gone(core, b.name))
    scene.check(
        _live(aws_sim, SPOT_ASG) == originals - {a.instance_id, b.instance_id} | {new_a, new_b},
        f"A's and B's new instances {new_a}, {new_b} serve in place of the old",
    )
    scene.check(
        _terminated(aws_sim) == [(a.instance_id, "true"), (b.instance_id, "true")],
        "exactly the two old instances terminated, each with decrement",
    )
    scene.check(_desired(aws_sim, SPOT_ASG) == 3, "capacity neutral")
    scene.check(
        _desired(aws_sim, ON_DEMAND_ASG) == 0 and _desired_set(aws_sim, ON_DEMAND_ASG) == [], "on-demand untouched"
    )


# -- 2. a withdrawal never lets AWS pick ---------------------------------------------------------------------------


def test_a_withdrawn_spot_scale_up_terminates_exactly_its_own_instance(
    launcher: ControllerLauncher, hold: KubeletHold, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api
) -> None:
    """The spot instance is InService but its Node is not Ready by the capacity check's deadline. The withdrawal
    terminates exactly that instance (with decrement); every old spot node keeps serving (the group's termination
    policy, which prefers the instances closest to their next billing hour, the old ones, never picks); the
    recommended node is retired once its on-demand replacement is Ready."""
    old = spot_nodes(core)[0]
    originals = _live(aws_sim, SPOT_ASG)
    scene = Scene(aws_sim, launcher.start("owner", SPOT_GUARD_CAPACITY_CHECK_TIMEOUT="6"))

    annotate_rebalance(core, old)
    scene.wait("the spot instance InService", lambda: len(_in_service(aws_sim, SPOT_ASG) - originals) == 1)
    (new,) = _in_service(aws_sim, SPOT_ASG) - originals
    scene.wait("on-demand asked for", lambda: _desired_set(aws_sim, ON_DEMAND_ASG) == [1])
    scene.wait("the recommended node retired", lambda: _gone(core, old.name), 60)

    scene.check(
        originals - {old.instance_id} <= _live(aws_sim, SPOT_ASG),
        f"every other old spot instance {sorted(originals - {old.instance_id})} still serves",
    )
    scene.check(new not in _live(aws_sim, SPOT_ASG), f"the withdrawn instance {new} is gone")
    scene.check(
        _terminated(aws_sim) == [(new, "true"), (old.instance_id, "true")],
        f"exactly the withdrawn instance {new}, then the recommended {old.instance_id}, terminated with decrement",
    )
    scene.check(_desired(aws_sim, SPOT_ASG) == 2 and _desired(aws_sim, ON_DEMAND_ASG) == 1, "capacity neutral")


# -- 4. an on-demand replacement given back ends its SGFE ----------------------------------------------------------


def test_a_given_back_on_demand_replacement_ends_its_fallback_event_and_adds_no_spot(
    launcher: ControllerLauncher, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api, namespace: str
) -> None:
    """keep-until-interruption: a rebalance recommendation got an on-demand replacement (spot short), no
    interruption came within the grace period, so the on-demand replacement is given back. Spot is back; its
    SGFE ends Completed saying why, and the lifecycle never adds a spot instance for it."""
    old = spot_nodes(core)[0]
    aws_sim.set_capacity(SPOT_ASG, capacity_short=True)
    scene = Scene(aws_sim, launcher.start("owner", SPOT_GUARD_CAPACITY_CHECK_TIMEOUT="5", **KEEP))
    annotate_rebalance(core, old)
    _given_back_ends_its_sgfe(scene, core, namespace, old, "no interruption within 3s")


def test_an_abandoned_drain_ends_the_fallback_event_of_its_on_demand_replacement(
    launcher: ControllerLauncher, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api, namespace: str
) -> None:
    """A rebalance recommendation got an on-demand replacement (spot short), but the old node cannot be drained (a
    PodDisruptionBudget never allows the eviction): after its one allowed attempt the node is uncordoned and the
    on-demand replacement given back. Spot is back; its SGFE ends Completed saying why, and no spot instance is added
    for it. (The SGFE's minimum wait outlasts the drain attempt, so no return to spot is due before the give-back.)"""
    old = spot_nodes(core)[0]
    policy = k8s.PolicyV1Api(core.api_client)
    core.create_namespaced_pod(
        namespace,
        k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name="precious", labels={"app": "precious"}),
            spec=k8s.V1PodSpec(
                node_name=old.name, containers=[k8s.V1Container(name="app", image="registry.invalid/app:1")]
            ),
        ),
    )
    policy.create_namespaced_pod_disruption_budget(
        namespace,
        k8s.V1PodDisruptionBudget(
            metadata=k8s.V1ObjectMeta(name="never"),
            spec=k8s.V1PodDisruptionBudgetSpec(
                max_unavailable=0, selector=k8s.V1LabelSelector(match_labels={"app": "precious"})
            ),
        ),
    )
    aws_sim.set_capacity(SPOT_ASG, capacity_short=True)
    scene = Scene(
        aws_sim,
        launcher.start(
            "owner",
            SPOT_GUARD_CAPACITY_CHECK_TIMEOUT="5",
            SPOT_GUARD_DRAIN_TIMEOUT="2",
            SPOT_GUARD_MAX_DRAIN_ATTEMPTS="1",  # a second attempt would come 30 s later
            SPOT_GUARD_MINIMUM_WAIT_DURATION="10",
        ),
    )
    annotate_rebalance(core, old)
    _given_back_ends_its_sgfe(scene, core, namespace, old, "drain did not complete in 1 attempts", settle=9)
    scene.check(not _cordoned(core, old.name), "the node that could not be drained is uncordoned")
    pod = core.read_namespaced_pod("precious", namespace)
    scene.check(pod.metadata.deletion_timestamp is None, "no pod lost")


def _given_back_ends_its_sgfe(
    scene: Scene, core: k8s.CoreV1Api, namespace: str, old: SpotNode, why: str, *, settle: float = 6
) -> None:
    """``old``'s rebalance recommendation falls back to on-demand (spot is short until its SGFE exists); its
    on-demand replacement is given back (Released) for ``why``. Then: the SGFE is Completed, its message says the
    replacement was given back and ``why``, no spot capacity is added for it within ``settle`` seconds (past the
    SGFE's minimum wait and stability window), and both groups are as before."""
    sim = scene.sim
    scene.wait("an SGFE for the on-demand replacement", lambda: _sgfes(core, namespace))
    (event,) = _sgfes(core, namespace)
    on_demand = event["spec"]["onDemandInstanceID"]
    sim.set_capacity(SPOT_ASG, capacity_short=False)
    raises_before = len(_desired_set(sim, SPOT_ASG))
    scene.wait("the on-demand replacement given back", lambda: replacement_phase(core, old.name) == "Released")
    scene.wait("the on-demand replacement terminated", lambda: on_demand not in _live(sim, ON_DEMAND_ASG))

    def completed() -> dict[str, Any] | None:
        (current,) = _sgfes(core, namespace)
        return current if (current.get("status") or {}).get("phase") == "Completed" else None

    scene.wait("the SGFE Completed", completed, 30)
    time.sleep(settle)  # a return to spot would have been asked for by now
    message = str(((completed() or {}).get("status") or {}).get("message"))
    scene.check(
        "given back" in message and why in message,
        f"the SGFE says its replacement {on_demand} was given back ({why}): {message!r}",
    )
    scene.check(
        _desired_set(sim, SPOT_ASG)[raises_before:] == [],
        f"no spot capacity added for a given-back replacement: {_desired_set(sim, SPOT_ASG)[raises_before:]}",
    )
    scene.check(_desired(sim, SPOT_ASG) == 3 and old.instance_id in _live(sim, SPOT_ASG), "spot as before")
    scene.check(_desired(sim, ON_DEMAND_ASG) == 0, "on-demand back to 0")


# -- 5. Released and Failed are no dead ends -----------------------------------------------------------------------


def test_an_interruption_after_a_released_replacement_starts_a_new_one(
    launcher: ControllerLauncher, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api
) -> None:
    """keep-until-interruption: a rebalance recommendation's spot replacement was given back (Released). Then the
    interruption notice comes: a new replacement starts and the node is retired, capacity neutral."""
    old = spot_nodes(core)[0]
    originals = _live(aws_sim, SPOT_ASG)
    scene = Scene(aws_sim, launcher.start("owner", SPOT_GUARD_CAPACITY_CHECK_TIMEOUT="20", **KEEP))

    annotate_rebalance(core, old)
    scene.wait("the spare given back", lambda: replacement_phase(core, old.name) == "Released")
    scene.wait("the spare gone", lambda: _live(aws_sim, SPOT_ASG) == originals and _desired(aws_sim, SPOT_ASG) == 3)
    _notice_interruption(core, old)
    scene.wait("the interrupted node retired", lambda: _gone(core, old.name), 45)

    scene.check(old.instance_id not in _live(aws_sim, SPOT_ASG), f"{old.instance_id} terminated")
    scene.check((old.instance_id, "true") in _terminated(aws_sim), "terminated exactly, with decrement")
    scene.check(
        len(_live(aws_sim, SPOT_ASG)) == 3 and _desired(aws_sim, SPOT_ASG) == 3, "a new spot instance in its place"
    )
    scene.check(originals - {old.instance_id} <= _live(aws_sim, SPOT_ASG), "the other spot nodes untouched")


def test_a_node_cordoned_for_an_interruption_is_uncordoned_when_it_clears(
    launcher: ControllerLauncher, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api
) -> None:
    """An interruption notice: the node is cordoned at once, but neither spot nor on-demand has capacity (Failed).
    Then the interruption clears (nodewatch writes when IMDS stopped showing it): the node is schedulable again,
    and nothing was terminated."""
    old = spot_nodes(core)[0]
    aws_sim.set_capacity(SPOT_ASG, capacity_short=True)
    aws_sim.set_capacity(ON_DEMAND_ASG, capacity_short=True)
    scene = Scene(aws_sim, launcher.start("owner", SPOT_GUARD_CAPACITY_CHECK_TIMEOUT="3"))

    _notice_interruption(core, old)
    scene.wait("the replacement Failed", lambda: replacement_phase(core, old.name) == "Failed")
    scene.check(_cordoned(core, old.name), "cordoned for the interruption")
    core.patch_node(
        old.name,
        {"metadata": {"annotations": {contract.INTERRUPTION_CLEARED: contract.format_time(dt.datetime.now(dt.UTC))}}},
    )
    scene.wait("the node uncordoned once the interruption cleared", lambda: not _cordoned(core, old.name), 15)
    scene.check(_terminated(aws_sim) == [], "nothing terminated")
    scene.check(_desired(aws_sim, SPOT_ASG) == 3 and _desired(aws_sim, ON_DEMAND_ASG) == 0, "no capacity left")


# -- an instance EC2 takes away before Spot Guard retires it --------------------------------------------------------


def test_an_interrupted_instance_ec2_reclaims_before_its_retirement_leaves_the_group_where_it_was(
    launcher: ControllerLauncher, hold: KubeletHold, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api
) -> None:
    """An interruption notice; the spot replacement launches but its Node is slow to become Ready, and EC2 takes
    the interrupted instance back first (two minutes after the notice), without a decrement, so the group launches
    one more in its place. When the replacement's Node is Ready, the retirement finds the old instance gone and
    removes exactly the instance the group launched in its place (drained, with decrement): the spot group ends
    where it was, one new instance for the old one, and nothing Spot Guard did not choose was terminated."""
    old = spot_nodes(core)[0]
    originals = _live(aws_sim, SPOT_ASG)
    scene = Scene(aws_sim, launcher.start("owner", SPOT_GUARD_CAPACITY_CHECK_TIMEOUT="60"))

    _notice_interruption(core, old)
    scene.wait("the replacement InService", lambda: len(_in_service(aws_sim, SPOT_ASG) - originals) == 1)
    (replacement,) = _in_service(aws_sim, SPOT_ASG) - originals
    scene.wait("its Node registered (held NotReady)", lambda: _node_of(core, replacement))

    aws_sim.reclaim(old.instance_id)  # two minutes after the notice: EC2 takes it back
    scene.wait(
        "the group launching one in place of the reclaimed instance",
        lambda: len(_live(aws_sim, SPOT_ASG) - originals - {replacement}) == 1,
    )
    (in_place,) = _live(aws_sim, SPOT_ASG) - originals - {replacement}
    scene.check(_desired(aws_sim, SPOT_ASG) == 4, "the reclaim did not lower desired capacity")

    hold.release(str(_node_of(core, replacement)))
    scene.wait("the in-place instance terminated", lambda: in_place not in _live(aws_sim, SPOT_ASG), 60)
    scene.wait("the reclaimed node's record gone with its Node", lambda: _gone(core, old.name), 30)

    scene.check(_desired(aws_sim, SPOT_ASG) == 3, "the spot group is back where it was")
    scene.check(
        _live(aws_sim, SPOT_ASG) == originals - {old.instance_id} | {replacement},
        f"the replacement {replacement} serves in place of {old.instance_id}; the other old nodes untouched",
    )
    scene.check(
        _terminated(aws_sim) == [(in_place, "true")],
        f"exactly the instance launched in its place, {in_place}, terminated with decrement",
    )
    scene.check(_desired_set(aws_sim, SPOT_ASG) == [4], "one scale-up, no lowering that lets AWS choose")
    scene.check(_desired_set(aws_sim, ON_DEMAND_ASG) == [], "no on-demand asked for")
