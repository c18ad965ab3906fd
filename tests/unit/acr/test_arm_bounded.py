"""Every body ARM sends the doctor is read bounded: an endless answer or error body is
refused once it passes the bound, never read whole (the CLI once took 1.5 GiB reading a
200 MiB error body); a refusal keeps its status and ARM's ``(code) message``."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest

from replicator.adapters.acr.arm import MAX_ARM_BYTES, arm_get_json


class _Answer:
    def __init__(self, status: int, chunks: Iterator[bytes]) -> None:
        self.status_code, self.reason, self.chunks = status, "reason", chunks
        self.read_bytes, self.closed = 0, False

    def iter_bytes(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.read_bytes += len(chunk)
            yield chunk

    def text(self) -> str:
        raise AssertionError("the body is read bounded, never whole")

    def close(self) -> None:
        self.closed = True


class _Client:
    def __init__(self, answer: _Answer) -> None:
        self.answer = answer
        self.streamed: list[bool] = []

    def send_request(self, request: HttpRequest, *, stream: bool = False) -> _Answer:
        self.streamed.append(stream)
        return self.answer


def _get(answer: _Answer, limit: int = MAX_ARM_BYTES) -> Any:
    client = _Client(answer)
    try:
        return arm_get_json(cast(Any, client), "/subscriptions/s/x?api-version=1", limit=limit)
    finally:
        assert client.streamed == [True] and answer.closed


@pytest.mark.parametrize("status", [200, 403, 500])
def test_an_endless_body_is_refused_at_the_bound(status: int) -> None:
    answer = _Answer(status, itertools.repeat(b"x" * 65536))
    with pytest.raises(HttpResponseError, match="over 1048576 bytes"):
        _get(answer, limit=1024 * 1024)
    assert answer.read_bytes <= 1024 * 1024 + 65536


def test_a_refusal_keeps_its_status_and_arm_s_code_and_message() -> None:
    error = {"error": {"code": "AuthorizationFailed", "message": "no read on the site"}}
    answer = _Answer(403, iter([json.dumps(error).encode()]))
    with pytest.raises(HttpResponseError) as raised:
        _get(answer)
    assert raised.value.status_code == 403
    assert str(raised.value).startswith("(AuthorizationFailed) no read on the site")


def test_a_document_is_its_json() -> None:
    assert _get(_Answer(200, iter([b'{"value": ', b"[1, 2]}"]))) == {"value": [1, 2]}
