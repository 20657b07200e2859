"""The official EC2 metadata mock (AEMM), one process per simulated spot node that needs one.

AEMM answers 404 for the rebalance recommendation and the interruption notice until their trigger
times, then serves them, exactly as IMDS does. ``schedule()`` restarts the mock on the same port
with new trigger times, which is how a test or the demo makes a notice "arrive".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import urllib.error
import urllib.request
from pathlib import Path

from sandbox.processes import Child, free_port, wait_until

# AEMM needs a trigger time for every notice; "never" is a time far beyond any test.
_NEVER = dt.timedelta(days=3650)


@dataclasses.dataclass(frozen=True)
class NoticeSchedule:
    """When the notices appear, relative to now; None means not in this mock's lifetime."""

    rebalance_in: float | None = None
    interruption_in: float | None = None
    interruption_action: str = "terminate"


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MetadataMock:
    """One AEMM process serving one instance's metadata on 127.0.0.1."""

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        instance_id: str,
        availability_zone: str,
        imdsv2_only: bool = False,
        *,
        life_cycle: str = "spot",
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.instance_id = instance_id
        self.availability_zone = availability_zone
        self.imdsv2_only = imdsv2_only
        self.life_cycle = life_cycle  # /latest/meta-data/instance-life-cycle (AEMM's own default: on-demand)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._child: Child | None = None
        self._config = workdir / f"aemm-{instance_id}.json"

    def schedule(self, notices: NoticeSchedule, now: dt.datetime | None = None) -> None:
        """(Re)start the mock so that the notices appear at the given offsets from ``now``."""
        self.stop()
        now = now or dt.datetime.now(dt.UTC)

        def moment(offset: float | None) -> dt.datetime:
            return now + (_NEVER if offset is None else dt.timedelta(seconds=offset))

        def at(offset: float | None) -> str:
            return _rfc3339(moment(offset))

        # Pin the times the notices carry, as real IMDS does (AEMM otherwise stamps each answer
        # with the time of the request, so every poll would look like a new notice).
        self._config.write_text(
            json.dumps(
                {
                    "metadata": {
                        "values": {
                            "instance-id": self.instance_id,
                            "placement-availability-zone": self.availability_zone,
                            "instance-life-cycle": self.life_cycle,
                        }
                    },
                    "spot": {
                        "action": notices.interruption_action,
                        "time": _rfc3339(moment(notices.interruption_in) + dt.timedelta(minutes=2)),
                        "rebalance-rec-time": at(notices.rebalance_in),
                    },
                }
            )
        )

        argv = [
            str(self.binary),
            f"--config-file={self._config}",
            "--hostname=127.0.0.1",
            f"--port={self.port}",
            f"--rebalance-trigger-time={at(notices.rebalance_in)}",
            f"--mock-trigger-time={at(notices.interruption_in)}",
        ]
        if self.imdsv2_only:
            argv.append("--imdsv2")
        self._child = Child(f"aemm-{self.instance_id}", argv, self.workdir)
        wait_until(f"AEMM for {self.instance_id}", self._ready, timeout=20, children=[self._child])

    def _ready(self) -> bool:
        request = urllib.request.Request(
            f"{self.url}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        )
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return int(response.status) == 200
        except urllib.error.HTTPError:
            return False

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop(timeout=5)
            self._child = None
