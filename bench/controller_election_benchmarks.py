"""Figure 4, leader failover: SIGKILL or SIGTERM the leading controller; when does the standby hold the Lease?

Real replicas (``python -m controller.app.cli run``) with the default election timings (lease 15 s, renew deadline
10 s, retry 2 s); the Lease's holders are seen through a watch (tests/integration/controller_process.LeaseWatch).
Replicas are chained: the standby that took over leads the next sample, and a fresh replica stands by.
"""

from __future__ import annotations

import os
import random
import signal
import time

from bench.controller_harness import launcher
from bench.figures import Figure, Target
from bench.registry import Context, benchmark
from tests.integration.controller_process import LeaseWatch

LEASE_DURATION, RETRY_PERIOD = 15.0, 2.0  # the controller's defaults
STANDING_BY = "stands by"


def _failovers(context: Context, signum: signal.Signals, repeats: int) -> list[float]:
    rng = random.Random(4)
    took: list[float] = []
    with launcher(context) as run, LeaseWatch(context.api_client(), run.lease_name) as lease:
        leader = run.start("r0")
        lease.wait_for_holder("r0", timeout=60)
        for index in range(1, repeats + 1):
            standby = run.start(f"r{index}")
            standby.wait_for_log(STANDING_BY, timeout=60)
            time.sleep(rng.uniform(0.0, RETRY_PERIOD))  # a random phase relative to the leader's renewals
            signalled = time.monotonic()
            os.kill(leader.pid, signum)
            held = lease.wait_for_holder(standby.identity, timeout=LEASE_DURATION + 30, since=signalled)
            took.append(held - signalled)
            leader.close()
            leader = standby
    return took


@benchmark("controller_failover", "leader SIGKILL / SIGTERM to the standby holding the Lease")
def failover(context: Context) -> list[Figure]:
    """Figure 4: SIGKILL -> takeover within leaseDuration + retryPeriod; SIGTERM -> takeover under 3 s."""
    repeats = 2 if context.quick else 4
    killed = _failovers(context, signal.SIGKILL, repeats)
    terminated = _failovers(context, signal.SIGTERM, repeats)
    common = "two replicas, default election timings (lease 15 s, renew deadline 10 s, retry 2 s), signal sent at a "
    common += "random phase of the renewals; until a Lease watch shows the standby as holder"
    return [
        Figure.of_samples(
            "controller.failover_after_sigkill",
            killed,
            "s",
            f"{common}; leader SIGKILLed; {repeats} runs",
            target=Target(LEASE_DURATION + RETRY_PERIOD, applies_to="max", text="leaseDuration + retryPeriod"),
            title="Leader SIGKILL to standby holding the Lease",
        ),
        Figure.of_samples(
            "controller.failover_after_sigterm",
            terminated,
            "s",
            f"{common}; leader SIGTERMed (releases the Lease); {repeats} runs",
            target=Target(3.0, applies_to="max", text="< 3 s"),
            title="Leader SIGTERM to standby holding the Lease",
        ),
    ]
