{{/* One Deployment of Faust workers: (dict "root" $ "component" "moderation" "w" .Values.workers.moderation "pool" true) */}}
{{- define "guardstream.workerDeployment" -}}
{{- $root := .root -}}
{{- $audit := and (not .pool) (contains "audit" .w.agents) (not $root.Values.audit.sqlite) $root.Values.audit.caSecret -}}
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
      {{- if .pool }}
      initContainers:
        # The Ray node this worker drives from (no CPUs, no GPUs: no model lands here), a sidecar
        # that starts first and lives as long as the pod. A driver on a node calls the actors without
        # Ray Client's proxy in between.
        - name: ray-node
          image: {{ include "guardstream.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          restartPolicy: Always
          command: ["ray", "start", "--block", "--disable-usage-stats", "--num-cpus=0", "--num-gpus=0",
                    "--address={{ include "guardstream.rayGcsAddress" $root }}",
                    "--object-store-memory={{ int $root.Values.ray.driverNode.objectStoreMemory }}"]
          env:
            {{- include "guardstream.rayAuthEnv" $root | nindent 12 }}
            - {name: HOME, value: /var/lib/guardstream}
            {{- include "guardstream.commonEnv" $root | nindent 12 }}
          resources: {{- toYaml $root.Values.ray.driverNode.resources | nindent 12 }}
          securityContext: {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "guardstream.volumeMounts" $root | nindent 12 }}
            - {name: shm, mountPath: /dev/shm}
            {{- include "guardstream.rayAuthMount" $root | nindent 12 }}
      {{- end }}
      containers:
        - name: worker
          image: {{ include "guardstream.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["worker"]
          envFrom:
            - configMapRef: {name: {{ include "guardstream.name" $root }}}
          env:
            - {name: GUARDSTREAM_APP_ID, value: {{ .w.appId | quote }}}
            - {name: GUARDSTREAM_AGENTS, value: {{ ternary (printf "%s,canary" .w.agents) .w.agents (and .pool (not (empty $root.Values.canary))) | quote }}}
            {{- if and .pool $root.Values.canary $root.Values.canarySampleSecret }}
            - name: GUARDSTREAM_CANARY_SAMPLE_SECRET
              valueFrom: {secretKeyRef: {name: {{ $root.Values.canarySampleSecret }}, key: sample-secret}}
            {{- end }}
            {{- if .pool }}
            - {name: GUARDSTREAM_POOL, value: join}
            - {name: GUARDSTREAM_RAY_ADDRESS, value: {{ include "guardstream.rayGcsAddress" $root | quote }}}
            {{- include "guardstream.rayAuthEnv" $root | nindent 12 }}
            {{- end }}
            {{- if and (not .pool) (contains "audit" .w.agents) }}
            {{- if $root.Values.audit.sqlite }}
            - {name: GUARDSTREAM_AUDIT_URL, value: "sqlite:////var/lib/guardstream/audit.sqlite"}
            {{- else }}
            {{- include "guardstream.auditEnv" $root | nindent 12 }}
            {{- end }}
            {{- end }}
            {{- include "guardstream.kafkaSaslEnv" $root.Values.kafka.saslSecret | nindent 12 }}
            {{- include "guardstream.commonEnv" $root | nindent 12 }}
          ports:
            - {name: metrics, containerPort: {{ $root.Values.workers.metricsPort }}}
            - {name: health, containerPort: {{ $root.Values.workers.healthPort }}}
          {{- include "guardstream.probes" $root | nindent 10 }}
          resources: {{- toYaml .w.resources | nindent 12 }}
          securityContext: {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "guardstream.volumeMounts" $root | nindent 12 }}
            {{- if .pool }}
            {{- include "guardstream.rayAuthMount" $root | nindent 12 }}
            {{- end }}
            {{- if $audit }}
            {{- include "guardstream.auditCaMount" $root | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "guardstream.volumes" $root | nindent 8 }}
        {{- if .pool }}
        {{- include "guardstream.rayAuthVolume" $root | nindent 8 }}
        {{- include "guardstream.shmVolume" (dict "bytes" $root.Values.ray.driverNode.objectStoreMemory) | nindent 8 }}
        {{- end }}
        {{- if $audit }}
        {{- include "guardstream.auditCaVolume" $root | nindent 8 }}
        {{- end }}
{{- end -}}
