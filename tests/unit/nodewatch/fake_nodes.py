"""An in-memory stand-in for NodeClient that records every call and can be told to fail."""

from __future__ import annotations

from collections.abc import Mapping

from nodewatch.node import KubeAPIError, KubeAPIErrorKind
from nodewatch.notices import apply_changes


class RecordingNodes:
    def __init__(self, annotations: Mapping[str, str] | None = None) -> None:
        self.annotations = dict(annotations or {"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/c.sock"})
        self.gets = 0
        self.patches: list[dict[str, str | None]] = []
        self.patch_attempts = 0
        self.failures: dict[str, int] = {"get": 0, "patch": 0}

    def fail_next(self, operation: str, times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` (get or patch) fail with HTTP 503."""
        self.failures[operation] += times

    def _maybe_fail(self, operation: str) -> None:
        if self.failures[operation]:
            self.failures[operation] -= 1
            raise KubeAPIError(KubeAPIErrorKind.SERVER_ERROR, "the API server answered HTTP 503", 503)

    def get_annotations(self, name: str) -> dict[str, str]:
        self.gets += 1
        self._maybe_fail("get")
        return dict(self.annotations)

    def patch_annotations(self, name: str, changes: Mapping[str, str | None]) -> dict[str, str]:
        self.patch_attempts += 1
        self._maybe_fail("patch")
        self.patches.append(dict(changes))
        self.annotations = apply_changes(self.annotations, changes)
        return dict(self.annotations)
