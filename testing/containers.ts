// Runs pods' containers with podman, as a kubelet would run them, for the e2e harness: the image
// the pod names, its arguments and env, its user, a read-only root file system with its volumes,
// all capabilities dropped. Pods share the host's network (each binds its own loopback address,
// kwok's pod IP), so whatever dials podIP:port reaches them. LLMFLEET_E2E_PODS=processes runs bare
// processes instead (the harness's older mode, no images needed).
//
// This machine's podman needs --runtime runc (crun refuses the hybrid cgroup layout) and
// ulimits at or below the current ones (the sandbox lacks CAP_SYS_RESOURCE to raise them).
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { KubeConfig, type V1Pod, type V1Volume } from "@kubernetes/client-node";
import { kubectlPath } from "./kubectl.ts";
import { tempDir } from "./temp-dir.ts";

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, "..");

export type PodMode = "containers" | "processes";

/** How the harness runs pods: containers from the images (default) or bare processes. */
export function podMode(): PodMode {
  const mode = process.env.LLMFLEET_E2E_PODS ?? "containers";
  if (mode !== "containers" && mode !== "processes") throw new Error(`LLMFLEET_E2E_PODS=${mode}: expected containers or processes`);
  return mode;
}

let built: Promise<void> | undefined;

/**
 * Builds the operator and CPU engine images from this checkout (scripts/images/build.sh; under a
 * minute when nothing changed), once per test process, so pods never run images older than the
 * code — unless LLMFLEET_E2E_IMAGES=prebuilt says the caller just built them.
 */
export function ensureImages(): Promise<void> {
  // `npm run e2e` builds them once before all scenarios.
  if (process.env.LLMFLEET_E2E_IMAGES === "prebuilt") return Promise.resolve();
  built ??= run("bash", [join(ROOT, "scripts/images/build.sh")], { cwd: ROOT, maxBuffer: 64 << 20 }).then(
    () => undefined,
    (err: { stderr?: string; message: string }) => {
      throw new Error(`npm run images:build:cpu failed: ${err.stderr ?? err.message}`);
    },
  );
  return built;
}

/** A reference as a kubelet (containerd) resolves it: no registry means docker.io, no path library/. */
export function normalizeImageRef(ref: string): string {
  const first = ref.split("/")[0] ?? "";
  const hasRegistry = ref.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost");
  if (hasRegistry) return ref;
  return ref.includes("/") ? `docker.io/${ref}` : `docker.io/library/${ref}`;
}

let limits: { nofile: number; nproc: number } | undefined;

/** The current soft limits: podman's defaults are higher, and raising a limit needs CAP_SYS_RESOURCE. */
function currentLimits(): { nofile: number; nproc: number } {
  limits ??= (() => {
    const [nofile, nproc] = execFileSync("bash", ["-c", "ulimit -Sn; ulimit -Su"], { encoding: "utf8" }).trim().split("\n");
    const n = (v: string | undefined): number => (v === "unlimited" ? 1 << 20 : Number(v));
    // nproc: 32768 at most — a higher value, even the one `ulimit -u` reports, is refused here.
    return { nofile: n(nofile), nproc: Math.min(n(nproc), 32768) };
  })();
  return limits;
}

/**
 * The folder the model-cache volume of every engine pod maps to: one per machine, owned by the
 * engine's user, seeded from $LLMFLEET_CACHE/models — a node whose model cache already holds the
 * model (the per-node cache a PersistentVolumeClaim or an image volume gives; an emptyDir would
 * fetch it again in every pod).
 */
export function nodeModelCache(): string {
  const host = join(process.env.LLMFLEET_CACHE ?? join(homedir(), ".cache", "llmfleet"), "models");
  const dir = join(process.env.LLMFLEET_CACHE ?? join(homedir(), ".cache", "llmfleet"), "e2e-node-cache");
  const models = join(dir, "models");
  mkdirSync(models, { recursive: true });
  for (const f of ["gemma-3-270m-q4_k_m.gguf"]) {
    const src = join(host, f);
    const dst = join(models, f);
    if (existsSync(src) && (!existsSync(dst) || statSync(dst).size !== statSync(src).size)) {
      copyFileSync(src, dst);
      chownSync(dst, 65532, 65532);
    }
  }
  for (const d of [dir, models]) chownSync(d, 65532, 65532);
  return dir;
}

export interface ServiceAccountMount {
  /** Holds token, ca.crt and namespace. */
  dir: string;
  env: Record<string, string>;
}

/** Where a kubelet mounts a pod's ServiceAccount token. */
export const SERVICE_ACCOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount";

/**
 * What a kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount (token, ca.crt,
 * namespace) and the env it sets (KUBERNETES_SERVICE_HOST/PORT), pointing at this API server.
 */
export function serviceAccountMount(namespace: string, sa: string): ServiceAccountMount {
  const admin = new KubeConfig();
  admin.loadFromFile(process.env.KUBECONFIG ?? "");
  const cluster = admin.getCurrentCluster();
  if (!cluster) throw new Error("no current cluster in KUBECONFIG");
  const ca = cluster.caData ? Buffer.from(cluster.caData, "base64").toString() : readFileSync(cluster.caFile ?? "", "utf8");
  const dir = tempDir("llmfleet-sa-");
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, "token"), execFileSync(kubectlPath(), ["create", "token", "-n", namespace, sa, "--duration=2h"], { encoding: "utf8" }).trim(), {
    mode: 0o644,
  });
  writeFileSync(join(dir, "ca.crt"), ca, { mode: 0o644 });
  writeFileSync(join(dir, "namespace"), namespace, { mode: 0o644 });
  const server = new URL(cluster.server);
  return { dir, env: { KUBERNETES_SERVICE_HOST: server.hostname, KUBERNETES_SERVICE_PORT: server.port || "443" } };
}

