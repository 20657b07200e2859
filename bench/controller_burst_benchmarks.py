"""Figure 2 (burst): 500 simultaneous rebalance recommendations across two ASG pairs.

Runs on a sandbox of its own with two pairs (the shared one has one), each spot group raised to 250 kwok Nodes
(MaxSize 1000); the controller discovers both pairs by tag. Spot instances stay Pending, so only the scale-ups
are measured.

Arrivals as in a cluster: EC2 recommends rebalancing to a whole capacity pool at once, and each node's nodewatch
sees it at its next poll, so each annotation is written at a random moment within one nodewatch poll interval
(2 s). nodewatch's own Node client builds each PATCH and a Go sender makes them, a TLS connection each, as each
agent makes (``bench.annotation_writers``: in a cluster the agents' CPU is on their own nodes, not on the 2 cores
shared here); the spread actually achieved is reported with the figure, with the same writes' spread when no
controller runs (the machine's own pace).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

from bench import annotation_writers
from bench.controller_footprint_benchmarks import PROFILE_DIR, cpu_seconds, profiled
from bench.controller_harness import SET_DESIRED, autoscaling, controller, epoch, sim, wait_until
from bench.figures import Figure, Target
from bench.registry import Context, benchmark
from sandbox.environment import Sandbox
from tests.integration.controller_process import SpotNode, clean_nodes, spot_nodes

log = logging.getLogger("bench.controller")

PAIRS = (1, 2)
POLL_INTERVAL = 2.0  # nodewatch's default: the spread of one burst's arrivals
QUANTILES = (0.0, 0.5, 0.9, 1.0)
# Set to profile the controller during each round with py-spy: off by default, as the sampler's own CPU competes
# with the burst on two cores.
PROFILE_ENV = "SPOTGUARD_BENCH_PROFILE_BURST"


def _spot(pair: int) -> str:
    return f"spotguard-spot-{pair}"


@dataclasses.dataclass(frozen=True)
class Arrivals:
    """When a burst's annotation PATCHes were sent and answered (seconds since the epoch)."""

    sent: list[float]
    answered: list[float]
    sender_cpu_s: float  # the CPU the sender of the PATCHes used (bench.annotation_writers), start-up included

    @property
    def first(self) -> float:
        return min(self.sent)

    @property
    def spread(self) -> float:
        return max(self.sent) - self.first

    def answered_by(self, fraction: float) -> float:
        """Seconds from the first PATCH sent until ``fraction`` of them were answered (written)."""
        ordered = sorted(self.answered)
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] - self.first

    def largest_gap(self) -> float:
        """The longest the API server went without answering one of them, between its first and last answer."""
        ordered = sorted(self.answered)
        return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


def _annotate_all(
    kubeconfig: Path, nodes: list[SpotNode], seed: int, mode: str = annotation_writers.NOTICE
) -> Arrivals:
    """Annotate every Node at a random moment within one poll interval (see ``bench.annotation_writers``)."""
    rng = random.Random(seed)
    notice_time = dt.datetime.now(dt.UTC)  # EC2 recommends rebalancing to the whole pool at once
    writes = [
        annotation_writers.Write(offset, node.name, annotation_writers.changes(mode, node.instance_id, notice_time))
        for offset, node in sorted(((rng.uniform(0.0, POLL_INTERVAL), node) for node in nodes), key=lambda p: p[0])
    ]
    result = annotation_writers.write_annotations(kubeconfig, writes)
    failed = sum(1 for sent, _ in result.times if sent < 0)
    if failed:
        raise RuntimeError(f"{failed} of {len(result.times)} annotation PATCHes failed")
    return Arrivals(
        sent=[sent for sent, _ in result.times],
        answered=[answered for _, answered in result.times],
        sender_cpu_s=result.sender_cpu_s,
    )


def _cpu_by_process() -> dict[int, tuple[str, float]]:
    """pid -> (command, CPU seconds used so far) of every process on the machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        fields = text.rsplit(")", 1)[1].split()
        command = text[text.index("(") + 1 : text.rindex(")")]
        if command.startswith("python"):
            command = _python_module(stat.parent / "cmdline", command)
        used[int(stat.parent.name)] = (command, (int(fields[11]) + int(fields[12])) / ticks)
    return used


def _python_module(cmdline: Path, command: str) -> str:
    """``python -m MODULE`` for a Python process started so (the controller, the AWS simulator, the benchmark
    itself are all "python" to the kernel), else ``command``."""
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return command
    if b"-m" in args[:-1]:
        return f"python -m {args[args.index(b'-m') + 1].decode(errors='replace')}"
    return command


def _cpu_since(before: dict[int, tuple[str, float]], labels: dict[int, str] | None = None) -> dict[str, float]:
    """CPU seconds each process used since ``before``, summed by command (kernel workers, which rename themselves
    after their current work, as one; ``labels`` names known pids); the busiest first, those over 0.05 s. Processes
    gone since are not counted."""
    grown: dict[str, float] = {}
    for pid, (command, used) in _cpu_by_process().items():
        name = "kworker (kernel)" if command.startswith("kworker/") else (labels or {}).get(pid, command)
        earlier = before.get(pid)
        grown[name] = grown.get(name, 0.0) + used - (earlier[1] if earlier else 0.0)
    return {command: round(used, 2) for command, used in sorted(grown.items(), key=lambda kv: -kv[1]) if used > 0.05}


@dataclasses.dataclass
class Round:
    first_to_last_call_s: float
    last_annotation_to_last_call_s: float
    arrival_spread_s: float
    answered_by_s: dict[str, float]  # seconds from the first PATCH until that share of them was written
    largest_answer_gap_s: float  # the longest pause between two of the API server's answers
    calls_per_asg: dict[str, int]
    desired_by_call: dict[str, list[str]]
    call_at_s: dict[str, list[float]]  # each call's receipt, seconds from the first PATCH
    controller_cpu_s: float  # the controller's CPU time from just before the first PATCH to the last call seen
    # every process's CPU while the annotations were written (the sender excluded), as in calibration
    cpu_s_by_process: dict[str, float]
    sender_cpu_s: float  # the PATCH sender's own CPU (not in cpu_s_by_process: it is gone when that is counted)


def _measure(context: Context, per_pair: int, rounds: int) -> tuple[list[Round], dict[str, Any]]:
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
    machine_before = _cpu_by_process()
    alone = _annotate_all(context.sandbox.kubeconfig, nodes, seed=99)
    calibration: dict[str, Any] = {
        "sent_spread_s": round(alone.spread, 2),
        "answered_by_s": {f"{q:.0%}": round(alone.answered_by(q), 2) for q in QUANTILES},
        "cpu_s_by_process": _cpu_since(machine_before),
        "sender_cpu_s": round(alone.sender_cpu_s, 2),
    }
    _annotate_all(context.sandbox.kubeconfig, nodes, seed=99, mode=annotation_writers.CLEAR)
    log.info(f"without the controller, {len(nodes)} annotations planned over {POLL_INTERVAL:g} s: {calibration}")
    results = []
    for round_ in range(rounds):
        nodes = [node for pair in PAIRS for node in spot_nodes(core, _spot(pair))[:per_pair]]
        with (
            controller(
                context, SPOT_ASG_NAME="", ON_DEMAND_ASG_NAME="", SPOT_GUARD_CAPACITY_CHECK_TIMEOUT="600"
            ) as process,
            profiled(process.pid, PROFILE_DIR / f"controller-burst-{round_}.txt")
            if os.environ.get(PROFILE_ENV)
            else contextlib.nullcontext(),
        ):
            aws.reset_calls()
            cpu_before, machine_before = cpu_seconds(process.pid), _cpu_by_process()
            arrivals = _annotate_all(context.sandbox.kubeconfig, nodes, seed=round_)
            machine_cpu = _cpu_since(machine_before, {process.pid: "controller"})  # while the annotations were written

            def all_scaled() -> bool:
                for pair in PAIRS:
                    calls = aws.calls(SET_DESIRED, _spot(pair))
                    if not calls or max(int(c["params"].get("DesiredCapacity", 0)) for c in calls) < 2 * per_pair:
                        return False
                return True

            wait_until("both spot groups raised by every recommendation", all_scaled, timeout=120, interval=0.2)
            controller_cpu = cpu_seconds(process.pid) - cpu_before
            time.sleep(5.0)  # room for any late, extra call to show up
            calls = {_spot(pair): aws.calls(SET_DESIRED, _spot(pair)) for pair in PAIRS}
        last = max(epoch(c["time"]) for group in calls.values() for c in group)
        results.append(
            Round(
                first_to_last_call_s=last - arrivals.first,
                last_annotation_to_last_call_s=last - arrivals.first - arrivals.answered_by(1.0),
                arrival_spread_s=round(arrivals.spread, 2),
                answered_by_s={f"{q:.0%}": round(arrivals.answered_by(q), 2) for q in QUANTILES},
                largest_answer_gap_s=round(arrivals.largest_gap(), 3),
                calls_per_asg={g: len(cs) for g, cs in calls.items()},
                desired_by_call={g: [str(c["params"].get("DesiredCapacity")) for c in cs] for g, cs in calls.items()},
                call_at_s={g: [round(epoch(c["time"]) - arrivals.first, 2) for c in cs] for g, cs in calls.items()},
                controller_cpu_s=round(controller_cpu, 2),
                cpu_s_by_process=machine_cpu,
                sender_cpu_s=round(arrivals.sender_cpu_s, 2),
            )
        )
        clean_nodes(core)
        for pair in PAIRS:  # exactly this round's Pending launches go: the groups are as before it
            group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[_spot(pair)])["AutoScalingGroups"][0]
            for instance in group["Instances"]:
                if instance["LifecycleState"] == "Pending":
                    asg.terminate_instance_in_auto_scaling_group(
                        InstanceId=instance["InstanceId"], ShouldDecrementDesiredCapacity=True
                    )
    return results, calibration


@benchmark("controller_burst", "500 simultaneous recommendations across two ASG pairs: calls and time")
def burst(context: Context) -> list[Figure]:
    """Figure 2 (burst): SetDesiredCapacity calls per ASG and first annotation to last call."""
    per_pair = 50 if context.quick else 250
    rounds = 1 if context.quick else 5  # the machine's pace varies from minute to minute: a median of five
    with Sandbox(pairs=len(PAIRS), spot_desired=3, workdir=context.workdir / "sandbox") as big:
        inner = Context(sandbox=big, quick=context.quick, workdir=context.workdir)
        results, calibration = _measure(inner, per_pair, rounds)
    conditions = (
        f"{2 * per_pair} recommendations ({per_pair} per spot ASG, two pairs discovered by tag), each written at a "
        f"random moment within one nodewatch poll interval ({POLL_INTERVAL:g} s), as nodewatch's Node client builds "
        f"it (sent by a Go sender, {annotation_writers.WORKERS} at most in flight, a TLS connection per PATCH); "
        "default batching (window 0.1 s, "
        "quiet period up to 0.3 s, at most 2 s, 4 s for the rest of a burst whose first call closed on quiet); "
        "spot instances kept Pending; a sandbox of its own (API server, etcd, kwok, AWS simulator and controller "
        f"on the same 2 cores); {rounds} rounds; details: when the API server had answered the first and "
        "50/90/100% of the PATCHes, its longest pause between two answers, each call's time, and every process's "
        "CPU while they were written, per round and without the controller"
    )
    calls = [float(max(r.calls_per_asg.values())) for r in results]
    return [
        Figure.of_samples(
            "controller.burst_set_desired_calls_per_asg",
            calls,
            "calls",
            f"{conditions}; the larger of the two groups' SetDesiredCapacity counts",
            target=Target(2.0, text="<= 2 per ASG"),
            title=f"SetDesiredCapacity calls per ASG, {2 * per_pair} simultaneous recommendations",
            details={
                "rounds": [dataclasses.asdict(r) for r in results],
                "arrivals_without_controller": calibration,
            },
        ),
        Figure.of_samples(
            "controller.burst_first_annotation_to_last_scale_up",
            [r.first_to_last_call_s for r in results],
            "s",
            f"{conditions}; from just before the first annotation PATCH to the last SetDesiredCapacity",
            target=Target(3.0, text="<= 3 s"),
            title=f"First annotation to last SetDesiredCapacity, {2 * per_pair} simultaneous recommendations",
        ),
        Figure.of_samples(
            "controller.burst_last_annotation_to_last_scale_up",
            [r.last_annotation_to_last_call_s for r in results],
            "s",
            f"{conditions}; from the last annotation PATCH's answer to the last SetDesiredCapacity",
            title=f"Last annotation to last SetDesiredCapacity, {2 * per_pair} simultaneous recommendations",
        ),
    ]
