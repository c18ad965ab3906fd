"""The OCI registry client: references, transport, auth, manifests, blobs, copy."""
