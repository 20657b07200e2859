{{/*
Labels of every object: the kustomize base's two (name, component) plus Helm's usual ones. Selectors use only
the base's two, so the chart's pods are the base's pods for kubectl, doctor and the ServiceMonitors.
Call with (dict "root" $ "component" "controller").
*/}}
{{- define "spotguard.labels" -}}
app.kubernetes.io/name: spotguard
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- with .root.Values.customLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "spotguard.selector" -}}
app.kubernetes.io/name: spotguard
app.kubernetes.io/component: {{ . }}
{{- end }}

{{- define "spotguard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The containers' securityContext (restricted Pod Security Standard). */}}
{{- define "spotguard.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "spotguard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}
