// Model.spec.access on a real API server: invalid access settings are refused with a message that
// names the field; a valid one, and examples/tenants.yaml, apply; the router's key Secrets are
// watched, so a rotated or revoked key applies within seconds — also under the router's own
// ServiceAccount and the Role the operator plans for it, which reads its tenants' Secrets only.
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { stringify } from "yaml";
import { KubeConfig, type V1Deployment } from "@kubernetes/client-node";
import { kubectl, kubectlOk } from "../testing/kubectl.ts";
import { adminClient, ensureNamespace, installCRDs } from "../testing/cluster.ts";
import { eventually } from "../testing/eventually.ts";
import { serviceAccountKubeconfig } from "../testing/operator-rbac.ts";
import { aDecodePool, aModel, aPrefillPool, NOW } from "../testing/builders.ts";
import { parseAccess, watchAccessSecrets } from "../engine/access/access-sources.ts";
import { parseEngineOptions, type EngineOptions } from "../engine/cli/options.ts";
import { planModel } from "./plan/model.ts";
import { KubeApiError, KubeClient } from "../lib/kube/client.ts";
import { R } from "../lib/kube/resources.ts";

const NS = "it-access";

before(async () => {
  await installCRDs();
  await ensureNamespace(NS);
});

const model = (access: unknown): Record<string, unknown> => ({
  apiVersion: "serving.llmfleet.dev/v1alpha1",
  kind: "Model",
  metadata: { name: "bad", namespace: NS },
  spec: { source: { uri: "pypi://x==1" }, access },
});
const tenant = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ name: "team-a", secretRef: { name: "keys-a" }, ...extra });

const INVALID: Array<{ what: string; access: unknown; field: string; message: RegExp }> = [
  { what: "apiKeys without tenants", access: { mode: "apiKeys" }, field: "spec.access.tenants", message: /apiKeys mode needs at least one tenant/ },
  { what: "apiKeys with an empty list", access: { tenants: [] }, field: "spec.access.tenants", message: /apiKeys mode needs at least one tenant/ },
  { what: "open with tenants", access: { mode: "open", tenants: [tenant()] }, field: "spec.access.tenants", message: /open mode takes no tenants/ },
  { what: "unknown mode", access: { mode: "sometimes", tenants: [tenant()] }, field: "spec.access.mode", message: /Unsupported value: "sometimes"/ },
  { what: "tenant name not a DNS label", access: { tenants: [tenant({ name: "Team A" })] }, field: "spec.access.tenants[0].name", message: /should match/ },
  { what: "duplicate tenant", access: { tenants: [tenant(), tenant()] }, field: "spec.access.tenants[1]", message: /Duplicate value/ },
  { what: "tenant without secretRef", access: { tenants: [{ name: "team-a" }] }, field: "spec.access.tenants[0].secretRef", message: /Required value/ },
  { what: "secretRef without name", access: { tenants: [tenant({ secretRef: {} })] }, field: "spec.access.tenants[0].secretRef.name", message: /Required value/ },
  {
    what: "zero requests per minute",
    access: { tenants: [tenant({ limits: { requestsPerMinute: 0 } })] },
    field: "spec.access.tenants[0].limits.requestsPerMinute",
    message: /should be greater than or equal to 1/,
  },
  {
    what: "fractional token limit",
    access: { tenants: [tenant({ limits: { tokensPerMinute: 1.5 } })] },
    field: "spec.access.tenants[0].limits.tokensPerMinute",
    message: /must be of type integer|Invalid value/,
  },
  { what: "unknown limit (strict)", access: { tenants: [tenant({ limits: { rpm: 3 } })] }, field: "spec.access.tenants[0].limits.rpm", message: /unknown field/ },
  {
    what: "shared namespace not a DNS label",
    access: { tenants: [tenant({ sharedPrefixNamespace: "Shared NS" })] },
    field: "spec.access.tenants[0].sharedPrefixNamespace",
    message: /should match/,
  },
  { what: "fleet secret without name", access: { mode: "open", fleetSecretRef: {} }, field: "spec.access.fleetSecretRef.name", message: /Required value/ },
  { what: "keys inline (strict)", access: { tenants: [tenant({ keys: ["sk-inline-0123456789"] })] }, field: "spec.access.tenants[0].keys", message: /unknown field/ },
];

