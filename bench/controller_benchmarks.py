"""The controller's AWS-facing figures on the sandbox: DescribeAutoScalingGroups rate, annotation to scale-up,
spot shortage to on-demand, and the capacity-check deadline's precision.

Every figure runs the real controller process (bench/controller_harness.py) against the sandbox's
kube-apiserver and AWS capacity simulator; times of AWS calls are the simulator's call-log timestamps
(same host clock as this process).
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from typing import Any

from bench.controller_harness import (
    DESCRIBE_GROUPS,
    ON_DEMAND_ASG,
    SET_DESIRED,
    SPOT_ASG,
    autoscaling,
    controller,
    epoch,
    new_call,
    restore,
    sim,
    wait_until,
)
from bench.figures import Figure, Peer, Target
from bench.registry import Context, benchmark
from controller.adapters.aws import AutoScaling
from tests.integration.controller_process import annotate_rebalance, spot_nodes

log = logging.getLogger("bench.controller")

POLL_INTERVAL = 5.0  # the controller's default capacity poll interval; the targets are stated for it
TERMINATE = "TerminateInstanceInAutoScalingGroup"


def _grow_spot(context: Context, count: int, max_size: int = 60) -> None:
    """Raise the spot group to ``count`` running instances (and Nodes) before the controller starts."""
    sim(context).set_capacity(SPOT_ASG, pending_seconds=0)
    autoscaling(context).update_auto_scaling_group(
        AutoScalingGroupName=SPOT_ASG, MaxSize=max_size, DesiredCapacity=count
    )
    core = context.core()
    wait_until(f"{count} Ready spot Nodes", lambda: len(spot_nodes(core)) >= count, timeout=120, interval=0.5)


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


# -- figure 6: DescribeAutoScalingGroups per ASG per poll interval --------------------------------------


def _mentions(call: Any, group: str) -> bool:
    return bool(call.get("asg") == group or group in str(call.get("params", {})))


@benchmark("controller_describe_rate", "DescribeAutoScalingGroups per ASG per poll interval, 5 open events")
def describe_rate(context: Context) -> list[Figure]:
    """Figure 6: 5 replacements open on one ASG, spot kept Pending; Describe calls per poll interval."""
    events, window = 5, 15.0 if context.quick else 30.0
    aws = sim(context)
    samples: list[float] = []
    details: dict[str, Any] = {}
    try:
        _grow_spot(context, events)
        aws.set_capacity(SPOT_ASG, pending_seconds=3600)
        core = context.core()
        with controller(context):
            for node in spot_nodes(core)[:events]:
                annotate_rebalance(core, node)
            wait_until("the batched spot scale-up", new_call(aws, SET_DESIRED, SPOT_ASG, 0), timeout=30)
            time.sleep(1.0)
            for _ in range(1 if context.quick else 2):
                aws.reset_calls()
                time.sleep(window)
                describes = aws.calls(DESCRIBE_GROUPS)
                spot = [c for c in describes if _mentions(c, SPOT_ASG)]
                samples.append(len(spot) / (window / POLL_INTERVAL))
                details.setdefault("describe_calls_total", []).append(len(describes))
                details.setdefault("describe_calls_naming_spot", []).append(len(spot))
            details["example_params"] = [c.get("params") for c in aws.calls(DESCRIBE_GROUPS)[:3]]
    finally:
        restore(context)
    return [
        Figure.of_samples(
            "controller.describe_groups_per_poll",
            samples,
            "calls",
            f"{events} replacements open on {SPOT_ASG} (spot instances Pending 3600 s), capacity poll interval "
            f"{POLL_INTERVAL:g} s (default), {window:g} s windows; DescribeAutoScalingGroups calls naming the spot "
            "ASG divided by the window's poll intervals",
            target=Target(1.0, text="at most once per ASG per poll interval, however many events are open"),
            title="DescribeAutoScalingGroups per ASG per poll interval",
            details=details,
        )
    ]


# -- figure 2: annotation to SetDesiredCapacity ---------------------------------------------------------


def _annotation_latencies(context: Context, batch_window: str, count: int) -> list[float]:
    aws = sim(context)
    rng = random.Random(2)
    latencies: list[float] = []
    try:
        _grow_spot(context, count, max_size=3 * count + 10)
        core = context.core()
        with controller(context, SPOT_GUARD_BATCH_WINDOW=batch_window):
            for node in spot_nodes(core)[:count]:
                seen = aws.count_calls(SET_DESIRED, SPOT_ASG)
                written = time.time()
                annotate_rebalance(core, node)
                call = wait_until("the spot scale-up", new_call(aws, SET_DESIRED, SPOT_ASG, seen), timeout=30)
                latencies.append(epoch(call["time"]) - written)
                time.sleep(rng.uniform(0.5, 1.0))
    finally:
        restore(context)
    return latencies


WINDOWS = {"0.1": "default_window", "0.05": "window_50ms"}  # SPOT_GUARD_BATCH_WINDOW -> figure name part


@benchmark("controller_annotation_to_scale_up", "rebalance annotation to SetDesiredCapacity, single recommendations")
def annotation_to_scale_up(context: Context) -> list[Figure]:
    """Figure 2 (single): annotation write to the simulator's log of the spot SetDesiredCapacity.

    Rounds alternate the windows (default, 50 ms, default, ...), each round a fresh controller, so a slow spell of
    the shared machine or anything left by an earlier round falls on both alike; p99 is taken per round and the
    figure is the median over rounds."""
    count, rounds = (8, 1) if context.quick else (30, 3)
    by_window: dict[str, list[list[float]]] = {window: [] for window in WINDOWS}
    for _ in range(rounds):
        for window in WINDOWS:
            by_window[window].append([sample * 1000 for sample in _annotation_latencies(context, window, count)])
    figures = []
    for window, suffix in WINDOWS.items():
        per_round = by_window[window]
        every = [sample for samples in per_round for sample in samples]
        conditions = (
            f"{rounds} rounds x {count} single recommendations one after another (0.5-1 s apart), "
            f"SPOT_GUARD_BATCH_WINDOW={window} s{' (default)' if window == '0.1' else ''}, rounds alternating with "
            "the other window; from just before the annotation PATCH is sent to the simulator's receipt of "
            "SetDesiredCapacity; spot instances launch at once"
        )
        figures.append(
            Figure.of_samples(
                f"controller.annotation_to_scale_up.{suffix}.p99",
                [_percentile(samples, 0.99) for samples in per_round],
                "ms",
                f"{conditions}; p99 of each round",
                target=Target(250.0, text="p99 <= 250 ms (the batch window is part of it)"),
                title=f"Annotation to SetDesiredCapacity, p99 (batch window {window} s)",
                details={
                    "samples_ms_by_round": [[round(x, 1) for x in samples] for samples in per_round],
                    "p50_ms": statistics.median(every),
                    "p99_ms_all_rounds": _percentile(every, 0.99),
                },
            )
        )
        figures.append(
            Figure.of_samples(
                f"controller.annotation_to_scale_up.{suffix}.p50",
                every,
                "ms",
                conditions,
                title=f"Annotation to SetDesiredCapacity, median (batch window {window} s)",
            )
        )
    return figures


# -- figure 3: shortage to on-demand, and the capacity-check deadline -----------------------------------


def _fallback_sample(context: Context) -> tuple[float, float]:
    """(Failed activity start -> on-demand SetDesiredCapacity, its end -> the same), in seconds."""
    aws = sim(context)
    try:
        aws.set_capacity(SPOT_ASG, capacity_short=True, retry_seconds=1)
        aws.reset_calls()
        core = context.core()
        with controller(context):
            annotate_rebalance(core, spot_nodes(core)[0])
            call = wait_until("the on-demand scale-up", new_call(aws, SET_DESIRED, ON_DEMAND_ASG, 0), timeout=60)
        failed = sorted(
            (a for a in aws.activities(SPOT_ASG) if a["status_code"] == "Failed"), key=lambda a: epoch(a["start_time"])
        )
        # The Failed activity that tells Spot Guard spot is short: the one that completes the group's pools
        # (controller.checks.capacity_check.pools_exhausted: a group of several pools tries the others first).
        pools = AutoScaling(autoscaling(context)).describe_groups([SPOT_ASG])[SPOT_ASG].pools
        if len(failed) < pools:
            raise RuntimeError(f"the simulator logged {len(failed)} Failed spot activities for {pools} pools")
        first = failed[pools - 1]
        sent = epoch(call["time"])
        ended = epoch(first["end_time"]) if first["end_time"] else epoch(first["start_time"])
        return sent - epoch(first["start_time"]), sent - ended
    finally:
        restore(context)


def _deadline_sample(context: Context, timeout: float) -> tuple[float, str]:
    """Seconds from the capacity-check deadline (spot scale-up call + timeout) to the next capacity call."""
    aws = sim(context)
    try:
        aws.set_capacity(SPOT_ASG, pending_seconds=120)
        aws.reset_calls()
        core = context.core()
        with controller(context, SPOT_GUARD_CAPACITY_CHECK_TIMEOUT=f"{timeout:g}"):
            annotate_rebalance(core, spot_nodes(core)[0])
            spot_call = wait_until("the spot scale-up", new_call(aws, SET_DESIRED, SPOT_ASG, 0), timeout=30)

            def next_call() -> Any:
                later = [
                    c for c in aws.calls() if c["seq"] > spot_call["seq"] and c["operation"] in (SET_DESIRED, TERMINATE)
                ]
                return later[0] if later else None

            reaction = wait_until("the withdraw or on-demand call", next_call, timeout=timeout + 30, interval=0.05)
        deadline = epoch(spot_call["time"]) + timeout
        return epoch(reaction["time"]) - deadline, f"{reaction['operation']} {reaction['asg']}"
    finally:
        restore(context)


@benchmark("controller_fallback", "Failed spot activity to on-demand scale-up; capacity-check deadline overshoot")
def fallback(context: Context) -> list[Figure]:
    """Figure 3: spot short -> on-demand SetDesiredCapacity; spot Pending past the deadline -> the reaction."""
    repeats = 2 if context.quick else 4
    from_start, from_end = zip(*(_fallback_sample(context) for _ in range(repeats)), strict=True)
    timeout = 5.0
    overshoots, reactions = [], []
    for _ in range(repeats):
        overshoot, reaction = _deadline_sample(context, timeout)
        overshoots.append(overshoot)
        reactions.append(reaction)
    return [
        Figure.of_samples(
            "controller.failed_activity_to_on_demand",
            list(from_start),
            "s",
            f"spot group short of capacity (simulator retry 1 s), capacity poll interval {POLL_INTERVAL:g} s "
            "(default); from the StartTime of the Failed spot activity that completes the group's pools (its "
            "MixedInstancesPolicy types x zones: a group of several pools tries the others first, "
            "controller.checks.capacity_check.pools_exhausted) to the on-demand "
            f"SetDesiredCapacity call; {repeats} runs. The simulator fails the first launch at once, so the Failed "
            "activity appears with the scale-up and the controller's first check right after it finds it: a "
            "best-case phase (a failure at a random phase would wait up to one poll interval more)",
            target=Target(POLL_INTERVAL, applies_to="max", text="at most one capacity-poll interval"),
            peer=Peer("cluster-autoscaler", "waits up to max-node-provision-time (15 min) without early abort"),
            title="Failed spot activity to on-demand scale-up",
            details={"from_activity_end_time_s": [round(x, 3) for x in from_end]},
        ),
        Figure.of_samples(
            "controller.capacity_deadline_overshoot",
            overshoots,
            "s",
            f"spot instances Pending 120 s, SPOT_GUARD_CAPACITY_CHECK_TIMEOUT={timeout:g} s, poll interval "
            f"{POLL_INTERVAL:g} s; from (spot SetDesiredCapacity call time + timeout) to the controller's next "
            f"capacity call (withdraw or on-demand scale-up); {repeats} runs",
            target=Target(1.0, applies_to="max", text="<= 1 s overshoot"),
            title="Capacity-check deadline overshoot",
            details={"reaction_calls": reactions},
        ),
    ]
