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

{{- define "crossfarm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "crossfarm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "crossfarm.secretName" -}}
{{- default (printf "%s-secrets" (include "crossfarm.fullname" .)) .Values.existingSecret }}
{{- end }}

{{- define "crossfarm.workerName" -}}
{{- printf "%s-worker-%s" (include "crossfarm.fullname" .root) .pool | trunc 63 | trimSuffix "-" }}
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

{{- define "crossfarm.postgres" -}}
{{- eq .Values.database.type "postgresql" }}
{{- end }}

{{/*
The Secret's data, as a YAML map of key → plain value. Every value comes from the
values or from the Secret already in the cluster (`helm upgrade` can look it up; an
offline render cannot): the chart never generates one, so two renders of the same
values are the same. A required value found in neither place fails the render.
*/}}
{{- define "crossfarm.secretData" -}}
{{- $stored := dict }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "crossfarm.secretName" .) }}
{{- if $existing }}
{{- $stored = $existing.data | default dict }}
{{- end }}
{{- $pg := eq .Values.database.type "postgresql" }}
{{- $fields := list
  (list "worker-token" .Values.workerToken "workerToken" true)
  (list "client-token" .Values.clientToken "clientToken" true)
  (list "operator-token" .Values.operatorToken "operatorToken" true)
  (list "secrets-key" .Values.secretsKey "secretsKey" $pg)
  (list "database-password" .Values.database.postgresql.password "database.postgresql.password" $pg)
  (list "s3-access-key" .Values.s3.accessKey "s3.accessKey" true)
  (list "s3-secret-key" .Values.s3.secretKey "s3.secretKey" true) }}
{{- $data := dict "redis-url" (include "crossfarm.redisUrl" .) }}
{{- range $fields }}
{{- $key := index . 0 }}
{{- $given := index . 1 }}
{{- $value := index . 2 }}
{{- $required := index . 3 }}
{{- $kept := index $stored $key | default "" | b64dec }}
{{- $chosen := $given | default $kept }}
{{- if $chosen }}
{{- $_ := set $data $key $chosen }}
{{- else if $required }}
{{- fail (printf "%s is empty and no Secret of this release holds %s yet: set it (e.g. --set-string %s=$(openssl rand -hex 24)), or set existingSecret to a Secret you manage (the GitOps path, see values.yaml)" $value $key $value) }}
{{- end }}
{{- end }}
{{- toYaml $data }}
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

{{/*
Extra env entries (a name → value map) after the chart's own (a YAML list): a name
the chart already sets would be rendered twice, and Kubernetes keeps the last one
silently, so it is refused instead. Args: dict "env" "chart" "where".
*/}}
{{- define "crossfarm.extraEnv" -}}
{{- $taken := dict }}
{{- range (.chart | fromYamlArray) }}
{{- $_ := set $taken .name true }}
{{- end }}
{{- range $name, $value := .env }}
{{- if hasKey $taken $name }}
{{- fail (printf "%s.%s: the chart sets %s itself; set the chart value that feeds it instead (values.yaml)" $.where $name $name) }}
{{- end }}
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

{{/* What a worker pod is given to stop: the longest build it may be running, and a margin. */}}
{{- define "crossfarm.workerGraceSeconds" -}}
{{- add .Values.controller.maxTimeoutSeconds .Values.workers.drainMarginSeconds | int64 }}
{{- end }}

{{/*
A pool with the workers' defaults under it, as YAML: a pool's own value wins, maps
(env, resources, podAnnotations) are merged key by key.
*/}}
{{- define "crossfarm.pool" -}}
{{- $w := .root.Values.workers }}
{{- $defaults := dict
  "concurrency" $w.concurrency "resources" $w.resources "podAnnotations" $w.podAnnotations
  "tolerations" $w.tolerations "affinity" $w.affinity "env" $w.env
  "extraVolumes" $w.extraVolumes "extraVolumeMounts" $w.extraVolumeMounts
  "engine" .root.Values.engine "crossArches" (list) "nodeSelector" (dict) }}
{{- $pool := merge (deepCopy .pool) (deepCopy $defaults) }}
{{- $_ := set $pool "name" (default $pool.arch $pool.name) }}
{{- /* merge would take a pool's 0 or false for "unset": these are laid over by key */}}
{{- $builder := deepCopy .root.Values.builder }}
{{- range $key, $value := .pool.builder | default dict }}
{{- $_ := set $builder $key $value }}
{{- end }}
{{- $_ = set $pool "builder" $builder }}
{{- $autoscaling := dict "minReplicas" 1 "maxReplicas" 4 }}
{{- range $key, $value := .pool.autoscaling | default dict }}
{{- $_ := set $autoscaling $key $value }}
{{- end }}
{{- $_ = set $pool "autoscaling" $autoscaling }}
{{- toYaml $pool }}
{{- end }}