for (const c of INVALID) {
  test(`rejected: ${c.what} (names ${c.field})`, async () => {
    const res = await kubectl(["apply", "--dry-run=server", "--validate=strict", "-f", "-"], { stdin: stringify(model(c.access)) });
    assert.notEqual(res.code, 0, `expected a rejection, got: ${res.stdout}`);
    assert.ok(res.stderr.includes(c.field), `message should name ${c.field}: ${res.stderr}`);
    assert.match(res.stderr, c.message);
  });
}

test("a Model with every access field applies, and so do the tenants example's Secrets and Model", async () => {
  const access = {
    mode: "apiKeys",
    fleetSecretRef: { name: "fleet" },
    tenants: [tenant({ limits: { requestsPerMinute: 600, tokensPerMinute: 200000, concurrentStreams: 8 }, sharedPrefixNamespace: "common" })],
  };
  await kubectlOk(["apply", "--dry-run=server", "--validate=strict", "-f", "-"], { stdin: stringify({ ...model(access), metadata: { name: "ok", namespace: NS } }) });
  const out = await kubectlOk(["apply", "--dry-run=server", "--validate=strict", "-n", NS, "-f", "examples/tenants.yaml"]);
  assert.match(out, /model.serving.llmfleet.dev\/gemma-270m-shared created/);
});

/** `data`, not `stringData`: kubectl apply's three-way merge removes a `data` entry left out, never a `stringData` one. */
const secret = (name: string, keys: Record<string, string>): string =>
  stringify({
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, namespace: NS },
    data: Object.fromEntries(Object.entries(keys).map(([k, v]) => [k, Buffer.from(v).toString("base64")])),
  });

test("the router's keys follow the tenant's Secret: rotation and revocation apply within seconds", async () => {
  const [k1, k2] = ["sk-it-first-0123456789abcdef", "sk-it-second-0123456789abcdef"];
  await kubectlOk(["apply", "-f", "-"], { stdin: secret("it-keys-a", { first: k1 }) });
  const lines: string[] = [];
  using source = watchAccessSecrets(adminClient(), NS, [{ name: "team-a", limits: {}, secretName: "it-keys-a" }], (l) => lines.push(l));
  await source.synced;
  await eventually(() => assert.equal(source.keyring.authenticate(k1)?.name, "team-a"), { timeoutMs: 10_000 });
  const t0 = performance.now();
  await kubectlOk(["apply", "-f", "-"], { stdin: secret("it-keys-a", { second: k2 }) }); // rotate: the first key is gone
  await eventually(() => assert.equal(source.keyring.authenticate(k1), undefined), { timeoutMs: 10_000, intervalMs: 50 });
  const revokedMs = performance.now() - t0;
  assert.equal(source.keyring.authenticate(k2)?.name, "team-a");
  await kubectlOk(["delete", "secret", "-n", NS, "it-keys-a"]);
  await eventually(() => assert.equal(source.keyring.authenticate(k2), undefined), { timeoutMs: 10_000, intervalMs: 50 });
  process.stderr.write(`a key removed from its Secret stopped working after ${Math.round(revokedMs)} ms\n`);
  assert.ok(revokedMs < 5_000);
  assert.ok(lines.every((l) => !l.includes(k1) && !l.includes(k2)), "keys never logged");
});

async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (err) {
    if (err instanceof KubeApiError) return err.status;
    throw err;
  }
}

