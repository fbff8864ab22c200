{{/*
Names. Release "aicert" gives aicert-operator, aicert-agent, aicert-training-pods, ...
*/}}
{{- define "aicert.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aicert.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "aicert.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aicert.operatorName" -}}
{{- printf "%s-operator" (include "aicert.fullname" .) }}
{{- end }}

{{- define "aicert.agentName" -}}
{{- printf "%s-agent" (include "aicert.fullname" .) }}
{{- end }}

{{/*
The identities the admission policies name: system:serviceaccount:<release namespace>:<name>.
*/}}
{{- define "aicert.operatorUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "aicert.operatorName" .) }}
{{- end }}

{{- define "aicert.agentUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "aicert.agentName" .) }}
{{- end }}

{{- define "aicert.agentPriorityClassName" -}}
{{- default (printf "%s-agent-critical" (include "aicert.fullname" .)) .Values.agent.priorityClass.name }}
{{- end }}

{{/*
Labels. None starts with aicert.dev/: the admission policies reserve those for training pods.
*/}}
{{- define "aicert.labels" -}}
helm.sh/chart: {{ include "aicert.chart" . }}
app.kubernetes.io/name: {{ include "aicert.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aicert
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "aicert.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aicert.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
An image by digest: repository@sha256:<64 hex>. Fails with a clear message when the repository or
the digest is missing or malformed (tags are not accepted).
  include "aicert.image" (dict "image" .Values.agent.image "path" "agent.image")
*/}}
{{- define "aicert.image" -}}
{{- $repository := .image.repository | default "" }}
{{- $digest := .image.digest | default "" }}
{{- if not $repository }}
{{- fail (printf "%s.repository is required (e.g. ghcr.io/example/aicert-%s)" .path (trimSuffix ".image" .path)) }}
{{- end }}
{{- if regexMatch "[@\\s]" $repository }}
{{- fail (printf "%s.repository must be a repository without tag or digest, got %q" .path $repository) }}
{{- end }}
{{- if regexMatch ":[^/]*$" $repository }}
{{- fail (printf "%s.repository must not carry a tag (%q): images are pinned by %s.digest only" .path $repository .path) }}
{{- end }}
{{- if not $digest }}
{{- fail (printf "%s.digest is required: images are pinned by digest (sha256:<64 lowercase hex>), never by tag" .path) }}
{{- end }}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" $digest) }}
{{- fail (printf "%s.digest must be sha256:<64 lowercase hex>, got %q" .path $digest) }}
{{- end }}
{{- printf "%s@%s" $repository $digest }}
{{- end }}

{{- define "aicert.operatorImage" -}}
{{- include "aicert.image" (dict "image" .Values.operator.image "path" "operator.image") }}
{{- end }}

{{- define "aicert.agentImage" -}}
{{- include "aicert.image" (dict "image" .Values.agent.image "path" "agent.image") }}
{{- end }}

{{/*
NetworkPolicy egress shared by the operator and the agent: the API server and DNS.
*/}}
{{- define "aicert.egress" -}}
- to:
  {{- range .Values.networkPolicy.apiServer.cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
  {{- end }}
  ports:
  {{- range .Values.networkPolicy.apiServer.ports }}
    - {protocol: TCP, port: {{ . }}}
  {{- end }}
- to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: {{ .Values.networkPolicy.dns.namespace | quote }}}
      {{- with .Values.networkPolicy.dns.podLabels }}
      podSelector:
        matchLabels:
          {{- toYaml . | nindent 10 }}
      {{- end }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- with .Values.networkPolicy.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A byte quantity as an environment value: "1Ti" as it is; a number as digits (YAML numbers
reach templates as floats, which would print as 1.099511627776e+12). */}}
{{- define "aicert.byteQuantity" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ . | int64 | quote }}{{ end }}
{{- end }}

{{/* KUBERNETES_SERVICE_HOST/_PORT for clusters whose pods cannot use the kubernetes Service
(values.kubernetesService); nothing when unset. */}}
{{- define "aicert.kubernetesServiceEnv" -}}
{{- with .Values.kubernetesService.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kubernetesService.port }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ . | toString | quote }}
{{- end }}
{{- end }}

{{/*
The previous release's agent image (AICERT_PREVIOUS_AGENT_IMAGE of the operator and the agent):
training pods it built are still accepted, so that runs outlive an upgrade. Only this exact
digest reference counts. agent.previousImage when set; otherwise, with agent.previousImageLookup,
what the release's live DaemonSet (else its operator Deployment) says: its AICERT_AGENT_IMAGE when
this upgrade changes the agent image, else its AICERT_PREVIOUS_AGENT_IMAGE (an upgrade that keeps
the image keeps the window). `lookup` sees nothing under `helm template`, --dry-run=client or Argo
CD: set agent.previousImage there. Empty when there is none, or when it equals the current image.
*/}}
{{- define "aicert.previousAgentImage" -}}
{{- $current := include "aicert.agentImage" . }}
{{- $explicit := .Values.agent.previousImage | default dict }}
{{- $previous := "" }}
{{- if or $explicit.repository $explicit.digest }}
{{- $previous = include "aicert.image" (dict "image" $explicit "path" "agent.previousImage") }}
{{- else if .Values.agent.previousImageLookup }}
{{- $live := dict }}
{{- $workloads := list (list "DaemonSet" (include "aicert.agentName" .)) (list "Deployment" (include "aicert.operatorName" .)) }}
{{- range $workloads }}
{{- if not (hasKey $live "AICERT_AGENT_IMAGE") }}
{{- $object := lookup "apps/v1" (index . 0) $.Release.Namespace (index . 1) }}
{{- range ((($object.spec | default dict).template | default dict).spec | default dict).containers }}
{{- range .env }}
{{- if and (has .name (list "AICERT_AGENT_IMAGE" "AICERT_PREVIOUS_AGENT_IMAGE")) .value }}
{{- $_ := set $live .name .value }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $liveImage := get $live "AICERT_AGENT_IMAGE" }}
{{- if and $liveImage (ne $liveImage $current) }}
{{- $previous = $liveImage }}
{{- else if $liveImage }}
{{- $previous = get $live "AICERT_PREVIOUS_AGENT_IMAGE" }}
{{- end }}
{{- if not (regexMatch "^[^@\\s]+@sha256:[0-9a-f]{64}$" $previous) }}
{{- $previous = "" }}
{{- end }}
{{- end }}
{{- if ne $previous $current }}{{ $previous }}{{ end }}
{{- end }}
