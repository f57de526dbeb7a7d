{{/* Name of the chart, overridable. */}}
{{- define "sessionguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every object name. Cluster-scoped objects (ClusterRoles, the admission
policy, webhook configurations) carry it too, so two releases never collide.
*/}}
{{- define "sessionguard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sessionguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "sessionguard.labels" -}}
helm.sh/chart: {{ include "sessionguard.chart" . }}
app.kubernetes.io/name: {{ include "sessionguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sessionguard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: pass (dict "ctx" $ "component" "agent"). */}}
{{- define "sessionguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sessionguard.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "sessionguard.componentLabels" -}}
{{ include "sessionguard.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "sessionguard.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end }}

{{- define "sessionguard.agentServiceAccount" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (printf "%s-agent" (include "sessionguard.fullname" .)) .Values.agent.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sessionguard.controllerServiceAccount" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (printf "%s-controller" (include "sessionguard.fullname" .)) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the webhook's CA and serving certificate. */}}
{{- define "sessionguard.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "sessionguard.fullname" .) }}
{{- end }}

{{/* Prometheus scrape annotations, unless an Operator monitor scrapes the pods. */}}
{{- define "sessionguard.scrapeAnnotations" -}}
{{- if and .ctx.Values.metrics.annotations (not .ctx.Values.serviceMonitor.enabled) (not .ctx.Values.podMonitor.enabled) }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* The same restrictions for both containers: nothing but reading. */}}
{{- define "sessionguard.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* runbook_url annotation of an alert (files/alerts.yaml), when alerts.runbookBaseURL is set. */}}
{{- define "sessionguard.runbookURL" -}}
{{- if .base }}
          runbook_url: {{ printf "%s#%s" (trimSuffix "/" .base) (lower .alert) | quote }}
{{- end }}
{{- end }}