export interface ContainerSpec {
  /** Container name, unique on the machine. */
  name: string;
  image: string;
  args: string[];
  env?: Record<string, string>;
  /** host path → container path (":ro" appended to the container path for read-only). */
  binds?: Array<[string, string]>;
  /** Container paths that get an empty tmpfs (emptyDir volumes). */
  tmpfs?: string[];
  /** The pod's hostname (kubelets set it to the pod's name). */
  hostname: string;
  user?: string;
}

export interface RunningContainer {
  readonly name: string;
  /** The attached `podman run`: it exits when the container does. */
  readonly child: ChildProcess;
}

/**
 * The host's CA bundle over the image's: where egress passes a TLS-inspecting proxy (this
 * machine's does), pip and Node in the container trust what the host trusts.
 */
export function hostTrust(): Array<[string, string]> {
  const bundle = "/etc/ssl/certs/ca-certificates.crt";
  return existsSync(bundle) ? [[bundle, `${bundle}:ro`]] : [];
}

/** Starts `podman run` attached (stdout/stderr are the container's); the child exits with it. */
export function runContainer(spec: ContainerSpec): RunningContainer {
  const { nofile, nproc } = currentLimits();
  const args = [
    "run",
    "--rm",
    "--replace",
    "--name",
    spec.name,
    "--runtime",
    "runc",
    "--network",
    "host",
    "--uts",
    "private",
    "--hostname",
    spec.hostname,
    "--read-only",
    "--read-only-tmpfs=false",
    "--cap-drop",
    "all",
    "--security-opt",
    "no-new-privileges",
    "--ulimit",
    `nofile=${nofile}:${nofile}`,
    "--ulimit",
    `nproc=${nproc}:${nproc}`,
    "--pull",
    "never",
    ...(spec.user ? ["--user", spec.user] : []),
    ...Object.entries(spec.env ?? {}).flatMap(([k, v]) => ["--env", `${k}=${v}`]),
    ...[...(spec.binds ?? []), ...hostTrust()].flatMap(([h, c]) => ["--volume", `${h}:${c}`]),
    ...(spec.tmpfs ?? []).flatMap((p) => ["--tmpfs", `${p}:rw,mode=1777`]),
    normalizeImageRef(spec.image),
    ...spec.args,
  ];
  const child = spawn("podman", args, { stdio: ["ignore", "pipe", "pipe"] });
  return { name: spec.name, child };
}

/** SIGTERM, then SIGKILL after `graceSeconds`, as a kubelet stops a container. */
export async function stopContainer(name: string, graceSeconds = 10): Promise<void> {
  await run("podman", ["stop", "--ignore", "-t", String(graceSeconds), name]).catch(() => undefined);
}

/** SIGKILL: a crash. */
export async function killContainer(name: string): Promise<void> {
  await run("podman", ["kill", "--signal", "KILL", name]).catch(() => undefined);
}

/** Volume mounts of a pod's first container as podman binds and tmpfs mounts. */
export function podVolumes(pod: V1Pod, modelCache: string): { binds: Array<[string, string]>; tmpfs: string[] } {
  const spec = pod.spec ?? { containers: [] };
  const volumes = new Map<string, V1Volume>((spec.volumes ?? []).map((v) => [v.name, v]));
  const binds: Array<[string, string]> = [];
  const tmpfs: string[] = [];
  for (const m of spec.containers[0]?.volumeMounts ?? []) {
    const kind = mountKind(m.name, m.mountPath, volumes.get(m.name));
    if (kind === "unknown") throw new Error(`pod ${nameOfPod(pod)}: volume ${m.name} has a kind the e2e harness does not run`);
    if (kind === "model-cache") binds.push([modelCache, m.mountPath]);
    if (kind === "scratch") tmpfs.push(m.mountPath);
  }
  return { binds, tmpfs };
}

const nameOfPod = (pod: V1Pod): string => pod.metadata?.name ?? "";

/**
 * service-account: the token volume the ServiceAccount admission adds (callers bind
 * serviceAccountMount() there); model-cache: the node's cache; scratch: an empty tmpfs.
 */
function mountKind(name: string, path: string, v: V1Volume | undefined): "service-account" | "model-cache" | "scratch" | "unknown" {
  if (path === SERVICE_ACCOUNT_PATH && v?.projected) return "service-account";
  if (name === "model-cache") return "model-cache";
  return isScratch(v) ? "scratch" : "unknown";
}

/** Volumes a test run may give an empty tmpfs: emptyDirs, and claims (KV disk tiers) that start empty. */
function isScratch(v: V1Volume | undefined): boolean {
  return Boolean(v && (v.emptyDir || v.ephemeral || v.persistentVolumeClaim));
}

/** The pod's container env with literal values, as podman --env pairs. */
export function literalEnv(pod: V1Pod): Record<string, string> {
  const env = pod.spec?.containers[0]?.env ?? [];
  return Object.fromEntries(env.filter((e) => e.value !== undefined).map((e) => [e.name, e.value ?? ""]));
}

/** `--user` from the pod's securityContext, as `uid:gid`; none: the image's own. */
export function podUser(pod: V1Pod): { user?: string } {
  const sc = pod.spec?.securityContext;
  if (sc?.runAsUser === undefined) return {};
  return { user: `${sc.runAsUser}:${sc.runAsGroup ?? sc.runAsUser}` };
}
