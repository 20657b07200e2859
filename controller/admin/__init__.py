"""The ``spotguard`` admin commands: events, leader, doctor, pause/resume, simulate, completion.

``register(main)`` adds them to the click group of ``controller.app.cli``. The command modules import only
click and the standard library at load time (the kubernetes client and boto3 load when a command runs),
so ``spotguard --help`` and shell completion stay fast.
"""

from __future__ import annotations

import click

from controller.admin.doctor import doctor
from controller.admin.events_cmd import events
from controller.admin.leader_cmd import leader
from controller.admin.pause import pause, resume
from controller.admin.simulate import simulate

PROG_NAME = "spotguard"
COMPLETE_VAR = "_SPOTGUARD_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash:  eval "$(spotguard completion bash)"    (or _SPOTGUARD_COMPLETE=bash_source spotguard)
    zsh:   eval "$(spotguard completion zsh)"
    fish:  spotguard completion fish | source
    """
    from click.shell_completion import get_completion_class

    root = ctx.find_root().command
    completer = get_completion_class(shell)
    if completer is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"no completion for {shell}")
    click.echo(completer(root, {}, PROG_NAME, COMPLETE_VAR).source())


def register(main: click.Group) -> None:
    """Add the admin commands to ``main`` (the ``spotguard`` group)."""
    for command in (events, leader, doctor, pause, resume, simulate, completion):
        main.add_command(command)
