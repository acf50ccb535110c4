{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "bulkhead.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources. The release name is used alone when it
already contains the chart name.
*/}}
{{- define "bulkhead.fullname" -}}
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

{{- define "bulkhead.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every resource carries.
*/}}
{{- define "bulkhead.labels" -}}
helm.sh/chart: {{ include "bulkhead.chart" . }}
{{ include "bulkhead.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bulkhead
{{- end }}

{{/*
Labels shared by all of the release's pods; a component label narrows them.
*/}}
{{- define "bulkhead.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bulkhead.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The server pods. The component label keeps the Service, the PDB and the
Deployment from selecting the migration Job's or PostgreSQL's pods.
*/}}
{{- define "bulkhead.serverSelectorLabels" -}}
{{ include "bulkhead.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "bulkhead.adminSelectorLabels" -}}
{{ include "bulkhead.selectorLabels" . }}
app.kubernetes.io/component: admin
{{- end }}

{{/*
Egress of the chart's Bulkhead pods: DNS, and PostgreSQL (the bundled one
when it is on).
*/}}
{{- define "bulkhead.egressRules" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if .Values.postgresql.enabled }}
- ports:
    - port: 5432
      protocol: TCP
  to:
    - podSelector:
        matchLabels:
          {{- include "bulkhead.postgresqlSelectorLabels" . | nindent 10 }}
{{- else }}
- ports:
    - port: {{ .Values.networkPolicy.egress.postgresql.port }}
      protocol: TCP
  {{- with .Values.networkPolicy.egress.postgresql.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "bulkhead.postgresqlSelectorLabels" -}}
{{ include "bulkhead.selectorLabels" . }}
app.kubernetes.io/component: postgresql
{{- end }}

{{- define "bulkhead.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bulkhead.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bulkhead.secretName" -}}
{{- default (include "bulkhead.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "bulkhead.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "bulkhead.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
An image reference: repository, then @digest or :tag (defaulting to appVersion).
Call with (dict "image" .Values.image "default" .Chart.AppVersion).
*/}}
{{- define "bulkhead.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .default .image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
The YAML configuration file. Only keys of CONTRACT.md: the server exits 2 on
an unknown one. DSNs and the admin token come from the Secret, never from here.
*/}}
{{- define "bulkhead.configFile" -}}
profile: {{ .Values.config.profile }}
isolation:
  strategy: {{ .Values.config.isolation.strategy }}
  {{- with .Values.config.isolation.allowed }}
  allowed: {{ toJson . }}
  {{- end }}
  database:
    max_connections: {{ .Values.config.isolation.database.max_connections }}
    {{- with .Values.config.isolation.database.servers }}
    servers:
      {{- toYaml . | nindent 6 }}
    {{- else }}
    servers: []
    {{- end }}
database:
  pooler: {{ .Values.config.database.pooler }}
  citus: {{ .Values.config.database.citus | quote }}
  max_connections: {{ include "bulkhead.poolSize" . }}
  statement_timeout: {{ .Values.config.database.statement_timeout | quote }}
  lock_timeout: {{ .Values.config.database.lock_timeout | quote }}
  idle_in_transaction_timeout: {{ .Values.config.database.idle_in_transaction_timeout | quote }}
http:
  addr: "0.0.0.0:{{ include "bulkhead.containerPort" . }}"
  {{- with .Values.config.http }}
  read_header_timeout: {{ .read_header_timeout | quote }}
  read_timeout: {{ .read_timeout | quote }}
  write_timeout: {{ .write_timeout | quote }}
  idle_timeout: {{ .idle_timeout | quote }}
  max_header_bytes: {{ .max_header_bytes | int }}
  max_connections: {{ .max_connections | int }}
  trusted_proxies: {{ .trusted_proxies | toJson }}
  {{- end }}
limits:
  {{- toYaml .Values.config.limits | nindent 2 }}
log:
  format: {{ .Values.config.log.format }}
{{- with (.Values.config.oidc).issuers }}
oidc:
  issuers:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}

{{- define "bulkhead.containerPort" -}}8080{{- end }}

{{/*
Connection sizing. The most server pods that can run at once: the replicas (the
autoscaler's maximum when it is on) plus the rolling update's surge of 25%,
rounded up. The admin component is one pod, replaced without surge.
*/}}
{{- define "bulkhead.maxServerPods" -}}
{{- $n := ternary .Values.autoscaling.maxReplicas .Values.replicaCount .Values.autoscaling.enabled | int }}
{{- add $n (div (add $n 3) 4) }}
{{- end }}

{{- define "bulkhead.adminPods" -}}{{ ternary 1 0 .Values.admin.enabled }}{{- end }}

{{/*
Connections of one pod besides its serving pool: the database strategy's
tenant pools (isolation.database.max_connections).
*/}}
{{- define "bulkhead.tenantPoolSize" -}}
{{- ternary .Values.config.isolation.database.max_connections 0 (or (eq .Values.config.isolation.strategy "database") (has "database" (.Values.config.isolation.allowed | default list))) | int }}
{{- end }}

{{/*
The owner pool of the admin component (app/postgres opens 4 connections).
*/}}
{{- define "bulkhead.ownerPoolSize" -}}4{{- end }}

{{/*
database.max_connections of every pod: config.database.max_connections, or
when that is 0 the largest pool for which every pod at once fits
database.maxConnections less database.reservedConnections. Fails the render,
naming the keys, when the pods would need more connections than that.
*/}}
{{- define "bulkhead.poolSize" -}}
{{- $budget := sub (int .Values.database.maxConnections) (int .Values.database.reservedConnections) | int }}
{{- $pods := add (include "bulkhead.maxServerPods" . | int) (include "bulkhead.adminPods" . | int) | int }}
{{- $owner := mul (include "bulkhead.adminPods" . | int) (include "bulkhead.ownerPoolSize" . | int) | int }}
{{- $tenant := include "bulkhead.tenantPoolSize" . | int }}
{{- $pool := int .Values.config.database.max_connections }}
{{- if eq $pool 0 }}
{{- $pool = div (sub (sub $budget $owner) (mul $pods $tenant)) $pods | int }}
{{- if lt $pool 2 }}
{{- fail (printf "database.maxConnections: %d (less %d reserved) leaves a pool of %d per pod for %d pods at once (replicas or autoscaling.maxReplicas, plus 25%% rolling surge, plus the admin pod): raise database.maxConnections to what your server allows, lower the replicas, or put PgBouncer in front (config.database.pooler: pgbouncer)" (int .Values.database.maxConnections) (int .Values.database.reservedConnections) $pool $pods) }}
{{- end }}
{{- end }}
{{- $need := add (mul $pods (add $pool $tenant)) $owner | int }}
{{- if gt $need $budget }}
{{- fail (printf "database.maxConnections: %d pods at once (replicas or autoscaling.maxReplicas, plus 25%% rolling surge, plus the admin pod) x %d connections (config.database.max_connections%s) + %d owner = %d, more than database.maxConnections %d less database.reservedConnections %d: lower config.database.max_connections (0 derives it) or the replicas, raise database.maxConnections to what your server allows, or put PgBouncer in front (config.database.pooler: pgbouncer)" $pods (add $pool $tenant) (ternary " + isolation.database.max_connections" "" (gt $tenant 0)) $owner $need (int .Values.database.maxConnections) (int .Values.database.reservedConnections)) }}
{{- end }}
{{- $pool }}
{{- end }}

{{/*
The passwords of the bundled PostgreSQL: the superuser's (migrations and
provisioning) and bulkhead_app's (serving). They are generated once and then
read back from the live Secret with `lookup`, so an upgrade keeps them — the
database only learns a password when it is first initialised. Memoised on
.Values so that every template of one render sees the same pair (`lookup`
returns nothing under `helm template`, and each randAlphaNum differs).
*/}}
{{- define "bulkhead.postgresql.passwords" -}}
{{- if not (hasKey .Values.postgresql "generatedPasswords") }}
{{- $live := lookup "v1" "Secret" .Release.Namespace (include "bulkhead.postgresql.fullname" .) | default dict }}
{{- $data := get $live "data" | default dict }}
{{- $super := get $data "postgres-password" | default "" | b64dec | default (randAlphaNum 32) }}
{{- $app := get $data "app-password" | default "" | b64dec | default (randAlphaNum 32) }}
{{- $_ := set .Values.postgresql "generatedPasswords" (dict "postgres" $super "app" $app) }}
{{- end }}
{{- toJson .Values.postgresql.generatedPasswords }}
{{- end }}

{{/*
The Secret's keys and values, as JSON: the DSNs and the admin token, the DSNs
pointing at the bundled PostgreSQL when it is on. Empty values are left out,
so a missing required one shows up as the pod failing on a missing key rather
than as an empty DSN.
*/}}
{{- define "bulkhead.secretValues" -}}
{{- $data := dict }}
{{- if .Values.postgresql.enabled }}
{{- $pw := include "bulkhead.postgresql.passwords" . | fromJson }}
{{- $host := printf "%s.%s.svc:5432" (include "bulkhead.postgresql.fullname" .) .Release.Namespace }}
{{- $db := .Values.postgresql.database }}
{{- $_ := set $data "BULKHEAD_DATABASE_URL" (printf "postgres://bulkhead_app:%s@%s/%s?sslmode=disable" $pw.app $host $db) }}
{{- $_ := set $data "BULKHEAD_MIGRATE_DATABASE_URL" (printf "postgres://postgres:%s@%s/%s?sslmode=disable" $pw.postgres $host $db) }}
{{- else }}
{{- with .Values.secrets.databaseUrl }}{{ $_ := set $data "BULKHEAD_DATABASE_URL" . }}{{ end }}
{{- with .Values.secrets.migrateDatabaseUrl }}{{ $_ := set $data "BULKHEAD_MIGRATE_DATABASE_URL" . }}{{ end }}
{{- end }}
{{- with .Values.secrets.adminToken }}{{ $_ := set $data "BULKHEAD_ADMIN_TOKEN" . }}{{ end }}
{{- toJson $data }}
{{- end }}

{{/*
A Secret's data block from a JSON object of keys and values; nothing when it
is empty.
*/}}
{{- define "bulkhead.secretDataBlock" -}}
{{- $values := fromJson . }}
{{- if $values }}
data:
{{- range $k, $v := $values }}
  {{ $k }}: {{ $v | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Pod security context of the server and migration pods: the Kubernetes
"restricted" Pod Security Standard. 65532 is distroless's nonroot user.
*/}}
{{- define "bulkhead.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "bulkhead.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The Secret keys each component reads, and whether each is required. Only the
admin component and the migration hold the owner DSN
(BULKHEAD_MIGRATE_DATABASE_URL), whose role bypasses Row-Level Security; only
the admin component holds the admin token. The serving pods get the serving
DSN alone. With secretFiles.enabled every key a component reads is required,
since a *_FILE variable naming a missing file stops the process.
Call with (dict "root" $ "component" "server"|"admin"|"migrate"); returns JSON
{KEY: required}.
*/}}
{{- define "bulkhead.secretKeys" -}}
{{- $files := .root.Values.secretFiles.enabled }}
{{- if eq .component "server" }}
{{- toJson (dict "BULKHEAD_DATABASE_URL" true) }}
{{- else if eq .component "admin" }}
{{- toJson (dict "BULKHEAD_DATABASE_URL" true "BULKHEAD_MIGRATE_DATABASE_URL" true "BULKHEAD_ADMIN_TOKEN" $files) }}
{{- else }}
{{- toJson (dict "BULKHEAD_DATABASE_URL" $files "BULKHEAD_MIGRATE_DATABASE_URL" true) }}
{{- end }}
{{- end }}

{{- define "bulkhead.secretFilesDir" -}}/var/run/secrets/bulkhead{{- end }}

{{/*
Environment of a component's containers. Every BULKHEAD_ name is one of
CONTRACT.md's (the chart test checks this): the Secret's keys as variables,
or with secretFiles.enabled as NAME_FILE naming the mounted file.
Call with (dict "root" $ "secretName" NAME "component" "server"|"admin"|"migrate").
*/}}
{{- define "bulkhead.env" -}}
- name: BULKHEAD_CONFIG
  value: /etc/bulkhead/config.yaml
{{- $keys := include "bulkhead.secretKeys" . | fromJson }}
{{- range $key := keys $keys | sortAlpha }}
{{- if $.root.Values.secretFiles.enabled }}
- name: {{ $key }}_FILE
  value: {{ include "bulkhead.secretFilesDir" $.root }}/{{ $key }}
{{- else }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $.secretName }}
      key: {{ $key }}
      {{- if not (get $keys $key) }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}
{{- range .root.Values.extraEnv }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- end }}

{{/*
With secretFiles.enabled, the volume holding exactly the Secret keys the
component reads, readable only by its user. Call like bulkhead.env.
*/}}
{{- define "bulkhead.secretVolume" -}}
{{- if .root.Values.secretFiles.enabled }}
- name: secrets-{{ .component }}
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0400
    items:
      {{- $keys := include "bulkhead.secretKeys" . | fromJson }}
      {{- range $key := keys $keys | sortAlpha }}
      - key: {{ $key }}
        path: {{ $key }}
      {{- end }}
{{- end }}
{{- end }}

{{- define "bulkhead.secretVolumeMount" -}}
{{- if .root.Values.secretFiles.enabled }}
- name: secrets-{{ .component }}
  mountPath: {{ include "bulkhead.secretFilesDir" .root }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
A migration container running `bulkhead migrate`.
Call with (dict "root" $ "secretName" NAME "configMapName" NAME).
*/}}
{{- define "bulkhead.migrateContainer" -}}
- name: migrate
  image: {{ include "bulkhead.imageRef" (dict "image" .root.Values.image "default" .root.Chart.AppVersion) }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  args: ["migrate"]
  env:
    {{- include "bulkhead.env" (dict "root" .root "secretName" .secretName "component" "migrate") | nindent 4 }}
  volumeMounts:
    - name: config
      mountPath: /etc/bulkhead
      readOnly: true
    {{- include "bulkhead.secretVolumeMount" (dict "root" .root "component" "migrate") | nindent 4 }}
    - name: tmp
      mountPath: /tmp
  resources:
    {{- toYaml .root.Values.migration.resources | nindent 4 }}
  securityContext:
    {{- include "bulkhead.containerSecurityContext" .root | nindent 4 }}
{{- end }}

{{/*
Settings the schema cannot check alone; each failure names its key.
*/}}
{{- define "bulkhead.validate" -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.hosts: name at least one host when ingress.enabled is true" }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) }}
{{- fail "httpRoute.parentRefs: name at least one Gateway when httpRoute.enabled is true" }}
{{- end }}
{{- if and .Values.secretFiles.enabled .Values.admin.enabled (not .Values.existingSecret) (not .Values.secrets.adminToken) }}
{{- fail "secrets.adminToken: with secretFiles.enabled the admin component reads BULKHEAD_ADMIN_TOKEN from a file, so set it (or admin.enabled: false)" }}
{{- end }}
{{- end }}
