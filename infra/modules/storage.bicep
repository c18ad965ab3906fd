// The storage account: host storage, the jobs and poison queues, the resync plans queue
// (and its poison queue) and the dry-run plans container, the status table, the
// deployment package and the Event Grid dead letters. No keys: identity only.
// The app also creates the queues, table and plans container on first use when missing
// (an account deployed by other IaC, Azurite): these declarations are the normal path.
param name string
param location string
param tags object = {}
param principalId string

var jobsQueueName = 'replication-jobs'
var poisonQueueName = '${jobsQueueName}-poison'
var plansQueueName = 'replication-plans'
var plansPoisonQueueName = '${plansQueueName}-poison'
var plansContainerName = 'replication-plans'
var statusTableName = 'replicationstatus'
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'eventgrid-deadletter'

var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributorRoleId = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributorRoleId = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }

  resource blobs 'blobServices' = {
    name: 'default'
    resource deployment 'containers' = {
      name: deploymentContainerName
    }
    resource deadLetters 'containers' = {
      name: deadLetterContainerName
    }
    resource plans 'containers' = {
      name: plansContainerName
    }
  }

  resource queues 'queueServices' = {
    name: 'default'
    resource jobs 'queues' = {
      name: jobsQueueName
    }
    resource poison 'queues' = {
      name: poisonQueueName
    }
    resource plans 'queues' = {
      name: plansQueueName
    }
    resource plansPoison 'queues' = {
      name: plansPoisonQueueName
    }
  }

  resource tables 'tableServices' = {
    name: 'default'
    resource status 'tables' = {
      name: statusTableName
    }
  }
}

var roleIds = [
  storageBlobDataOwnerRoleId // host storage, deployment package, dead letters, dry-run plans
  storageQueueDataContributorRoleId // jobs, plans and poison queues, queue triggers
  storageTableDataContributorRoleId // status table, claims
]

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in roleIds: {
    name: guid(storage.id, principalId, roleId)
    scope: storage
    properties: {
      principalId: principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    }
  }
]

// The deploying principal's roles here are modules/deployer-roles.bicep's (principalType inferred).

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output deploymentContainerName string = deploymentContainerName
output deadLetterContainerName string = deadLetterContainerName
output jobsQueueName string = jobsQueueName
output poisonQueueName string = poisonQueueName
output plansQueueName string = plansQueueName
output plansContainerName string = plansContainerName
output statusTableName string = statusTableName
