// Roles for the function's identity on one registry (deployed into the registry's group).
// Roles are named by their keys in the role table, replicator/adapters/acr/roles.json, whose grant
// matrix main.bicep reads; their ids come from the same table.
param registryName string
param principalId string

@description('Keys of roles in replicator/adapters/acr/roles.json (for example importer, acrPush).')
param roleKeys array

var roleTable = loadJsonContent('../../replicator/adapters/acr/roles.json')
var roleIds = map(roleKeys, key => roleTable.roles[key].id)

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in roleIds: {
    name: guid(registry.id, principalId, roleId)
    scope: registry
    properties: {
      principalId: principalId
      principalType: 'ServicePrincipal' // a managed identity
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    }
  }
]

output roleIds array = roleIds

// The registry's SKU, read at deployment: the worker paces itself by the SKU's published
// throttling limits (REPLICATOR_REGISTRY_SKUS) and needs no ARM read of the registry at run
// time (AcrPush and the ABAC roles do not include registries/read).
output sku string = registry.sku.name
