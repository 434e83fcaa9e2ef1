{{- define "llmfleet.fullname" -}}{{ .Release.Name }}-operator{{- end -}}
{{- define "llmfleet.labels" -}}
app.kubernetes.io/name: llmfleet-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- /* What selects the operator's pods (its Deployment, budget, spread and Service), as a flow map. */ -}}
{{- define "llmfleet.selector" -}}
{app.kubernetes.io/name: llmfleet-operator, app.kubernetes.io/instance: {{ .Release.Name }}}
{{- end -}}
{{- /* The namespaces the fleets run in, as JSON: networkPolicies.fleetNamespaces, else watchNamespace, else the release's. */ -}}
{{- define "llmfleet.fleetNamespaces" -}}
{{- .Values.networkPolicies.fleetNamespaces | default (list (.Values.watchNamespace | default .Release.Namespace)) | toJson -}}
{{- end -}}
