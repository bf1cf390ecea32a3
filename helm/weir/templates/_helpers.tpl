{{/*
Chart name, or nameOverride.
*/}}
{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name: fullnameOverride, or the release name alone
when it already contains the chart name, or `<release>-<chart>`. Kept short
enough for the `-jobmanager` / `-taskmanager` suffixes to fit in 63
characters.
*/}}
{{- define "weir.fullname" -}}
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

{{- define "weir.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "weir.labels" -}}
helm.sh/chart: {{ include "weir.chart" . }}
{{ include "weir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: weir
{{- end }}

{{/*
Labels that select the release's pods (a component label narrows them).
*/}}
{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "weir.jobmanagerName" -}}
{{- printf "%s-jobmanager" (include "weir.fullname" .) }}
{{- end }}

{{- define "weir.taskmanagerName" -}}
{{- printf "%s-taskmanager" (include "weir.fullname" .) }}
{{- end }}

{{/*
The job manager's gRPC URL inside the cluster.
*/}}
{{- define "weir.jobmanagerUrl" -}}
{{- printf "%s://%s:6123" (include "weir.scheme" .) (include "weir.jobmanagerName" .) }}
{{- end }}

{{/*
http, or https with tls.secretName.
*/}}
{{- define "weir.scheme" -}}
{{- if .Values.tls.secretName }}https{{ else }}http{{ end }}
{{- end }}

{{/*
The TLS Secret's volume and its mount, for pods and containers.
*/}}
{{- define "weir.tlsVolume" -}}
{{- with .Values.tls.secretName }}
- name: tls
  secret:
    secretName: {{ . | quote }}
    items:
      - {key: ca.crt, path: ca.crt}
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
{{- end }}
{{- end }}

{{- define "weir.tlsMount" -}}
{{- if .Values.tls.secretName }}
- name: tls
  mountPath: /etc/weir-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "weir.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weir.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "weir.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The S3 block of weir.yaml (both sections), with only the keys that are set.
Credentials are not here: they come from the Secret as AWS_* variables.
*/}}
{{- define "weir.s3Config" -}}
{{- $s3 := .Values.storage.s3 }}
{{- $out := dict }}
{{- if $s3.endpoint }}{{- $_ := set $out "endpoint" $s3.endpoint }}{{- end }}
{{- if $s3.region }}{{- $_ := set $out "region" $s3.region }}{{- end }}
{{- if kindIs "bool" $s3.pathStyle }}{{- $_ := set $out "path_style" $s3.pathStyle }}{{- end }}
{{- if $out }}
s3:
{{- toYaml $out | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Environment shared by every container: TLS files, log filter, Kafka brokers, S3
endpoint/region (for the `weir` CLI run inside a pod, which reads only the
environment) and the S3 key pair from an existing Secret.
*/}}
{{- define "weir.commonEnv" -}}
{{- if .Values.tls.secretName }}
- name: WEIR_TLS_CA
  value: /etc/weir-tls/ca.crt
- name: WEIR_TLS_CERT
  value: /etc/weir-tls/tls.crt
- name: WEIR_TLS_KEY
  value: /etc/weir-tls/tls.key
{{- end }}
{{- if .Values.logLevel }}
- name: WEIR_LOG
  value: {{ .Values.logLevel | quote }}
{{- end }}
{{- if .Values.kafka.bootstrapServers }}
- name: WEIR_KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
{{- end }}
{{- with .Values.storage.s3 }}
{{- if .endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ .endpoint | quote }}
{{- end }}
{{- if .region }}
- name: AWS_REGION
  value: {{ .region | quote }}
{{- end }}
{{- if .existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret | quote }}
      key: {{ .accessKeyIdKey | quote }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret | quote }}
      key: {{ .secretAccessKeyKey | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Checks across values that the schema cannot express clearly.
*/}}
{{- define "weir.validate" -}}
{{- if .Values.job.enabled }}
{{- if and (not (trim .Values.job.file)) (not (trim .Values.job.name)) }}
{{- fail "job.enabled is true but job.file and job.name are empty: set job.file to the job file (e.g. --set-file job.file=my-job.yaml), or job.name to one of the application's jobs" }}
{{- end }}
{{- if and (trim .Values.job.file) (trim .Values.job.name) }}
{{- fail "job.file and job.name are both set: submit either a job file or one of the application's jobs" }}
{{- end }}
{{- if and (trim .Values.job.name) (not .Values.application) }}
{{- fail "job.name names one of an application's jobs: set application to the binary of the application image" }}
{{- end }}
{{- if and .Values.job.args (not .Values.job.name) }}
{{- fail "job.args are arguments of an application's job: set job.name" }}
{{- end }}
{{- end }}
{{- if and .Values.job.allowNonRestoredState (not .Values.job.fromSavepoint) }}
{{- fail "job.allowNonRestoredState needs job.fromSavepoint" }}
{{- end }}
{{- end }}

{{/*
The command of a role: the application's binary and the role, or the
stock binary of the role. Usage: include "weir.command" (list . "jobmanager")
*/}}
{{- define "weir.command" -}}
{{- $root := index . 0 -}}
{{- $role := index . 1 -}}
{{- if $root.Values.application -}}
[{{ $root.Values.application | quote }}, {{ $role | quote }}]
{{- else -}}
["weir-{{ $role }}"]
{{- end -}}
{{- end }}

{{/*
The client binary: the application's, or the stock `weir`.
*/}}
{{- define "weir.client" -}}
{{- .Values.application | default "weir" -}}
{{- end }}
