{{/* The pod template of a Ray node (head or GPU worker): (dict "root" $ "name" ... "resources" ... "ports" ... "placement" <its values>) */}}
{{- define "guardstream.rayPod" -}}
{{- $root := .root -}}
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
      {{- with .ports }}
      ports: {{- toYaml . | nindent 8 }}
      {{- end }}
      resources: {{- toYaml .resources | nindent 8 }}
      securityContext: {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "guardstream.volumeMounts" $root | nindent 8 }}
        - {name: shm, mountPath: /dev/shm}
        {{- include "guardstream.rayAuthMount" $root | nindent 8 }}
  volumes:
    {{- include "guardstream.volumes" $root | nindent 4 }}
    - {name: shm, emptyDir: {medium: Memory}}   # Ray's object store
    {{- include "guardstream.rayAuthVolume" $root | nindent 4 }}
{{- end -}}
