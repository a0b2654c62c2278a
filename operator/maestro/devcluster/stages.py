"""kwok Stage configuration: how simulated nodes, pods and volumes move through their lifecycle.

kwok ≥ 0.8 ships no default stages, so the launcher writes this file. kwok only manages its own
(annotated) nodes and the pods bound to them; the real node and its pods are the kubelet's. Two rules
matter to Maestro:
- Job pods complete after a delay (annotation `pod-complete.stage.kwok.x-k8s.io/delay`, in ms), and a
  pod annotated `fail.kwok.llmops.dev/exit-code` fails instead, with an optional message — enough to
  drive Jobs to Complete or Failed through the real Job controller.
"""

from __future__ import annotations

#: Annotations understood by the stages below.
COMPLETE_DELAY_ANNOTATION = "pod-complete.stage.kwok.x-k8s.io/delay"
FAIL_EXIT_CODE_ANNOTATION = "fail.kwok.llmops.dev/exit-code"
FAIL_MESSAGE_ANNOTATION = "fail.kwok.llmops.dev/message"
#: The StorageClass whose claims kwok binds to a fake hostPath volume at once: the default class
#: `standard` of a control plane without a real node; with one, `standard` is the real provisioner's
#: and kwok's class is `kwok-simulated` (for tests whose pods never run).
STANDARD_STORAGE_CLASS = "standard"
KWOK_STORAGE_CLASS = "kwok-simulated"
PROVISIONER = "kwok.x-k8s.io/volume"
_CLASS = "@STORAGE_CLASS@"

_NOT_DELETED = """    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'"""

_NODE_CONDITIONS = """      {{ $now := Now }}
      {{ $lastTransitionTime := or .metadata.creationTimestamp $now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $lastTransitionTime | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}"""

