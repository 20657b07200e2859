"""``spotguard``: the controller and the admin commands (click)."""

from __future__ import annotations

import shlex
import signal
import sys
import threading
import time
from types import FrameType

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Spot Guard: replacement capacity for EC2 spot nodes before they die."""


@main.command()
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Kubeconfig file (default: in-cluster).")
@click.option("--context", default=None, help="Kubeconfig context to use.")
@click.option("--identity", default=None, help="Leader-election identity (default: hostname + random suffix).")
@click.option(
    "--dry-run",
    is_flag=True,
    default=False,
    help="Observe only: decide as usual against the real groups and Nodes, but change nothing in AWS or on any "
    "Node; say what would have been done (log, Events with reason SpotGuardWouldAct, metric). Same as "
    "SPOT_GUARD_DRY_RUN=true.",
)
def run(kubeconfig: str | None, context: str | None, identity: str | None, dry_run: bool) -> None:
    """Run the controller: campaign for the Lease, then act on nodewatch's annotations while leading.

    Configured by environment variables (SPOT_ASG_NAME, ON_DEMAND_ASG_NAME, SPOT_GUARD_*; see docs).
    """
    from controller.app.run import run_controller
    from controller.app.startup import StartupError
    from controller.config import ConfigError, from_env
    from controller.observability.logs import setup_logging

    try:
        settings = from_env(dry_run=True if dry_run else None)
        setup_logging(settings.log_level)
        code = run_controller(settings, kubeconfig, context, identity)
    except (ConfigError, StartupError) as exc:  # one line, no traceback: what to fix is in the message
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.command()
def demo() -> None:
    """Show a fallback's whole life on the sandbox in well under two minutes.

    A spot node gets a rebalance recommendation (through the EC2 metadata mock), spot capacity is
    short, and the controller falls back to on-demand; then spot comes back, and the controller
    returns to it: safety checks, drain, exactly the on-demand instance removed, the
    SpotGuardFallbackEvent Completed. The timeline is printed as it happens.
    """
    from controller.app.demo import run_demo

    sys.exit(run_demo(click.echo))


@main.command()
@click.option("--pairs", default=1, show_default=True, help="Spot/on-demand ASG pairs to create.")
@click.option("--spot-desired", default=3, show_default=True, help="Initial spot instances (and Nodes) per pair.")
@click.option("--keep", is_flag=True, help="Keep the sandbox's temp dir (logs, etcd data) after it stops.")
def sandbox(pairs: int, spot_desired: int, keep: bool) -> None:
    """Run the local sandbox in the foreground until Ctrl-C or SIGTERM.

    A real kube-apiserver, etcd, controller-manager and scheduler with kwok as the kubelets,
    moto's AWS with a spot and an on-demand Auto Scaling Group (and a capacity simulator), and the
    SpotGuardFallbackEvent CRD. Prints what to export to point kubectl and boto3 at it.
    """
    from sandbox.environment import Sandbox  # the sandbox (and moto) only load for this command

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    click.echo("Starting the sandbox (the first run builds the Kubernetes binaries: several minutes)...", err=True)
    with Sandbox(pairs=pairs, spot_desired=spot_desired, keep_workdir=keep) as sb:
        click.echo(f"Sandbox ready in {time.monotonic() - started:.1f}s.", err=True)
        click.echo(f"kubeconfig: {sb.kubeconfig}")
        click.echo(f"AWS endpoint: {sb.aws_endpoint}")
        for group in sb.aws_groups:
            click.echo(f"ASG: {group}")
        click.echo("\n# Point kubectl, the kubernetes client and boto3 at the sandbox:")
        for key, value in sb.env().items():
            click.echo(f"export {key}={shlex.quote(value)}")
        click.echo(f"# kubectl is at {sb.binaries.kubectl}")
        click.echo("\nPress Ctrl-C to stop.", err=True)
        sys.stdout.flush()
        while not stop.wait(1.0):
            sb.check_alive()
        click.echo("Stopping the sandbox...", err=True)
    click.echo("Sandbox stopped; no process left behind.", err=True)


from controller.admin import register  # noqa: E402  (the admin commands: events, leader, doctor, ...)

register(main)

if __name__ == "__main__":
    main()
