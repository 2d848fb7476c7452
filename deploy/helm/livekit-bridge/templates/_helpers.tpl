{{/* Names and labels. */}}
{{- define "livekit-bridge.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "livekit-bridge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "livekit-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "livekit-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.shape }}
{{- end -}}

{{- define "livekit-bridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "livekit-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "livekit-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "livekit-bridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The session-routing proxy (pool shape, proxy.enabled): its names and labels. Its own component
label keeps the bridges' selectors (component: pool) from matching its pods. */}}
{{- define "livekit-bridge.proxyEnabled" -}}
{{- if and (eq .Values.shape "pool") .Values.proxy.enabled -}}true{{- end -}}
{{- end -}}

{{- define "livekit-bridge.proxyName" -}}
{{- printf "%s-proxy" (include "livekit-bridge.fullname" .) | trunc 55 | trimSuffix "-" -}}
{{- end -}}

{{- define "livekit-bridge.proxySelectorLabels" -}}
app.kubernetes.io/name: {{ include "livekit-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
{{- end -}}

{{- define "livekit-bridge.proxyLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "livekit-bridge.proxySelectorLabels" . }}
app.kubernetes.io/version: {{ .Values.proxy.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The headless Service of every bridge pod, ready or not, that the proxy resolves (SRV). */}}
{{- define "livekit-bridge.poolServiceName" -}}
{{- printf "%s-pool" (include "livekit-bridge.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The proxy's second config file, after deploy/haproxy/haproxy.cfg (`-f` twice): the `peers` section
that shares the stick table between the replicas, and /healthz for the probes. Each replica is a
peer named after its pod; its own line has no address (HAProxy's rule for the local peer), the
others' point at their per-replica ClusterIP Service, which resolves before the pod exists and keeps
its address when the pod is replaced (HAProxy resolves peer addresses once, at start).
*/}}
{{- define "livekit-bridge.proxyPeersConfig" -}}
# Rendered by the livekit-bridge chart. The routing rules are haproxy.cfg (deploy/haproxy/haproxy.cfg,
# verbatim); this file adds what several replicas in Kubernetes need. Why: docs/design/deploy.md.

# The stick table of backend `bridges` (BRIDGE_PROXY_PEERS names this section) is shared: a user's
# entry written by one replica is pushed to the others within milliseconds, and a restarted replica
# learns the whole table from the others before it routes by it.
peers proxies
    bind :{{ .Values.proxy.peersPort }}
{{- $proxy := include "livekit-bridge.proxyName" . }}
{{- range $i := until (int .Values.proxy.replicas) }}
{{- $peer := printf "%s-%d" $proxy $i }}
.if streq("${POD_NAME}",{{ $peer }})
    server {{ $peer }}
.else
    server {{ $peer }} {{ $peer }}.{{ $.Release.Namespace }}.svc.{{ $.Values.proxy.clusterDomain }}:{{ $.Values.proxy.peersPort }}
.endif
{{- end }}

# The kubelet's liveness and readiness probes.
frontend health
    bind :{{ .Values.proxy.healthPort }}
    monitor-uri /healthz
{{ end -}}

{{/* The bearer token is for the pool's TCP listener; a sidecar's unix socket is owner-only instead. */}}
{{- define "livekit-bridge.useToken" -}}
{{- if and (eq .Values.shape "pool") .Values.auth.tokenSecret.name -}}true{{- end -}}
{{- end -}}

{{- define "livekit-bridge.socketPath" -}}
{{- printf "%s/bridge.sock" (trimSuffix "/" .Values.sidecar.socketDir) -}}
{{- end -}}

{{/* Checks that would otherwise surface as a bridge that refuses to start. */}}
{{- define "livekit-bridge.validate" -}}
{{- if not (has .Values.shape (list "pool" "sidecar")) -}}
{{- fail (printf "shape must be pool or sidecar, not %q" .Values.shape) -}}
{{- end -}}
{{- if not (has .Values.probes.type (list "auto" "grpc" "exec" "http")) -}}
{{- fail (printf "probes.type must be auto, grpc, exec or http, not %q" .Values.probes.type) -}}
{{- end -}}
{{- if and (eq .Values.shape "pool") (not .Values.auth.tokenSecret.name) (not (and .Values.tls.secretName .Values.tls.clientCA)) -}}
{{- fail "pool shape: the bridge binds a pod address, which needs auth.tokenSecret.name or mutual TLS (tls.secretName + tls.clientCA)" -}}
{{- end -}}
{{- if and .Values.tls.clientCA (not .Values.tls.secretName) -}}
{{- fail "tls.clientCA needs tls.secretName (its ca.crt is the client CA)" -}}
{{- end -}}
{{- if and (eq (include "livekit-bridge.probeType" .) "grpc") .Values.tls.secretName -}}
{{- fail "probes.type=grpc cannot check a TLS listener (the kubelet's gRPC probe speaks plaintext): use http (the metrics port's /healthz and /readyz) or exec" -}}
{{- end -}}
{{- if and (eq (include "livekit-bridge.probeType" .) "grpc") (eq .Values.shape "sidecar") -}}
{{- fail "probes.type=grpc cannot reach the sidecar's unix socket: use exec (or auto)" -}}
{{- end -}}
{{- if and (eq (include "livekit-bridge.probeType" .) "http") (not .Values.metrics.port) -}}
{{- fail "probes.type=http probes the metrics port: set metrics.port" -}}
{{- end -}}
{{- if and (eq .Values.shape "sidecar") .Values.sidecar.native (semverCompare "<1.29.0-0" .Capabilities.KubeVersion.Version) -}}
{{- fail (printf "sidecar.native needs Kubernetes >= 1.29 (native sidecars); this is %s: set sidecar.native=false" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if include "livekit-bridge.proxyEnabled" . -}}
{{- if .Values.tls.secretName -}}
{{- fail "proxy.enabled: the chart's proxy speaks h2c (gRPC without TLS) to the bridges, which tls.secretName turns off: set proxy.enabled=false and run a proxy that speaks TLS to them (docs/design/deploy.md)" -}}
{{- end -}}
{{- if not .Values.metrics.port -}}
{{- fail "proxy.enabled: the proxy checks each bridge's /readyz on the metrics port: set metrics.port" -}}
{{- end -}}
{{- if lt (int .Values.proxy.replicas) 1 -}}
{{- fail "proxy.replicas must be at least 1 (2 or more survive a node)" -}}
{{- end -}}
{{- end -}}
{{- if not (has .Values.autoscaling.metric (list "cpu" "sessions")) -}}
{{- fail (printf "autoscaling.metric must be cpu or sessions, not %q" .Values.autoscaling.metric) -}}
{{- end -}}
{{- end -}}

{{/* The probe mechanism in force: see probes.type in values.yaml. */}}
{{- define "livekit-bridge.probeType" -}}
{{- if ne .Values.probes.type "auto" -}}
{{- .Values.probes.type -}}
{{- else if eq .Values.shape "sidecar" -}}
exec
{{- else if .Values.metrics.port -}}
http
{{- else if .Values.tls.secretName -}}
exec
{{- else -}}
grpc
{{- end -}}
{{- end -}}

{{/*
Seconds the kubelet waits between SIGTERM and SIGKILL: the bridge's drain (BRIDGE_DRAIN_TIMEOUT_S,
when set) + its session shutdown (BRIDGE_SHUTDOWN_TIMEOUT_S) + a margin; for a native sidecar, plus
the cloud's own shutdown, which comes first. Tied here so raising either
timeout cannot leave a grace period that kills a draining bridge.
*/}}
{{- define "livekit-bridge.terminationGracePeriodSeconds" -}}
{{- $drain := int (default 0 .Values.bridge.drainTimeoutSeconds) -}}
{{- $shutdown := int .Values.bridge.shutdownTimeoutSeconds -}}
{{- $cloud := 0 -}}
{{- if and (eq .Values.shape "sidecar") .Values.sidecar.native -}}
{{- /* a native sidecar gets SIGTERM only after the cloud container has exited */ -}}
{{- $cloud = int .Values.sidecar.cloud.terminationSeconds -}}
{{- end -}}
{{- add $drain $shutdown $cloud (int .Values.terminationGraceMarginSeconds) -}}
{{- end -}}

{{/* One probe body (no period/threshold fields): grpc, exec or http. $path is used by http only. */}}
{{- define "livekit-bridge.probeHandler" -}}
{{- $root := index . 0 -}}
{{- $path := index . 1 -}}
{{- $type := include "livekit-bridge.probeType" $root -}}
{{- if eq $type "grpc" }}
grpc:
  port: {{ $root.Values.bridge.grpcPort }}
{{- else if eq $type "exec" }}
exec:
  command: ["/opt/livekit-bridge/bin/python", "/opt/livekit-bridge/healthcheck.py"]
{{- else }}
{{- /*
  ===== HTTP probes =====
  /healthz (alive) and /readyz (ready: not draining, not shutting down, below BRIDGE_MAX_SESSIONS) on
  the metrics port (bridge/metrics_server.py); they work whatever TLS the gRPC port has.
*/}}
httpGet:
  path: {{ $path }}
  port: metrics
{{- end }}
{{- end -}}

{{/* The bridge's environment (README's settings table). */}}
{{- define "livekit-bridge.env" -}}
{{- if eq .Values.shape "sidecar" }}
- name: LIVEKIT_GRPC_SOCKET
  value: {{ include "livekit-bridge.socketPath" . | quote }}
{{- else }}
- name: BRIDGE_HOST
  value: {{ .Values.bridge.bindHost | quote }}
- name: PORT
  value: {{ .Values.bridge.grpcPort | quote }}
{{- end }}
{{- with .Values.bridge.livekitUrl }}
- name: LIVEKIT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.bridge.roomServerAllow }}
- name: BRIDGE_LIVEKIT_URL_ALLOW
  value: {{ . | quote }}
{{- end }}
- name: BRIDGE_SHUTDOWN_TIMEOUT_S
  value: {{ .Values.bridge.shutdownTimeoutSeconds | quote }}
{{- if not (kindIs "invalid" .Values.bridge.drainTimeoutSeconds) }}
- name: BRIDGE_DRAIN_TIMEOUT_S
  value: {{ .Values.bridge.drainTimeoutSeconds | quote }}
{{- end }}
{{- if not (kindIs "invalid" .Values.bridge.maxSessions) }}
- name: BRIDGE_MAX_SESSIONS
  value: {{ .Values.bridge.maxSessions | quote }}
{{- end }}
{{- if .Values.metrics.port }}
- name: BRIDGE_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
- name: BRIDGE_METRICS_HOST
  value: "0.0.0.0"
{{- end }}
{{- if include "livekit-bridge.useToken" . }}
- name: BRIDGE_AUTH_TOKEN_FILE
  value: /etc/livekit-bridge/auth/{{ .Values.auth.tokenSecret.key }}
{{- end }}
{{- if .Values.tls.secretName }}
- name: BRIDGE_TLS_CERT
  value: /etc/livekit-bridge/tls/tls.crt
- name: BRIDGE_TLS_KEY
  value: /etc/livekit-bridge/tls/tls.key
{{- if .Values.tls.clientCA }}
- name: BRIDGE_TLS_CLIENT_CA
  value: /etc/livekit-bridge/tls/ca.crt
{{- end }}
{{- end }}
- name: BRIDGE_NOFILE
  value: {{ .Values.bridge.nofile | quote }}
- name: BRIDGE_LOG_LEVEL
  value: {{ .Values.bridge.logLevel | quote }}
- name: BRIDGE_LOG_FORMAT
  value: {{ .Values.bridge.logFormat | quote }}
{{- with .Values.bridge.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The bridge container (both shapes). */}}
{{- define "livekit-bridge.container" -}}
- name: bridge
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if and (eq .Values.shape "sidecar") .Values.sidecar.native }}
  restartPolicy: Always
  {{- end }}
  env:
    {{- include "livekit-bridge.env" . | trim | nindent 4 }}
  ports:
    {{- if eq .Values.shape "pool" }}
    - name: grpc
      containerPort: {{ .Values.bridge.grpcPort }}
      protocol: TCP
    {{- end }}
    {{- if .Values.metrics.port }}
    - name: metrics
      containerPort: {{ .Values.metrics.port }}
      protocol: TCP
    {{- end }}
  startupProbe:
    {{- include "livekit-bridge.probeHandler" (list . .Values.probes.http.livenessPath) | trim | nindent 4 }}
    {{- toYaml .Values.probes.startup | nindent 4 }}
  livenessProbe:
    {{- include "livekit-bridge.probeHandler" (list . .Values.probes.http.livenessPath) | trim | nindent 4 }}
    {{- toYaml .Values.probes.liveness | nindent 4 }}
  readinessProbe:
    {{- include "livekit-bridge.probeHandler" (list . .Values.probes.http.readinessPath) | trim | nindent 4 }}
    {{- toYaml .Values.probes.readiness | nindent 4 }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- if eq .Values.shape "sidecar" }}
    - name: bridge-socket
      mountPath: {{ .Values.sidecar.socketDir }}
    {{- end }}
    {{- if include "livekit-bridge.useToken" . }}
    - name: auth
      mountPath: /etc/livekit-bridge/auth
      readOnly: true
    {{- end }}
    {{- if .Values.tls.secretName }}
    - name: tls
      mountPath: /etc/livekit-bridge/tls
      readOnly: true
    {{- end }}
{{- end -}}
