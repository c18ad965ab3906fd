// An Azure Monitor workbook: lag percentiles, job outcomes, drift and throughput.
param location string
param tags object = {}
param applicationInsightsId string
param displayName string = 'ACR replicator'

var panels = [
  { name: 'lag', title: 'Replication lag (s): p50 / p95 / p99 per target', query: loadTextContent('../queries/workbook-lag.kql'), chart: 'timechart' }
  { name: 'outcomes', title: 'Jobs by outcome', query: loadTextContent('../queries/workbook-outcomes.kql'), chart: 'barchart' }
  { name: 'drift', title: 'Drift at reconcile (tags) per target and kind', query: loadTextContent('../queries/workbook-drift.kql'), chart: 'timechart' }
  { name: 'throughput', title: 'Bytes copied, queue depth, poison messages', query: loadTextContent('../queries/workbook-throughput.kql'), chart: 'timechart' }
]

var items = [
  for panel in panels: {
    type: 3
    name: panel.name
    content: {
      version: 'KqlItem/1.0'
      title: panel.title
      query: panel.query
      size: 0
      timeContext: { durationMs: 86400000 }
      queryType: 0
      resourceType: 'microsoft.insights/components'
      visualization: panel.chart
    }
  }
]

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, applicationInsightsId, 'acr-replicator-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: applicationInsightsId
    serializedData: string({
      version: 'Notebook/1.0'
      items: items
      fallbackResourceIds: [applicationInsightsId]
    })
  }
}

output id string = workbook.id
