"""Both console scripts, and the AWS SDK under the controller, run as the manifests run them: an unprivileged
user (the pods' runAsUser), every capability dropped, a read-only root file system and an unwritable HOME
(the image's ENV), with only what the manifests mount writable (no emptyDir at all today). The long-running
tests go further and run the controller and nodewatch as their pods do: in-cluster credentials, from a
read-only service-account directory holding their own ServiceAccount's token.

bubblewrap (Debian: ``apt-get install -y bubblewrap``) builds that without Docker: ``--ro-bind / /`` and a user
namespace mapping this process to UID 65532. Without bwrap these tests fail; they do not skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from nodewatch.kube_connection import DEFAULT_SERVICE_ACCOUNT_DIR
from sandbox.environment import Sandbox
from tests.integration import spotguard_install as install
from tests.support import manifests as m
from tests.support.faulty_imds import FaultyIMDS

VENV_BIN = Path(sys.executable).parent
SPOT_ASG = "spotguard-spot-1"
ON_DEMAND_ASG = "spotguard-ondemand-1"


def _bwrap() -> str:
    path = shutil.which("bwrap")
    assert path, "bubblewrap is missing: apt-get install -y bubblewrap"
    return path


def _image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage (HOME, PYTHONDONTWRITEBYTECODE, ...)."""
    final_stage = (m.REPO / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    env: dict[str, str] = {}
    for line in final_stage.splitlines():
        if line.startswith("ENV "):
            env.update(dict(item.split("=", 1) for item in line[4:].split()))
    assert env.get("HOME"), "the image sets no HOME"
    return env


def _pod_user() -> tuple[int, int]:
    """The runAsUser and runAsGroup every workload of the manifests runs as."""
    users = {
        (m.pod_spec(w)["securityContext"]["runAsUser"], m.pod_spec(w)["securityContext"]["runAsGroup"])
        for w in m.workloads(m.resources())
    }
    assert len(users) == 1, users
    return users.pop()


def _writable_paths() -> list[str]:
    """Where the manifests mount an emptyDir into a container: the only places a container could write."""
    paths = []
    for workload in m.workloads(m.resources()):
        pod = m.pod_spec(workload)
        empty_dirs = {v["name"] for v in pod.get("volumes") or [] if "emptyDir" in v}
        for container in pod["containers"]:
            paths += [v["mountPath"] for v in container.get("volumeMounts") or [] if v["name"] in empty_dirs]
    return sorted(set(paths))


def confined(
    argv: Sequence[str],
    env: Mapping[str, str],
    info_fd: int | None = None,
    service_account: Path | None = None,
) -> list[str]:
    """``argv`` inside bwrap, as the manifests run the containers: read-only root, UID 65532, no capabilities;
    ``service_account`` (a directory) appears read-only where the kubelet projects the pod's token."""
    uid, gid = _pod_user()
    command = [
        _bwrap(),
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--unshare-user", "--uid", str(uid), "--gid", str(gid),
        "--cap-drop", "ALL",
        "--die-with-parent",
        "--clearenv",
    ]  # fmt: skip
    for path in _writable_paths():
        command += ["--tmpfs", path]
    if service_account is not None:
        target = Path(os.path.realpath(DEFAULT_SERVICE_ACCOUNT_DIR))  # /var/run is a link to /run
        top = f"/{target.parts[1]}"
        command += ["--tmpfs", top, "--ro-bind", str(service_account), str(target), "--remount-ro", top]
    if info_fd is not None:
        command += ["--info-fd", str(info_fd)]
    environment = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", **_image_env(), **env}
    for key, value in environment.items():
        command += ["--setenv", key, value]
    return [*command, "--", *argv]


def run_confined(argv: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(confined(argv, env or {}), capture_output=True, text=True, check=False, timeout=120, cwd="/")


class ConfinedProcess:
    """A long-running command inside bwrap; SIGTERM goes to the command itself (bwrap does not pass it on)."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], log_path: Path, service_account: Path | None = None
    ) -> None:
        read_end, write_end = os.pipe()
        try:
            command = confined(argv, env, info_fd=write_end, service_account=service_account)
            self.process = install.LoggedProcess(command, {}, log_path, cwd=Path("/"), pass_fds=[write_end])
        finally:
            os.close(write_end)
        with os.fdopen(read_end, "rb") as info:
            self.pid = int(json.loads(info.read())["child-pid"])

    def stop(self) -> int:
        return self.process.stop(pid=self.pid)


def test_the_sandbox_is_read_only_and_unprivileged() -> None:
    """The confinement itself: no write anywhere (HOME included), not root, no capabilities."""
    name = f"spotguard-write-probe-{uuid.uuid4().hex}"  # a name nothing on the machine already holds
    script = (
        "import os, pathlib\n"
        f"for path in ('/tmp/{name}', os.path.expanduser('~/{name}'), str(pathlib.Path.cwd() / '{name}')):\n"
        "    try:\n"
        "        open(path, 'w')\n"
        "    except OSError as error:\n"
        "        print('refused', error.errno)\n"
        "print('uid', os.getuid(), os.getgid())\n"
        "print('caps', open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
    )
    result = run_confined([sys.executable, "-c", script])
    assert result.returncode == 0, result.stderr
    uid, gid = _pod_user()
    lines = result.stdout.splitlines()
    assert lines.count("refused 30") + lines.count("refused 2") == 3  # EROFS (or ENOENT: HOME does not exist)
    assert f"uid {uid} {gid}" in lines and "caps 0000000000000000" in lines


@pytest.mark.parametrize("script", ["spotguard", "spotguard-nodewatch"])
def test_the_console_scripts_start(script: str) -> None:
    result = run_confined([str(VENV_BIN / script), "--help"])
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout or "usage:" in result.stdout


@pytest.fixture
def web_identity_token(tmp_path: Path) -> Path:
    """What IRSA projects into the pod: a token file (any JWT will do for the sandbox's STS)."""
    path = tmp_path / "token"
    path.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl")
    path.chmod(0o644)
    return path


@pytest.mark.parametrize("credentials", ["irsa", "static"])
def test_the_controllers_aws_calls_need_no_writable_file(
    sandbox: Sandbox, web_identity_token: Path, credentials: str
) -> None:
    env = {k: v for k, v in sandbox.env().items() if k != "KUBECONFIG"}
    if credentials == "irsa":  # as the EKS pod identity webhook sets it up: web identity, no keys
        env = {k: v for k, v in env.items() if not k.startswith("AWS_ACCESS_KEY") and k != "AWS_SECRET_ACCESS_KEY"}
        env |= {
            "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/spotguard-controller",
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(web_identity_token),
            "AWS_STS_REGIONAL_ENDPOINTS": "regional",
        }
    script = (
        "import boto3, json\n"
        "from controller.adapters.aws import AutoScaling\n"
        f"groups = AutoScaling().describe_groups([{SPOT_ASG!r}, {ON_DEMAND_ASG!r}])\n"
        "method = boto3.Session().get_credentials().method\n"
        "print(json.dumps({'method': method, 'groups': {n: g.desired for n, g in groups.items()}}))\n"
    )
    result = run_confined([sys.executable, "-c", script], env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(answer["groups"]) == {SPOT_ASG, ON_DEMAND_ASG}
    expected = "assume-role-with-web-identity" if credentials == "irsa" else "env"
    assert answer["method"] == expected


@pytest.fixture(scope="module")
def rbac(sandbox: Sandbox) -> None:
    """The manifests' ServiceAccounts, RBAC and admission policy (no workloads: the processes run here)."""
    install.install_without(sandbox, "Deployment", "DaemonSet", "PodDisruptionBudget")


def _in_cluster(sandbox: Sandbox, directory: Path, bearer: str) -> tuple[Path, dict[str, str]]:
    """A pod's service-account directory (token, ca.crt, namespace) and the environment the kubelet sets."""
    directory.mkdir()
    (directory / "token").write_text(bearer)
    (directory / "ca.crt").write_bytes(sandbox.info.ca_cert.read_bytes())
    (directory / "namespace").write_text(install.NAMESPACE)
    for path in (directory, *directory.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    server = urllib.parse.urlsplit(sandbox.info.server)
    return directory, {"KUBERNETES_SERVICE_HOST": str(server.hostname), "KUBERNETES_SERVICE_PORT": str(server.port)}


@pytest.fixture
def controller_lease(api_client: k8s.ApiClient) -> Iterator[str]:
    """The Lease the controller's Role names; deleted afterwards."""
    yield m.CONTROLLER
    try:
        k8s.CoordinationV1Api(api_client).delete_namespaced_lease(m.CONTROLLER, install.NAMESPACE)
    except ApiException as error:
        if error.status != 404:
            raise


def test_the_controller_runs_leads_and_steps_down_as_its_pod(
    sandbox: Sandbox, rbac: None, core: k8s.CoreV1Api, controller_lease: str, tmp_path: Path
) -> None:
    account, kubelet_env = _in_cluster(sandbox, tmp_path / "serviceaccount", install.token(core, m.CONTROLLER))
    env = {
        **{k: v for k, v in sandbox.env().items() if k != "KUBECONFIG"},
        **kubelet_env,
        "SPOT_ASG_NAME": SPOT_ASG,
        "ON_DEMAND_ASG_NAME": ON_DEMAND_ASG,
        "SPOT_GUARD_LEASE_NAME": controller_lease,
        "SPOT_GUARD_METRICS_HOST": "127.0.0.1",
        "SPOT_GUARD_METRICS_PORT": "0",
    }
    controller = ConfinedProcess(
        [str(VENV_BIN / "spotguard"), "run", "--identity=read-only"], env, tmp_path / "controller.log", account
    )
    try:
        url = controller.process.wait_for_log(r"/readyz on (http://[0-9.]+:\d+)", timeout=60).group(1)
        controller.process.wait_for_log(r"leading as read-only", timeout=60)
        controller.process.wait_for_log(r"watching \d+ nodes", timeout=60)
        assert install.http_get(f"{url}/healthz")[0] == 200
        status, metrics = install.http_get(f"{url}/metrics")
        assert status == 200 and re.search(rb"^spotguard_leader 1\.0$", metrics, re.M)
        assert controller.stop() == 0
    finally:
        controller.process.close()
    log = controller.process.log_text()
    assert "released lease" in log
    assert not re.search(r"Read-only file system|Permission denied|Errno 30|[Ff]orbidden", log), log


@pytest.fixture
def nodewatch_pod(core: k8s.CoreV1Api) -> Iterator[Callable[[str], Any]]:
    """Makes a nodewatch pod on a given node (nothing runs it: its token is what the test needs)."""
    made: list[str] = []

    def make(node: str) -> Any:
        name = f"nodewatch-ro-{uuid.uuid4().hex[:8]}"
        made.append(name)
        container = {"name": "nodewatch", "image": "spotguard:0.1.0"}
        spec = {"nodeName": node, "serviceAccountName": m.NODEWATCH, "containers": [container]}
        return core.create_namespaced_pod(install.NAMESPACE, {"metadata": {"name": name}, "spec": spec})

    yield make
    for name in made:
        core.delete_namespaced_pod(name, install.NAMESPACE, grace_period_seconds=0)


def test_nodewatch_records_a_rebalance_recommendation_as_its_pod(
    sandbox: Sandbox, rbac: None, core: k8s.CoreV1Api, nodewatch_pod: Callable[[str], Any], tmp_path: Path
) -> None:
    instance = "i-0feedfacefeedface"
    with FaultyIMDS(instance_id=instance) as imds, install.node_of_its_own(core, "ro") as node:
        bearer = install.token(core, m.NODEWATCH, bound_pod=nodewatch_pod(node))
        account, kubelet_env = _in_cluster(sandbox, tmp_path / "serviceaccount", bearer)
        nodewatch = ConfinedProcess(
            [str(VENV_BIN / "spotguard-nodewatch"), *install.nodewatch_argv(node, imds.url)],
            kubelet_env,
            tmp_path / "nodewatch.log",
            account,
        )
        try:
            install.check_nodewatch_works(nodewatch.process, core, node, imds, instance)
            assert nodewatch.stop() == 0
        finally:
            nodewatch.process.close()
    log = nodewatch.process.log_text()
    assert not re.search(r"Read-only file system|Permission denied|Errno 30|[Ff]orbidden", log), log


def test_only_what_the_manifests_mount_is_writable() -> None:
    # Today: nothing. If a workload gains an emptyDir, the tests above give bwrap a tmpfs at the same path.
    assert _writable_paths() == []
