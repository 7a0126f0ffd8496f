{{/* Names. */}}
{{- define "crossfarm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "crossfarm.fullname" -}}
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

{{- define "crossfarm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "crossfarm.labels" -}}
helm.sh/chart: {{ include "crossfarm.chart" . }}
{{ include "crossfarm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "crossfarm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crossfarm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "crossfarm.secretName" -}}
{{- default (printf "%s-secrets" (include "crossfarm.fullname" .)) .Values.existingSecret }}
{{- end }}

{{- define "crossfarm.controllerUrl" -}}
{{- printf "http://%s-controller:%v" (include "crossfarm.fullname" .) .Values.controller.service.port }}
{{- end }}

{{- define "crossfarm.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s-redis:6379/0" (include "crossfarm.fullname" .) }}
{{- else }}
{{- required "redis.url is required when redis.enabled is false" .Values.redis.url }}
{{- end }}
{{- end }}

{{- define "crossfarm.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The environment the controller and every worker share: the one broker, the one bucket,
and the one visibility timeout (see shared/broker.py).
*/}}
{{- define "crossfarm.sharedEnv" -}}
- name: CROSSFARM_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "crossfarm.secretName" . }}
      key: redis-url
- name: CROSSFARM_S3_ENDPOINT
  value: {{ required "s3.endpoint is required" .Values.s3.endpoint | quote }}
- name: CROSSFARM_S3_BUCKET
  value: {{ .Values.s3.bucket | quote }}
- name: CROSSFARM_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "crossfarm.secretName" . }}
      key: s3-access-key
- name: CROSSFARM_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "crossfarm.secretName" . }}
      key: s3-secret-key
- name: CROSSFARM_WORKER_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "crossfarm.secretName" . }}
      key: worker-token
- name: CROSSFARM_VISIBILITY_TIMEOUT_S
  value: {{ .Values.farm.visibilityTimeoutSeconds | int64 | quote }}
{{- end }}

{{/* A name → value map as a list of env entries, in name order. */}}
{{- define "crossfarm.envMap" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* The queues a pool consumes, as worker/app.py's queues_for() picks them: host first. */}}
{{- define "crossfarm.workerQueues" -}}
{{- $queues := list (printf "crossfarm.builds.%s" .arch) }}
{{- range .crossArches | default list }}
{{- if ne . $.arch }}
{{- $queues = append $queues (printf "crossfarm.builds.%s.cross" .) }}
{{- end }}
{{- end }}
{{- join "," ($queues | uniq) }}
{{- end }}
