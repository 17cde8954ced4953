{{/* Chart name, overridable. */}}
{{- define "pgbaseline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, unless it already contains the chart name. */}}
{{- define "pgbaseline.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pgbaseline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: stable across upgrades. */}}
{{- define "pgbaseline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgbaseline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pgbaseline.labels" -}}
helm.sh/chart: {{ include "pgbaseline.chart" . }}
{{ include "pgbaseline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: pgbaseline
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{- define "pgbaseline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pgbaseline.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* "true" when leader election runs: by value, or because there is more than one replica. */}}
{{- define "pgbaseline.leaderElection" -}}
{{- if and (not .Values.scaleOut.enabled) (or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1)) -}}true{{- end -}}
{{- end -}}

{{- define "pgbaseline.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The rules the operator needs on DatabaseSecurityPolicies and Events, and nothing more:
read and watch policies, write only their status, record events.
*/}}
{{- define "pgbaseline.policyRules" -}}
- apiGroups: [pgbaseline.io]
  resources: [databasesecuritypolicies]
  verbs: [get, list, watch]
- apiGroups: [pgbaseline.io]
  resources: [databasesecuritypolicies/status]
  verbs: [get, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if ne .Values.operator.policyReports "off" }}
# Policy reports: server-side apply (create + patch), list by label, delete.
- apiGroups: [openreports.io]
  resources: [reports]
  verbs: [list, create, patch, delete]
- apiGroups: [wgpolicyk8s.io]
  resources: [policyreports]
  verbs: [list, create, patch, delete]
{{- end }}
{{- end -}}
