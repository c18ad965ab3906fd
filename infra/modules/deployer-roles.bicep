// Data access to the storage account for the principal running `azd up` (a user at a
// workstation, or a service principal in CI), for doctor, replay and the status table.
// principalType is omitted unless given: ARM then infers it, so the same template works
// for users and service principals (a wrong one is refused with UnmatchedPrincipalType).
param storageAccountName string

@description('The deploying principal (azd: AZURE_PRINCIPAL_ID).')
param principalId string

@description('User, ServicePrincipal or Group (azd: AZURE_PRINCIPAL_TYPE); empty: ARM infers it.')
@allowed(['', 'User', 'ServicePrincipal', 'Group'])
param principalType string = ''

var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributorRoleId = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributorRoleId = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var roleIds = [
  storageBlobDataOwnerRoleId
  storageQueueDataContributorRoleId
  storageTableDataContributorRoleId
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in roleIds: {
    name: guid(storage.id, principalId, roleId)
    scope: storage
    properties: union(
      {
        principalId: principalId
        roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      },
      empty(principalType) ? {} : { principalType: principalType }
    )
  }
]