{{/* The controller's own environment, after the shared one. */}}
{{- define "crossfarm.controllerEnv" -}}
{{- $c := .Values.controller }}
{{- $secret := include "crossfarm.secretName" . }}
- name: CROSSFARM_HOST
  value: "0.0.0.0"
- name: CROSSFARM_PORT
  value: {{ $c.port | int | quote }}
{{- if eq .Values.database.type "postgresql" }}
{{- $db := .Values.database.postgresql }}
# No password in the URL: libpq (under psycopg) reads it from PGPASSWORD.
- name: CROSSFARM_DATABASE_URL
  value: {{ printf "postgresql+psycopg://%s@%s:%v/%s?sslmode=%s" (urlquery $db.user) (required "database.postgresql.host is required with database.type=postgresql" $db.host) (int $db.port) (urlquery $db.database) $db.sslmode | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: database-password
- name: CROSSFARM_SECRETS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: secrets-key
{{- else }}
- name: CROSSFARM_DATABASE_URL
  value: "sqlite:////data/crossfarm.db"
- name: CROSSFARM_SECRETS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: secrets-key
      # SQLite without one: the controller keeps a key file beside its database
      optional: true
{{- end }}
- name: CROSSFARM_OPERATOR_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: operator-token
      # an existingSecret without it: draining needs no token
      optional: true
- name: CROSSFARM_CLIENT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: client-token
      # an existingSecret without it: builds need no token
      optional: true
{{- with .Values.s3.publicEndpoint }}
- name: CROSSFARM_S3_PUBLIC_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: CROSSFARM_MIGRATE_ON_START
  value: {{ .Values.database.migrateOnStart | ternary "true" "false" | quote }}
- name: CROSSFARM_DEFAULT_TIMEOUT_S
  value: {{ $c.defaultTimeoutSeconds | int64 | quote }}
- name: CROSSFARM_MAX_TIMEOUT_S
  value: {{ $c.maxTimeoutSeconds | int64 | quote }}
{{- end }}

{{/* A worker's own environment, after the shared one. Args: dict root pool dockerHost egressDir. */}}
{{- define "crossfarm.workerEnv" -}}
{{- $pool := .pool }}
- name: CROSSFARM_CONTROLLER_URL
  value: {{ include "crossfarm.controllerUrl" .root | quote }}
- name: CROSSFARM_CROSS_ARCHES
  value: {{ join "," ($pool.crossArches | default list) | quote }}
- name: CROSSFARM_CONCURRENCY
  value: {{ $pool.concurrency | default 1 | int | quote }}
- name: CROSSFARM_BUILDER_IMAGE
  value: {{ $pool.builder.image | quote }}
- name: CROSSFARM_FETCHER_IMAGE
  value: {{ .root.Values.fetcher.image | quote }}
# A job's disk budget is a loop-mounted filesystem, which this unprivileged container
# cannot attach: 0 (no disk limit) unless the pool says otherwise (docs/security.md).
- name: CROSSFARM_JOB_DISK_BYTES
  value: {{ $pool.jobDiskBytes | default 0 | int64 | quote }}
{{- with $pool.buildCpus }}
- name: CROSSFARM_BUILD_CPUS
  value: {{ . | toString | quote }}
{{- end }}
{{- with $pool.buildMemoryBytes }}
- name: CROSSFARM_BUILD_MEMORY_BYTES
  value: {{ . | int64 | quote }}
{{- end }}
{{- with $pool.buildPids }}
- name: CROSSFARM_BUILD_PIDS
  value: {{ . | int64 | quote }}
{{- end }}
{{- if hasKey $pool "stallSeconds" }}{{/* by key: 0 turns the watchdog off */}}
- name: CROSSFARM_STALL_S
  value: {{ $pool.stallSeconds | toString | quote }}
{{- end }}
{{- with $pool.imageVolumes }}
- name: CROSSFARM_IMAGE_VOLUMES
  value: {{ . | quote }}
{{- end }}
- name: CROSSFARM_SCRATCH_DIR
  value: /scratch
- name: CROSSFARM_EGRESS_DIR
  value: {{ .egressDir | quote }}
- name: DOCKER_HOST
  value: {{ .dockerHost | quote }}
# /healthz and /readyz for the kubelet's probes, on the pod's address
- name: CROSSFARM_HEALTH_PORT
  value: {{ .root.Values.workers.healthPort | int | quote }}
- name: CROSSFARM_HEALTH_HOST
  value: "0.0.0.0"
{{- end }}

{{/* The jobs on a pool's queues that wait for a worker or run on one (the jobs table of
controller/store/schema.py; states of shared/states.py). */}}
{{- define "crossfarm.demandQuery" -}}
{{- $queues := list }}
{{- range splitList "," (include "crossfarm.workerQueues" .) }}
{{- $queues = append $queues (printf "'%s'" .) }}
{{- end }}
{{- printf "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running') AND queue IN (%s)" (join ", " $queues) }}
{{- end }}
