{{- define "guardstream.name" -}}{{ .Release.Name }}-guardstream{{- end -}}

{{- define "guardstream.labels" -}}
app.kubernetes.io/name: guardstream
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Pods that may talk to the Ray cluster (the NetworkPolicy lets only these in). */}}
{{- define "guardstream.rayClientLabel" -}}guardstream.io/ray-client: "true"{{- end -}}

{{- define "guardstream.selector" -}}
app.kubernetes.io/name: guardstream
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The Ray head's host: the chart's RayCluster's head Service, or an existing cluster's. */}}
{{- define "guardstream.rayHead" -}}
{{- if .Values.ray.cluster.enabled -}}{{ include "guardstream.name" . }}-ray-head-svc
{{- else -}}{{ required "ray.externalHead (the host of an existing Ray cluster's head) is required when ray.cluster.enabled is false" .Values.ray.externalHead }}{{- end -}}
{{- end -}}
{{/* The pool calls its actors rarely: Ray Client is enough. The moderation workers call them for
every batch, as drivers on a Ray node of their own (a sidecar): 4-5x cheaper per call than Ray
Client (`guardstream bench ray-link`, docs/deploying.md). */}}
{{- define "guardstream.rayClientAddress" -}}ray://{{ include "guardstream.rayHead" . }}:10001{{- end -}}
{{- define "guardstream.rayGcsAddress" -}}{{ include "guardstream.rayHead" . }}:6379{{- end -}}

{{- define "guardstream.raySecret" -}}{{ .Values.ray.auth.existingSecret | default (printf "%s-ray-token" (include "guardstream.name" .)) }}{{- end -}}

{{/* Ray token authentication: the same token, read from a mounted Secret file, in the Ray pods,
the pool and the moderation workers (and with the volume mounts and volumes below). */}}
{{- define "guardstream.rayAuthEnv" -}}
- {name: RAY_AUTH_MODE, value: token}
- {name: RAY_AUTH_TOKEN_PATH, value: /etc/ray-auth/token}
{{- end -}}

{{/* Environment every guardstream container gets besides its own: the Hugging Face token (gated or
private checkpoints) and the operator's extraEnv. */}}
{{- define "guardstream.commonEnv" -}}
{{- with .Values.huggingface.tokenSecret }}
- name: HF_TOKEN
  valueFrom: {secretKeyRef: {name: {{ . }}, key: token}}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
{{- define "guardstream.rayAuthMount" -}}
- {name: ray-auth, mountPath: /etc/ray-auth, readOnly: true}
{{- end -}}
{{- define "guardstream.rayAuthVolume" -}}
- name: ray-auth
  secret: {secretName: {{ include "guardstream.raySecret" . }}, defaultMode: 0440}
{{- end -}}

{{- define "guardstream.image" -}}
{{- if .Values.image.digest -}}{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}
{{- end -}}

{{- define "guardstream.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}

{{/* Writable places under a read-only root filesystem (Ray's and Python's temp, the home), the
Kafka CA, and the operator's extra volumes. */}}
{{- define "guardstream.volumeMounts" -}}
- {name: tmp, mountPath: /tmp}
- {name: home, mountPath: /var/lib/guardstream}
{{- if .Values.kafka.caSecret }}
- {name: kafka-ca, mountPath: /etc/guardstream/kafka-ca, readOnly: true}
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}
{{- define "guardstream.volumes" -}}
- {name: tmp, emptyDir: {}}
- {name: home, emptyDir: {sizeLimit: {{ .Values.workers.homeSizeLimitMi }}Mi}}
{{- if .Values.kafka.caSecret }}
- name: kafka-ca
  secret: {secretName: {{ .Values.kafka.caSecret }}, items: [{key: ca.crt, path: ca.crt}]}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Ray's object store (a node's shared memory, counted in its pod's memory): (dict "bytes" N) */}}
{{- define "guardstream.shmVolume" -}}
- name: shm
  emptyDir: {medium: Memory, sizeLimit: {{ add (div .bytes 1048576) 64 }}Mi}
{{- end -}}

{{- define "guardstream.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: health}
  initialDelaySeconds: 30
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
readinessProbe:
  httpGet: {path: /readyz, port: health}
  periodSeconds: 10
  timeoutSeconds: 5
startupProbe:                      # model loading and the first rebalance may take minutes
  httpGet: {path: /healthz, port: health}
  periodSeconds: 10
  failureThreshold: 90
{{- end -}}

{{/* Where a pod may run, and as whom: (dict "root" $ "c" <the component's values>) */}}
{{- define "guardstream.podPlacement" -}}
{{- with .root.Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- range $field := list "nodeSelector" "tolerations" "affinity" "topologySpreadConstraints" }}
{{- with get $.c $field }}
{{ $field }}: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The audit database (PostgreSQL) of the sinks and the review console: its URL from a Secret,
and its CA when it is a private one (with the mount and volume below). */}}
{{- define "guardstream.auditEnv" -}}
- name: GUARDSTREAM_AUDIT_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "audit.urlSecret (a Secret with the audit database URL) is required unless audit.sqlite is true" .Values.audit.urlSecret }}
      key: {{ .Values.audit.urlSecretKey }}
{{- if .Values.audit.caSecret }}
- {name: GUARDSTREAM_AUDIT_CA_FILE, value: /etc/guardstream/audit-ca/ca.crt}
{{- end }}
{{- end -}}
{{- define "guardstream.auditCaMount" -}}
- {name: audit-ca, mountPath: /etc/guardstream/audit-ca, readOnly: true}
{{- end -}}
{{- define "guardstream.auditCaVolume" -}}
- name: audit-ca
  secret: {secretName: {{ .Values.audit.caSecret }}, items: [{key: ca.crt, path: ca.crt}]}
{{- end -}}

{{/* A Kafka principal's SASL credentials, from a Secret with `username` and `password` (none: no SASL). */}}
{{- define "guardstream.kafkaSaslEnv" -}}
{{- if . }}
- name: GUARDSTREAM_KAFKA_SASL_USERNAME
  valueFrom: {secretKeyRef: {name: {{ . }}, key: username}}
- name: GUARDSTREAM_KAFKA_SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ . }}, key: password}}
{{- end }}
{{- end -}}
