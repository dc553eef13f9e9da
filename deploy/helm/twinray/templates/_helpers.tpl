{{/* Names, labels and the checks every render runs first. */}}

{{- define "twinray.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: the release name, with the chart name unless it already holds it. */}}
{{- define "twinray.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "twinray.selectorLabels" -}}
app.kubernetes.io/name: {{ include "twinray.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "twinray.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "twinray.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: twinray
{{- end }}

{{/* The TwinRay image, used by every Ray container and RayJob submitter. */}}
{{- define "twinray.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "twinray.storeSecretName" -}}
{{- default (printf "%s-store" (include "twinray.fullname" .)) .Values.store.existingSecret }}
{{- end }}

{{- define "twinray.authSecretName" -}}
{{- default (printf "%s-auth" (include "twinray.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* host:port of the artifact store: the in-chart MinIO's Service or store.endpoint. */}}
{{- define "twinray.storeEndpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "%s-minio.%s.svc:9000" (include "twinray.fullname" .) .Release.Namespace }}
{{- else }}
{{- .Values.store.endpoint }}
{{- end }}
{{- end }}

{{/* host:port of Triton's gRPC for TWINRAY_TRITON_URL; empty = the networks run in-process. */}}
{{- define "twinray.tritonUrl" -}}
{{- if .Values.triton.url }}
{{- .Values.triton.url }}
{{- else if .Values.triton.enabled }}
{{- printf "%s-triton.%s.svc:8001" (include "twinray.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Checks the schema cannot express; included by the store Secret template, so every render runs them. */}}
{{- define "twinray.validate" -}}
{{- if and .Values.minio.enabled .Values.store.endpoint }}
{{- fail "store.endpoint is set and minio.enabled is true: use the in-chart MinIO (store.endpoint empty) or an external endpoint (minio.enabled=false), not both" }}
{{- end }}
{{- if not (or .Values.minio.enabled .Values.store.endpoint) }}
{{- fail "TwinRay on Kubernetes needs a shared artifact store: set minio.enabled=true or store.endpoint=<host:port>" }}
{{- end }}
{{- if and .Values.minio.enabled .Values.store.secure }}
{{- fail "store.secure=true needs an external endpoint: the in-chart MinIO serves plain HTTP inside the cluster" }}
{{- end }}
{{- if not .Values.store.existingSecret }}
{{- $hint := "set store.existingSecret to a Secret with keys TWINRAY_STORE_ACCESS_KEY and TWINRAY_STORE_SECRET_KEY, or pass --set store.accessKey=... --set store.secretKey=..." }}
{{- $_ := required (printf "store.accessKey is empty: the artifact store needs credentials; %s" $hint) .Values.store.accessKey }}
{{- $_ := required (printf "store.secretKey is empty: the artifact store needs credentials; %s" $hint) .Values.store.secretKey }}
{{- if and .Values.minio.enabled (lt (len .Values.store.secretKey) 8) }}
{{- fail "store.secretKey must have at least 8 characters: MinIO refuses a shorter root password" }}
{{- end }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) }}
{{- $_ := required "auth.enabled=true needs a token: set auth.existingSecret to a Secret with the key TWINRAY_AUTH_TOKEN, or pass --set auth.token=..." .Values.auth.token }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $_ := required "tls.enabled=true needs tls.secretName: a kubernetes.io/tls Secret with tls.crt and tls.key" .Values.tls.secretName }}
{{- if or (eq (int .Values.tls.port) (int .Values.serve.grpcPort)) (eq (int .Values.tls.port) (int .Values.serve.httpPort)) }}
{{- fail "tls.port must differ from serve.grpcPort and serve.httpPort" }}
{{- end }}
{{- end }}
{{- if eq (int .Values.serve.grpcPort) (int .Values.serve.httpPort) }}
{{- fail "serve.grpcPort and serve.httpPort must differ" }}
{{- end }}
{{- end }}
