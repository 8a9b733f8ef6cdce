"""Download links on the S3 profile: real presigned URLs from the storage server, which itself refuses a
tampered or expired one; folders come through the API's signed links, streamed from S3."""

from __future__ import annotations

import io
import time
import zipfile

import httpx
import pytest

from tests.helpers.api import me
from tests.helpers.registry import ADAPTER_BYTES, GGUF_BYTES, registry
from weft.registry import links
from weft.settings import get_settings
from weft.storage import get_storage


@pytest.fixture
def on_s3(s3, s3_bucket: str, monkeypatch) -> str:
    monkeypatch.setattr(get_settings(), "storage_url", s3_bucket)
    monkeypatch.setattr(get_settings(), "storage_options", s3.storage_options)
    return s3_bucket


def test_presigned_links_on_s3(client, auth_headers, on_s3):
    headers = auth_headers()
    ids = registry(me(client, headers)["id"])
    body = client.get(f"/api/v1/models/{ids['tuned']}", headers=headers).json()
    gguf = body["download_links"]["gguf"]
    assert "X-Amz-Signature=" in gguf and "X-Amz-Expires=86400" in gguf  # the storage server's own, 24 h
    assert httpx.get(gguf).content == GGUF_BYTES  # no weft credentials
    assert httpx.get(gguf.replace("X-Amz-Signature=", "X-Amz-Signature=0")).status_code == 403
    short = get_storage().presign(f"exports/{ids['tuned']}/gguf/model-q8_0.gguf", 1)
    time.sleep(2.5)
    assert httpx.get(short).status_code == 403  # expired

    api_signed = links.api_link("http://testserver", f"exports/{ids['tuned']}/gguf/model-q8_0.gguf",
                                me(client, headers)["id"])
    assert client.get(api_signed).content == GGUF_BYTES  # the API's own link streams the object from S3 too

    adapter_file = body["file_links"]["lora_adapters/adapter_model.safetensors"]
    assert "X-Amz-Signature=" in adapter_file and httpx.get(adapter_file).content == ADAPTER_BYTES
    folder = client.get(body["download_links"]["lora_adapters"])  # the API streams the folder from S3 as a ZIP
    assert folder.status_code == 200
    with zipfile.ZipFile(io.BytesIO(folder.content)) as z:
        assert sorted(n.rsplit("/", 1)[-1] for n in z.namelist()) == ["adapter_config.json",
                                                                      "adapter_model.safetensors"]
    with client.stream("GET", f"/api/v1/models/{ids['tuned']}/download", headers=headers) as r:
        data = b"".join(r.iter_bytes())
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.read(f"{ids['tuned']}/gguf/model-q8_0.gguf") == GGUF_BYTES
    assert client.get(f"/api/v1/models/{ids['tuned']}", headers=auth_headers()).status_code == 404  # bob: no link
