{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "ociregistry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name and the chart name, unless the
release name already contains the chart name.
*/}}
{{- define "ociregistry.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ociregistry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ociregistry.labels" -}}
helm.sh/chart: {{ include "ociregistry.chart" . }}
{{ include "ociregistry.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ociregistry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ociregistry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ociregistry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ociregistry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference from {registry, repository, tag, digest}: tag and digest may
both be set (repository:tag@digest); the digest decides what is pulled.
*/}}
{{- define "ociregistry.imageRef" -}}
{{- $ref := .repository }}
{{- if .registry }}
{{- $ref = printf "%s/%s" .registry .repository }}
{{- end }}
{{- if .tag }}
{{- $ref = printf "%s:%s" $ref (toString .tag) }}
{{- end }}
{{- if .digest }}
{{- $ref = printf "%s@%s" $ref .digest }}
{{- end }}
{{- $ref }}
{{- end }}

{{/* The server image; with neither tag nor digest, the chart's appVersion. */}}
{{- define "ociregistry.image" -}}
{{- $image := deepCopy .Values.image }}
{{- if and (not $image.tag) (not $image.digest) }}
{{- $_ := set $image "tag" .Chart.AppVersion }}
{{- end }}
{{- include "ociregistry.imageRef" $image }}
{{- end }}

{{- define "ociregistry.daemonset" -}}
{{- if eq .Values.mode "daemonset" }}true{{ end }}
{{- end }}

{{- define "ociregistry.hostNetwork" -}}
{{- if and (include "ociregistry.daemonset" .) .Values.daemonset.hostNetwork }}true{{ end }}
{{- end }}

{{/*
The port the server listens on in the container: configs.port (8080 when
empty), or daemonset.hostPort in node-local hostNetwork mode.
*/}}
{{- define "ociregistry.port" -}}
{{- if include "ociregistry.hostNetwork" . }}
{{- .Values.daemonset.hostPort | int }}
{{- else if not (kindIs "invalid" .Values.configs.port) }}
{{- if eq (toString .Values.configs.port) "" }}8080{{ else }}{{ .Values.configs.port | int }}{{ end }}
{{- else }}8080
{{- end }}
{{- end }}

{{/* The cache root the server uses: configs.imagePath or its built-in default. */}}
{{- define "ociregistry.imagePath" -}}
{{- default "/var/lib/ociregistry" .Values.configs.imagePath | trimSuffix "/" | default "/" }}
{{- end }}

{{- define "ociregistry.configMountPath" -}}
{{- (.Values.upstreamConfig | default dict).mountPath | default "/etc/ociregistry" | trimSuffix "/" }}
{{- end }}

{{- define "ociregistry.configFileName" -}}registry-config.yaml{{- end }}

{{/*
"true" when the chart renders the server's config file into a Secret: always,
unless configs.configPath names a file of the user's own (and neither
upstreamConfig nor upstreamMirror is set).
*/}}
{{- define "ociregistry.configManaged" -}}
{{- $mount := include "ociregistry.configMountPath" . }}
{{- $file := printf "%s/%s" $mount (include "ociregistry.configFileName" .) }}
{{- $cp := .Values.configs.configPath | default "" | trimSuffix "/" }}
{{- if or (eq $cp "") (eq $cp $mount) (eq $cp $file) }}true
{{- else if or .Values.upstreamConfig .Values.upstreamMirror .Values.serverTls.enabled }}
{{- fail (printf "configs.configPath (%s) must match upstreamConfig.mountPath (%s) or %s, the file the chart renders from upstreamConfig, upstreamMirror and serverTls; leave configs.configPath empty to use it" $cp $mount $file) }}
{{- end }}
{{- end }}

{{/* The --config-file argument. */}}
{{- define "ociregistry.configFile" -}}
{{- if include "ociregistry.configManaged" . }}
{{- printf "%s/%s" (include "ociregistry.configMountPath" .) (include "ociregistry.configFileName" .) }}
{{- else }}
{{- .Values.configs.configPath }}
{{- end }}
{{- end }}

{{/* Where the serverTls Secrets are mounted (read-only). */}}
{{- define "ociregistry.serverTlsMountPath" -}}/etc/ociregistry-tls{{- end }}
{{- define "ociregistry.clientCaMountPath" -}}/etc/ociregistry-client-ca{{- end }}

