import { test } from "node:test";
import assert from "node:assert/strict";
import { requestKind } from "../../lib/kube/client.ts";

test("requestKind names the verb and resource of a request as the API server would", () => {
  const table: Array<[Parameters<typeof requestKind>, string]> = [
    [["GET", "/api/v1/namespaces/ns/pods"], "list pods"],
    [["GET", "/api/v1/pods", { watch: "1" }], "watch pods"],
    [["GET", "/api/v1/namespaces/ns/pods/p1"], "get pods"],
    [["GET", "/api/v1/namespaces/ns"], "get namespaces"],
    [["GET", "/api/v1/namespaces"], "list namespaces"],
    [["POST", "/api/v1/namespaces/ns/pods/p1/eviction"], "create pods/eviction"],
    [["PATCH", "/apis/apps/v1/namespaces/ns/deployments/d", {}, "application/apply-patch+yaml"], "apply deployments"],
    [["PATCH", "/apis/serving.llmfleet.dev/v1alpha1/namespaces/ns/prefillpools/p/status", {}, "application/apply-patch+yaml"], "apply prefillpools/status"],
    [["PATCH", "/api/v1/nodes/n1", {}, "application/merge-patch+json"], "patch nodes"],
    [["PUT", "/apis/serving.llmfleet.dev/v1alpha1/namespaces/ns/decodepools/d/scale"], "update decodepools/scale"],
    [["DELETE", "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/b"], "delete poddisruptionbudgets"],
  ];
  for (const [args, want] of table) {
    const k = requestKind(...args);
    assert.equal(`${k.verb} ${k.resource}${k.subresource ? `/${k.subresource}` : ""}`, want, `${args[0]} ${args[1]}`);
  }
});
