import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";
import { ClusterConnectError, findClusterSource, SERVICE_ACCOUNT_TOKEN, waitForAPIServer, type ClusterConfig } from "./connect.ts";

test("the cluster comes from $KUBECONFIG, else ~/.kube/config, else the in-cluster service account, and says what it tried", () => {
  const inPod = { KUBERNETES_SERVICE_HOST: "10.0.0.1", KUBERNETES_SERVICE_PORT: "443" };
  const cases: Array<[string, Record<string, string>, string[], string | undefined, RegExp[]]> = [
    ["$KUBECONFIG wins", { KUBECONFIG: "/k/a:/k/b", HOME: "/h", ...inPod }, ["/k/b", "/h/.kube/config", SERVICE_ACCOUNT_TOKEN], "$KUBECONFIG (/k/b)", []],
    [
      "an explicit $KUBECONFIG naming nothing is not replaced by another",
      { KUBECONFIG: "/k/a", HOME: "/h" },
      ["/h/.kube/config"],
      undefined,
      [/\$KUBECONFIG=\/k\/a: no such file/],
    ],
    ["~/.kube/config", { HOME: "/h", ...inPod }, ["/h/.kube/config", SERVICE_ACCOUNT_TOKEN], "/h/.kube/config", [/\$KUBECONFIG: not set/]],
    [
      "in a pod",
      { HOME: "/h", ...inPod },
      [SERVICE_ACCOUNT_TOKEN],
      "the in-cluster service account (https://10.0.0.1:443)",
      [/\/h\/.kube\/config: no such file/],
    ],
    [
      "a token without the service env is not a pod",
      { HOME: "/h" },
      [SERVICE_ACCOUNT_TOKEN],
      undefined,
      [/KUBERNETES_SERVICE_HOST \(not set\).*token \(present\)/],
    ],
    [
      "nothing at all",
      {},
      [],
      undefined,
      [
        /\$KUBECONFIG: not set/,
        /~\/.kube\/config: \$HOME not set/,
        /in-cluster service account: needs \$KUBERNETES_SERVICE_HOST \(not set\), \$KUBERNETES_SERVICE_PORT \(not set\) and \/var\/run\/secrets\/kubernetes.io\/serviceaccount\/token \(absent\)/,
      ],
    ],
  ];
  for (const [what, env, files, from, tried] of cases) {
    const found = findClusterSource(env, (p) => files.includes(p));
    assert.equal(found.source?.from, from, what);
    for (const t of tried) assert.match(found.tried.join("\n"), t, what);
  }
});

function clusterAt(server: string): ClusterConfig {
  const kc = new KubeConfig();
  kc.loadFromClusterAndUser({ name: "c", server, skipTLSVerify: server.startsWith("http:") }, { name: "u" });
  return { kc, server, from: "a test kubeconfig" };
}

async function listen(handler: Parameters<typeof createServer>[1]): Promise<Server> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return server;
}

test("an API server that does not answer is given up on after the attempts, naming its URL", async () => {
  const closed = await listen(() => undefined);
  const port = (closed.address() as AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const pauses: number[] = [];
  const wait = waitForAPIServer(clusterAt(`http://127.0.0.1:${port}`), { attempts: 4, sleep: async (ms) => pauses.push(ms) });
  await assert.rejects(wait, (err: Error) => {
    assert.ok(err instanceof ClusterConnectError);
    assert.match(
      err.message,
      new RegExp(`the API server at http://127.0.0.1:${port} \\(from a test kubeconfig\\) did not answer in 4 attempts: connect ECONNREFUSED`),
    );
    return true;
  });
  assert.deepEqual(pauses, [500, 1000, 2000], "backs off between attempts, not after the last");
});

test("a configuration the client cannot use fails at once, without retries", async () => {
  const kc = new KubeConfig();
  kc.loadFromClusterAndUser({ name: "c", server: "http://127.0.0.1:1", skipTLSVerify: false }, { name: "u" });
  const wait = waitForAPIServer({ kc, server: "http://127.0.0.1:1", from: "a test kubeconfig" }, { attempts: 5, sleep: () => assert.fail("no retry") });
  await assert.rejects(wait, /cannot use a test kubeconfig for http:\/\/127.0.0.1:1: HTTP protocol is not allowed/);
});

test("any HTTP answer means the API server is there; /version names it", async () => {
  let calls = 0;
  const server = await listen((req, res) => {
    calls++;
    if (calls === 1) return res.destroy(); // the first attempt fails
    res.writeHead(req.url === "/version" ? 200 : 404).end(JSON.stringify({ gitVersion: "v1.36.3" }));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    assert.equal(await waitForAPIServer(clusterAt(url), { attempts: 2, sleep: async () => undefined }), "v1.36.3");
  } finally {
    server.close();
  }
});
