"""Server-side replication through ARM ImportImage, referrers included.

``AcrImporter.import_image`` first reads the image in the *source* (pull is all that
needs): it counts the manifests (more than ImportImage takes: refused before ARM is
called, see ``import_plan``) and lists the referrers. It then imports the image pinned by
digest, tagged as the job says (``Force``, so the DR tag mirrors the source), polling ARM
at a short interval under an overall deadline; then each referrer (signatures, SBOMs and
their own referrers: ImportImage does not bring them) by its own ImportImage by digest
into the untagged repository, so an ``import`` target needs neither AcrPush nor a data
plane the worker can reach. Under ``auto`` only, a referrer import refused for a reason a
copy can overcome falls back to copying the referrers over the data plane. Last it
confirms the digest the target now holds, with one read of the target's data plane
(``replicator.adapters.acr.reach``): where that does not answer (a private endpoint the worker has
no route to), ARM's succeeded operation is the confirmation, and the report says so
(``extra["unconfirmed"]``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from replicator.adapters.acr.arm import RegistryId, management_client
from replicator.adapters.acr.errors import NOT_CONFIGURED, ImportUnavailableError, classify
from replicator.adapters.acr.import_plan import ImportPlan, check_manifest_count, plan_import
from replicator.adapters.acr.reach import DataPlaneReach, read_manifest
from replicator.adapters.azure.credentials import credential_for
from replicator.adapters.azure.telemetry import record_fallback, span
from replicator.adapters.oci.referrers import list_referrers
from replicator.domain.budgets import ARM
from replicator.domain.errors import (
    InvalidReferenceError,
    NotFoundError,
    PermanentRegistryError,
    TransientRegistryError,
)
from replicator.domain.identities import identity_of
from replicator.domain.model import CopyReport, Strategy

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry.models import ImportImageParameters

    from replicator.adapters.oci.registries import Registries
    from replicator.domain.config import Settings
    from replicator.domain.manifests import Manifest
    from replicator.domain.model import CopyJob, Target
    from replicator.domain.reference import ImageRef

log = logging.getLogger(__name__)


class ReferrerCopier(Protocol):
    def copy_referrers(self, src: ImageRef, dst: ImageRef) -> int: ...


class AcrImporter:
    """Implements ``replicator.app.ports.Importer`` with ARM ImportImage."""

    def __init__(
        self,
        settings: Settings,
        credential: TokenCredential,
        *,
        source_credential: TokenCredential | None = None,
        copier: ReferrerCopier | None = None,
        registries: Registries | None = None,
        polling_interval: float = 1.0,
        deadline: float = 600,
        retry_total: int = 3,
        reach: DataPlaneReach | None = None,
        **client_kwargs: Any,
    ) -> None:
        self.settings = settings
        self.reach = reach if reach is not None else DataPlaneReach()
        self.credential = credential
        self.source_credential = source_credential
        self.copier = copier
        self.registries = (
            registries if registries is not None else getattr(copier, "registries", None)
        )
        self.polling_interval = polling_interval
        self.deadline = deadline
        self._client_kwargs = {"retry_total": retry_total, **client_kwargs}
        self._clients: dict[str, ContainerRegistryManagementClient] = {}

    def close(self) -> None:
        """Close the ARM clients (the credentials belong to the caller)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> AcrImporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def client(self, subscription: str) -> ContainerRegistryManagementClient:
        if subscription not in self._clients:
            self._clients[subscription] = management_client(
                self.credential, self.settings.arm_endpoint, subscription, **self._client_kwargs
            )
        return self._clients[subscription]

    def import_image(self, job: CopyJob, target: Target, digest: str) -> CopyReport:
        src = job.source_ref.with_digest(digest)
        dst = src.with_registry(target.login_server)
        rid = _target_id(target)
        plan = self.plan(src)
        started = time.monotonic()
        self._run(rid, self.parameters(job, digest), reference=str(dst), target=target)
        log.info(
            "imported %s into %s in %.1fs", src, target.login_server, time.monotonic() - started
        )
        extra = {"strategy": "import"}
        referrers = 0
        if plan is not None and plan.referrers:
            referrers, how = self._referrers(job, target, rid, plan)
            extra.update(how)
        unconfirmed = self._confirm(dst, digest)
        if unconfirmed:
            extra["unconfirmed"] = unconfirmed
        return CopyReport(
            digest=digest,
            manifests_copied=plan.manifests if plan is not None else 1,
            referrers_copied=referrers,
            extra=extra,
        )

    def plan(self, src: ImageRef) -> ImportPlan | None:
        """What importing ``src`` brings, read from the source (None without a client for
        it: then the image alone is imported); too many manifests raise here."""
        if self.registries is None:
            return None
        registries = self.registries
        client = registries.client(src.registry)

        def fetch(digest: str) -> Manifest:
            return client.get_manifest(src.with_digest(digest))

        def listed(subject: str) -> tuple[dict[str, Any], ...]:
            return list_referrers(registries, client, src.repository, subject).descriptors

        return plan_import(str(src), fetch(str(src.digest)), fetch, listed)

    def _referrers(
        self, job: CopyJob, target: Target, rid: RegistryId, plan: ImportPlan
    ) -> tuple[int, dict[str, str]]:
        """Each referrer by its own import by digest; under ``auto``, a refusal a copy can
        overcome copies the referrers over the data plane instead."""
        src = job.source_ref.with_digest(plan.digest)
        dst = src.with_registry(target.login_server)
        imported = 0
        with span("referrers", source=str(src), target=str(dst), count=len(plan.referrers)):
            try:
                for digest, count in plan.oversized:
                    check_manifest_count(f"{src.registry}/{src.repository}@{digest}", count)
                for digest in plan.referrers:
                    imported += self._import_referrer(job, rid, digest, target)
            except ImportUnavailableError as exc:
                if target.strategy is not Strategy.AUTO or self.copier is None:
                    raise
                log.warning(
                    "importing the referrers of %s refused (%s): copying them over the "
                    "data plane: %s",
                    dst,
                    exc.reason,
                    exc,
                )
                record_fallback(target.login_server, exc.reason, part="referrers")
                copied = self.copier.copy_referrers(src, dst)
                reason = f"referrers copied, not imported ({exc.reason}): {exc}"[:500]
                return imported + copied, {"referrers_fallback_reason": reason}
        return imported, {"referrers": "import"}

    def _import_referrer(self, job: CopyJob, rid: RegistryId, digest: str, target: Target) -> int:
        parameters = self.parameters(job, digest, untagged=True)
        reference = f"{target.login_server}/{job.repository}@{digest}"
        try:
            self._run(rid, parameters, reference=reference, target=target)
        except NotFoundError:
            log.warning("referrer %s of %s is listed but gone", digest, job.repository)
            return 0
        return 1

    def parameters(
        self, job: CopyJob, digest: str, *, untagged: bool = False
    ) -> ImportImageParameters:
        """The request body: source by digest, target tag (or, for a digest-only job or a
        referrer, the untagged repository), Force."""
        from azure.mgmt.containerregistry.models import (
            ImportImageParameters,
            ImportMode,
            ImportSource,
            ImportSourceCredentials,
        )

        image = f"{job.repository}@{digest}"
        settings = self.settings
        source_identity = identity_of(settings, settings.source)
        if settings.source_resource_id and not source_identity.cross_tenant:
            source = ImportSource(resource_id=settings.source_resource_id, source_image=image)
        else:
            credentials = None
            if self.source_credential is not None:
                scope = f"{settings.arm_endpoint}/.default"
                token = self.source_credential.get_token(scope).token
                credentials = ImportSourceCredentials(password=token)
            source = ImportSource(
                registry_uri=settings.source, source_image=image, credentials=credentials
            )
        tag = None if untagged else job.tag
        return ImportImageParameters(
            source=source,
            target_tags=[f"{job.repository}:{tag}"] if tag else None,
            untagged_target_repositories=None if tag else [job.repository],
            mode=ImportMode.FORCE,
        )

    def _run(
        self,
        rid: RegistryId,
        parameters: ImportImageParameters,
        *,
        reference: str,
        target: Target | None = None,
    ) -> None:
        client = self.client(rid.subscription)
        retry = self.registries.retry if self.registries is not None else None
        if retry is not None:  # ImportImage's budget: REPLICATOR_RATE_LIMITS "arm" (issue 17)
            retry.before_request(ARM, "POST")
        try:
            poller = client.registries.begin_import_image(
                rid.resource_group, rid.name, parameters, polling_interval=self.polling_interval
            )
            poller.result(timeout=self.deadline)
        except HttpResponseError as exc:
            found = classify(
                exc,
                reference=reference,
                source=self.settings.source,
                target=target.login_server if target is not None else rid.name,
            )
            if retry is not None and exc.status_code == 429:
                retry.throttled(ARM, "POST", getattr(found, "retry_after", None))
            raise found from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientRegistryError(
                f"ARM could not be reached: {exc}", operation="import", reference=reference
            ) from exc
        if not poller.done():
            raise TransientRegistryError(
                f"the import did not finish within {self.deadline:.0f}s; ARM may still complete it",
                operation="import",
                reference=reference,
            )

    def _confirm(self, dst: ImageRef, digest: str) -> str | None:
        """Check the target holds ``digest`` after the import: one read of its data plane.
        None when confirmed; where the data plane did not answer, why ARM's succeeded
        operation is taken as the confirmation. Another digest or nothing there raises."""
        if self.registries is None:
            return None
        client = self.registries.client(dst.registry)
        seen = read_manifest(client, dst.with_tag(None), self.reach)
        if not seen.known:
            log.warning("%s not confirmed over the data plane: %s", dst, seen.why)
            return (
                f"imported; not confirmed over {dst.registry}'s data plane ({seen.why}): "
                "ARM reported the import succeeded"
            )[:500]
        if seen.digest != digest:
            raise TransientRegistryError(
                f"after the import the target has {seen.digest or 'nothing'}, not {digest}",
                operation="import",
                reference=str(dst),
            )
        return None


