{{- define "llmfleet.fullname" -}}{{ .Release.Name }}-operator{{- end -}}
{{- define "llmfleet.labels" -}}
app.kubernetes.io/name: llmfleet-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
