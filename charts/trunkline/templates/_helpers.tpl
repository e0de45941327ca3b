{{/* Name of the release's objects; the operator prefixes the data plane's with it too (<= 40 chars). */}}
{{- define "trunkline.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "trunkline.labels" -}}
app.kubernetes.io/name: trunkline
app.kubernetes.io/instance: {{ include "trunkline.fullname" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "trunkline.operatorSelector" -}}
app.kubernetes.io/name: trunkline
app.kubernetes.io/instance: {{ include "trunkline.fullname" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "trunkline.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "trunkline.platformName" -}}{{ include "trunkline.fullname" . }}-platform{{- end -}}
{{- define "trunkline.operatorName" -}}{{ include "trunkline.fullname" . }}-operator{{- end -}}
{{- define "trunkline.controlName" -}}{{ include "trunkline.fullname" . }}-control{{- end -}}
{{- define "trunkline.mediaName" -}}{{ include "trunkline.fullname" . }}-media{{- end -}}
{{/* "true" when the relays read their Node (media.advertise nodeInternalIP, nodeExternalIP, nodeAnnotation:). */}}
{{- define "trunkline.mediaReadsNode" -}}{{ hasPrefix "node" .Values.media.advertise }}{{- end -}}
{{- define "trunkline.testName" -}}{{ include "trunkline.fullname" . }}-test{{- end -}}

{{/* The Redis the edges share, as one URL (operator --redis); the password comes apart, from its Secret. */}}
{{- define "trunkline.redisUrl" -}}
{{- if .Values.redis.sentinel.addresses -}}
{{- printf "sentinel://%s/%s" (join "," .Values.redis.sentinel.addresses) .Values.redis.sentinel.masterName -}}
{{- else -}}
{{- .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{/* Cluster scope: every namespace, ClusterRoles; namespace scope: the release namespace, Roles;
operator.namespaces: those namespaces, a Role in each (no cluster-wide right to read Secrets). */}}
{{- define "trunkline.clusterScope" -}}{{ and (eq .Values.operator.scope "cluster") (not .Values.operator.namespaces) }}{{- end -}}
{{- define "trunkline.watchedNamespaces" -}}
{{- if .Values.operator.namespaces -}}{{ join "," .Values.operator.namespaces }}
{{- else if ne (include "trunkline.clusterScope" .) "true" -}}{{ .Release.Namespace }}
{{- end -}}
{{- end -}}

{{/*
The platform settings the operator reads (operator/platform.py is their model; values.yaml and its
schema are generated from operator/values.py, which shares platform.py's field types).
Values that are chart-only switches (tls.enabled, an empty sentinel list) are turned into the
model's shape here.
*/}}
{{- define "trunkline.platform" -}}
{{- $redis := dict -}}
{{- if .Values.redis.sentinel.addresses -}}
{{- $_ := set $redis "sentinel" .Values.redis.sentinel -}}
{{- else -}}
{{- $_ := set $redis "url" .Values.redis.url -}}
{{- end -}}
{{- if .Values.redis.passwordSecret.name -}}
{{- $_ := set $redis "passwordSecret" .Values.redis.passwordSecret -}}
{{- end -}}
{{- if .Values.redis.caSecret.name -}}
{{- $_ := set $redis "caSecret" .Values.redis.caSecret -}}
{{- end -}}
{{- $tls := omit .Values.internalTls "certManagerIssuer" -}}
{{- if eq .Values.internalTls.issuer "cert-manager" -}}
{{- $_ := set $tls "certManagerIssuer" .Values.internalTls.certManagerIssuer -}}
{{- end -}}
{{- $edge := omit .Values.edge "tls" "advertise" -}}
{{- if .Values.edge.advertise -}}
{{- $_ := set $edge "advertise" .Values.edge.advertise -}}
{{- end -}}
{{- if .Values.edge.tls.enabled -}}
{{- $_ := set $edge "tls" (omit .Values.edge.tls "enabled") -}}
{{- end -}}
{{- $control := merge (dict "serviceAccountName" (include "trunkline.controlName" .)) .Values.control -}}
{{- $media := .Values.media -}}
{{- if eq (include "trunkline.mediaReadsNode" .) "true" -}}
{{- $media = merge (dict "serviceAccountName" (include "trunkline.mediaName" .)) .Values.media -}}
{{- end -}}
{{- $platform := dict
  "name" (include "trunkline.fullname" .)
  "image" (include "trunkline.image" .)
  "imagePullPolicy" .Values.image.pullPolicy
  "imagePullSecrets" .Values.imagePullSecrets
  "httpPort" .Values.httpPort
  "logLevel" .Values.logLevel
  "redis" $redis
  "control" $control
  "edge" $edge
  "media" $media
  "mediaDenyCidrs" .Values.mediaDenyCidrs
  "cdr" .Values.cdr
  "telemetry" .Values.telemetry
  "internalTls" $tls
  "networkPolicies" .Values.networkPolicies
-}}
{{- if .Values.operator.namespaces -}}
{{- $_ := set $platform "watchNamespaces" .Values.operator.namespaces -}}
{{- else if not (eq (include "trunkline.clusterScope" .) "true") -}}
{{- $_ := set $platform "watchNamespace" .Release.Namespace -}}
{{- end -}}
{{- toYaml $platform -}}
{{- end -}}

{{- define "trunkline.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "trunkline.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}