_STAGES = f"""apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef: {{apiGroup: v1, kind: Node}}
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
{_NODE_CONDITIONS}
      addresses:
      {{{{ with NodeIP }}}}
      - address: {{{{ . | Quote }}}}
        type: InternalIP
      {{{{ end }}}}
      {{{{ with NodeName }}}}
      - address: {{{{ . | Quote }}}}
        type: Hostname
      {{{{ end }}}}
      allocatable:
      {{{{ with .status.allocatable }}}}
      {{{{ YAML . 1 }}}}
      {{{{ else }}}}
        cpu: "32"
        memory: 128Gi
        pods: "110"
      {{{{ end }}}}
      capacity:
      {{{{ with .status.capacity }}}}
      {{{{ YAML . 1 }}}}
      {{{{ else }}}}
        cpu: "32"
        memory: 128Gi
        pods: "110"
      {{{{ end }}}}
      nodeInfo:
        architecture: amd64
        containerRuntimeVersion: kwok
        kernelVersion: kwok
        kubeletVersion: kwok
        operatingSystem: linux
        osImage: kwok
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-heartbeat-with-lease
spec:
  resourceRef: {{apiGroup: v1, kind: Node}}
  selector:
    matchExpressions:
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'In'
      values: ['True']
  delay:
    durationMilliseconds: 600000
    jitterDurationMilliseconds: 610000
  next:
    statusTemplate: |
{_NODE_CONDITIONS}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
{_NOT_DELETED}
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: Initialized}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: Ready}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: ContainersReady}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: PodScheduled}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      initContainerStatuses:
      {{{{ range .spec.initContainers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: true
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            finishedAt: {{{{ $now | Quote }}}}
            reason: Completed
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      hostIP: {{{{ NodeIPWith .spec.nodeName | Quote }}}}
      podIP: {{{{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}}}
      phase: Running
      startTime: {{{{ $now | Quote }}}}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-fail
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
{_NOT_DELETED}
    - key: '.metadata.annotations["{FAIL_EXIT_CODE_ANNOTATION}"]'
      operator: 'Exists'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
  weight: 1000
  delay:
    durationMilliseconds: 500
    durationFrom:
      expressionFrom: '.metadata.annotations["{COMPLETE_DELAY_ANNOTATION}"]'
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      {{{{ $a := or .metadata.annotations dict }}}}
      conditions:
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "False", type: Ready, reason: PodFailed}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "False", type: ContainersReady, reason: PodFailed}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        started: false
        restartCount: 0
        state:
          terminated:
            exitCode: {{{{ index $a "{FAIL_EXIT_CODE_ANNOTATION}" }}}}
            reason: Error
            message: {{{{ or ( index $a "{FAIL_MESSAGE_ANNOTATION}" ) "failed by kwok stage" | Quote }}}}
            finishedAt: {{{{ $now | Quote }}}}
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      phase: Failed
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-complete
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
{_NOT_DELETED}
    - key: '.metadata.annotations["{FAIL_EXIT_CODE_ANNOTATION}"]'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.metadata.ownerReferences.[].kind'
      operator: 'In'
      values: ['Job']
  delay:
    durationMilliseconds: 500
    durationFrom:
      expressionFrom: '.metadata.annotations["{COMPLETE_DELAY_ANNOTATION}"]'
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "False", type: Ready, reason: PodCompleted}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "False", type: ContainersReady, reason: PodCompleted}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        started: false
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            reason: Completed
            finishedAt: {{{{ $now | Quote }}}}
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      phase: Succeeded
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  next:
    delete: true
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pvc-provision
spec:
  resourceRef: {{apiGroup: v1, kind: PersistentVolumeClaim}}
  selector:
    matchExpressions:
    - cel: {{expression: "self.spec.storageClassName == '{_CLASS}'"}}
    - cel: {{expression: "!has(self.metadata.deletionTimestamp)"}}
    - cel: {{expression: "!has(self.spec.volumeName)"}}
  steps:
  - apply:
      template: |
        apiVersion: v1
        kind: PersistentVolume
        metadata:
          name: pvc-{{{{ .metadata.uid }}}}
          annotations:
            pv.kubernetes.io/provisioned-by: {PROVISIONER}
        spec:
          accessModes:
          {{{{ YAML .spec.accessModes 2 }}}}
          capacity:
          {{{{ YAML .spec.resources.requests 2 }}}}
          persistentVolumeReclaimPolicy: Delete
          storageClassName: {{{{ .spec.storageClassName | Quote }}}}
          volumeMode: Filesystem
          claimRef:
            apiVersion: v1
            kind: PersistentVolumeClaim
            name: {{{{ .metadata.name | Quote }}}}
            namespace: {{{{ .metadata.namespace | Quote }}}}
            uid: {{{{ .metadata.uid | Quote }}}}
          hostPath:
            path: /tmp/kwok-volumes/pvc-{{{{ .metadata.uid }}}}
            type: DirectoryOrCreate
  - patch:
      root: spec
      template: |
        volumeName: pvc-{{{{ .metadata.uid }}}}
  - patch:
      root: status
      subresource: status
      template: |
        phase: Bound
        accessModes:
        {{{{ YAML .spec.accessModes 1 }}}}
        capacity:
        {{{{ YAML .spec.resources.requests 1 }}}}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pv-bind
spec:
  resourceRef: {{apiGroup: v1, kind: PersistentVolume}}
  selector:
    matchExpressions:
    - cel: {{expression: "self.spec.storageClassName == '{_CLASS}'"}}
    - cel: {{expression: "!has(self.metadata.deletionTimestamp)"}}
    - cel: {{expression: "has(self.spec.claimRef.name)"}}
    - cel: {{expression: "!(self.status.phase in ['Bound', 'Released', 'Failed'])"}}
  steps:
  - patch:
      root: status
      subresource: status
      template: |
        phase: Bound
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pv-release
spec:
  resourceRef: {{apiGroup: v1, kind: PersistentVolume}}
  selector:
    matchExpressions:
    - cel: {{expression: "self.spec.storageClassName == '{_CLASS}'"}}
    - cel: {{expression: "has(self.status.phase) && self.status.phase == 'Released'"}}
  next:
    delete: true
"""


def stages(storage_class_name: str) -> str:
    """kwok's Stage file, binding the claims of `storage_class_name`."""
    return _STAGES.replace(_CLASS, storage_class_name)


def storage_class(name: str, *, default: bool) -> dict[str, object]:
    """kwok's StorageClass: claims bound at once to a fake hostPath volume."""
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "annotations": annotations},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }
