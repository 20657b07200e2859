"""EC2 event through EventBridge and SQS to SetDesiredCapacity, beside the annotation figure
(``controller_annotation_to_scale_up``): the same single recommendations, published with put_events instead of
written by nodewatch.

The real controller process (bench/controller_harness.py) reads the sandbox's queue (``SPOT_GUARD_QUEUE_URL``):
moto's EventBridge delivers each event to the queue at once, the leader's long poll returns it, the event is
recorded on the Node, and the replacement road takes it from the Node cache as it takes an annotation. Times are
from just before put_events is sent to the simulator's receipt of SetDesiredCapacity. On AWS, EventBridge's own
delivery to SQS adds its latency (typically well under a second) to this figure.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import time
from typing import Any

import boto3

from bench.controller_benchmarks import _grow_spot, _percentile
from bench.controller_harness import SET_DESIRED, SPOT_ASG, controller, epoch, new_call, restore, sim, wait_until
from bench.figures import Figure
from bench.registry import Context, benchmark
from tests.integration.controller_process import spot_nodes

log = logging.getLogger("bench.controller")

DETAIL_TYPE = "EC2 Instance Rebalance Recommendation"


def _events_client(context: Context) -> Any:
    env = context.sandbox.env()
    return boto3.client(
        "events",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def _event_latencies(context: Context, count: int) -> list[float]:
    aws = sim(context)
    events = _events_client(context)
    region = context.sandbox.env()["AWS_DEFAULT_REGION"]
    account = context.sandbox.queue_url.rstrip("/").split("/")[-2]
    rng = random.Random(2)
    latencies: list[float] = []
    try:
        _grow_spot(context, count, max_size=3 * count + 10)
        core = context.core()
        with controller(context, SPOT_GUARD_QUEUE_URL=context.sandbox.queue_url):
            for node in spot_nodes(core)[:count]:
                seen = aws.count_calls(SET_DESIRED, SPOT_ASG)
                entry = {
                    "Source": "aws.ec2",
                    "DetailType": DETAIL_TYPE,
                    "Detail": json.dumps({"instance-id": node.instance_id}),
                    "Resources": [f"arn:aws:ec2:{region}:{account}:instance/{node.instance_id}"],
                }
                published = time.time()
                answer = events.put_events(Entries=[entry])
                if answer.get("FailedEntryCount"):
                    raise RuntimeError(f"put_events refused the event: {answer}")
                call = wait_until("the spot scale-up", new_call(aws, SET_DESIRED, SPOT_ASG, seen), timeout=30)
                latencies.append(epoch(call["time"]) - published)
                time.sleep(rng.uniform(0.5, 1.0))
    finally:
        restore(context)
    return latencies


@benchmark(
    "controller_event_to_scale_up", "EC2 event (EventBridge -> SQS) to SetDesiredCapacity, single recommendations"
)
def event_to_scale_up(context: Context) -> list[Figure]:
    """p50 and p99 of put_events to the spot SetDesiredCapacity, each round a fresh controller."""
    count, rounds = (8, 1) if context.quick else (30, 3)
    per_round = [[sample * 1000 for sample in _event_latencies(context, count)] for _ in range(rounds)]
    every = [sample for samples in per_round for sample in samples]
    conditions = (
        f"{rounds} rounds x {count} single rebalance recommendations one after another (0.5-1 s apart), published "
        "with put_events on the sandbox (moto's EventBridge delivers to the SQS queue at once), "
        "SPOT_GUARD_BATCH_WINDOW=0.1 s (default); from just before put_events is sent to the simulator's receipt "
        "of SetDesiredCapacity; spot instances launch at once"
    )
    return [
        Figure.of_samples(
            "controller.event_to_scale_up.p50",
            every,
            "ms",
            conditions,
            title="EC2 event through the queue to SetDesiredCapacity, median",
        ),
        Figure.of_samples(
            "controller.event_to_scale_up.p99",
            [_percentile(samples, 0.99) for samples in per_round],
            "ms",
            f"{conditions}; p99 of each round",
            title="EC2 event through the queue to SetDesiredCapacity, p99",
            details={
                "samples_ms_by_round": [[round(x, 1) for x in samples] for samples in per_round],
                "p50_ms": statistics.median(every),
                "p99_ms_all_rounds": _percentile(every, 0.99),
            },
        ),
    ]
