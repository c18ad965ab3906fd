// Log alert rules on Application Insights: poison messages, failed jobs, lag p95, drift,
// registry throttling.
// The queries live in infra/queries/*.kql, shared with the workbook and docs/operations.md.
param location string
param tags object = {}
param applicationInsightsId string
param actionGroupName string
param alertEmail string = ''
param lagP95ThresholdSeconds int = 900
param failedJobsThreshold int = 0

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'acrrepl'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var rules = [
  {
    name: 'poison-messages'
    displayName: 'ACR replicator: poison messages'
    description: 'Jobs failed every delivery and sit in replication-jobs-poison. Read the status table for the reason, fix it, then POST /api/replay.'
    severity: 1
    query: loadTextContent('../queries/poison.kql')
    column: 'poison'
    threshold: 0
    dimensions: []
    frequency: 'PT5M'
    window: 'PT15M'
  }
  {
    name: 'failed-jobs'
    displayName: 'ACR replicator: failed jobs'
    description: 'Jobs ended failed (a permanent error: permissions, a missing repository, an unsupported artifact).'
    severity: 2
    query: loadTextContent('../queries/failed-jobs.kql')
    column: 'failed'
    threshold: failedJobsThreshold
    dimensions: ['target']
    frequency: 'PT5M'
    window: 'PT15M'
  }
  {
    name: 'lag-p95'
    displayName: 'ACR replicator: replication lag p95'
    description: 'The 95th percentile of source push to DR availability is over ${lagP95ThresholdSeconds} s.'
    severity: 2
    query: loadTextContent('../queries/lag-p95.kql')
    column: 'lag_p95'
    threshold: lagP95ThresholdSeconds
    dimensions: ['target']
    frequency: 'PT15M'
    window: 'PT1H'
  }
  {
    name: 'drift'
    displayName: 'ACR replicator: drift persists'
    description: 'Every reconcile in the last 2 hours found tags missing or stale in a DR registry.'
    severity: 2
    query: loadTextContent('../queries/drift.kql')
    column: 'drift'
    threshold: 0
    dimensions: ['target']
    frequency: 'PT30M'
    window: 'PT2H'
  }
  {
    name: 'throttled'
    displayName: 'ACR replicator: registry throttling'
    description: 'A registry answered the replicator 429 (issue 17): its budget is more than the registry allows, or its buckets are spent by others. Check REPLICATOR_REGISTRY_SKUS, REPLICATOR_RATE_LIMITS and the shares; GET /api/status shows the budgets.'
    severity: 3
    query: loadTextContent('../queries/throttled.kql')
    column: 'throttled'
    threshold: 0
    dimensions: ['registry', 'bucket']
    frequency: 'PT15M'
    window: 'PT1H'
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [
  for rule in rules: {
    name: 'acr-replicator-${rule.name}'
    location: location
    tags: tags
    properties: {
      displayName: rule.displayName
      description: rule.description
      severity: rule.severity
      enabled: true
      scopes: [applicationInsightsId]
      evaluationFrequency: rule.frequency
      windowSize: rule.window
      autoMitigate: true
      criteria: {
        allOf: [
          {
            query: rule.query
            timeAggregation: 'Maximum'
            metricMeasureColumn: rule.column
            operator: 'GreaterThan'
            threshold: rule.threshold
            dimensions: [
              for dimension in rule.dimensions: {
                name: dimension
                operator: 'Include'
                values: ['*']
              }
            ]
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      actions: {
        actionGroups: empty(alertEmail) ? [] : [actionGroup.id]
      }
    }
  }
]

output alertRuleNames array = [for (rule, i) in rules: alertRules[i].name]
