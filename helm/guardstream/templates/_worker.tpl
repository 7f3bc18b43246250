{{/* One Deployment of Faust workers: (dict "root" $ "component" "moderation" "w" .Values.workers.moderation "pool" true) */}}
{{- define "guardstream.workerDeployment" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "guardstream.name" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "guardstream.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  {{- if not (and .pool $root.Values.autoscaling.enabled) }}
  replicas: {{ .w.replicas }}
  {{- end }}
  selector:
    matchLabels: {{- include "guardstream.selector" (dict "root" $root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "guardstream.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
        guardstream.io/metrics: "true"
        {{- if .pool }}
        {{ include "guardstream.rayClientLabel" $root }}
        {{- end }}
      annotations: {{- include "guardstream.checksums" $root | nindent 8 }}
    spec:
      automountServiceAccountToken: false
      {{- include "guardstream.podPlacement" (dict "root" $root "c" .w) | nindent 6 }}
      terminationGracePeriodSeconds: 60   # lets Faust flush and commit on SIGTERM
      securityContext: {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: worker
          image: {{ include "guardstream.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["worker"]
          envFrom:
            - configMapRef: {name: {{ include "guardstream.name" $root }}}
          env:
            - {name: GUARDSTREAM_APP_ID, value: {{ .w.appId | quote }}}
            - {name: GUARDSTREAM_AGENTS, value: {{ .w.agents | quote }}}
            {{- if .pool }}
            - {name: GUARDSTREAM_POOL, value: join}
            - {name: GUARDSTREAM_RAY_ADDRESS, value: {{ include "guardstream.rayAddress" $root | quote }}}
            {{- include "guardstream.rayAuthEnv" $root | nindent 12 }}
            {{- end }}
            {{- if and (not .pool) (contains "audit" .w.agents) }}
            {{- if $root.Values.audit.sqlite }}
            - {name: GUARDSTREAM_AUDIT_URL, value: "sqlite:////var/lib/guardstream/audit.sqlite"}
            {{- else }}
            - name: GUARDSTREAM_AUDIT_URL
              valueFrom:
                secretKeyRef:
                  name: {{ required "audit.urlSecret (a Secret with the audit database URL) is required unless audit.sqlite is true" $root.Values.audit.urlSecret }}
                  key: {{ $root.Values.audit.urlSecretKey }}
            {{- end }}
            {{- end }}
            {{- if $root.Values.kafka.saslSecret }}
            - name: GUARDSTREAM_KAFKA_SASL_USERNAME
              valueFrom: {secretKeyRef: {name: {{ $root.Values.kafka.saslSecret }}, key: username}}
            - name: GUARDSTREAM_KAFKA_SASL_PASSWORD
              valueFrom: {secretKeyRef: {name: {{ $root.Values.kafka.saslSecret }}, key: password}}
            {{- end }}
          ports:
            - {name: metrics, containerPort: {{ $root.Values.workers.metricsPort }}}
          {{- include "guardstream.probes" $root | nindent 10 }}
          resources: {{- toYaml .w.resources | nindent 12 }}
          securityContext: {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "guardstream.volumeMounts" $root | nindent 12 }}
            {{- if .pool }}
            {{- include "guardstream.rayAuthMount" $root | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "guardstream.volumes" $root | nindent 8 }}
        {{- if .pool }}
        {{- include "guardstream.rayAuthVolume" $root | nindent 8 }}
        {{- end }}
{{- end -}}
