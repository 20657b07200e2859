"""Where the admin commands point and how they connect: kubectl-like options, clients, error reporting.

Every command takes ``--kubeconfig``, ``--context`` and ``-n/--namespace`` like kubectl, except that the
namespace defaults to Spot Guard's own (``$SPOT_GUARD_NAMESPACE``, else ``kube-system``), not the
context's. Clients come from ``Services``, which tests replace through click's context object
(``CliRunner().invoke(main, args, obj=Services(...))``).

Exit codes: 0 fine, 1 a problem was found (``Problem``; also API and AWS failures), 2 usage error (click).
"""

from __future__ import annotations

import dataclasses
import functools
import getpass
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from controller.clock import Clock, SystemClock

if TYPE_CHECKING:  # the kubernetes client and boto3 load only when a command runs (fast --help, completion)
    from kubernetes.client.exceptions import ApiException

    from controller.adapters.kube import Kube

DEFAULT_NAMESPACE = "kube-system"
DEFAULT_LEASE_NAME = "spotguard-controller"
NAMESPACE_ENV = "SPOT_GUARD_NAMESPACE"
LEASE_NAME_ENV = "SPOT_GUARD_LEASE_NAME"
LEASE_NAMESPACE_ENV = "SPOT_GUARD_LEASE_NAMESPACE"
OUTPUT_FORMATS = ("table", "json", "yaml")


class Problem(click.ClickException):
    """A problem found (not a usage error): printed as ``Error: ...`` on stderr, exit status 1."""

    exit_code = 1


@dataclasses.dataclass(frozen=True)
class Target:
    """The cluster and namespace a command works on."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    lease_name: str = DEFAULT_LEASE_NAME

    @property
    def lease_namespace(self) -> str:
        """The Lease lives with the SGFEs unless $SPOT_GUARD_LEASE_NAMESPACE says otherwise (as for the controller)."""
        return os.environ.get(LEASE_NAMESPACE_ENV) or self.namespace


def kube_configuration(kubeconfig: str | None, context: str | None) -> Any:
    """kubectl's order: the flags, else $KUBECONFIG or ~/.kube/config if present, else the in-cluster config.

    urllib3's retries are off, so an unreachable API server fails at once instead of four times over.
    """
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    configuration = k8s.Configuration()
    have_file = bool(os.environ.get("KUBECONFIG")) or Path("~/.kube/config").expanduser().exists()
    if kubeconfig or context or have_file or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        # $KUBECONFIG is read now, not when the client was imported; a list (a:b) is merged like kubectl does.
        path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        k8s_config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    else:
        k8s_config.load_incluster_config(client_configuration=configuration)
    configuration.retries = False
    return configuration


def default_kube(target: Target, impersonate: str | None = None) -> Kube:
    """A ``Kube`` for ``target``; with ``impersonate``, every request acts as that user (kubectl's ``--as``)."""
    from kubernetes import client as k8s

    from controller.adapters.kube import Kube

    configuration = kube_configuration(target.kubeconfig, target.context)
    api = k8s.ApiClient(configuration)
    if impersonate:
        api.set_default_header("Impersonate-User", impersonate)
    return Kube(api)


def default_aws_client(service: str) -> Any:
    """A boto3 client from the environment (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, credentials), one attempt per call."""
    import boto3
    from botocore.config import Config as BotoConfig

    config = BotoConfig(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=15)
    return boto3.client(service, config=config)  # type: ignore[call-overload]


def default_user() -> str:
    """Who is running the command, for ``paused-by``: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclasses.dataclass
class Services:
    """The clients and clock the commands use; tests hand in fakes."""

    kube: Callable[[Target, str | None], Kube] = default_kube
    aws: Callable[[str], Any] = default_aws_client
    clock: Clock = dataclasses.field(default_factory=SystemClock)
    user: Callable[[], str] = default_user

    def connect(self, target: Target, impersonate: str | None = None) -> Kube:
        from kubernetes import config as k8s_config

        try:
            return self.kube(target, impersonate)
        except (k8s_config.ConfigException, OSError) as error:
            raise Problem(
                f"cannot load the cluster configuration ({error}); pass --kubeconfig/--context or set KUBECONFIG"
            ) from error


def services(ctx: click.Context | None = None) -> Services:
    """The services handed in through click's context object (``obj``), else the real ones."""
    found = (ctx or click.get_current_context()).find_object(Services)
    return found if found is not None else Services()


# -- options ---------------------------------------------------------------------------------------------


def _namespace_default() -> str:
    return os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


def _lease_name_default() -> str:
    return os.environ.get(LEASE_NAME_ENV) or DEFAULT_LEASE_NAME


def target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --kubeconfig, --context, -n/--namespace and --lease-name; the command gets ``target: Target``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["target"] = Target(
            kubeconfig=kwargs.pop("kubeconfig"),
            context=kwargs.pop("context"),
            namespace=kwargs.pop("namespace"),
            lease_name=kwargs.pop("lease_name"),
        )
        return command(*args, **kwargs)

    decorators = [
        click.option(
            "--kubeconfig",
            default=None,
            metavar="PATH",
            help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster).",
        ),
        click.option("--context", default=None, metavar="NAME", help="Kubeconfig context to use."),
        click.option(
            "-n",
            "--namespace",
            default=_namespace_default,
            show_default="$SPOT_GUARD_NAMESPACE or kube-system",
            help="Namespace of the SpotGuardFallbackEvents and the controller's Lease.",
        ),
        click.option(
            "--lease-name",
            default=_lease_name_default,
            show_default="$SPOT_GUARD_LEASE_NAME or spotguard-controller",
            help="Name of the controller's leader-election Lease.",
        ),
    ]
    decorated: Callable[..., Any] = wrapper
    for decorator in reversed(decorators):
        decorated = decorator(decorated)
    return decorated