{{/* "true" when the server verifies client certificates (serverTls.clientAuth verify). */}}
{{- define "ociregistry.verifyClients" -}}
{{- if and .Values.serverTls.enabled (eq (toString .Values.serverTls.clientAuth) "verify") }}true{{ end }}
{{- end }}

{{/*
The server's config file: upstreamConfig without mountPath (registries: []
when absent), plus upstreamMirror and serverTlsConfig (the paths where the
serverTls Secrets are mounted).
*/}}
{{- define "ociregistry.configData" -}}
{{- $cfg := omit (deepCopy (.Values.upstreamConfig | default dict)) "mountPath" }}
{{- if not (hasKey $cfg "registries") }}
{{- $_ := set $cfg "registries" list }}
{{- end }}
{{- if .Values.upstreamMirror }}
{{- $_ := set $cfg "upstreamMirror" .Values.upstreamMirror }}
{{- end }}
{{- $os := .Values.objectStorage }}
{{- if $os.enabled }}
{{- $storage := dict "kind" $os.kind "bucket" $os.bucket "pathStyle" $os.pathStyle }}
{{- range $key := list "prefix" "endpoint" "region" }}
{{- with index $os $key }}{{ $_ := set $storage $key . }}{{ end }}
{{- end }}
{{- $_ := set $cfg "storage" $storage }}
{{- with $os.localCacheMaxSize }}
{{- $_ := set $cfg "localCache" (dict "maxSize" .) }}
{{- end }}
{{- end }}
{{- if .Values.serverTls.enabled }}
{{- $dir := include "ociregistry.serverTlsMountPath" . }}
{{- $tls := dict "cert" (printf "%s/tls.crt" $dir) "key" (printf "%s/tls.key" $dir) "clientAuth" "none" }}
{{- if include "ociregistry.verifyClients" . }}
{{- $_ := set $tls "clientAuth" "verify" }}
{{- if .Values.serverTls.clientCaSecret }}
{{- $_ := set $tls "ca" (printf "%s/ca.crt" (include "ociregistry.clientCaMountPath" .)) }}
{{- else }}
{{- $_ := set $tls "ca" (printf "%s/ca.crt" $dir) }}
{{- end }}
{{- end }}
{{- $_ := set $cfg "serverTlsConfig" $tls }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Checksum of the settings of the config file that apply only at start-up: a
change of one rolls the pods. The server reloads everything else from the
mounted Secret by itself (registries, credentials, TLS files, policies).
*/}}
{{- define "ociregistry.configChecksum" -}}
{{- $cfg := include "ociregistry.configData" . | fromYaml }}
{{- $restart := list "port" "host" "imagePath" "storage" "adminPort" "adminHost" "adminToken" "adminTokenFile" "metrics" "health" "maxConnections" "maxConnectionsPerClient" "headerTimeout" "keepAlive" "drainTimeout" "shutdownDelay" "logLevel" "logFormat" "pruneConfig" }}
{{- $kept := dict "serverTlsConfig" (hasKey $cfg "serverTlsConfig") }}
{{- range $key := $restart }}
{{- if hasKey $cfg $key }}{{ $_ := set $kept $key (index $cfg $key) }}{{ end }}
{{- end }}
{{- toYaml $kept | sha256sum }}
{{- end }}

{{/* configs.pullTimeout as digits ("" when empty); fails on anything else. */}}
{{- define "ociregistry.pullTimeout" -}}
{{- $pt := .Values.configs.pullTimeout }}
{{- if kindIs "invalid" $pt }}
{{- else if kindIs "string" $pt }}
{{- if and $pt (not (regexMatch "^[0-9]+$" $pt)) }}
{{- fail (printf "configs.pullTimeout is in milliseconds, a whole number, not %q" $pt) }}
{{- end }}
{{- $pt }}
{{- else if or (lt (float64 $pt) 1.0) (ne (float64 $pt) (float64 (int64 $pt))) }}
{{- fail (printf "configs.pullTimeout is in milliseconds, a whole number, not %v" $pt) }}
{{- else }}
{{- int64 $pt }}
{{- end }}
{{- end }}

