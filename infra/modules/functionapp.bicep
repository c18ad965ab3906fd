// The function app on the Flex Consumption plan (Linux, Python 3.11) with the
// user-assigned identity, identity-based storage connections and every app setting.
param name string
param planName string
param location string
param tags object = {}
param serviceName string = 'replicator'
param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string
param maximumInstanceCount int = 40
param instanceMemoryMB int = 2048
param pythonVersion string = '3.11'

@description('The REPLICATOR_* settings (CONTRACT.md), built by main.bicep.')
param replicatorSettings object

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

var storageSuffix = environment().suffixes.storage
var hostSettings = {
  // Host storage and the jobs queue: identity-based, no keys (REPLICATOR_QUEUE_CONNECTION
  // names this connection; the replicator derives the queue and table URIs from it too).
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: 'https://${storage.name}.blob.${storageSuffix}'
  AzureWebJobsStorage__queueServiceUri: 'https://${storage.name}.queue.${storageSuffix}'
  AzureWebJobsStorage__tableServiceUri: 'https://${storage.name}.table.${storageSuffix}'
  // The identity the Azure SDK credentials use (ManagedIdentityCredential).
  AZURE_CLIENT_ID: identityClientId
  // Application Insights through OpenTelemetry, Entra ingestion (local auth is off).
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }

  resource appSettings 'config' = {
    name: 'appsettings'
    properties: union(hostSettings, replicatorSettings)
  }
}

output id string = functionApp.id
output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
