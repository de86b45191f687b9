{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "coffer-kbs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name: the release name, or release-chart when the release name does not contain the chart's. */}}
{{- define "coffer-kbs.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "coffer-kbs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coffer-kbs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "coffer-kbs.labels" -}}
{{ include "coffer-kbs.selectorLabels" . }}
app.kubernetes.io/part-of: coffer
app.kubernetes.io/component: key-broker
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "coffer-kbs.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/* Secret names: the given one, else <fullname>-keys / -db / -tls (the kustomize base's names for release coffer-kbs). */}}
{{- define "coffer-kbs.keysSecret" -}}
{{- .Values.secrets.keys.name | default (printf "%s-keys" (include "coffer-kbs.fullname" .)) }}
{{- end }}
{{- define "coffer-kbs.dbSecret" -}}
{{- .Values.secrets.db.name | default (printf "%s-db" (include "coffer-kbs.fullname" .)) }}
{{- end }}
{{- define "coffer-kbs.tlsSecret" -}}
{{- .Values.secrets.tls.name | default (printf "%s-tls" (include "coffer-kbs.fullname" .)) }}
{{- end }}

{{/* The container securityContext every container of the pod gets. */}}
{{- define "coffer-kbs.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* minAvailable of the PodDisruptionBudget: the value, or replicas - 1. */}}
{{- define "coffer-kbs.minAvailable" -}}
{{- if ne (toString .Values.podDisruptionBudget.minAvailable) "" }}
{{- .Values.podDisruptionBudget.minAvailable }}
{{- else }}
{{- sub (int .Values.replicaCount) 1 }}
{{- end }}
{{- end }}
