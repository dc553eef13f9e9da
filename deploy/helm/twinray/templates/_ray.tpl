{{/* Pieces of the Ray pod templates (RayService and RayJobs). */}}

{{/* Container ports of a RayService pod. KubeRay finds the proxy's HTTP port by the name "serve". */}}
{{- define "twinray.ray.servePorts" -}}
- name: serve
  containerPort: {{ .Values.serve.httpPort }}
- name: serve-grpc
  containerPort: {{ .Values.serve.grpcPort }}
{{- if .Values.tls.enabled }}
- name: serve-grpc-tls
  containerPort: {{ .Values.tls.port }}
{{- end }}
- name: metrics
  containerPort: 8080
{{- end }}

{{/* Container ports of a Ray head (GCS, dashboard, Ray client). */}}
{{- define "twinray.ray.headPorts" -}}
- name: gcs-server
  containerPort: 6379
- name: dashboard
  containerPort: 8265
- name: client
  containerPort: 10001
{{- end }}

{{/* rayStartParams: Ray's metrics on 8080 for the ServiceMonitor, then the group's own. */}}
{{- define "twinray.ray.startParams" -}}
{{- toYaml (merge (dict) . (dict "metrics-export-port" "8080")) }}
{{- end }}

{{/* Pod-level fields shared by every pod of the chart. */}}
{{- define "twinray.podCommon" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{ end -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* The TLS Secret as a read-only volume (RayService pods, tls.enabled). */}}
{{- define "twinray.ray.tlsVolume" -}}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    defaultMode: 0440
{{- end }}

{{/* gRPC probe of grpc.health.v1 on the plain gRPC port; . = (dict "root" $ "probe" <probe values>). */}}
{{- define "twinray.ray.grpcProbe" -}}
grpc:
  port: {{ .root.Values.serve.grpcPort }}
  service: {{ .probe.service | quote }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}
