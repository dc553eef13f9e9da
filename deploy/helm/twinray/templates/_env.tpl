{{/* The TWINRAY_* environment (shared/platform/config.py reads it) of the Ray containers. */}}

{{/* Every Ray pod: the artifact store (credentials by Secret reference only) and telemetry. */}}
{{- define "twinray.env.common" -}}
- name: TWINRAY_HOME
  value: /home/ray/.twinray
- name: TWINRAY_STORE_ENDPOINT
  value: {{ include "twinray.storeEndpoint" . | quote }}
- name: TWINRAY_STORE_SECURE
  value: {{ ternary "true" "false" .Values.store.secure | quote }}
- name: TWINRAY_STORE_BUCKET
  value: {{ .Values.store.bucket | quote }}
- name: TWINRAY_STORE_REGION
  value: {{ .Values.store.region | quote }}
- name: TWINRAY_STORE_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "twinray.storeSecretName" . }}
      key: TWINRAY_STORE_ACCESS_KEY
- name: TWINRAY_STORE_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "twinray.storeSecretName" . }}
      key: TWINRAY_STORE_SECRET_KEY
{{- if .Values.otel.endpoint }}
- name: TWINRAY_OTEL_EXPORTER
  value: otlp
- name: TWINRAY_OTEL_ENDPOINT
  value: {{ .Values.otel.endpoint | quote }}
{{- end }}
{{- end }}

{{/* The RayService's pods besides: ports, Triton, the token and TLS of the gRPC ingress. */}}
{{- define "twinray.env.serve" -}}
{{ include "twinray.env.common" . }}
- name: TWINRAY_GRPC_PORT
  value: {{ .Values.serve.grpcPort | quote }}
- name: TWINRAY_HTTP_PORT
  value: {{ .Values.serve.httpPort | quote }}
{{- with include "twinray.tritonUrl" . }}
- name: TWINRAY_TRITON_URL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.auth.enabled }}
- name: TWINRAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "twinray.authSecretName" . }}
      key: TWINRAY_AUTH_TOKEN
{{- end }}
{{- if .Values.tls.enabled }}
- name: TWINRAY_TLS_CERT_FILE
  value: /etc/twinray/tls/tls.crt
- name: TWINRAY_TLS_KEY_FILE
  value: /etc/twinray/tls/tls.key
- name: TWINRAY_TLS_PORT
  value: {{ .Values.tls.port | quote }}
{{- end }}
{{- end }}
