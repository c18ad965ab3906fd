#!/bin/sh
# azd postdeploy hook: subscribe the deployed on_registry_event function to the source
# registry's events (infra/eventgrid.bicep). azd exports the main.bicep outputs and the
# environment's values to this script. Needs the Azure CLI (`az login`).
#
# Only one Event Grid system topic may exist per source. If the registry already has one
# (found by its `source` over the whole subscription: it may sit in any resource group),
# only the subscription is added to it, and the replicator's identity (which writes the
# dead letters) is merged into the topic's identities: the ones already there stay.
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

storage_id=$(az storage account show --resource-group "$AZURE_RESOURCE_GROUP" \
  --name "$AZURE_STORAGE_ACCOUNT_NAME" --query id --output tsv)

lower() { printf '%s' "$1" | tr '[:upper:]' '[:lower:]'; }

# The source's system topic, if it has one: ids compare without regard to case.
wanted=$(lower "$REPLICATOR_SOURCE_RESOURCE_ID")
topic_id=""
if listed=$(az eventgrid system-topic list --subscription "$source_sub" \
    --query "[].[id, source]" --output tsv 2>/dev/null); then
  topic_id=$(printf '%s\n' "$listed" | while IFS="$(printf '\t')" read -r id src; do
    if [ -n "$id" ] && [ "$(lower "$src")" = "$wanted" ]; then printf '%s' "$id"; break; fi
  done)
else
  echo "Cannot list the Event Grid system topics of subscription $source_sub (needs Microsoft.EventGrid/systemTopics/read there): creating one; if the registry already has a topic, this fails: see docs/deploy.md." >&2
fi

topic_name=""
topic_source=$REPLICATOR_SOURCE_RESOURCE_ID
keep_system_identity=false
other_identities="{}"
topic_tags="{}"
if [ -n "$topic_id" ]; then
  topic_sub=$(echo "$topic_id" | cut -d/ -f3)
  topic_rg=$(echo "$topic_id" | cut -d/ -f5)
  topic_name=$(echo "$topic_id" | cut -d/ -f9)
  location=$(az eventgrid system-topic show --ids "$topic_id" --query location --output tsv)
  topic_source=$(az eventgrid system-topic show --ids "$topic_id" --query source --output tsv)
  identity_type=$(az eventgrid system-topic show --ids "$topic_id" --query "identity.type" --output tsv)
  case "$identity_type" in *SystemAssigned*) keep_system_identity=true ;; esac
  ours=$(lower "$AZURE_IDENTITY_ID")
  other_identities=$(az eventgrid system-topic show --ids "$topic_id" \
      --query "keys(identity.userAssignedIdentities || \`{}\`)" --output tsv |
    while read -r id; do
      if [ -n "$id" ] && [ "$(lower "$id")" != "$ours" ]; then printf '%s\n' "$id"; fi
    done | awk 'BEGIN { printf "{" } { printf "%s\"%s\":{}", (n++ ? "," : ""), $0 } END { printf "}" }')
  topic_tags=$(az eventgrid system-topic show --ids "$topic_id" --query "tags || \`{}\`" --output json | tr -d '\n')
  echo "Event Grid: $source_name already has the system topic $topic_name ($topic_rg): adding the subscription to it."
else
  topic_sub=$source_sub
  topic_rg=$source_rg
  location=$(az acr show --ids "$REPLICATOR_SOURCE_RESOURCE_ID" --query location --output tsv)
fi

# Comma lists -> JSON arrays for the Bicep parameters.
to_json_array() {
  printf '%s' "${1:-}" | awk -v RS=',' 'BEGIN { printf "[" } { gsub(/^[ \t\n]+|[ \t\n]+$/, ""); if ($0 != "") { printf "%s\"%s\"", (n++ ? "," : ""), $0 } } END { printf "]" }'
}

az deployment group create \
  --subscription "$topic_sub" \
  --resource-group "$topic_rg" \
  --name "acr-replicator-eventgrid-${AZURE_ENV_NAME:-default}" \
  --template-file "$(dirname "$0")/../eventgrid.bicep" \
  --parameters \
    sourceRegistryName="$source_name" \
    sourceRegistryId="$topic_source" \
    topicName="$topic_name" \
    keepSystemAssignedIdentity="$keep_system_identity" \
    otherUserAssignedIdentities="$other_identities" \
    topicTags="$topic_tags" \
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
