{{/*
The pod template shared by the Deployment and the DaemonSet.
*/}}
{{- define "ociregistry.podTemplate" -}}
{{- $kind := include "ociregistry.persistenceKind" . }}
{{- $port := include "ociregistry.port" . | int }}
{{- $managed := include "ociregistry.configManaged" . }}
{{- $imagePath := include "ociregistry.imagePath" . }}
{{- $ctx := include "ociregistry.securityContext" . | fromYaml }}
{{- $annotations := deepCopy (.Values.podAnnotations | default dict) }}
{{- if $managed }}
{{- $_ := set $annotations "checksum/config" (include "ociregistry.configChecksum" .) }}
{{- end }}
metadata:
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  labels:
    {{- include "ociregistry.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  serviceAccountName: {{ include "ociregistry.serviceAccountName" . }}
  {{- if not (kindIs "invalid" .Values.automountServiceAccountToken) }}
  automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- $grace := .Values.terminationGracePeriodSeconds }}
  {{- if and (not (kindIs "invalid" $grace)) (ne (toString $grace) "") }}
  terminationGracePeriodSeconds: {{ $grace | int }}
  {{- else }}
  terminationGracePeriodSeconds: {{ include "ociregistry.gracePeriod" . }}
  {{- end }}
  {{- if include "ociregistry.hostNetwork" . }}
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  securityContext:
    {{- include "ociregistry.podSecurityContext" . | nindent 4 }}
  {{- if and (eq $kind "hostPath") .Values.volumePermissions.enabled }}
  {{- $uid := $ctx.runAsUser | default 65532 | int64 }}
  {{- $gid := $ctx.runAsGroup | default $uid | int64 }}
  initContainers:
    - name: volume-permissions
      image: {{ include "ociregistry.imageRef" .Values.volumePermissions.image | quote }}
      imagePullPolicy: {{ .Values.volumePermissions.image.pullPolicy }}
      command:
        - sh
        - -c
        - '[ "$(stat -c %u:%g "$0")" = "$1" ] || chown -R "$1" "$0"'
        - {{ $imagePath | quote }}
        - "{{ $uid }}:{{ $gid }}"
      securityContext:
        runAsNonRoot: false
        runAsUser: 0
        runAsGroup: 0
        readOnlyRootFilesystem: true
        allowPrivilegeEscalation: false
        capabilities:
          drop: [ALL]
          add: [CHOWN, DAC_READ_SEARCH]
        seccompProfile:
          type: RuntimeDefault
      {{- with .Values.volumePermissions.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: images
          mountPath: {{ $imagePath }}
  {{- end }}
  containers:
    - name: {{ .Chart.Name }}
      image: {{ include "ociregistry.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        {{- include "ociregistry.args" . | nindent 8 }}
      {{- $env := .Values.env | default list }}
      {{- with .Values.objectStorage.existingSecret }}
      {{- if $.Values.objectStorage.enabled }}
      {{- $env = concat (list
            (dict "name" "AWS_ACCESS_KEY_ID" "valueFrom" (dict "secretKeyRef" (dict "name" . "key" "accessKeyId")))
            (dict "name" "AWS_SECRET_ACCESS_KEY" "valueFrom" (dict "secretKeyRef" (dict "name" . "key" "secretAccessKey"))))
            $env }}
      {{- end }}
      {{- end }}
      {{- with $env }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: http
          containerPort: {{ $port }}
          {{- if and (include "ociregistry.daemonset" .) (not (include "ociregistry.hostNetwork" .)) }}
          hostPort: {{ .Values.daemonset.hostPort | int }}
          {{- end }}
          protocol: TCP
        {{- if .Values.metrics.enabled }}
        - name: metrics
          containerPort: {{ .Values.metrics.port | int }}
          protocol: TCP
        {{- end }}
        {{- if .Values.health.enabled }}
        - name: health
          containerPort: {{ .Values.health.port | int }}
          protocol: TCP
        {{- end }}
      {{- range $probe := list "livenessProbe" "readinessProbe" }}
      {{- with index $.Values $probe }}
      {{- if .enabled }}
      {{- $probePort := include "ociregistry.probePort" (dict "root" $ "probe" .) }}
      {{ $probe }}:
        httpGet:
          path: {{ .path | default (ternary "/health" "/ready" (eq $probe "livenessProbe")) }}
          port: {{ if regexMatch "^[0-9]+$" $probePort }}{{ $probePort | int }}{{ else }}{{ $probePort }}{{ end }}
          {{- if include "ociregistry.probeHttps" (dict "root" $ "port" $probePort) }}
          scheme: HTTPS
          {{- end }}
        {{- range $f := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" "successThreshold" }}
        {{- if not (kindIs "invalid" (index $.Values $probe $f)) }}
        {{ $f }}: {{ index $.Values $probe $f | int }}
        {{- end }}
        {{- end }}
      {{- end }}
      {{- end }}
      {{- end }}
      securityContext:
        {{- toYaml $ctx | nindent 8 }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        {{- include "ociregistry.volumeMounts" . | nindent 8 }}
        {{- if $managed }}
        - name: config
          mountPath: {{ include "ociregistry.configMountPath" . }}
          readOnly: true
        {{- end }}
        {{- if .Values.serverTls.enabled }}
        - name: server-tls
          mountPath: {{ include "ociregistry.serverTlsMountPath" . }}
          readOnly: true
        {{- if and (include "ociregistry.verifyClients" .) .Values.serverTls.clientCaSecret }}
        - name: server-client-ca
          mountPath: {{ include "ociregistry.clientCaMountPath" . }}
          readOnly: true
        {{- end }}
        {{- end }}
  volumes:
    {{- with .Values.volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    - name: images
      {{- if eq $kind "hostPath" }}
      hostPath:
        path: {{ .Values.persistence.hostPath.path }}
        {{- with .Values.persistence.hostPath.type }}
        type: {{ . }}
        {{- end }}
      {{- else if eq $kind "pvc" }}
      persistentVolumeClaim:
        claimName: {{ .Values.persistence.persistentVolumeClaim.existingClaimName | default (include "ociregistry.fullname" .) }}
      {{- else }}
      emptyDir:
        {{- with .Values.persistence.emptyDir.sizeLimit }}
        sizeLimit: {{ . }}
        {{- end }}
      {{- end }}
    {{- if $managed }}
    - name: config
      secret:
        secretName: {{ include "ociregistry.fullname" . }}-config
        defaultMode: 0440
    {{- end }}
    {{- if .Values.serverTls.enabled }}
    - name: server-tls
      secret:
        secretName: {{ .Values.serverTls.secretName }}
        defaultMode: 0440
    {{- if and (include "ociregistry.verifyClients" .) .Values.serverTls.clientCaSecret }}
    - name: server-client-ca
      secret:
        secretName: {{ .Values.serverTls.clientCaSecret }}
        defaultMode: 0440
    {{- end }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml .Values.topologySpreadConstraints | nindent 4 }}
  {{- else if include "ociregistry.replicated" . }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "ociregistry.selectorLabels" . | nindent 10 }}
  {{- end }}
{{- end }}
