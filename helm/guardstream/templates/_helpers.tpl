{{- define "guardstream.name" -}}{{ .Release.Name }}-guardstream{{- end -}}
{{- define "guardstream.labels" -}}
app.kubernetes.io/name: guardstream
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "guardstream.rayAddress" -}}ray://{{ include "guardstream.name" . }}-ray-head-svc:10001{{- end -}}
