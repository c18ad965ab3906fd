"""The app's ``ReferrerLister`` port (``replicator.app.ports``) over the OCI engine.

``subjects`` reads a manifest by digest and names it and the manifests it lists (an
index's children): the subjects whose referrers a check lists. ``referrers`` lists one
subject's referrers as ``replicator.adapters.oci.referrers.list_referrers`` does (the
referrers API where the registry has it, else the ``sha256-<hex>`` fallback tag; bounded
reads, pages kept on the registry's origin). Every request goes through the registry
client's one retry layer and so through its pacer: nothing here paces of its own.
``unlist`` takes a referrer out of its subject's fallback tag before it is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass

from replicator.adapters.oci.copy import unlist_referrer
from replicator.adapters.oci.referrers import list_referrers
from replicator.adapters.oci.registries import Registries
from replicator.domain.errors import NotFoundError
from replicator.domain.manifests import children_of
from replicator.domain.reference import ImageRef
from replicator.domain.referrers import ListedReferrer, listed_referrers


@dataclass(frozen=True)
class RegistryReferrers:
    """Referrer listings of any registry the engine reaches."""

    registries: Registries

    def subjects(self, host: str, repository: str, digest: str) -> tuple[str, ...] | None:
        """``digest`` and the manifests it lists, or None when ``host`` lacks it."""
        client = self.registries.client(host)
        try:
            top = client.get_manifest(ImageRef(host, repository, digest=digest))
        except NotFoundError:
            return None
        return tuple(dict.fromkeys([top.digest, *children_of(top)]))  # a bad digest raises

    def referrers(
        self, host: str, repository: str, subject: str, *, fallback_first: bool = False
    ) -> tuple[ListedReferrer, ...]:
        """The referrers of ``repository@subject`` on ``host``; ``fallback_first``: try
        the fallback tag before the API while the registry's kind is not known yet."""
        client = self.registries.client(host)
        found = list_referrers(
            self.registries, client, repository, subject, fallback_first=fallback_first
        )
        return listed_referrers(found.descriptors)

    def unlist(self, host: str, repository: str, digest: str) -> str | None:
        """Take ``repository@digest`` out of its subject's fallback tag before a delete
        (``replicator.adapters.oci.copy.unlist_referrer``); the subject, or None."""
        return unlist_referrer(self.registries, ImageRef(host, repository, digest=digest))
