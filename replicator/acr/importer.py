"""Server-side replication through ARM ImportImage, then referrers over the data plane.

``AcrImporter.import_image`` pins the source by digest, tags the target as the job says
(``Force``, so the DR tag mirrors the source), polls ARM at a short interval under an
overall deadline, copies the image's referrers (ImportImage does not bring signatures or
SBOMs), and confirms the digest the target now holds.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from replicator.acr.arm import RegistryId, management_client
from replicator.acr.errors import ImportUnavailableError, classify
from replicator.errors import InvalidReferenceError, PermanentRegistryError, TransientRegistryError
from replicator.identity import credential_for, identity_of
from replicator.ports import CopyReport, ManifestReader

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry.models import ImportImageParameters

    from replicator.config import Settings
    from replicator.model import CopyJob, Target
    from replicator.oci.reference import ImageRef

log = logging.getLogger(__name__)


class ReferrerCopier(Protocol):
    def copy_referrers(self, src: ImageRef, dst: ImageRef) -> int: ...


class RegistryClients(Protocol):
    def client(self, registry: str) -> ManifestReader: ...


class AcrImporter:
    """Implements ``replicator.ports.Importer`` with ARM ImportImage."""

    def __init__(
        self,
        settings: Settings,
        credential: TokenCredential,
        *,
        source_credential: TokenCredential | None = None,
        copier: ReferrerCopier | None = None,
        registries: RegistryClients | None = None,
        polling_interval: float = 1.0,
        deadline: float = 600,
        retry_total: int = 3,
        **client_kwargs: Any,
    ) -> None:
        self.settings = settings
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
        parameters = self.parameters(job, digest)
        started = time.monotonic()
        self._run(rid, parameters, reference=str(dst))
        log.info(
            "imported %s into %s in %.1fs", src, target.login_server, time.monotonic() - started
        )
        referrers = self.copier.copy_referrers(src, dst) if self.copier is not None else 0
        return CopyReport(
            digest=self._confirm(dst, digest),
            manifests_copied=1,
            referrers_copied=referrers,
            extra={"strategy": "import"},
        )

    def parameters(self, job: CopyJob, digest: str) -> ImportImageParameters:
        """The request body: source by digest, target tag (or untagged repository), Force."""
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
        return ImportImageParameters(
            source=source,
            target_tags=[f"{job.repository}:{job.tag}"] if job.tag else None,
            untagged_target_repositories=None if job.tag else [job.repository],
            mode=ImportMode.FORCE,
        )

    def _run(self, rid: RegistryId, parameters: ImportImageParameters, *, reference: str) -> None:
        client = self.client(rid.subscription)
        try:
            poller = client.registries.begin_import_image(
                rid.resource_group, rid.name, parameters, polling_interval=self.polling_interval
            )
            poller.result(timeout=self.deadline)
        except HttpResponseError as exc:
            raise classify(exc, reference=reference) from exc
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

    def _confirm(self, dst: ImageRef, digest: str) -> str:
        if self.registries is None:
            return digest
        found = self.registries.client(dst.registry).head_manifest(dst.with_tag(None))
        if found is None or found.digest != digest:
            raise TransientRegistryError(
                f"after the import the target has {found.digest if found else 'nothing'}, "
                f"not {digest}",
                operation="import",
                reference=str(dst),
            )
        return found.digest


def _target_id(target: Target) -> RegistryId:
    if not target.resource_id:
        raise ImportUnavailableError(
            f"{target.login_server} has no resource_id: import needs the target's ARM id",
            operation="import",
            reference=target.login_server,
        )
    try:
        return RegistryId.parse(target.resource_id)
    except InvalidReferenceError as exc:
        raise PermanentRegistryError(str(exc), operation="import") from exc


class AcrImporters:
    """``replicator.ports.Importer`` for every target: one ``AcrImporter`` per target, built
    on first use with that target's identity (its tenant) and the source's credential."""

    def __init__(
        self,
        settings: Settings,
        *,
        copier: ReferrerCopier | None = None,
        registries: RegistryClients | None = None,
        **importer_kwargs: Any,
    ) -> None:
        self.settings = settings
        self.copier = copier
        self.registries = registries
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
                    operation="import",
                    reference=target.login_server,
                )
            found = AcrImporter(
                self.settings,
                credential,
                source_credential=credential_for(self.settings, self.settings.source),
                copier=self.copier,
                registries=self.registries,
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
