"""``spotguard pause | resume``: stop (and start again) acting on new notices without stopping the controller.

The switch is a set of annotations on the controller's Lease (``controller.pause_switch``): every replica
sees it within a couple of seconds, ``spotguard leader`` shows it, and the ``spotguard_paused`` metric
follows it. Replacements already under way carry on; only new notices wait.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from controller.admin.context import Target, output_option, reported_errors, services, target_options
from controller.admin.output import emit


def _switch(target: Target) -> Any:
    from controller.adapters.pause_switch import PauseSwitch

    # The switch logs for the controller's log; here the command's own output says it all.
    logging.getLogger(PauseSwitch.__module__).addHandler(logging.NullHandler())
    svc = services()
    return PauseSwitch(svc.connect(target), target.lease_namespace, target.lease_name, svc.clock)


@click.command("pause")
@target_options
@output_option
@click.option("--reason", required=True, help="Why (shown by spotguard leader and in the controller's log).")
@click.option("--by", default=None, help="Who is pausing (default: user@host).")
def pause(target: Target, output: str, reason: str, by: str | None) -> None:
    """Stop acting on new rebalance recommendations and interruption notices; the controller keeps running.

    Replacements already under way continue. Undo with `spotguard resume`. Idempotent: pausing again
    updates who and why.
    """
    where = f"{target.lease_namespace}/{target.lease_name}"
    with reported_errors(f"pausing Spot Guard (annotating Lease {where})"):
        status = _switch(target).set(True, by or services().user(), reason)
    emit(
        {"lease": where, **status.to_json()},
        output,
        lambda: (
            f"Spot Guard {status.describe()}.\nNew notices are not acted on (replacements under way continue). "
            "Resume with: spotguard resume"
        ),
    )


@click.command("resume")
@target_options
@output_option
def resume(target: Target, output: str) -> None:
    """Act on new notices again (notices that arrived while paused are acted on now, if still standing)."""
    from controller.adapters.pause_switch import PauseStatus

    where = f"{target.lease_namespace}/{target.lease_name}"
    with reported_errors(f"resuming Spot Guard (annotating Lease {where})"):
        switch = _switch(target)
        before: PauseStatus = switch.refresh()
        status = switch.set(False, services().user(), "")
    emit(
        {"lease": where, "wasPaused": before.paused, **status.to_json()},
        output,
        lambda: (
            "Spot Guard resumed: acting on notices again."
            if before.paused
            else "Spot Guard was not paused; nothing to do."
        ),
    )
