"""`python -m sandbox.aws`: serve moto + the capacity simulator until SIGTERM/SIGINT.

Prints one JSON line on stdout when ready: {"endpoint", "region", "account_id", "launch_template", "groups"}.
Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from types import FrameType

from sandbox.aws.capacity import SimulatorDefaults
from sandbox.aws.groups import StartupGroups

log = logging.getLogger("sandbox.aws")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox.aws", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default 0)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--kubeconfig", help="keep one kwok Node per InService instance in this cluster")
    parser.add_argument("--pairs", type=int, default=1, help="spot/on-demand group pairs to create (default 1)")
    parser.add_argument("--spot-name", default="spotguard-spot-{i}", help="spot group name format, {i} from 1")
    parser.add_argument("--on-demand-name", default="spotguard-ondemand-{i}", help="on-demand group name format")
    parser.add_argument("--instance-type", default="m5.large")
    parser.add_argument(
        "--spot-instance-types",
        help="comma-separated instance types of the spot group's MixedInstancesPolicy (default: --instance-type)",
    )
    parser.add_argument(
        "--spot-launch-template",
        action="store_true",
        help="make the spot group a plain launch-template group (no MixedInstancesPolicy: uncoded failures)",
    )
    parser.add_argument(
        "--az-rebalance",
        action="store_true",
        help="leave AZRebalance running (default: suspended, as Spot Guard needs)",
    )
    parser.add_argument("--zones", help="comma-separated availability zones (default: the region's a, b and c)")
    parser.add_argument("--max-size", type=int, default=10)
    parser.add_argument("--spot-desired", type=int, default=3, help="initial spot desired capacity (InService)")
    parser.add_argument("--on-demand-desired", type=int, default=0, help="initial on-demand desired capacity")
    parser.add_argument("--spot-pending-seconds", type=float, default=5.0, help="Pending time of new spot instances")
    parser.add_argument("--on-demand-pending-seconds", type=float, default=0.0)
    parser.add_argument("--retry-seconds", type=float, default=10.0, help="launch retry interval while short")
    parser.add_argument("--terminating-seconds", type=float, default=0.0)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Imported here so --help stays fast (moto takes a couple of seconds to import).
    from sandbox.aws.nodesync import NodeSync, core_api_from_kubeconfig
    from sandbox.aws.server import SandboxAWSConfig, SandboxAWSServer
    from sandbox.aws.simulator import CapacitySimulator

    config = SandboxAWSConfig(
        host=args.host,
        port=args.port,
        region=args.region,
        startup=StartupGroups(
            pairs=args.pairs,
            spot_name=args.spot_name,
            on_demand_name=args.on_demand_name,
            instance_type=args.instance_type,
            spot_instance_types=tuple(t.strip() for t in args.spot_instance_types.split(","))
            if args.spot_instance_types
            else (),
            spot_mixed_instances=not args.spot_launch_template,
            suspend_az_rebalance=not args.az_rebalance,
            availability_zones=tuple(z.strip() for z in args.zones.split(",")) if args.zones else None,
            max_size=args.max_size,
            spot_desired=args.spot_desired,
            on_demand_desired=args.on_demand_desired,
        ),
        defaults=SimulatorDefaults(
            spot_pending_seconds=args.spot_pending_seconds,
            on_demand_pending_seconds=args.on_demand_pending_seconds,
            retry_seconds=args.retry_seconds,
            terminating_seconds=args.terminating_seconds,
        ),
    )
    node_sync_factory = None
    if args.kubeconfig:
        kubeconfig: str = args.kubeconfig

        def node_sync_factory(simulator: CapacitySimulator) -> NodeSync:
            return NodeSync(
                core_api_from_kubeconfig(kubeconfig), simulator.snapshot, simulator.region, wake=simulator.changed
            )

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("Received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = SandboxAWSServer(config, node_sync_factory=node_sync_factory)
    try:
        announcement = server.start()
    except Exception as error:
        log.error("Sandbox AWS failed to start: %s: %s", type(error).__name__, error)
        return 1
    print(json.dumps(announcement), flush=True)
    # Exactly one line on stdout: anything printed later (moto prints some warnings) goes to stderr instead.
    sys.stdout = sys.stderr
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    log.info("Sandbox AWS stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