output_option = click.option(
    "-o",
    "--output",
    type=click.Choice(OUTPUT_FORMATS),
    default="table",
    show_default=True,
    help="Output format.",
)


def parse_duration_option(ctx: click.Context, param: click.Parameter, value: object) -> float:
    """Option callback: seconds (``3600``) or a Go-style duration (``24h``, ``90m``, ``1h30m``) -> seconds."""
    if isinstance(value, int | float):
        return float(value)
    from controller.config import ConfigError, parse_duration

    try:
        return parse_duration("duration", str(value))
    except ConfigError:
        raise click.BadParameter(
            f"{value!r} is not a duration: expected seconds (3600) or 90s, 10m, 24h, 1h30m", ctx=ctx, param=param
        ) from None


# -- errors ----------------------------------------------------------------------------------------------


def api_error_text(error: ApiException) -> str:
    """``403 Forbidden: <the API server's message>``."""
    message = ""
    body = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str) and body:
        try:
            status = json.loads(body)
            message = str(status.get("message", "")) if isinstance(status, dict) else body[:300]
        except ValueError:
            message = body[:300]
    text = f"{error.status} {error.reason}"
    return f"{text}: {message}" if message else text


@contextmanager
def reported_errors(what: str) -> Iterator[None]:
    """Turn API server and AWS failures into ``Problem`` (stderr, exit 1) saying what failed."""
    import urllib3
    from botocore.exceptions import BotoCoreError, ClientError
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except ApiException as error:
        hint = ""
        if error.status in (401, 403):
            hint = " (check your credentials and RBAC: kubectl auth can-i)"
        raise Problem(f"{what}: the API server said {api_error_text(error)}{hint}") from error
    except (urllib3.exceptions.HTTPError, ConnectionError) as error:
        raise Problem(f"{what}: cannot reach the API server ({error})") from error
    except (BotoCoreError, ClientError) as error:
        raise Problem(f"{what}: AWS said {error}") from error
