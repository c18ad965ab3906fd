"""No password, token or key in any log line: every record of every logger (the Azure
SDKs and httpx included) is captured at DEBUG during a whole flow — a token-auth source
(its token service wants a password), a basic-auth DR registry, Azurite with its account
key — event, queue, worker copy, a throttled token service, reconcile, the HTTP functions,
and a refused password."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import pytest

from devstack.localstack import AZURITE_KEY, Azurite, LocalStack, Registry
from devstack.localworker import deliver_push, drain, worker_runtime
from devstack.testimages import push_test_image
from replicator.adapters.oci.credentials import RegistryAuth
from replicator.adapters.oci.registries import Registries
from replicator.app.reconcile import run_reconcile
from replicator.domain.errors import PermanentRegistryError
from replicator.domain.reference import ImageRef
from replicator.functions import triggers
from tests.doubles.htpasswd import start_basic_registry
from tests.doubles.token_server import TokenService, serve

SOURCE_USER, SOURCE_PASSWORD = "puller", "source-pass-7f3a9c"
TARGET_USER, TARGET_PASSWORD = "pusher", "target-pass-51be0d"


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.exceptions = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        text = [record.getMessage(), json.dumps(record.__dict__, default=str)]
        if record.exc_info:
            text.append(self.exceptions.formatException(record.exc_info))
        self.lines.append("\n".join(text))


@pytest.fixture
def captured() -> Iterator[Everything]:
    handler, root = Everything(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def basic_target(stack: LocalStack, tmp_path: Path) -> Iterator[Registry]:
    running = start_basic_registry(stack, tmp_path, TARGET_USER, TARGET_PASSWORD, realm="dr")
    yield running
    running.stop()


@pytest.fixture
def token_source(stack: LocalStack, tmp_path: Path) -> Iterator[tuple[Registry, TokenService]]:
    with serve(TokenService(tmp_path, users={SOURCE_USER: SOURCE_PASSWORD})) as service:
        running = stack.start_registry(config=service.registry_config())
        yield running, service
        running.stop()


def _secrets(service: TokenService) -> list[str]:
    found = [SOURCE_PASSWORD, TARGET_PASSWORD, AZURITE_KEY, AZURITE_KEY[:20]]
    for user, password in ((SOURCE_USER, SOURCE_PASSWORD), (TARGET_USER, TARGET_PASSWORD)):
        found.append(base64.b64encode(f"{user}:{password}".encode()).decode())
    for token in service.issued:
        found += [token, token.rsplit(".", 1)[-1]]
    return found


def test_a_whole_flow_logs_no_secret(
    captured: Everything,
    token_source: tuple[Registry, TokenService],
    basic_target: Registry,
    fresh_azurite: Azurite,
) -> None:
    source, service = token_source
    logins = {
        source.host: RegistryAuth.basic(SOURCE_USER, SOURCE_PASSWORD),
        basic_target.host: RegistryAuth.basic(TARGET_USER, TARGET_PASSWORD),
    }
    with worker_runtime(source, basic_target, fresh_azurite) as (runtime, _):
        runtime.registries.credentials = logins.get  # before any client is made
        ref = ImageRef(source.host, "team/app", "v1")
        pushed = push_test_image(runtime.registries, ref)
        service.fail_next = 2  # the token service throttles: retries get logged
        deliver_push(ref, pushed.digest)
        assert drain(runtime).succeeded == 1
        run_reconcile(runtime)
        for handler in (triggers.status, triggers.resync, triggers.replay):
            request = func.HttpRequest(method="POST", url="/api/x", body=b"{}", params={})
            assert handler(request).status_code in {200, 202}
    wrong = RegistryAuth.basic(TARGET_USER, TARGET_PASSWORD + "-wrong")
    with Registries(credentials=lambda _h: wrong) as registries:
        with pytest.raises(PermanentRegistryError) as refused:
            registries.client(basic_target.host).head_manifest(
                ImageRef(basic_target.host, "team/app", "v1")
            )
        logging.getLogger("test").warning("refused: %s", refused.value, exc_info=refused.value)

    assert len(service.issued) >= 1 and len(captured.lines) > 50
    logs = "\n".join(captured.lines)
    # not vacuous: the requests that carried credentials were logged, headers included
    assert "HTTP Request: GET http://127.0.0.1" in logs and "'Authorization': 'REDACTED'" in logs
    leaked = [s[:6] + "..." for s in [*_secrets(service), wrong.password] if s in logs]
    assert leaked == []
