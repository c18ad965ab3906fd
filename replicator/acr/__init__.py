"""Azure Container Registry specifics: ARM (ImportImage, registry properties, roles)."""
