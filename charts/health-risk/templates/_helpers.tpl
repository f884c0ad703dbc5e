{{/*
Names and labels shared by every template (the cert-manager / kube-prometheus-stack way).
*/}}

{{/* Chart name, overridable. */}}
{{- define "health-risk.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified release name. A release called "health-risk" keeps that name, so the
defaults the operator and FederatedTraining objects assume (health-risk-mlflow,
health-risk-inference) hold without extra settings.
*/}}
{{- define "health-risk.fullname" -}}
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

{{/* Name of one component's objects: <fullname>-<component>. */}}
{{- define "health-risk.componentName" -}}
{{- printf "%s-%s" (include "health-risk.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "health-risk.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of a component; call with (dict "root" $ "component" "mlflow"). */}}
{{- define "health-risk.selectorLabels" -}}
app.kubernetes.io/name: {{ include "health-risk.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Standard labels of a component's objects. */}}
{{- define "health-risk.labels" -}}
{{ include "health-risk.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: health-risk
helm.sh/chart: {{ include "health-risk.chart" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* image reference from {repository, tag, digest}; tag defaults to the chart's appVersion. */}}
{{- define "health-risk.image" -}}
{{- $registry := .root.Values.global.imageRegistry -}}
{{- $repo := .image.repository -}}
{{- if $registry }}{{ $repo = printf "%s/%s" $registry $repo }}{{ end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .image.tag | toString) -}}
{{- end -}}
{{- end }}

{{- define "health-risk.imagePullPolicy" -}}
{{- default .root.Values.global.imagePullPolicy .image.pullPolicy }}
{{- end }}

{{- define "health-risk.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod-level security: non-root, fixed uid/gid, RuntimeDefault seccomp. */}}
{{- define "health-risk.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security: read-only root filesystem, no privilege escalation, no capabilities. */}}
{{- define "health-risk.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* In-cluster address of MLflow, fully qualified so pods in other namespaces reach it too. */}}
{{- define "health-risk.mlflow.host" -}}
{{- printf "%s.%s.svc" (include "health-risk.componentName" (dict "root" . "component" "mlflow")) .Release.Namespace }}
{{- end }}

{{- define "health-risk.mlflow.uri" -}}
{{- if .Values.mlflow.enabled -}}
{{- printf "http://%s:%d" (include "health-risk.mlflow.host" .) (int .Values.mlflow.service.port) -}}
{{- else -}}
{{- required "mlflow.externalTrackingUri is required when mlflow.enabled=false" .Values.mlflow.externalTrackingUri -}}
{{- end -}}
{{- end }}

{{/* Namespaces whose FederatedTrainings the operator reconciles (empty list = all). */}}
{{- define "health-risk.operator.namespaces" -}}
{{- if .Values.operator.clusterWide -}}
{{- list | toJson -}}
{{- else -}}
{{- concat (list .Release.Namespace) .Values.operator.watchNamespaces | uniq | toJson -}}
{{- end -}}
{{- end }}

{{/* Every namespace the release manages: its own and operator.watchNamespaces (JSON list). */}}
{{- define "health-risk.managedNamespaces" -}}
{{- concat (list .Release.Namespace) .Values.operator.watchNamespaces | uniq | toJson -}}
{{- end }}

{{/* Name of the Secret holding the inference API key. */}}
{{- define "health-risk.inference.apiKeySecretName" -}}
{{- default (include "health-risk.componentName" (dict "root" . "component" "inference-api-key")) .Values.inference.apiKey.existingSecret }}
{{- end }}

{{/* Name of the Secret holding the promotion-signing key (healthrisk.provenance). */}}
{{- define "health-risk.modelSigning.secretName" -}}
{{- default (include "health-risk.componentName" (dict "root" . "component" "model-signing")) .Values.modelSigning.existingSecret }}
{{- end }}

{{/* The promotion-signing key as a read-only file, for the pods that sign or verify. */}}
{{- define "health-risk.modelSigning.volume" -}}
- name: model-signing
  secret:
    secretName: {{ include "health-risk.modelSigning.secretName" . }}
    items:
      - key: hmac-key
        path: hmac-key
{{- end }}
{{- define "health-risk.modelSigning.volumeMount" -}}
- name: model-signing
  mountPath: /var/run/secrets/healthrisk/model-signing
  readOnly: true
{{- end }}
{{- define "health-risk.modelSigning.keyFile" -}}
/var/run/secrets/healthrisk/model-signing/hmac-key
{{- end }}

{{- define "health-risk.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "health-risk.componentName" (dict "root" . "component" "operator")) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator's permissions, derived from what it calls (healthrisk_operator.reconcile and
kopf): its own objects and their status; the pods and Services of a run; the inference
Deployment it rolls; Events it writes. Nothing else: no Secrets (run pods mount them,
which needs no read access by the creator), no Jobs, no deletes of Deployments.
*/}}
{{- define "health-risk.operator.rules" -}}
- apiGroups: ["healthrisk.io"]
  resources: ["federatedtrainings"]
  # patch: the retrain annotation, and the 0.1 operator's finalizer (kopf removes it).
  # delete: the uninstall hook (healthrisk_operator.uninstall), with this ServiceAccount.
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: ["healthrisk.io"]
  resources: ["federatedtrainings/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["pods"]
  # patch: adopting a run's orphaned pods after an operator restart
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  # the submitter's and drift pods' outcome when no termination message was written
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: [""]
  # Flower key material: each run's certificates and each site's SuperNode key are made
  # here and mounted by run pods; the operator never reads a Secret back.
  resources: ["secrets"]
  verbs: ["create", "delete"]
- apiGroups: ["apps"]
  # list, watch: the wake-up on a Deployment being rolled (no resourceNames on a watch)
  resources: ["deployments"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["patch"]
  resourceNames: {{ include "health-risk.operator.inferenceDeployments" . }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* The operator's policy (values operator.policy), each list with this release's own. */}}
{{- define "health-risk.operator.inferenceDeployments" -}}
{{- $own := list (include "health-risk.componentName" (dict "root" . "component" "inference")) }}
{{- concat $own .Values.operator.policy.inferenceDeployments | uniq | toJson }}
{{- end }}

{{- define "health-risk.operator.mountableSecrets" -}}
{{- .Values.operator.policy.mountableSecrets | uniq | toJson }}
{{- end }}

{{/* Does MLflow need its own volume (sqlite and/or local artifacts)? */}}
{{- define "health-risk.mlflow.needsVolume" -}}
{{- if or (not .Values.mlflow.backendStore.existingSecret) (not .Values.mlflow.artifacts.destination) }}true{{ end }}
{{- end }}

{{- define "health-risk.mlflow.claimName" -}}
{{- default (include "health-risk.componentName" (dict "root" . "component" "mlflow")) .Values.mlflow.persistence.existingClaim }}
{{- end }}

{{/*
Host headers MLflow accepts: every name of its Service, with and without the port (clients
send the port unless it is the scheme's default; a missing one means 403 on every call).
*/}}
{{- define "health-risk.mlflow.allowedHosts" -}}
{{- $svc := include "health-risk.componentName" (dict "root" . "component" "mlflow") }}
{{- $port := int .Values.mlflow.service.port }}
{{- $hosts := list }}
{{- range $name := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) "localhost" "127.0.0.1" }}
{{- $hosts = append $hosts $name }}
{{- $hosts = append $hosts (printf "%s:%d" $name $port) }}
{{- end }}
{{- concat $hosts .Values.mlflow.extraAllowedHosts | uniq | join "," }}
{{- end }}

{{/*
"<namespace>/<release>" of the Helm release that manages the live CRD `.name`; empty when
it does not exist or no release manages it (`helm template`: never known).
*/}}
{{- define "health-risk.crdOwner" -}}
{{- $live := lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" .name }}
{{- $annotations := dig "metadata" "annotations" (dict) $live }}
{{- if and (eq (dig "metadata" "labels" "app.kubernetes.io/managed-by" "" $live) "Helm") (hasKey $annotations "meta.helm.sh/release-name") }}
{{- printf "%s/%s" (get $annotations "meta.helm.sh/release-namespace") (get $annotations "meta.helm.sh/release-name") }}
{{- end }}
{{- end }}

{{/* A NetworkPolicy peer: the pods of one component of this release, seen from any
namespace. (dict "root" $ "component" "mlflow") */}}
{{- define "health-risk.networkPolicy.componentPeer" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .root.Release.Namespace }}
  podSelector:
    matchLabels:
      {{- include "health-risk.selectorLabels" . | nindent 6 }}
{{- end }}

{{/* NetworkPolicy peers: the run pods of some roles (healthrisk.contracts ROLE_*) in the
namespaces the operator runs pods in. (dict "root" $ "roles" (list "superlink")) */}}
{{- define "health-risk.networkPolicy.runPodPeers" -}}
{{- $match := dict "matchExpressions" (list (dict "key" "healthrisk.io/role" "operator" "In" "values" .roles)) }}
{{- if .root.Values.operator.clusterWide }}
{{- list (dict "namespaceSelector" dict "podSelector" $match) | toYaml }}
{{- else }}
{{- $peers := list }}
{{- range include "health-risk.operator.namespaces" .root | fromJsonArray }}
{{- $peers = append $peers (dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" .)) "podSelector" $match) }}
{{- end }}
{{- toYaml $peers }}
{{- end }}
{{- end }}

{{/* Egress rules that reach MLflow: this release's, or the external one's
(networkPolicy.externalMlflow). Ports are the pod's: policies see traffic after the
Service has sent it to a pod. */}}
{{- define "health-risk.networkPolicy.toMlflow" -}}
{{- if .Values.mlflow.enabled -}}
- to:
    {{- include "health-risk.networkPolicy.componentPeer" (dict "root" . "component" "mlflow") | nindent 4 }}
  ports:
    - {port: {{ .Values.mlflow.service.port }}, protocol: TCP}
{{- else if .Values.networkPolicy.externalMlflow }}
{{- toYaml .Values.networkPolicy.externalMlflow }}
{{- else }}
{{- fail "networkPolicy: with an external MLflow (mlflow.enabled=false) set networkPolicy.externalMlflow to egress rules that reach it, or networkPolicy.enabled=false" }}
{{- end }}
{{- end }}

{{/*
Egress rule to the Kubernetes API server. Pods reach it through the `kubernetes` Service,
which sends them to the API server's own address and port before any policy sees the
packet: so the rule names those, from networkPolicy.apiServer or else the `kubernetes`
EndpointSlice read at install; when neither is known (helm template), any address on
networkPolicy.apiServer.ports.
*/}}
{{- define "health-risk.networkPolicy.toApiServer" -}}
{{- $cidrs := .Values.networkPolicy.apiServer.cidrs }}
{{- $ports := .Values.networkPolicy.apiServer.ports }}
{{- if not $cidrs }}
{{- $slice := lookup "discovery.k8s.io/v1" "EndpointSlice" "default" "kubernetes" }}
{{- if $slice }}
{{- range $slice.endpoints }}{{ range .addresses }}{{ $cidrs = append $cidrs (printf "%s/%s" . (ternary "128" "32" (contains ":" .))) }}{{ end }}{{ end }}
{{- $ports = list }}
{{- range $slice.ports }}{{ $ports = append $ports .port }}{{ end }}
{{- end }}
{{- end -}}
- to:
    {{- range (default (list "0.0.0.0/0") $cidrs) }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  ports:
    {{- range $ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end }}

{{/* Does this release run MLflow with its basic-auth app? */}}
{{- define "health-risk.mlflow.auth" -}}
{{- if and .Values.mlflow.enabled .Values.mlflow.auth.enabled }}true{{ end }}
{{- end }}

{{/* The registered models MLflow's users hold grants on (JSON list). */}}
{{- define "health-risk.mlflow.registeredModels" -}}
{{- concat (list .Values.inference.modelName) .Values.mlflow.auth.registeredModels | uniq | toJson }}
{{- end }}

{{- define "health-risk.mlflow.adminSecretName" -}}
{{- include "health-risk.componentName" (dict "root" . "component" "mlflow-admin") }}
{{- end }}

{{/* A component's MLflow credential Secret (keys username, password): (dict "root" $ "user" "trainer"). */}}
{{- define "health-risk.mlflow.credentialsSecretName" -}}
{{- include "health-risk.componentName" (dict "root" .root "component" (printf "mlflow-%s" .user)) }}
{{- end }}

{{/*
The MLflow users and what each may do: the one table the bootstrap container applies
(files/mlflow_auth_bootstrap.py). The narrowest grants that let each component work:
  trainer    SuperLink pods (their ServerApp logs the rounds and registers the model)
  operator   reads a run's progress; promotes and rolls back (deleting an alias is MANAGE);
             its promotion lock is a registered model it creates, so owns, itself
  inference  reads the served version and its parameters document (the get-artifact
             route is authorised by the registered model alone)
  drift      publishes per-site summaries; reads the champion's tags and parameters
Experiment names are healthrisk.contracts' TRAINING_EXPERIMENT and DRIFT_EXPERIMENT.
*/}}
{{- define "health-risk.mlflow.grants" -}}
{{- $training := "health-risk-federated" }}
{{- $drift := "health-risk-drift" }}
{{- $models := include "health-risk.mlflow.registeredModels" . | fromJsonArray }}
{{- $users := dict }}
{{- range $user, $rule := dict
      "trainer" (dict "experiments" (dict $training "EDIT") "models" "EDIT")
      "operator" (dict "experiments" (dict $training "READ") "models" "MANAGE")
      "inference" (dict "experiments" dict "models" "READ")
      "drift" (dict "experiments" (dict $drift "EDIT") "models" "READ") }}
{{- $grants := list }}
{{- range $experiment, $permission := $rule.experiments }}
{{- $grants = append $grants (dict "resource_type" "experiment" "resource" $experiment "permission" $permission) }}
{{- end }}
{{- range $models }}
{{- $grants = append $grants (dict "resource_type" "registered_model" "resource" . "permission" $rule.models) }}
{{- end }}
{{- $_ := set $users $user $grants }}
{{- end }}
{{- dict "experiments" (list $training $drift) "registered_models" $models "users" $users | toJson }}
{{- end }}

{{/* env of a container that calls MLflow as `user`: references to its Secret, never the value. */}}
{{- define "health-risk.mlflow.credentialsEnv" -}}
{{- if include "health-risk.mlflow.auth" .root -}}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "health-risk.mlflow.credentialsSecretName" . }}
      key: username
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "health-risk.mlflow.credentialsSecretName" . }}
      key: password
{{- end }}
{{- end }}
