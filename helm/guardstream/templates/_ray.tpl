{{/* The pod template of a Ray node (head or model worker): (dict "root" $ "name" ... "resources" ... "ports" ...
"placement" <its values> "models" <whether it loads models: the model cache is mounted>) */}}
{{- define "guardstream.rayPod" -}}
{{- $root := .root -}}
{{- $cache := $root.Values.modelCache -}}
metadata:
  labels:
    {{- include "guardstream.labels" $root | nindent 4 }}
    app.kubernetes.io/component: ray
spec:
  automountServiceAccountToken: false
  {{- include "guardstream.podPlacement" (dict "root" $root "c" .placement) | nindent 2 }}
  securityContext: {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ .name }}
      image: {{ include "guardstream.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      env:
        {{- include "guardstream.rayAuthEnv" $root | nindent 8 }}
        - {name: HOME, value: /var/lib/guardstream}
        - {name: HF_HOME, value: /var/lib/guardstream/hf}
        {{- include "guardstream.commonEnv" $root | nindent 8 }}
      {{- with .ports }}
      ports: {{- toYaml . | nindent 8 }}
      {{- end }}
      resources: {{- toYaml .resources | nindent 8 }}
      securityContext: {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "guardstream.volumeMounts" $root | nindent 8 }}
        - {name: shm, mountPath: /dev/shm}
        {{- include "guardstream.rayAuthMount" $root | nindent 8 }}
        {{- if .models }}
        - {name: model-cache, mountPath: /var/lib/guardstream/hf}
        {{- end }}
  volumes:
    {{- include "guardstream.volumes" $root | nindent 4 }}
    {{- include "guardstream.shmVolume" (dict "bytes" $root.Values.ray.cluster.objectStoreMemory) | nindent 4 }}
    {{- include "guardstream.rayAuthVolume" $root | nindent 4 }}
    {{- if .models }}
    - name: model-cache              # downloaded checkpoints: a claim kept across restarts, or a sized emptyDir
      {{- if $cache.existingClaim }}
      persistentVolumeClaim: {claimName: {{ $cache.existingClaim }}}
      {{- else }}
      emptyDir: {sizeLimit: {{ $cache.sizeLimit }}}
      {{- end }}
    {{- end }}
{{- end -}}
