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
http:
  addr: "0.0.0.0:{{ include "bulkhead.containerPort" . }}"
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
Environment of the server and migration containers. Every BULKHEAD_ name is
one of CONTRACT.md's (the chart test checks this). The Secret keys the given
container cannot do without are required; the others optional.
Call with (dict "root" $ "secretName" NAME "migrate" BOOL).
*/}}
{{- define "bulkhead.env" -}}
- name: BULKHEAD_CONFIG
  value: /etc/bulkhead/config.yaml
- name: BULKHEAD_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: BULKHEAD_DATABASE_URL
      {{- if .migrate }}
      optional: true
      {{- end }}
- name: BULKHEAD_MIGRATE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: BULKHEAD_MIGRATE_DATABASE_URL
      {{- if not .migrate }}
      optional: true
      {{- end }}
{{- if not .migrate }}
- name: BULKHEAD_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: BULKHEAD_ADMIN_TOKEN
      optional: true
{{- end }}
{{- range .root.Values.extraEnv }}
- name: {{ .name }}
  value: {{ .value | quote }}
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
    {{- include "bulkhead.env" (dict "root" .root "secretName" .secretName "migrate" true) | nindent 4 }}
  volumeMounts:
    - name: config
      mountPath: /etc/bulkhead
      readOnly: true
    - name: tmp
      mountPath: /tmp
  resources:
    {{- toYaml .root.Values.migration.resources | nindent 4 }}
  securityContext:
    {{- include "bulkhead.containerSecurityContext" .root | nindent 4 }}
{{- end }}
