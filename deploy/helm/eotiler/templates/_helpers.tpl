{{/* Names and labels shared by every template. */}}
{{- define "eotiler.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "eotiler.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "eotiler.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{/* The Redis URL every pod shares: the chart's Redis, or externalRedis.url. */}}
{{- define "eotiler.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "eotiler.fullname" .) -}}
{{- else -}}
{{- .Values.externalRedis.url -}}
{{- end -}}
{{- end -}}

{{- define "eotiler.s3Secret" -}}
{{- .Values.s3.existingSecret | default (printf "%s-s3" (include "eotiler.fullname" .)) -}}
{{- end -}}

{{- define "eotiler.clientsSecret" -}}
{{- .Values.clientsExistingSecret | default (printf "%s-clients" (include "eotiler.fullname" .)) -}}
{{- end -}}

{{- define "eotiler.hasClients" -}}
{{- if or .Values.clients .Values.clientsExistingSecret -}}true{{- end -}}
{{- end -}}
