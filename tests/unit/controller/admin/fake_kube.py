"""An in-memory stand-in for ``controller.kube.Kube``: raw JSON objects by API path, as strict as the API server
where the admin commands depend on it (404, 409 on create and on delete preconditions, merge patches,
resourceVersions, label and field selectors, SelfSubjectAccessReview answers)."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

JSON = dict[str, Any]

SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SSR = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


def api_error(status: int, reason: str, message: str = "") -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps({"kind": "Status", "reason": reason, "message": message, "code": status})
    return error


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _matches_labels(obj: Mapping[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _field(obj: Mapping[str, Any], dotted: str) -> Any:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _matches_fields(obj: Mapping[str, Any], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if _field(obj, key) != value:
            return False
    return True


class FakeKube:
    """``request(method, path, query, body=..., content_type=..., timeout=...)`` over objects keyed by item path."""

    def __init__(self) -> None:
        self.objects: dict[str, JSON] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.denied: set[tuple[str, str, str, str]] = set()  # (verb, group, resource, subresource) refused by RBAC
        self.username = "tester"
        self.failures: dict[tuple[str, str], ApiException] = {}  # (method, path) -> raised every time
        self.on_request: Callable[[str, str], None] | None = None
        self._versions = itertools.count(100)
        self._uids = itertools.count(1)
        self.objects["/version"] = {"gitVersion": "v1.34.4"}

    # -- set-up ----------------------------------------------------------------------------------------------

    def put(self, path: str, obj: JSON) -> JSON:
        """Store ``obj`` at item path ``path`` (fills in name, namespace, uid, resourceVersion)."""
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        parts = path.split("/")
        meta.setdefault("name", parts[-1])
        if "namespaces" in parts:
            meta.setdefault("namespace", parts[parts.index("namespaces") + 1])
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[path] = stored
        return copy.deepcopy(stored)

    def get(self, path: str) -> JSON | None:
        return copy.deepcopy(self.objects.get(path))

    # -- the API ---------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None = None,
        *,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON:
        self.requests.append((method, path, copy.deepcopy(body)))
        if self.on_request is not None:
            self.on_request(method, path)
        failure = self.failures.get((method, path))
        if failure is not None:
            raise failure
        query = dict(query or {})
        if method == "POST" and path == SSAR:
            attrs = body["spec"]["resourceAttributes"]
            key = (attrs["verb"], attrs.get("group", ""), attrs["resource"], attrs.get("subresource", ""))
            return {"status": {"allowed": key not in self.denied}}
        if method == "POST" and path == SSR:
            return {"status": {"userInfo": {"username": self.username}}}
        if method == "GET":
            return self._get(path, query)
        if method == "POST":
            return self._create(path, body)
        if method == "PATCH":
            return self._patch(path, body, content_type)
        if method == "DELETE":
            return self._delete(path, body)
        raise api_error(405, "MethodNotAllowed", f"{method} {path}")

    def _get(self, path: str, query: Mapping[str, str | int]) -> JSON:
        if path in self.objects:
            return copy.deepcopy(self.objects[path])
        if self._looks_like_item(path):
            raise api_error(404, "NotFound", f"{path} not found")
        items = [obj for item_path, obj in sorted(self.objects.items()) if self._in_collection(item_path, path)]
        if "labelSelector" in query:
            items = [i for i in items if _matches_labels(i, str(query["labelSelector"]))]
        if "fieldSelector" in query:
            items = [i for i in items if _matches_fields(i, str(query["fieldSelector"]))]
        return {"kind": "List", "metadata": {"resourceVersion": "999"}, "items": copy.deepcopy(items)}

    @staticmethod
    def _looks_like_item(path: str) -> bool:
        parts = path.strip("/").split("/")
        # /api/v1/nodes/N, /api/v1/namespaces/NS/pods/N, /apis/G/V/namespaces/NS/R/N, /apis/G/V/R/N
        core = parts[0] == "api"
        length = len(parts) - (2 if core else 3)
        if "namespaces" in parts:
            return length == 4
        return length == 2

    @staticmethod
    def _in_collection(item_path: str, collection: str) -> bool:
        parent = item_path.rpartition("/")[0]
        if parent == collection:
            return True
        # A cluster-wide list of a namespaced resource: /api/v1/pods lists /api/v1/namespaces/*/pods/*.
        prefix, _, plural = collection.rpartition("/")
        parts = parent.split("/")
        return (
            len(parts) >= 3
            and parts[-1] == plural
            and parts[-3] == "namespaces"
            and "/".join(parts[:-3]) == prefix
            and "/namespaces/" not in prefix
        )

    def _create(self, path: str, body: JSON) -> JSON:
        name = body["metadata"]["name"]
        item = f"{path}/{name}"
        if item in self.objects:
            raise api_error(409, "AlreadyExists", f"{item} already exists")
        return self.put(item, body)

    def _patch(self, path: str, body: JSON, content_type: str) -> JSON:
        if content_type != "application/merge-patch+json":
            raise api_error(415, "UnsupportedMediaType", content_type)
        current = self.objects.get(path)
        if current is None:
            raise api_error(404, "NotFound", f"{path} not found")
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise api_error(409, "Conflict", "the object has been modified")
        patched = merge_patch(current, body)
        patched["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[path] = patched
        return copy.deepcopy(patched)

    def _delete(self, path: str, body: JSON | None) -> JSON:
        current = self.objects.get(path)
        if current is None:
            raise api_error(404, "NotFound", f"{path} not found")
        preconditions = (body or {}).get("preconditions") or {}
        meta = current["metadata"]
        for key in ("uid", "resourceVersion"):
            if key in preconditions and preconditions[key] != meta.get(key):
                raise api_error(409, "Conflict", f"Precondition failed: {key}")
        del self.objects[path]
        return {"kind": "Status", "status": "Success"}
