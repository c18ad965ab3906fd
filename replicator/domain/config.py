"""Settings: parsed, validated and frozen once, from the app settings (environment).

``load_settings(os.environ)`` is the only place that reads configuration; it raises one
``ConfigError`` listing every problem it found.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from replicator.domain.budgets import (
    DEFAULT_SOURCE_SHARE,
    DEFAULT_TARGET_SHARE,
    Limits,
    parse_rate_limits,
    parse_share,
    parse_skus,
)
from replicator.domain.errors import ConfigError, InvalidReferenceError
from replicator.domain.identities import IdentitySettings, parse_identity_settings
from replicator.domain.model import Strategy, Target
from replicator.domain.reference import is_loopback, parse_registry

DEFAULT_SCHEDULE = "0 */30 * * * *"
DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
DEFAULT_QUEUE_CONNECTION = "AzureWebJobsStorage"
DEFAULT_UNTAGGED_DELAY = 60
_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_NCRONTAB_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?]+$")


@dataclass(frozen=True)
class DeletePolicy:
    """``keep`` (never delete), ``propagate``, or ``propagate-after:<duration>``."""

    mode: str = "keep"
    delay_seconds: int = 0

    @property
    def deletes(self) -> bool:
        return self.mode != "keep"

    def __str__(self) -> str:
        if self.mode == "propagate-after":
            return f"propagate-after:{self.delay_seconds}s"
        return self.mode


@dataclass(frozen=True)
class StorageConnection:
    """The jobs queue's storage account: a connection string (Azurite, keys) or, as in
    Azure, identity-based service URIs (``<Conn>__queueServiceUri`` and friends)."""

    connection_string: str | None = None
    queue_service_uri: str | None = None
    table_service_uri: str | None = None
    client_id: str | None = None  # user-assigned identity (``<Conn>__clientId``)

    def __repr__(self) -> str:  # never print an account key
        kind = "connection string" if self.connection_string else self.queue_service_uri
        return f"StorageConnection({kind})"


@dataclass(frozen=True)
class Settings:
    source: str
    targets: tuple[Target, ...]
    source_resource_id: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    delete_policy: DeletePolicy = field(default_factory=DeletePolicy)
    queue_connection: str = DEFAULT_QUEUE_CONNECTION
    reconcile_schedule: str = DEFAULT_SCHEDULE
    arm_endpoint: str = DEFAULT_ARM_ENDPOINT
    plain_http: frozenset[str] = frozenset()
    storage: StorageConnection | None = None
    untagged_delay_seconds: int = DEFAULT_UNTAGGED_DELAY
    identity: IdentitySettings = field(
        default_factory=IdentitySettings
    )  # replicator.domain.identities
    acr_audience: str | None = None  # None: each ACR's from its login server's cloud suffix
    # request budgets (replicator.domain.budgets): REPLICATOR_RATE_LIMITS, the shares, SKUs
    rate_limits: Mapping[str, Limits] = field(default_factory=dict)
    source_share: float = DEFAULT_SOURCE_SHARE
    target_share: float = DEFAULT_TARGET_SHARE
    skus: Mapping[str, str] = field(default_factory=dict)  # login server -> ACR SKU
    verify_sweep: int | None = None  # REPLICATOR_VERIFY_SWEEP: images a reconcile audits

    def target(self, login_server: str) -> Target | None:
        for target in self.targets:
            if target.login_server == login_server:
                return target
        return None

    def uses_plain_http(self, registry: str) -> bool:
        return is_loopback(registry) or registry in self.plain_http

    @property
    def registries(self) -> frozenset[str]:
        """Every registry the replicator may ever talk to."""
        return frozenset({self.source, *(t.login_server for t in self.targets)})


def parse_duration(text: str) -> int:
    """``90s``, ``15m``, ``2h``, ``1d``, ``1h30m`` or plain seconds -> seconds."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    match = _DURATION_RE.match(text)
    if not text or not match:
        raise ValueError(f"invalid duration {text!r} (use e.g. 30m, 2h, 1d)")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_delete_policy(text: str) -> DeletePolicy:
    text = text.strip()
    if text in {"keep", "propagate"}:
        return DeletePolicy(mode=text)
    if text.startswith("propagate-after:"):
        seconds = parse_duration(text.split(":", 1)[1])
        if seconds <= 0:
            raise ValueError("propagate-after needs a positive duration")
        return DeletePolicy(mode="propagate-after", delay_seconds=seconds)
    raise ValueError(f"{text!r} is not keep, propagate or propagate-after:<duration>")


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def parse_targets(raw: str, problems: list[str]) -> tuple[Target, ...]:
    raw = raw.strip()
    items: list[object]
    if raw.startswith("["):
        try:
            loaded = json.loads(raw)
        except ValueError as exc:
            problems.append(f"REPLICATOR_TARGETS is not valid JSON: {exc}")
            return ()
        items = loaded if isinstance(loaded, list) else []
    else:
        items = [{"login_server": part} for part in _split(raw)]
    if not items:
        problems.append("REPLICATOR_TARGETS names no target")
    targets: list[Target] = []
    for index, item in enumerate(items):
        where = f"REPLICATOR_TARGETS[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be an object with login_server")
            continue
        unknown = set(item) - {"login_server", "resource_id", "strategy"}
        if unknown:
            problems.append(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
        server, resource_id = item.get("login_server"), item.get("resource_id")
        try:
            strategy = Strategy(item.get("strategy", "auto"))
        except ValueError:
            problems.append(f"{where}.strategy must be import, copy or auto")
            continue
        if not isinstance(server, str):
            problems.append(f"{where}.login_server is required")
            continue
        if resource_id is not None and not _is_resource_id(resource_id):
            problems.append(f"{where}.resource_id is not an ARM registry id")
            continue
        if strategy is Strategy.IMPORT and not resource_id:
            problems.append(f"{where}: strategy import needs resource_id (the ARM id)")
            continue
        try:
            targets.append(Target(parse_registry(server), resource_id, strategy))
        except InvalidReferenceError as exc:
            problems.append(f"{where}.login_server: {exc}")
    seen = [t.login_server for t in targets]
    if len(seen) != len(set(seen)):
        problems.append("REPLICATOR_TARGETS names a registry twice")
    return tuple(targets)


def _is_resource_id(value: object) -> bool:
    return isinstance(value, str) and bool(
        re.match(
            r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
            r"Microsoft\.ContainerRegistry/registries/[A-Za-z0-9]{5,50}$",
            value,
            re.IGNORECASE,
        )
    )


def _check_glob(pattern: str) -> str | None:
    if not pattern or any(c in pattern for c in " \t\n"):
        return f"invalid glob {pattern!r}"
    return None


def parse_storage(env: Mapping[str, str], name: str) -> StorageConnection | None:
    """Resolve the connection setting ``name`` the way the Functions host does."""
    value = env.get(name, "").strip()
    if value:
        return StorageConnection(connection_string=value)
    account = env.get(f"{name}__accountName", "").strip()
    queue_uri = env.get(f"{name}__queueServiceUri", "").strip() or (
        f"https://{account}.queue.core.windows.net" if account else ""
    )
    table_uri = env.get(f"{name}__tableServiceUri", "").strip() or (
        f"https://{account}.table.core.windows.net" if account else ""
    )
    if not queue_uri:
        return None
    return StorageConnection(
        queue_service_uri=queue_uri,
        table_service_uri=table_uri or None,
        client_id=env.get(f"{name}__clientId", "").strip() or None,
    )


def parse_audience(value: str, problems: list[str]) -> str | None:
    """``REPLICATOR_ACR_AUDIENCE``: an https URL (``/.default`` may be written or not)."""
    audience = value.strip().removesuffix("/.default").rstrip("/")
    if not audience:
        return None
    parsed = urlparse(audience)
    if parsed.scheme != "https" or not parsed.netloc or parsed.query or parsed.fragment:
        problems.append(
            "REPLICATOR_ACR_AUDIENCE must be an https:// audience, e.g. "
            "https://containerregistry.azure.cn (China) or https://management.azure.com (ARM)"
        )
        return None
    return audience


def parse_verify_sweep(value: str, problems: list[str]) -> int | None:
    """``REPLICATOR_VERIFY_SWEEP``: ``off`` (the default) or how many images a pass audits."""
    text = value.strip().lower()
    if text in {"", "off"}:
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    problems.append(
        f"REPLICATOR_VERIFY_SWEEP must be off or a positive number of images, not {value.strip()!r}"
    )
    return None


@dataclass(frozen=True)
class BudgetSettings:
    """The request budgets' settings, as the app and the commands read them."""

    rate_limits: Mapping[str, Limits] = field(default_factory=dict)
    source_share: float = DEFAULT_SOURCE_SHARE
    target_share: float = DEFAULT_TARGET_SHARE
    skus: Mapping[str, str] = field(default_factory=dict)


def parse_budget_settings(env: Mapping[str, str], problems: list[str]) -> BudgetSettings:
    """REPLICATOR_RATE_LIMITS, REPLICATOR_SOURCE_SHARE / _TARGET_SHARE and
    REPLICATOR_REGISTRY_SKUS; every problem appended to ``problems``."""
    rate_limits = parse_rate_limits(env.get("REPLICATOR_RATE_LIMITS", ""), problems)
    shares = [
        parse_share(env.get(name, ""), name, default, problems)
        for name, default in (
            ("REPLICATOR_SOURCE_SHARE", DEFAULT_SOURCE_SHARE),
            ("REPLICATOR_TARGET_SHARE", DEFAULT_TARGET_SHARE),
        )
    ]
    return BudgetSettings(
        rate_limits=rate_limits,
        source_share=shares[0],
        target_share=shares[1],
        skus=parse_skus(env.get("REPLICATOR_REGISTRY_SKUS", ""), problems),
    )


def load_settings(env: Mapping[str, str], *, require_storage: bool = False) -> Settings:
    """Parse every CONTRACT setting; raise one ``ConfigError`` listing every problem."""
    problems: list[str] = []
    source = ""
    raw_source = env.get("REPLICATOR_SOURCE", "").strip()
    if not raw_source:
        problems.append("REPLICATOR_SOURCE is required (the source login server)")
    else:
        try:
            source = parse_registry(raw_source)
        except InvalidReferenceError as exc:
            problems.append(f"REPLICATOR_SOURCE: {exc}")
    raw_targets = env.get("REPLICATOR_TARGETS", "")
    targets: tuple[Target, ...] = ()
    if not raw_targets.strip():
        problems.append("REPLICATOR_TARGETS is required (JSON list or comma list of registries)")
    else:
        targets = parse_targets(raw_targets, problems)
    if source and any(t.login_server == source for t in targets):
        problems.append("REPLICATOR_TARGETS must not include the source registry")

    source_resource_id = env.get("REPLICATOR_SOURCE_RESOURCE_ID", "").strip() or None
    if source_resource_id and not _is_resource_id(source_resource_id):
        problems.append("REPLICATOR_SOURCE_RESOURCE_ID is not an ARM registry id")

    include = _split(env.get("REPLICATOR_INCLUDE"))
    exclude = _split(env.get("REPLICATOR_EXCLUDE"))
    problems.extend(p for p in map(_check_glob, include + exclude) if p)

    delete_policy = DeletePolicy()
    try:
        delete_policy = parse_delete_policy(env.get("REPLICATOR_DELETE_POLICY", "keep") or "keep")
    except ValueError as exc:
        problems.append(f"REPLICATOR_DELETE_POLICY: {exc}")

    queue_connection = env.get("REPLICATOR_QUEUE_CONNECTION", "").strip() or (
        DEFAULT_QUEUE_CONNECTION
    )
    schedule = env.get("REPLICATOR_RECONCILE_SCHEDULE", "").strip() or DEFAULT_SCHEDULE
    fields = schedule.split()
    if len(fields) != 6 or not all(_NCRONTAB_FIELD.match(f) for f in fields):
        problems.append(
            "REPLICATOR_RECONCILE_SCHEDULE must be an NCRONTAB with six fields "
            "(second minute hour day month weekday), e.g. '0 */30 * * * *'"
        )
    arm_endpoint = (env.get("REPLICATOR_ARM_ENDPOINT", "").strip() or DEFAULT_ARM_ENDPOINT).rstrip(
        "/"
    )
    parsed = urlparse(arm_endpoint)
    if parsed.scheme != "https" or not parsed.netloc:
        problems.append("REPLICATOR_ARM_ENDPOINT must be an https:// URL")
    plain: list[str] = []
    for host in _split(env.get("REPLICATOR_PLAIN_HTTP")):
        try:
            plain.append(parse_registry(host))
        except InvalidReferenceError as exc:
            problems.append(f"REPLICATOR_PLAIN_HTTP: {exc}")

    storage = parse_storage(env, queue_connection)
    if require_storage and storage is None:
        problems.append(
            f"the queue connection {queue_connection!r} is not set: set it to a connection "
            f"string, or {queue_connection}__queueServiceUri for an identity-based connection"
        )
    untagged_delay = DEFAULT_UNTAGGED_DELAY
    try:
        untagged_delay = parse_duration(env.get("REPLICATOR_UNTAGGED_DELAY", "") or "60")
    except ValueError as exc:
        problems.append(f"REPLICATOR_UNTAGGED_DELAY: {exc}")
    identity = parse_identity_settings(env, problems)
    acr_audience = parse_audience(env.get("REPLICATOR_ACR_AUDIENCE", ""), problems)
    budgets = parse_budget_settings(env, problems)
    verify_sweep = parse_verify_sweep(env.get("REPLICATOR_VERIFY_SWEEP", ""), problems)

    if problems:
        raise ConfigError(problems)
    return Settings(
        source=source,
        targets=targets,
        source_resource_id=source_resource_id,
        include=include,
        exclude=exclude,
        delete_policy=delete_policy,
        queue_connection=queue_connection,
        reconcile_schedule=schedule,
        arm_endpoint=arm_endpoint,
        plain_http=frozenset(plain),
        storage=storage,
        untagged_delay_seconds=untagged_delay,
        identity=identity,
        acr_audience=acr_audience,
        rate_limits=budgets.rate_limits,
        source_share=budgets.source_share,
        target_share=budgets.target_share,
        skus=budgets.skus,
        verify_sweep=verify_sweep,
    )
