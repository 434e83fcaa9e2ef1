// YAML the integration tests apply with kubectl: the one Model every node-group and autoscaling
// test serves (a file:// source the operator never fetches; pods run on kwok).
export const TEST_MODEL_YAML = `apiVersion: serving.llmfleet.dev/v1alpha1
kind: Model
metadata: {name: m}
spec: {source: {uri: "file:///models/x.gguf"}, slo: {ttftP90: 500ms}}`;