test("under the router's own ServiceAccount and planned Role: it watches its tenants' Secrets and is refused every other", async () => {
  const model = aModel("it-keyed", NS);
  model.spec.access = {
    mode: "apiKeys",
    tenants: [
      { name: "team-a", secretRef: { name: "it-own-a" } },
      { name: "team-b", secretRef: { name: "it-own-b" } },
    ],
  };
  const plan = planModel(model, { prefillPools: [aPrefillPool("pf", "it-keyed", NS)], decodePools: [aDecodePool("dc", "it-keyed", NS)], engineImage: "e", engineGPUImage: "e", now: NOW });
  // The router's identity exactly as the operator applies it (without the owner reference: no live Model here).
  const identity = plan.children
    .filter((c) => ["ServiceAccount", "Role", "RoleBinding"].includes(c.kind ?? ""))
    .map((c) => ({ ...c, metadata: { ...c.metadata, ownerReferences: undefined } }));
  assert.equal(identity.length, 3);
  await kubectlOk(["apply", "-f", "-"], { stdin: identity.map((o) => stringify(o)).join("---\n") });
  const router = plan.children.find((c) => c.kind === "Deployment") as V1Deployment;
  const sa = router.spec?.template.spec?.serviceAccountName ?? "";
  const tenants = parseAccess((parseEngineOptions(router.spec?.template.spec?.containers[0]?.args ?? []) as EngineOptions).accessTenants ?? "");

  const [ka, kb, kOther] = ["sk-it-own-a-0123456789abcdef", "sk-it-own-b-0123456789abcdef", "sk-it-not-mine-0123456789abcd"];
  await kubectlOk(["apply", "-f", "-"], { stdin: [secret("it-own-a", { k: ka }), secret("it-own-b", { k: kb }), secret("it-not-mine", { k: kOther })].join("---\n") });

  const kc = new KubeConfig();
  kc.loadFromFile(await serviceAccountKubeconfig(sa, NS));
  const asRouter = KubeClient.fromKubeConfig(kc);
  const lines: string[] = [];
  using source = watchAccessSecrets(asRouter, NS, tenants, (l) => lines.push(l));
  await source.synced;
  await eventually(() => {
    assert.equal(source.keyring.authenticate(ka)?.name, "team-a");
    assert.equal(source.keyring.authenticate(kb)?.name, "team-b");
  });
  // The watch goes on under the Role: a rotation arrives.
  const ka2 = "sk-it-own-a-rotated-0123456789";
  await kubectlOk(["apply", "-f", "-"], { stdin: secret("it-own-a", { k2: ka2 }) });
  await eventually(() => assert.equal(source.keyring.authenticate(ka2)?.name, "team-a"), { intervalMs: 50 });
  assert.equal(source.keyring.authenticate(ka), undefined);
  assert.equal(source.keyring.authenticate(kOther), undefined);
  assert.ok(lines.every((l) => !/forbidden|403/i.test(l)), `no refusal on its own Secrets: ${lines.join("\n")}`);

  const refused: Array<[string, () => Promise<unknown>]> = [
    ["get another Secret of its namespace", () => asRouter.get(R.Secret, NS, "it-not-mine")],
    ["list every Secret of its namespace", () => asRouter.list(R.Secret, { namespace: NS })],
    ["list another Secret by field selector", () => asRouter.list(R.Secret, { namespace: NS, fieldSelector: "metadata.name=it-not-mine" })],
    ["get its own Secret's name in another namespace", () => asRouter.get(R.Secret, "default", "it-own-a")],
    ["list Secrets of every namespace", () => asRouter.list(R.Secret)],
    ["write its own Secret", () => asRouter.mergePatch(R.Secret, { namespace: NS, name: "it-own-a" }, { data: {} })],
  ];
  for (const [what, call] of refused) assert.equal(await status(call()), 403, what);
  assert.equal(await status(asRouter.get(R.Secret, NS, "it-own-b")), 200, "its own Secret, by name");

  // A watch of a Secret it does not own fails, and is reported (its keys kept: none).
  const denied: string[] = [];
  using other = watchAccessSecrets(asRouter, NS, [{ name: "intruder", limits: {}, secretName: "it-not-mine" }], (l) => denied.push(l));
  await eventually(() => assert.ok(denied.some((l) => /403|forbidden/i.test(l)), denied.join("\n")));
  assert.equal(other.keyring.authenticate(kOther), undefined);
  assert.ok([...lines, ...denied].every((l) => ![ka, ka2, kb, kOther].some((k) => l.includes(k))), "keys never logged");
});
