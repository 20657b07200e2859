"""In-cluster config and kubeconfig files, exercised over real TLS against the fake API server."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodewatch.kube_connection import KubeConfigError, from_kubeconfig, in_cluster
from nodewatch.node import KubeAPIError, KubeAPIErrorKind, NodeClient
from tests.support.fake_kube_api import FakeKubeAPI
from tests.support.tls import CertificateFiles, make_certificates

NODE = "node-a"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_api(certs: CertificateFiles) -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(tls_cert=str(certs.server_cert), tls_key=str(certs.server_key)) as server:
        server.add_node(NODE, {"a": "b"})
        yield server


def write_kubeconfig(path: Path, server: str, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "sandbox",
        "contexts": [
            {"name": "other", "context": {"cluster": "nowhere", "user": "nobody"}},
            {"name": "sandbox", "context": {"cluster": "local", "user": "agent"}},
        ],
        "clusters": [{"name": "local", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "agent", "user": user}],
    }
    path.write_text(yaml.safe_dump(document))
    return path


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_in_cluster_config_reaches_the_api_server_over_tls(
    tls_api: FakeKubeAPI, certs: CertificateFiles, tmp_path: Path
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    shutil.copy(certs.ca_cert, account / "ca.crt")
    (account / "token").write_text("test-token")
    port = tls_api.url.rsplit(":", 1)[1]

    connection = in_cluster(account, {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port})

    assert NodeClient(connection).get_annotations(NODE) == {"a": "b"}
    assert tls_api.requests[0].authorization == "Bearer test-token"


def test_in_cluster_config_outside_a_pod_says_to_use_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="--kubeconfig"):
        in_cluster(tmp_path, {})


def test_in_cluster_config_without_ca_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="in-cluster config"):
        in_cluster(tmp_path, {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"})


def test_kubeconfig_with_ca_file_and_token_like_the_sandbox(
    tls_api: FakeKubeAPI, certs: CertificateFiles, tmp_path: Path
) -> None:
    shutil.copy(certs.ca_cert, tmp_path / "ca.crt")
    config = write_kubeconfig(
        tmp_path / "kubeconfig", tls_api.url, {"certificate-authority": "ca.crt"}, {"token": "test-token"}
    )
    assert NodeClient(from_kubeconfig(config)).get_annotations(NODE) == {"a": "b"}


def test_kubeconfig_with_ca_data_and_token_file(tls_api: FakeKubeAPI, certs: CertificateFiles, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("test-token\n")
    config = write_kubeconfig(
        tmp_path / "kubeconfig",
        tls_api.url,
        {"certificate-authority-data": b64(certs.ca_cert)},
        {"tokenFile": "token"},
    )
    assert NodeClient(from_kubeconfig(config)).get_annotations(NODE) == {"a": "b"}


def test_kubeconfig_with_insecure_skip_tls_verify(tls_api: FakeKubeAPI, tmp_path: Path) -> None:
    config = write_kubeconfig(
        tmp_path / "kubeconfig", tls_api.url, {"insecure-skip-tls-verify": True}, {"token": "test-token"}
    )
    assert NodeClient(from_kubeconfig(config)).get_annotations(NODE) == {"a": "b"}


@pytest.mark.parametrize("inline", [True, False], ids=["certificate-data", "certificate-files"])
def test_kubeconfig_with_a_client_certificate(certs: CertificateFiles, tmp_path: Path, inline: bool) -> None:
    user = (
        {"client-certificate-data": b64(certs.client_cert), "client-key-data": b64(certs.client_key)}
        if inline
        else {"client-certificate": str(certs.client_cert), "client-key": str(certs.client_key)}
    )
    with FakeKubeAPI(
        tokens=set(),
        tls_cert=str(certs.server_cert),
        tls_key=str(certs.server_key),
        tls_client_ca=str(certs.ca_cert),
    ) as api:
        api.add_node(NODE)
        config = write_kubeconfig(tmp_path / "kubeconfig", api.url, {"certificate-authority": str(certs.ca_cert)}, user)
        assert NodeClient(from_kubeconfig(config)).get_annotations(NODE) == {}


def test_a_server_certificate_from_another_ca_is_a_tls_error(tls_api: FakeKubeAPI, tmp_path: Path) -> None:
    other = make_certificates(tmp_path)
    config = write_kubeconfig(
        tmp_path / "kubeconfig", tls_api.url, {"certificate-authority": str(other.ca_cert)}, {"token": "test-token"}
    )
    with pytest.raises(KubeAPIError) as caught:
        NodeClient(from_kubeconfig(config)).get_annotations(NODE)
    assert caught.value.kind is KubeAPIErrorKind.TLS
    assert "certificate-authority" in str(caught.value)


def test_plain_http_server_for_development(tmp_path: Path) -> None:
    with FakeKubeAPI() as api:
        api.add_node(NODE, {"x": "y"})
        config = write_kubeconfig(tmp_path / "kubeconfig", api.url, {}, {"token": "test-token"})
        assert NodeClient(from_kubeconfig(config)).get_annotations(NODE) == {"x": "y"}


@pytest.mark.parametrize(
    ("user", "cluster", "message"),
    [
        ({"exec": {"command": "aws"}}, {}, "exec or auth-provider"),
        ({"token": "t"}, {"certificate-authority": "missing-ca.crt"}, "cannot set up TLS"),
        ({"token": "t"}, {"certificate-authority-data": "%%%"}, "not valid base64"),
    ],
)
def test_unusable_kubeconfig_entries_are_explained(
    tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any], message: str
) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:6443", cluster, user)
    with pytest.raises(KubeConfigError, match=message):
        from_kubeconfig(config)


def test_a_missing_kubeconfig_or_context_is_explained(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="cannot read kubeconfig"):
        from_kubeconfig(tmp_path / "absent")
    config = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:6443", {}, {"token": "t"})
    with pytest.raises(KubeConfigError, match="no cluster named 'nowhere'"):
        from_kubeconfig(config, context_name="other")
