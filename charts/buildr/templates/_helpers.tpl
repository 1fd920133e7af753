{{/* The chart's name, or nameOverride. */}}
{{- define "buildr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: fullnameOverride, else the release name (with the chart's
name appended unless the release name already contains it). 63 characters at most.
*/}}
{{- define "buildr.fullname" -}}
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

{{/* The namespace the build pods run in and every namespaced object goes to. */}}
{{- define "buildr.namespace" -}}
{{- default .Release.Namespace .Values.namespace.name }}
{{- end }}

{{- define "buildr.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "buildr.labels" -}}
helm.sh/chart: {{ include "buildr.chart" . }}
{{ include "buildr.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "buildr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "buildr.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount CI runners use. */}}
{{- define "buildr.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "buildr.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The janitor's own ServiceAccount. */}}
{{- define "buildr.janitor.serviceAccountName" -}}
{{- if .Values.janitor.serviceAccount.create }}
{{- default (printf "%s-janitor" (include "buildr.fullname" .) | trunc 63 | trimSuffix "-") .Values.janitor.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.janitor.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The janitor's image reference: repository:tag (tag defaults to appVersion) or @digest. */}}
{{- define "buildr.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}