{{/* The server's command line after the entrypoint (the binary). */}}
{{- define "ociregistry.args" -}}
{{- $args := list }}
{{- $cf := include "ociregistry.configFile" . }}
{{- if $cf }}{{ $args = concat $args (list "--config-file" $cf) }}{{ end }}
{{- if .Values.configs.imagePath }}{{ $args = concat $args (list "--image-path" (toString .Values.configs.imagePath)) }}{{ end }}
{{- if .Values.configs.logLevel }}{{ $args = concat $args (list "--log-level" (toString .Values.configs.logLevel)) }}{{ end }}
{{- if .Values.configs.logFormat }}{{ $args = concat $args (list "--log-format" (toString .Values.configs.logFormat)) }}{{ end }}
{{- $args = append $args "serve" }}
{{- $port := include "ociregistry.port" . }}
{{- if or (include "ociregistry.hostNetwork" .) (ne $port "8080") (and (not (kindIs "invalid" .Values.configs.port)) (ne (toString .Values.configs.port) "")) }}
{{- $args = concat $args (list "--port" $port) }}
{{- end }}
{{- $pt := include "ociregistry.pullTimeout" . }}
{{- if $pt }}{{ $args = concat $args (list "--pull-timeout" $pt) }}{{ end }}
{{- if .Values.metrics.enabled }}{{ $args = concat $args (list "--metrics" (toString (.Values.metrics.port | int))) }}{{ end }}
{{- if .Values.health.enabled }}{{ $args = concat $args (list "--health" (toString (.Values.health.port | int))) }}{{ end }}
{{- range .Values.extraArgs }}{{ $args = append $args (toString .) }}{{ end }}
{{- toYaml $args }}
{{- end }}

{{/*
The port a probe ({root, probe}) targets: its `port`, else `health` when
health.enabled, else `http` (the registry port).
*/}}
{{- define "ociregistry.probePort" -}}
{{- $port := "" }}
{{- if not (kindIs "invalid" .probe.port) }}{{ $port = toString .probe.port }}{{ end }}
{{- if $port }}{{ $port }}
{{- else if .root.Values.health.enabled }}health
{{- else }}http
{{- end }}
{{- end }}

{{/*
"true" when a probe on port ({root, port}) must use HTTPS: serverTls is on
and the port is not the plain-HTTP health port.
*/}}
{{- define "ociregistry.probeHttps" -}}
{{- $v := .root.Values }}
{{- if $v.serverTls.enabled }}
{{- $onHealth := or (eq .port "health") (and $v.health.enabled (eq .port (toString ($v.health.port | int)))) }}
{{- if not $onHealth }}true{{ end }}
{{- end }}
{{- end }}

