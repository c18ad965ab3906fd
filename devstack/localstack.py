"""The local stack: CNCF distribution registries and one Azurite, on free loopback ports.

Used by the tests, the demo and the benchmarks. Each service runs in its own temporary
directory; ``LocalStack`` is a context manager that stops everything it started, even
after a failure. Nothing here is used inside Azure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from replicator.domain.errors import StackError

REGISTRY_BINARIES = ("registry", "docker-registry")
# Azurite's well-known development account (public, documented; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
READY_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_registry_binary() -> str:
    for name in REGISTRY_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise StackError(
        "no CNCF distribution registry found: install it with `make install` "
        "(Debian/Ubuntu: apt-get install docker-registry) or put a `registry` binary on PATH"
    )


def find_azurite(root: Path | None = None) -> str:
    base = root or Path(__file__).resolve().parent.parent
    candidate = base / "node_modules" / ".bin" / "azurite"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("azurite")
    if found:
        return found
    raise StackError("Azurite not found: run `make install` (npm ci installs it into node_modules)")


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Registry:
    """A running distribution registry. ``host`` is its login server, e.g. ``127.0.0.1:5001``."""

    host: str
    port: int
    service: Service
    access_log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        self.service.stop()


@dataclass
class Azurite:
    queue_port: int
    table_port: int
    service: Service
    blob_port: int = 0  # dry-run resync plans are blobs

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{AZURITE_ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{AZURITE_ACCOUNT};"
            + (
                f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{AZURITE_ACCOUNT};"
                if self.blob_port
                else ""
            )
        )

    def stop(self) -> None:
        self.service.stop()


def _spawn(name: str, argv: list[str], workdir: Path, env: Mapping[str, str] | None) -> Service:
    log_path = workdir / f"{name}.log"
    log = log_path.open("wb")
    try:
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    except OSError as exc:
        raise StackError(f"could not start {name} ({argv[0]}): {exc}") from exc
    finally:
        log.close()
    return Service(name=name, process=process, workdir=workdir, log_path=log_path)


def _wait_until(service: Service, probe: str, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise StackError(
                f"{service.name} exited with code {service.process.returncode} before it was "
                f"ready (a port taken?); its log ends:\n{service.log_tail()}"
            )
        try:
            with urllib.request.urlopen(probe, timeout=1):  # noqa: S310 - loopback probe
                return
        except urllib.error.HTTPError:
            return  # it answers: ready (Azurite answers 400 to a bare GET)
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise StackError(f"{service.name} did not answer {probe} within {timeout:.0f}s")


def registry_config(port: int, root: Path, extra: Mapping[str, object] | None = None) -> str:
    """The distribution registry's configuration (JSON is valid YAML)."""
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "local-stack-not-a-secret"},
    }
    config.update(extra or {})
    return json.dumps(config, indent=2)


@dataclass
class LocalStack:
    """Start registries and Azurite; stop all of them on exit.

    >>> with LocalStack() as stack:
    ...     src, dst = stack.start_registry(), stack.start_registry()
    ...     azurite = stack.start_azurite()
    """

    base: Path | None = None
    services: list[Service] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> LocalStack:
        self._tmp = tempfile.TemporaryDirectory(prefix="acr-replicator-stack-")
        self.base = Path(self._tmp.name)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _workdir(self, name: str) -> Path:
        if self.base is None:
            raise StackError("LocalStack used outside its `with` block")
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.base))

    def start_registry(
        self, *, config: Mapping[str, object] | None = None, port: int | None = None
    ) -> Registry:
        """Start a distribution registry; ``config`` overrides top-level config sections."""
        binary = find_registry_binary()
        port = port or free_port()
        workdir = self._workdir("registry")
        config_path = workdir / "config.yml"
        config_path.write_text(registry_config(port, workdir, config))
        service = _spawn(f"registry:{port}", [binary, "serve", str(config_path)], workdir, env=None)
        self.services.append(service)
        _wait_until(service, f"http://127.0.0.1:{port}/v2/")
        return Registry(
            host=f"127.0.0.1:{port}", port=port, service=service, access_log=service.log_path
        )

    def start_azurite(self, *, restart: Azurite | None = None) -> Azurite:
        """Start Azurite; ``restart``: a stopped one again, on its ports and its data. A
        fresh one whose free port was taken by someone else meanwhile starts again on
        other ports (twice at most)."""
        if restart is not None:
            restart.stop()
            ports = (restart.queue_port, restart.table_port, restart.blob_port or free_port())
            return self._azurite(ports, restart.service.workdir)
        for attempt in range(3):
            try:
                ports = (free_port(), free_port(), free_port())
                return self._azurite(ports, self._workdir("azurite"))
            except StackError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _azurite(self, ports: tuple[int, int, int], workdir: Path) -> Azurite:
        queue_port, table_port, blob_port = ports
        argv = [
            find_azurite(),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--location",
            str(workdir),
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(queue_port),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(table_port),
            "--blobPort",
            str(blob_port),
            "--blobHost",
            "127.0.0.1",
        ]
        service = _spawn("azurite", argv, workdir, env=None)
        self.services.append(service)
        try:
            for port in ports:
                _wait_until(service, f"http://127.0.0.1:{port}/")
        except StackError:
            service.stop()
            raise
        return Azurite(
            queue_port=queue_port, table_port=table_port, service=service, blob_port=blob_port
        )


@contextlib.contextmanager
def local_stack() -> Iterator[LocalStack]:
    with LocalStack() as stack:
        yield stack
