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

@description('REPLICATOR_RATE_LIMITS: {"<login server>": {"read": N, "write": N, "referrers": N, "delete": N, "token": N}, "arm": {"write": N}}, requests a minute; empty: an ACR\'s SKU limits.')
param rateLimits object = {}

@description('REPLICATOR_SOURCE_SHARE: the fraction of the source\'s per-registry limits the whole replicator may use; the rest is headroom for production pulls.')
param sourceShare string = '0.5'

@description('REPLICATOR_TARGET_SHARE: the same for each DR target.')
param targetShare string = '1.0'

@description('REPLICATOR_ACR_AUDIENCE: Entra audience of ACR\'s token exchange; empty: from the login server\'s cloud suffix.')
param acrAudience string = ''

@description('REPLICATOR_VERIFY_SWEEP: off, or how many images each reconcile pass audits like verify.')
param verifySweep string = 'off'

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

@description('The deploying principal, granted data access to the storage account (azd: AZURE_PRINCIPAL_ID).')
param principalId string = ''

@description('Its type: User, ServicePrincipal or Group (azd: AZURE_PRINCIPAL_TYPE); empty: ARM infers it.')
@allowed(['', 'User', 'ServicePrincipal', 'Group'])
param principalType string = ''

@description('Role-assignment mode of the source registry: rbac ("RBAC Registry Permissions") or abac ("RBAC Registry + ABAC Repository Permissions", roleAssignmentMode AbacRepositoryPermissions). It picks the roles granted there; doctor reports the real one.')
@allowed(['rbac', 'abac'])
param sourceRoleAssignmentMode string = 'rbac'

@description('Role-assignment mode of the targets (rbac or abac), unless targetRoleAssignmentModes names one.')
@allowed(['rbac', 'abac'])
param targetRoleAssignmentMode string = 'rbac'

@description('Per target: {"<target ARM id>": "rbac" | "abac"}, overriding targetRoleAssignmentMode.')
param targetRoleAssignmentModes object = {}

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

// The role table (built-in roles with their published actions, and the grant matrix:
// strategy x delete policy x role-assignment mode -> role keys), shared with the code,
// doctor and the test doubles. Only indexed here: no role id is written in Bicep. Branches
// are indexed with brackets ('import' is a Bicep keyword).
var roleTable = loadJsonContent('../replicator/adapters/acr/roles.json')
var grantMatrix = roleTable.matrix
var deletesPropagate = toLower(trim(deletePolicy)) != 'keep'
// The paths the targets take (import, copy), from their strategies.
var targetPaths = flatten(map(targetList, target => grantMatrix.strategies[target.?strategy ?? 'auto']))
var sourceGrants = grantMatrix.source[sourceRoleAssignmentMode]
var sourceRoleKeys = union(
  sourceGrants['always'],
  contains(targetPaths, 'import') ? sourceGrants['import'] : [],
  contains(targetPaths, 'copy') ? sourceGrants['copy'] : []
)
var targetGrants = map(targetList, target => {
  paths: grantMatrix.strategies[target.?strategy ?? 'auto']
  grants: grantMatrix.target[targetRoleAssignmentModes[?target.?resource_id ?? ''] ?? targetRoleAssignmentMode]
})
var targetRoleKeys = map(targetGrants, target => union(
  target.grants['always'],
  contains(target.paths, 'import') ? target.grants['import'] : [],
  contains(target.paths, 'copy') ? target.grants['copy'] : [],
  deletesPropagate ? target.grants['delete'] : []
))

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
  }
}

module deployerRoles 'modules/deployer-roles.bicep' = if (!empty(principalId)) {
  name: 'deployer-roles'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    principalId: principalId
    principalType: principalType
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
      REPLICATOR_REGISTRY_SKUS: string(registrySkus)
      REPLICATOR_RATE_LIMITS: empty(rateLimits) ? '' : string(rateLimits)
      REPLICATOR_SOURCE_SHARE: sourceShare
      REPLICATOR_TARGET_SHARE: targetShare
      REPLICATOR_ACR_AUDIENCE: acrAudience
      REPLICATOR_VERIFY_SWEEP: verifySweep
    }
  }
}

// Same tenant, on the source: the importer role when a target imports (import by resource
// id needs read there, or ARM answers LinkedAuthorizationFailed), AcrPull when a target is
// copied to (on ABAC registries: Repository Reader, and Catalog Lister to list). Across
// tenants the source's owner grants AcrPull (Repository Reader on ABAC) to the federated
// app in their tenant (docs/deploy.md), which no deployment here can do.
module sourceRoles 'modules/registry-roles.bicep' = if (!crossTenant) {
  name: 'roles-source'
  scope: resourceGroup(sourceParts[2], sourceParts[4])
  params: {
    registryName: sourceName
    principalId: identity.outputs.principalId
    roleKeys: sourceRoleKeys
  }
}

// Each target: the importer role when it imports, AcrPush when it is copied to (an import
// target gets none: its referrers come by import too), AcrDelete only when deletes
// propagate; on ABAC registries the Repository Writer/Contributor and Catalog Lister roles.
module targetRoles 'modules/registry-roles.bicep' = [
  for (target, i) in targetList: if (!empty(target.?resource_id ?? '')) {
    name: 'roles-target-${i}'
    scope: resourceGroup(split(target.resource_id, '/')[2], split(target.resource_id, '/')[4])
    params: {
      registryName: last(split(target.resource_id, '/'))
      principalId: identity.outputs.principalId
      roleKeys: targetRoleKeys[i]
    }
  }
]

// Each registry's SKU (Basic, Standard, Premium), read from the registries by the role
// modules: the worker paces itself by the SKU's published throttling limits. A source in
// another tenant is not readable from here: it is left out, and its limits come from
// REPLICATOR_RATE_LIMITS or the most conservative SKU's.
// (A for-expression, not a lambda: a module collection cannot be indexed by a lambda's
// variable; ARM's if() evaluates only the branch taken, so an undeployed module is not read.)
var targetSkuEntries = [
  for (target, i) in targetList: empty(target.?resource_id ?? '')
    ? {}
    : { loginServer: target.login_server, sku: targetRoles[i].outputs.sku }
]
var skuEntries = filter(
  concat(crossTenant ? [] : [{ loginServer: source, sku: sourceRoles.outputs.sku }], targetSkuEntries),
  entry => contains(entry, 'sku')
)
var registrySkus = toObject(skuEntries, entry => entry.loginServer, entry => entry.sku)

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
output REPLICATOR_SOURCE_ROLES array = crossTenant ? [] : map(sourceRoleKeys, key => roleTable.roles[key].name)
