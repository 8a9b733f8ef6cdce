"""Document 000's list conventions beyond the models list: `sort`, `order`, `fields` on datasets, API keys and
the provider catalog; an unknown field or sort column is a 422 in the error format."""

from __future__ import annotations

import io

import pytest

from tests.helpers.api import assert_error


def test_datasets_sort_order_and_fields(client, auth_headers):
    headers = auth_headers()
    for name, rows in (("b-small", 1), ("a-large", 3), ("c-mid", 2)):
        content = b"".join(b'{"text": "row %d"}\n' % i for i in range(rows))
        r = client.post("/api/v1/datasets/upload", headers=headers, data={"name": name},
                        files={"file": ("d.jsonl", io.BytesIO(content), "application/octet-stream")})
        assert r.status_code == 201, r.text

    def names(**params) -> list[str]:
        return [d["name"] for d in client.get("/api/v1/datasets", params=params, headers=headers).json()["data"]]

    assert names() == ["c-mid", "a-large", "b-small"]  # its own order: newest first
    assert names(sort="name") == ["c-mid", "b-small", "a-large"]  # desc by default
    assert names(sort="name", order="asc") == ["a-large", "b-small", "c-mid"]
    assert names(sort="size_bytes", order="asc") == ["b-small", "c-mid", "a-large"]
    assert names(order="asc") == ["b-small", "a-large", "c-mid"]  # by created_at
    body = client.get("/api/v1/datasets", params={"fields": "name,size_bytes", "sort": "name", "limit": 2},
                      headers=headers).json()
    assert body["data"] == [{"name": "c-mid", "size_bytes": 36}, {"name": "b-small", "size_bytes": 18}]
    assert body["meta"] == {"total": 3, "limit": 2, "offset": 0}


def test_api_keys_and_providers(client, auth_headers):
    headers = auth_headers()
    for name in ("ci", "laptop", "batch"):
        assert client.post("/api/v1/auth/api-keys", headers=headers, json={"name": name}).status_code == 201
    keys = client.get("/api/v1/auth/api-keys", params={"sort": "name", "order": "asc", "fields": "name"},
                      headers=headers).json()["data"]
    assert keys == [{"name": "batch"}, {"name": "ci"}, {"name": "laptop"}]  # no key values, no ids
    providers = client.get("/api/v1/providers", params={"sort": "name", "order": "desc", "fields": "name,id"},
                           headers=headers).json()["data"]
    assert [p["name"] for p in providers] == sorted((p["name"] for p in providers), reverse=True)
    assert all(set(p) == {"name", "id"} for p in providers)


@pytest.mark.parametrize(("path", "params", "parameter"), [
    ("/api/v1/datasets", {"fields": "name,storage_key"}, "fields"),
    ("/api/v1/datasets", {"sort": "storage_key"}, "sort"),  # a column, but not a field of the list's items
    ("/api/v1/auth/api-keys", {"sort": "key_hash"}, "sort"),
    ("/api/v1/providers", {"order": "up"}, "order"),
    ("/api/v1/adapters", {"fields": "id,secret"}, "fields"),
])
def test_unknown_fields_and_columns_are_422(client, auth_headers, path, params, parameter):
    error = assert_error(client.get(path, params=params, headers=auth_headers()), 422, "VALIDATION_ERROR")
    assert error["details"]["parameter"] == parameter


def test_lists_built_in_memory(client, auth_headers):
    """Lists computed rather than read page by page (platforms, templates, clusters) sort and cut the same way."""
    headers = auth_headers()
    body = client.get("/api/v1/platforms", params={"sort": "name", "order": "asc", "fields": "name,status"},
                      headers=headers).json()
    assert [p["name"] for p in body["platforms"]] == ["kubernetes", "lambda", "local", "runpod"]
    assert all(set(p) == {"name", "status"} for p in body["platforms"])
    names = [t["name"] for t in client.get("/api/v1/templates", params={"sort": "name", "order": "desc"},
                                            headers=headers).json()["data"]]
    assert names == sorted(names, reverse=True) and len(names) > 1
    assert client.get("/api/v1/jobs", params={"sort": "status", "fields": "job_id,status"},
                      headers=headers).json() == {"jobs": [], "total": 0, "limit": 20, "offset": 0}
    for path, params, parameter in (("/api/v1/platforms", {"sort": "features"}, "sort"),  # a list: not sortable
                                    ("/api/v1/clusters", {"fields": "name,kubeconfig"}, "fields"),
                                    ("/api/v1/evaluations", {"sort": "nothing"}, "sort"),
                                    ("/api/v1/jobs", {"sort": "config"}, "sort")):
        error = assert_error(client.get(path, params=params, headers=headers), 422, "VALIDATION_ERROR")
        assert error["details"]["parameter"] == parameter