{{/* Secure defaults, each key replaceable through the values. */}}
{{- define "ociregistry.podSecurityContext" -}}
{{- $ctx := dict "runAsNonRoot" true "runAsUser" 65532 "runAsGroup" 65532 "fsGroup" 65532 "fsGroupChangePolicy" "OnRootMismatch" "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- range $k, $v := .Values.podSecurityContext }}{{ $_ := set $ctx $k $v }}{{ end }}
{{- toYaml $ctx }}
{{- end }}

{{- define "ociregistry.securityContext" -}}
{{- $ctx := dict "runAsNonRoot" true "runAsUser" 65532 "runAsGroup" 65532 "readOnlyRootFilesystem" true "allowPrivilegeEscalation" false "capabilities" (dict "drop" (list "ALL")) "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- range $k, $v := .Values.securityContext }}{{ $_ := set $ctx $k $v }}{{ end }}
{{- toYaml $ctx }}
{{- end }}

{{/* Which volume holds the cache: hostPath, pvc or emptyDir. */}}
{{- define "ociregistry.persistenceKind" -}}
{{- $p := .Values.persistence }}
{{- if include "ociregistry.daemonset" . }}hostPath
{{- else if $p.hostPath.enabled }}hostPath
{{- else if $p.persistentVolumeClaim.enabled }}pvc
{{- else if $p.emptyDir.enabled }}emptyDir
{{- end }}
{{- end }}

{{/* Rendering fails early, with a message, on values that cannot work. */}}
{{/* Rules across values (types and enums are values.schema.json's). */}}
{{- define "ociregistry.validate" -}}
{{- $p := .Values.persistence }}
{{- $os := .Values.objectStorage }}
{{- if $os.enabled }}
{{- if not $os.bucket }}
{{- fail "objectStorage.bucket is required with objectStorage.enabled" }}
{{- end }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not (include "ociregistry.daemonset" .)) }}
{{- if not $os.enabled }}
{{- fail "replicaCount above 1 needs objectStorage.enabled: a cache directory has one writer, so replicas share a bucket" }}
{{- end }}
{{- if $p.persistentVolumeClaim.enabled }}
{{- fail "replicaCount above 1 cannot share persistence.persistentVolumeClaim: each replica keeps its local copies in its own emptyDir or hostPath" }}
{{- end }}
{{- end }}
{{- if and $p.hostPath.enabled $p.persistentVolumeClaim.enabled }}
{{- fail "persistence: enable only one of persistence.hostPath and persistence.persistentVolumeClaim (both are enabled)" }}
{{- end }}
{{- if and (include "ociregistry.daemonset" .) $p.persistentVolumeClaim.enabled }}
{{- fail "persistence.persistentVolumeClaim cannot be used with mode: daemonset (each node caches in persistence.hostPath.path)" }}
{{- end }}
{{- if not (include "ociregistry.persistenceKind" .) }}
{{- fail "persistence: enable one of persistence.emptyDir, persistence.hostPath, persistence.persistentVolumeClaim (the cache volume named images)" }}
{{- end }}
{{- if and (include "ociregistry.daemonset" .) (not $p.hostPath.path) }}
{{- fail "persistence.hostPath.path is required with mode: daemonset" }}
{{- end }}
{{- range .Values.volumes }}
{{- if eq .name "images" }}
{{- fail "volumes: the name images is reserved for the cache volume that persistence.* defines" }}
{{- end }}
{{- if and $.Values.serverTls.enabled (has .name (list "server-tls" "server-client-ca")) }}
{{- fail (printf "volumes: the name %s is reserved for the serverTls Secrets" .name) }}
{{- end }}
{{- end }}
{{- $mounted := "" }}
{{- range (include "ociregistry.volumeMounts" . | fromYamlArray) }}
{{- if eq .name "images" }}{{ $mounted = .mountPath | trimSuffix "/" | default "/" }}{{ end }}
{{- end }}
{{- if not $mounted }}
{{- fail "volumeMounts: an entry named images must mount the cache volume (at configs.imagePath, /var/lib/ociregistry by default)" }}
{{- end }}
{{- if ne $mounted (include "ociregistry.imagePath" .) }}
{{- fail (printf "volumeMounts: the cache volume images is mounted at %s but the server keeps its cache in %s: set configs.imagePath and the images entry of volumeMounts to the same path" $mounted (include "ociregistry.imagePath" .)) }}
{{- end }}
{{- $port := include "ociregistry.port" . | int }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail (printf "configs.port must be a port number (1-65535), not %q" (toString .Values.configs.port)) }}
{{- end }}
{{- if and (include "ociregistry.hostNetwork" .) (not (kindIs "invalid" .Values.configs.port)) (ne (toString .Values.configs.port) "") (ne (toString .Values.configs.port) (toString (.Values.daemonset.hostPort | int))) }}
{{- fail "daemonset.hostNetwork: the server listens on daemonset.hostPort itself; leave configs.port empty or equal to it" }}
{{- end }}
{{- if and .Values.upstreamMirror (not (regexMatch "^https?://[^/?#@]+/?$" .Values.upstreamMirror)) }}
{{- fail (printf "upstreamMirror must be http(s)://host[:port], not %q" .Values.upstreamMirror) }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled (the metrics port)" }}
{{- end }}
{{- $ports := dict (toString $port) "the registry port" }}
{{- range $name := list "metrics" "health" }}
{{- $s := index $.Values $name }}
{{- if $s.enabled }}
{{- $p := $s.port | int }}
{{- if or (lt $p 1) (gt $p 65535) }}
{{- fail (printf "%s.port must be a port number (1-65535), not %q" $name (toString $s.port)) }}
{{- end }}
{{- if hasKey $ports (toString $p) }}
{{- fail (printf "%s.port %d is already %s: the server needs a separate port for each" $name $p (get $ports (toString $p))) }}
{{- end }}
{{- $_ := set $ports (toString $p) (printf "%s.port" $name) }}
{{- end }}
{{- end }}
{{- if .Values.serverTls.enabled }}
{{- if not .Values.serverTls.secretName }}
{{- fail "serverTls.enabled needs serverTls.secretName (a kubernetes.io/tls Secret with tls.crt and tls.key)" }}
{{- end }}
{{- if include "ociregistry.verifyClients" . }}
{{- range $probe := list "livenessProbe" "readinessProbe" }}
{{- $pv := index $.Values $probe }}
{{- if and $pv.enabled (include "ociregistry.probeHttps" (dict "root" $ "port" (include "ociregistry.probePort" (dict "root" $ "probe" $pv)))) }}
{{- fail (printf "serverTls.clientAuth verify: the kubelet's %s presents no client certificate; set health.enabled (plain-HTTP /health and /ready on health.port) or disable the probe" $probe) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $_ := include "ociregistry.pullTimeout" . }}
{{- $_ := include "ociregistry.configManaged" . }}
{{- end }}

{{/* The Deployment strategy: strategy, or by default Recreate (one writer
per cache volume), a surge-first rolling update on a shared bucket. */}}
{{- define "ociregistry.strategy" -}}
{{- if .Values.strategy }}
{{- toYaml .Values.strategy }}
{{- else if .Values.objectStorage.enabled }}
type: RollingUpdate
rollingUpdate:
  maxSurge: 1
  maxUnavailable: 0
{{- else }}
type: Recreate
{{- end }}
{{- end }}

{{/* "true" when a Deployment runs more than one replica. */}}
{{- define "ociregistry.replicated" -}}
{{- if and (not (include "ociregistry.daemonset" .)) (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* A server duration (`30s`, `2m`, `1h`, `500ms`, `0`) in whole seconds, rounded up. */}}
{{- define "ociregistry.seconds" -}}
{{- $d := toString . }}
{{- if regexMatch "^[0-9]+s$" $d }}{{ trimSuffix "s" $d | int }}
{{- else if regexMatch "^[0-9]+m$" $d }}{{ mul (trimSuffix "m" $d | int) 60 }}
{{- else if regexMatch "^[0-9]+h$" $d }}{{ mul (trimSuffix "h" $d | int) 3600 }}
{{- else if regexMatch "^[0-9]+ms$" $d }}{{ div (add (trimSuffix "ms" $d | int) 999) 1000 }}
{{- else if eq $d "0" }}0
{{- else }}{{ fail (printf "terminationGracePeriodSeconds: cannot read the duration %q (write it as Ns, Nm, Nh or Nms), or set terminationGracePeriodSeconds" $d) }}
{{- end }}
{{- end }}

{{/* The pod's grace period when none is set: the server's shutdownDelay and
drainTimeout (from upstreamConfig, or their defaults 5s and 30s) and 10 s
to save and exit. */}}
{{- define "ociregistry.gracePeriod" -}}
{{- $cfg := .Values.upstreamConfig | default dict }}
{{- $delay := include "ociregistry.seconds" ($cfg.shutdownDelay | default "5s") | int }}
{{- $drain := include "ociregistry.seconds" ($cfg.drainTimeout | default "30s") | int }}
{{- add $delay $drain 10 }}
{{- end }}

{{/* Labels of the node-config pods: a name of their own, so that the
registry's Service never selects them. */}}
{{- define "ociregistry.nodeConfigSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-node-config" (include "ociregistry.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ociregistry.nodeConfigLabels" -}}
helm.sh/chart: {{ include "ociregistry.chart" . }}
{{ include "ociregistry.nodeConfigSelectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The port node-config pods answer /ready on. */}}
{{- define "ociregistry.nodeConfigReadyPort" -}}8089{{- end }}

{{/* The mirror as nodes reach it: nodeConfig.mirror, else localhost on the
node port (or the DaemonSet's hostPort). */}}
{{- define "ociregistry.nodeConfigMirror" -}}
{{- $nc := .Values.nodeConfig }}
{{- if $nc.mirror }}
{{- $nc.mirror }}
{{- else }}
{{- $scheme := ternary "https" "http" (.Values.serverTls.enabled | default false) }}
{{- if include "ociregistry.daemonset" . }}
{{- printf "%s://localhost:%d" $scheme (.Values.daemonset.hostPort | int) }}
{{- else if and (has .Values.service.type (list "NodePort" "LoadBalancer")) .Values.service.nodePort }}
{{- printf "%s://localhost:%d" $scheme (.Values.service.nodePort | int) }}
{{- else }}
{{- fail "nodeConfig.mirror is required: the Service has no fixed node port (service.type NodePort with service.nodePort) and mode is not daemonset" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The pod of a node-config DaemonSet: "apply" (the nodeConfig DaemonSet) or
"remove" (the uninstall hook). Root, to write the node's root-owned files,
with no capability and a read-only root filesystem; the node's
directories are mounted under /host.
*/}}
{{- define "ociregistry.nodeConfigPod" -}}
{{- $ := .root }}
{{- $nc := $.Values.nodeConfig }}
{{- $dirs := list }}
{{- if eq $nc.runtime "containerd" }}
{{- $dirs = list (dict "name" "certs" "path" $nc.paths.certsDir "readOnly" false) (dict "name" "containerd" "path" (dir $nc.paths.containerdConfig) "readOnly" true) }}
{{- else if eq $nc.runtime "crio" }}
{{- $dirs = list (dict "name" "crio" "path" $nc.paths.crioDir "readOnly" false) }}
{{- else }}
{{- $dirs = list (dict "name" "k3s" "path" (dir $nc.paths.k3sFile) "readOnly" false) }}
{{- end }}
metadata:
  labels:
    {{- include "ociregistry.nodeConfigLabels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ ternary "node-config" "node-cleanup" (eq .action "apply") }}
spec:
  automountServiceAccountToken: false
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $nc.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: 5
  securityContext:
    runAsUser: 0
    runAsGroup: 0
    seccompProfile:
      type: RuntimeDefault
  {{- with $nc.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $nc.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: node-config
      image: {{ include "ociregistry.image" $ | quote }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      args:
        {{- with $.Values.configs.logFormat }}
        - --log-format
        - {{ . | quote }}
        {{- end }}
        - node-config
        - {{ .action }}
        - --root
        - /host
        - --runtime
        - {{ $nc.runtime }}
        - --mirror
        - {{ include "ociregistry.nodeConfigMirror" $ | quote }}
        - --registry
        - {{ join "," $nc.registries | quote }}
        {{- if $nc.fallback }}
        - --fallback
        - --dial-timeout
        - {{ $nc.dialTimeout | quote }}
        {{- end }}
        {{- if $nc.overwrite }}
        - --overwrite
        {{- end }}
        - --certs-dir
        - {{ $nc.paths.certsDir | quote }}
        - --containerd-config
        - {{ $nc.paths.containerdConfig | quote }}
        - --crio-dir
        - {{ $nc.paths.crioDir | quote }}
        - --k3s-file
        - {{ $nc.paths.k3sFile | quote }}
        - --every
        - {{ ternary $nc.interval "1h" (eq .action "apply") | quote }}
        - --ready-port
        - {{ include "ociregistry.nodeConfigReadyPort" $ | quote }}
      ports:
        - name: ready
          containerPort: {{ include "ociregistry.nodeConfigReadyPort" $ }}
      readinessProbe:
        httpGet:
          path: /ready
          port: ready
        periodSeconds: 2
      securityContext:
        runAsNonRoot: false
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: [ALL]
      resources:
        {{- toYaml $nc.resources | nindent 8 }}
      volumeMounts:
        {{- range $dirs }}
        - name: {{ .name }}
          mountPath: {{ printf "/host%s" .path | quote }}
          readOnly: {{ .readOnly }}
        {{- end }}
  volumes:
    {{- range $dirs }}
    - name: {{ .name }}
      hostPath:
        path: {{ .path | quote }}
        type: DirectoryOrCreate
    {{- end }}
{{- end }}

{{/*
volumeMounts as rendered: an images entry at the server's default cache
path follows configs.imagePath, so that configs.imagePath alone moves the
cache; an entry at any other path is kept as given (and must agree).
*/}}
{{- define "ociregistry.volumeMounts" -}}
{{- $mounts := list }}
{{- range .Values.volumeMounts }}
{{- $m := deepCopy . }}
{{- if and (eq $m.name "images") (eq ($m.mountPath | trimSuffix "/") "/var/lib/ociregistry") }}
{{- $_ := set $m "mountPath" (include "ociregistry.imagePath" $) }}
{{- end }}
{{- $mounts = append $mounts $m }}
{{- end }}
{{- toYaml $mounts }}
{{- end }}
