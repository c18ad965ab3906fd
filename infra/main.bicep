// acr-replicator: everything `azd up` provisions. The Event Grid subscription comes after
// the code is deployed (infra/eventgrid.bicep, run by the azd postdeploy hook), because
// Event Grid refuses a function it cannot find yet.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names the resource group and seeds resourceToken.')
param environmentName string

@minLength(1)
@description('Region of the function app, storage and monitoring.')
param location string

@description('Resource group name; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('ARM id of the source registry (/subscriptions/.../registries/<name>).')
param sourceRegistryResourceId string

@description('Login server of the source registry; empty: <name>.azurecr.io from its id.')
param sourceLoginServer string = ''

@description('Cross-tenant source: the tenant that holds the source registry; empty: this tenant.')
param sourceTenantId string = ''

@description('Cross-tenant source: the multi-tenant app (client id) that trusts the function identity through a federated credential and holds AcrPull on the source.')
param sourceAppId string = ''

@description('Comma list of ARM ids of the DR (target) registries; one or more.')
param targetRegistryIds string = ''

@description('Strategy for the targets named by targetRegistryIds: auto, import or copy.')
@allowed(['auto', 'import', 'copy'])
param targetStrategy string = 'auto'

@description('Advanced, wins over targetRegistryIds: REPLICATOR_TARGETS as JSON, [{"login_server": "...", "resource_id": "/subscriptions/...", "strategy": "auto|import|copy"}].')
param targets string = ''

@description('REPLICATOR_INCLUDE: comma list of globs on repository:tag.')
param include string = ''

@description('REPLICATOR_EXCLUDE: comma list of globs on repository:tag.')
param exclude string = ''

@description('REPLICATOR_DELETE_POLICY: keep, propagate or propagate-after:<duration>.')
param deletePolicy string = 'keep'

@description('REPLICATOR_RECONCILE_SCHEDULE: NCRONTAB with six fields.')
param reconcileSchedule string = '0 */30 * * * *'

@description('REPLICATOR_UNTAGGED_DELAY: how long an untagged push waits, e.g. 60s.')
param untaggedDelay string = '60s'

@description('Flex Consumption: most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption: memory per instance.')
@allowed([2048, 4096])
param instanceMemoryMB int = 2048

@description('Alert when the 95th percentile of replication lag passes this many seconds.')
param lagP95ThresholdSeconds int = 900

@description('Where alerts are mailed; empty: alerts fire without an action group.')
param alertEmail string = ''

@description('The deploying user, granted data access to the storage account (azd: AZURE_PRINCIPAL_ID).')
param principalId string = ''

param tags object = {}

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var allTags = union(tags, { 'azd-env-name': environmentName })
var sourceParts = split(sourceRegistryResourceId, '/')
var sourceName = last(sourceParts)
var source = empty(sourceLoginServer) ? toLower('${sourceName}${acrSuffix}') : sourceLoginServer
var crossTenant = !empty(sourceTenantId) && sourceTenantId != tenant().tenantId
var acrSuffix = environment().suffixes.acrLoginServer // .azurecr.io in the public cloud
var targetIds = filter(map(split(targetRegistryIds, ','), id => trim(id)), id => !empty(id))
var generatedTargets = map(targetIds, id => {
  login_server: toLower('${last(split(id, '/'))}${acrSuffix}')
  resource_id: id
  strategy: targetStrategy
})
var targetList = empty(targets) ? generatedTargets : json(targets)
var identities = crossTenant
  ? { '${source}': { mode: 'federated', tenant_id: sourceTenantId, client_id: sourceAppId } }
  : {}

// Role ids (built-in roles, the same in every tenant).
var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d'
var acrPushRoleId = '8311e382-0749-4cb8-b61a-304f252e45ec'
var acrDeleteRoleId = 'c2f4ef07-c644-48eb-af81-4b1b4947fb11'
var acrImporterRoleId = '577a9874-89fd-4f24-9dbd-b5034d0ad23a' // Container Registry Data Importer and Data Reader

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: allTags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${resourceToken}'
    location: location
    tags: allTags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: allTags
    principalId: identity.outputs.principalId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: allTags
    principalId: identity.outputs.principalId
    userPrincipalId: principalId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: '${abbrs.webSitesFunctions}${resourceToken}'
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: allTags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    replicatorSettings: {
      REPLICATOR_SOURCE: source
      REPLICATOR_SOURCE_RESOURCE_ID: sourceRegistryResourceId
      REPLICATOR_TARGETS: string(targetList)
      REPLICATOR_INCLUDE: include
      REPLICATOR_EXCLUDE: exclude
      REPLICATOR_DELETE_POLICY: deletePolicy
      REPLICATOR_QUEUE_CONNECTION: 'AzureWebJobsStorage'
      REPLICATOR_RECONCILE_SCHEDULE: reconcileSchedule
      REPLICATOR_ARM_ENDPOINT: environment().resourceManager
      REPLICATOR_PLAIN_HTTP: ''
      REPLICATOR_UNTAGGED_DELAY: untaggedDelay
      REPLICATOR_IDENTITY: 'managed'
      REPLICATOR_IDENTITIES: string(identities)
    }
  }
}

// Same tenant: AcrPull on the source. Across tenants the source's owner grants AcrPull
// to the federated app in their tenant (docs/deploy.md), which no deployment here can do.
module sourceRoles 'modules/registry-roles.bicep' = if (!crossTenant) {
  name: 'roles-source'
  scope: resourceGroup(sourceParts[2], sourceParts[4])
  params: {
    registryName: sourceName
    principalId: identity.outputs.principalId
    roleIds: [acrPullRoleId]
  }
}

// Each target: the import role for ImportImage, AcrPush for the data-plane copy (auto needs
// both), AcrDelete only when deletes propagate.
module targetRoles 'modules/registry-roles.bicep' = [
  for (target, i) in targetList: if (!empty(target.?resource_id ?? '')) {
    name: 'roles-target-${i}'
    scope: resourceGroup(split(target.resource_id, '/')[2], split(target.resource_id, '/')[4])
    params: {
      registryName: last(split(target.resource_id, '/'))
      principalId: identity.outputs.principalId
      roleIds: concat(
        (target.?strategy ?? 'auto') != 'copy' ? [acrImporterRoleId] : [],
        (target.?strategy ?? 'auto') != 'import' ? [acrPushRoleId] : [],
        deletePolicy != 'keep' ? [acrDeleteRoleId] : []
      )
    }
  }
]

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: allTags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    actionGroupName: '${abbrs.insightsActionGroups}${resourceToken}'
    alertEmail: alertEmail
    lagP95ThresholdSeconds: lagP95ThresholdSeconds
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: allTags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_ID string = functionApp.outputs.id
output AZURE_IDENTITY_ID string = identity.outputs.id
output AZURE_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_STORAGE_ACCOUNT_ID string = storage.outputs.id
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_DEADLETTER_CONTAINER string = storage.outputs.deadLetterContainerName
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output REPLICATOR_SOURCE string = source
output REPLICATOR_SOURCE_RESOURCE_ID string = sourceRegistryResourceId
output REPLICATOR_CROSS_TENANT bool = crossTenant