def _target_id(target: Target) -> RegistryId:
    if not target.resource_id:
        raise ImportUnavailableError(
            f"{target.login_server} has no resource_id: import needs the target's ARM id",
            reason=NOT_CONFIGURED,
            reference=target.login_server,
        )
    try:
        return RegistryId.parse(target.resource_id)
    except InvalidReferenceError as exc:
        raise PermanentRegistryError(str(exc), operation="import") from exc


class AcrImporters:
    """``replicator.app.ports.Importer`` for every target: one ``AcrImporter`` per target, built
    on first use with that target's identity (its tenant) and the source's credential."""

    def __init__(
        self,
        settings: Settings,
        *,
        copier: ReferrerCopier | None = None,
        registries: Registries | None = None,
        reach: DataPlaneReach | None = None,
        **importer_kwargs: Any,
    ) -> None:
        self.settings = settings
        self.copier = copier
        self.registries = registries
        self.reach = reach if reach is not None else DataPlaneReach()  # one per process
        self.importer_kwargs = importer_kwargs
        self._importers: dict[str, AcrImporter] = {}

    def import_image(self, job: CopyJob, target: Target, digest: str) -> CopyReport:
        return self.importer(target).import_image(job, target, digest)

    def importer(self, target: Target) -> AcrImporter:
        found = self._importers.get(target.login_server)
        if found is None:
            credential = credential_for(self.settings, target.login_server)
            if credential is None:
                raise ImportUnavailableError(
                    f"no Azure identity for {target.login_server}: import needs one "
                    "(REPLICATOR_IDENTITY / REPLICATOR_IDENTITIES)",
                    reason=NOT_CONFIGURED,
                    reference=target.login_server,
                )
            found = AcrImporter(
                self.settings,
                credential,
                source_credential=credential_for(self.settings, self.settings.source),
                copier=self.copier,
                registries=self.registries,
                reach=self.reach,
                **self.importer_kwargs,
            )
            self._importers[target.login_server] = found
        return found

    def close(self) -> None:
        for importer in self._importers.values():
            importer.close()
            for credential in (importer.credential, importer.source_credential):
                close = getattr(credential, "close", None)
                if callable(close):
                    close()  # this object made them
        self._importers.clear()
