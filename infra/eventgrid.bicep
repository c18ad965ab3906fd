// Event Grid: the system topic on the source registry and its subscription to the
// on_registry_event function. Deployed by the azd postdeploy hook (infra/hooks/
// postdeploy.sh), after the code is deployed and indexed (Event Grid refuses a destination
// function that does not exist yet), into the resource group of the source's existing
// system topic, or of the source when it has none. Only one system topic may exist per
// source: an existing one is kept (name, location, tags), and its identities are merged
// with the replicator's, which writes the dead letters; the ones it had stay.
targetScope = 'resourceGroup'

@description('Name of the source registry (seeds the name of a new topic).')
param sourceRegistryName string

@description('ARM id of the source registry (the topic\'s source; any resource group).')
param sourceRegistryId string

@description('Name of the source\'s existing system topic (in this resource group); empty: create one.')
param topicName string = ''

@description('The existing topic has a system-assigned identity: keep it.')
param keepSystemAssignedIdentity bool = false

@description('User-assigned identities already on the existing topic, kept: {"<identity id>": {}}.')
param otherUserAssignedIdentities object = {}

@description('Tags of the existing topic, kept.')
param topicTags object = {}

@description('Region of the source registry: a system topic lives where its source does.')
param location string = resourceGroup().location

@description('ARM id of the function app (main.bicep output AZURE_FUNCTION_APP_ID).')
param functionAppId string

@description('The Event Grid-triggered function (CONTRACT.md).')
param functionName string = 'on_registry_event'

@description('ARM id of the user-assigned identity that writes dead letters.')
param identityId string

@description('ARM id of the storage account that keeps dead letters.')
param deadLetterStorageAccountId string

param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Deliver only events whose repository starts with one of these (empty: all).')
param includeRepositoryPrefixes array = []

@description('Never deliver events whose repository starts with one of these.')
param excludeRepositoryPrefixes array = []

@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

param tags object = {}

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, sourceRegistryName))
var includedEventTypes = [
  'Microsoft.ContainerRegistry.ImagePushed'
  'Microsoft.ContainerRegistry.ImageDeleted'
  'Microsoft.ContainerRegistry.ChartPushed'
  'Microsoft.ContainerRegistry.ChartDeleted'
]
var includeFilter = empty(includeRepositoryPrefixes)
  ? []
  : [
      {
        operatorType: 'StringBeginsWith'
        key: 'data.target.repository'
        values: includeRepositoryPrefixes
      }
    ]
var excludeFilter = empty(excludeRepositoryPrefixes)
  ? []
  : [
      {
        operatorType: 'StringNotBeginsWith'
        key: 'data.target.repository'
        values: excludeRepositoryPrefixes
      }
    ]

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: empty(topicName) ? '${abbrs.eventGridSystemTopics}${resourceToken}' : topicName
  location: location
  tags: union(topicTags, tags)
  identity: {
    type: keepSystemAssignedIdentity ? 'SystemAssigned, UserAssigned' : 'UserAssigned'
    userAssignedIdentities: union(otherUserAssignedIdentities, {
      '${identityId}': {}
    })
  }
  properties: {
    source: sourceRegistryId
    topicType: 'Microsoft.ContainerRegistry.Registries'
  }
}

resource eventSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: '${abbrs.eventGridEventSubscriptions}acr-replicator'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${functionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: includedEventTypes
      enableAdvancedFilteringOnArrays: true
      advancedFilters: concat(includeFilter, excludeFilter)
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: identityId
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output EVENTGRID_SYSTEM_TOPIC_NAME string = systemTopic.name
output EVENTGRID_SUBSCRIPTION_NAME string = eventSubscription.name
