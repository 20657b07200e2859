"""What ``spotguard run`` checks before it campaigns for the Lease: each failure is one line that names what to fix.

* the election and AWS call timings fit each other (``ConfigError`` naming the variable);
* an AWS region is set (the Auto Scaling client is only made once this replica leads: without the check a
  missing region would show up minutes later, on the leader only);
* the API server's connection settings load (in-cluster, or a readable, well-formed kubeconfig).
"""

from __future__ import annotations

import boto3
from kubernetes import client as k8s

from controller.adapters.aws import CallBudget, InvalidCallBudgetError
from controller.adapters.election import ElectionConfig
from controller.adapters.election.config import InvalidElectionConfigError
from controller.adapters.kube import KubeConfigError, api_client
from controller.config import ConfigError, Settings, env_var

#: CallBudget's and ElectionConfig's fields -> the settings they come from.
_BUDGET_SETTINGS = {
    "connect_timeout": "aws_connect_timeout",
    "read_timeout": "aws_read_timeout",
    "fence_margin": "fence_margin",
}
_ELECTION_SETTINGS = {name: name for name in ("lease_duration", "renew_deadline", "retry_period", "fence_margin")}


class StartupError(Exception):
    """``spotguard run`` cannot start; the message is one line saying what is missing and how to provide it."""


def election_config(settings: Settings) -> ElectionConfig:
    """The Lease timings of ``settings``; ConfigError naming the variable when they contradict each other."""
    try:
        return ElectionConfig(
            lease_duration=settings.lease_duration,
            renew_deadline=settings.renew_deadline,
            retry_period=settings.retry_period,
            fence_margin=settings.fence_margin,
        )
    except InvalidElectionConfigError as exc:
        variable = env_var(exc.field) if exc.field != "request_timeout" else env_var("renew_deadline")
        raise ConfigError(_in_settings_words(str(exc), _ELECTION_SETTINGS), variable) from None


def call_budget(settings: Settings) -> CallBudget:
    """The AWS call timings of ``settings``; ConfigError naming the variable when the fence cannot cover them."""
    try:
        return CallBudget(
            connect_timeout=settings.aws_connect_timeout,
            read_timeout=settings.aws_read_timeout,
            fence_margin=settings.fence_margin,
        )
    except InvalidCallBudgetError as exc:
        variable = env_var(_BUDGET_SETTINGS[exc.field])
        raise ConfigError(_in_settings_words(str(exc), _BUDGET_SETTINGS), variable) from None


def _in_settings_words(message: str, fields: dict[str, str]) -> str:
    """The message with each timing's name replaced by the environment variable that sets it."""
    for field, setting in fields.items():
        message = message.replace(field, env_var(setting))
    return message


def require_aws_region() -> str:
    """The AWS region the Auto Scaling client will use; StartupError when none is configured."""
    region = boto3.session.Session().region_name
    if not region:
        raise StartupError(
            "no AWS region: set AWS_DEFAULT_REGION to the region of the Auto Scaling groups (docs/install.md; on "
            "EKS the IRSA webhook sets it)"
        )
    return str(region)


def kube_client(kubeconfig: str | None, context: str | None) -> k8s.ApiClient:
    """The API server client; StartupError when its configuration cannot be loaded."""
    try:
        return api_client(kubeconfig, context)
    except KubeConfigError as exc:
        raise StartupError(str(exc)) from None
