"""The one paged LIST helper: every page followed, selectors kept, nothing read twice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from controller.adapters.kube import PAGE_SIZE, list_all, pages


class PagedServer:
    """An API server that answers a LIST ``size`` items a page, as the real one chunks with ``limit``."""

    def __init__(self, items: int) -> None:
        self.items = [{"metadata": {"name": f"n{index:04}"}} for index in range(items)]
        self.queries: list[dict[str, str | int]] = []

    def request(self, method: str, path: str, query: Mapping[str, str | int] | None = None, **_: Any) -> Any:
        assert method == "GET"
        params = dict(query or {})
        self.queries.append(params)
        start = int(params.get("continue", 0))
        limit = int(params["limit"])
        more = start + limit < len(self.items)
        return {
            "items": self.items[start : start + limit],
            "metadata": {"continue": str(start + limit) if more else "", "resourceVersion": "7"},
        }


@pytest.mark.parametrize("count", [0, 1, PAGE_SIZE, PAGE_SIZE + 1, 3 * PAGE_SIZE + 17])
def test_every_item_of_every_page_once(count: int) -> None:
    server = PagedServer(count)

    names = [item["metadata"]["name"] for item in list_all(server, "/api/v1/nodes", {"labelSelector": "a=b"})]

    assert names == [f"n{index:04}" for index in range(count)]
    assert len(server.queries) == max(1, -(-count // PAGE_SIZE)), "one request per page"
    assert all(q["labelSelector"] == "a=b" and q["limit"] == PAGE_SIZE for q in server.queries)


def test_pages_are_yielded_as_they_come_with_the_last_pages_metadata() -> None:
    server = PagedServer(PAGE_SIZE + 1)

    seen = list(pages(server, "/api/v1/nodes"))

    assert [len(page["items"]) for page in seen] == [PAGE_SIZE, 1]
    assert seen[-1]["metadata"]["resourceVersion"] == "7"
