"""Figure 2 (burst): 500 simultaneous rebalance recommendations across two ASG pairs.

Runs on a sandbox of its own with two pairs (the shared one has one), each spot group raised to 250 kwok Nodes
(MaxSize 1000); the controller discovers both pairs by tag. The annotations are written by 16 threads at once;
spot instances stay Pending, so only the scale-ups are measured.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from bench.controller_harness import SET_DESIRED, autoscaling, controller, epoch, sim, wait_until
from bench.figures import Figure, Target
from bench.registry import Context, benchmark
from sandbox.environment import Sandbox
from tests.integration.controller_process import SpotNode, annotate_rebalance, spot_nodes

PAIRS = (1, 2)
WRITERS = 16


def _spot(pair: int) -> str:
    return f"spotguard-spot-{pair}"


def _annotate_one(core: Callable[[], k8s.CoreV1Api], node: SpotNode) -> None:
    annotate_rebalance(core(), node)


def _annotate_all(context: Context, nodes: list[SpotNode]) -> float:
    """Annotate every Node from many threads at once; the wall-clock time just before the first PATCH."""
    local = threading.local()

    def core() -> k8s.CoreV1Api:
        if not hasattr(local, "core"):
            local.core = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(context.sandbox.kubeconfig)))
        found: k8s.CoreV1Api = local.core
        return found

    first = time.time()
    with concurrent.futures.ThreadPoolExecutor(WRITERS) as pool:
        for future in [pool.submit(_annotate_one, core, node) for node in nodes]:
            future.result()
    return first


def _measure(context: Context, per_pair: int) -> tuple[float, dict[str, int], dict[str, object]]:
    asg = autoscaling(context)
    aws = sim(context)
    core = context.core()
    for pair in PAIRS:
        asg.update_auto_scaling_group(AutoScalingGroupName=_spot(pair), MaxSize=1000, DesiredCapacity=per_pair)

    def grown() -> bool:
        return all(len(spot_nodes(core, _spot(pair))) >= per_pair for pair in PAIRS)

    wait_until(f"{per_pair} Ready Nodes in each spot group", grown, timeout=900, interval=2)
    for pair in PAIRS:
        aws.set_capacity(_spot(pair), pending_seconds=3600)
    nodes = [node for pair in PAIRS for node in spot_nodes(core, _spot(pair))[:per_pair]]
    with controller(context, SPOT_ASG_NAME="", ON_DEMAND_ASG_NAME="", SPOT_GUARD_CAPACITY_CHECK_TIMEOUT="600"):
        aws.reset_calls()
        first = _annotate_all(context, nodes)
        written = time.time() - first

        def all_scaled() -> bool:
            for pair in PAIRS:
                calls = aws.calls(SET_DESIRED, _spot(pair))
                if not calls or max(int(c["params"].get("DesiredCapacity", 0)) for c in calls) < 2 * per_pair:
                    return False
            return True

        wait_until("both spot groups raised by every recommendation", all_scaled, timeout=120, interval=0.2)
        time.sleep(5.0)  # room for any late, extra call to show up
        calls = {_spot(pair): aws.calls(SET_DESIRED, _spot(pair)) for pair in PAIRS}
    last = max(epoch(c["time"]) for group in calls.values() for c in group)
    details: dict[str, object] = {
        "annotation_writes_seconds": round(written, 2),
        "desired_by_call": {g: [c["params"].get("DesiredCapacity") for c in cs] for g, cs in calls.items()},
    }
    return last - first, {g: len(cs) for g, cs in calls.items()}, details


@benchmark("controller_burst", "500 simultaneous recommendations across two ASG pairs: calls and time")
def burst(context: Context) -> list[Figure]:
    """Figure 2 (burst): SetDesiredCapacity calls per ASG and first annotation to last call."""
    per_pair = 50 if context.quick else 250
    with Sandbox(pairs=len(PAIRS), spot_desired=3, workdir=context.workdir / "sandbox") as big:
        inner = Context(sandbox=big, quick=context.quick, workdir=context.workdir)
        took, counts, details = _measure(inner, per_pair)
    conditions = (
        f"{2 * per_pair} recommendations ({per_pair} per spot ASG, two pairs discovered by tag) written by "
        f"{WRITERS} threads at once, default batch window 0.2 s, spot instances kept Pending; a sandbox of its own"
    )
    return [
        Figure.of_samples(
            "controller.burst_set_desired_calls_per_asg",
            [float(max(counts.values()))],
            "calls",
            f"{conditions}; the larger of the two groups' SetDesiredCapacity counts",
            target=Target(2.0, text="<= 2 per ASG"),
            title=f"SetDesiredCapacity calls per ASG, {2 * per_pair} simultaneous recommendations",
            details={"calls_per_asg": counts, **details},
        ),
        Figure.of_samples(
            "controller.burst_first_annotation_to_last_scale_up",
            [took],
            "s",
            f"{conditions}; from just before the first annotation PATCH to the last SetDesiredCapacity",
            target=Target(3.0, text="<= 3 s"),
            title=f"First annotation to last SetDesiredCapacity, {2 * per_pair} simultaneous recommendations",
        ),
    ]
