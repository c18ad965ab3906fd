#!/bin/sh
# azd postdeploy hook: subscribe the deployed on_registry_event function to the source
# registry's events (infra/eventgrid.bicep). azd exports the main.bicep outputs and the
# environment's values to this script. Needs the Azure CLI (`az login`).
set -eu

: "${AZURE_FUNCTION_APP_NAME:?run through azd (azd up / azd deploy)}"
: "${AZURE_RESOURCE_GROUP:?}"
: "${AZURE_FUNCTION_APP_ID:?}"
: "${REPLICATOR_SOURCE_RESOURCE_ID:?}"

if [ "${REPLICATOR_CROSS_TENANT:-false}" = "true" ]; then
  echo "Cross-tenant source: Event Grid cannot deliver to a function in another tenant by resource id."
  echo "Create the subscription in the source tenant with a webhook endpoint (docs/deploy.md, step 'Cross-tenant')."
  echo "Until then the reconcile timer (REPLICATOR_RECONCILE_SCHEDULE) keeps the DR registry in step."
  exit 0
fi

source_sub=$(echo "$REPLICATOR_SOURCE_RESOURCE_ID" | cut -d/ -f3)
source_rg=$(echo "$REPLICATOR_SOURCE_RESOURCE_ID" | cut -d/ -f5)
source_name=$(echo "$REPLICATOR_SOURCE_RESOURCE_ID" | cut -d/ -f9)

# Event Grid validates the destination: wait until the host has indexed the function.
tries=0
until az functionapp function show --resource-group "$AZURE_RESOURCE_GROUP" \
    --name "$AZURE_FUNCTION_APP_NAME" --function-name on_registry_event \
    --query name --output tsv >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 30 ]; then
    echo "on_registry_event is not indexed on $AZURE_FUNCTION_APP_NAME after 5 minutes; see the app's logs, then run 'azd hooks run postdeploy'." >&2
    exit 1
  fi
  sleep 10
done

location=$(az acr show --ids "$REPLICATOR_SOURCE_RESOURCE_ID" --query location --output tsv)
storage_id=$(az storage account show --resource-group "$AZURE_RESOURCE_GROUP" \
  --name "$AZURE_STORAGE_ACCOUNT_NAME" --query id --output tsv)

# Comma lists -> JSON arrays for the Bicep parameters.
to_json_array() {
  printf '%s' "${1:-}" | awk -v RS=',' 'BEGIN { printf "[" } { gsub(/^[ \t\n]+|[ \t\n]+$/, ""); if ($0 != "") { printf "%s\"%s\"", (n++ ? "," : ""), $0 } } END { printf "]" }'
}

az deployment group create \
  --subscription "$source_sub" \
  --resource-group "$source_rg" \
  --name "acr-replicator-eventgrid-${AZURE_ENV_NAME:-default}" \
  --template-file "$(dirname "$0")/../eventgrid.bicep" \
  --parameters \
    sourceRegistryName="$source_name" \
    location="$location" \
    functionAppId="$AZURE_FUNCTION_APP_ID" \
    identityId="$AZURE_IDENTITY_ID" \
    deadLetterStorageAccountId="$storage_id" \
    deadLetterContainerName="${AZURE_DEADLETTER_CONTAINER:-eventgrid-deadletter}" \
    includeRepositoryPrefixes="$(to_json_array "${REPLICATOR_EVENT_REPOSITORY_PREFIXES:-}")" \
    excludeRepositoryPrefixes="$(to_json_array "${REPLICATOR_EVENT_EXCLUDE_PREFIXES:-}")" \
  --output none

echo "Event Grid: $source_name -> $AZURE_FUNCTION_APP_NAME/on_registry_event subscribed."
echo "Check the set-up: acr-replicator doctor (docs/deploy.md)."
