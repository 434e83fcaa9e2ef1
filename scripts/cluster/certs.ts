// The cluster PKI, made with the openssl CLI: one CA signs the apiserver serving cert and a
// client cert per identity. P-256 keys because they are generated in milliseconds even on a
// 2-core machine, and every component (and the service-account token signer) accepts them.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A cert/key pair on disk. */
export interface CertFiles {
  cert: string;
  key: string;
}

export interface Pki {
  dir: string;
  ca: CertFiles;
  apiserver: CertFiles;
  /** Client identities; `admin` is in system:masters. */
  clients: Record<ClientName, CertFiles>;
  /** Service-account token signing pair (private key for apiserver + controller-manager). */
  serviceAccount: { key: string; pub: string };
}

/** Client identities: the CNs are the users the bootstrap RBAC policy already grants. */
const CLIENTS = {
  admin: "/O=system:masters/CN=llmfleet-admin",
  "kube-controller-manager": "/CN=system:kube-controller-manager",
  "kube-scheduler": "/CN=system:kube-scheduler",
  // kwok writes node and pod status for fake nodes; masters keeps it simple and unrestricted.
  kwok: "/O=system:masters/CN=kwok-controller",
} as const;
export type ClientName = keyof typeof CLIENTS;

const APISERVER_SANS = [
  "IP:127.0.0.1",
  "DNS:localhost",
  "DNS:kubernetes",
  "DNS:kubernetes.default",
  "DNS:kubernetes.default.svc",
  "DNS:kubernetes.default.svc.cluster.local",
  "IP:10.96.0.1", // first address of --service-cluster-ip-range: the `kubernetes` Service
];

// Our own config so the result does not depend on the system openssl.cnf.
const OPENSSL_CNF = `[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = ${APISERVER_SANS.join(",")}
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
`;

async function openssl(args: string[]): Promise<void> {
  try {
    await run("openssl", args);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? "";
    throw new Error(`openssl ${args[0]} failed: ${stderr || String(err)}`, { cause: err });
  }
}

async function genKey(path: string): Promise<void> {
  await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path]);
}

/** Issues `<name>.crt` for `subject`, signed by the CA, with the extensions section `ext`. */
async function issue(pki: Pick<Pki, "dir" | "ca">, name: string, subject: string, ext: string): Promise<CertFiles> {
  const files = { cert: join(pki.dir, `${name}.crt`), key: join(pki.dir, `${name}.key`) };
  const csr = join(pki.dir, `${name}.csr`);
  const cnf = join(pki.dir, "openssl.cnf");
  await genKey(files.key);
  await openssl(["req", "-new", "-key", files.key, "-subj", subject, "-config", cnf, "-out", csr]);
  await openssl([
    "x509", "-req", "-in", csr, "-CA", pki.ca.cert, "-CAkey", pki.ca.key,
    "-set_serial", `0x${randomBytes(16).toString("hex")}`, "-days", "3650",
    "-extfile", cnf, "-extensions", ext, "-out", files.cert,
  ]);
  return files;
}

/** Writes a fresh PKI into `dir` (created if missing). */
export async function generatePki(dir: string): Promise<Pki> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, "openssl.cnf"), OPENSSL_CNF);
  const ca = { cert: join(dir, "ca.crt"), key: join(dir, "ca.key") };
  await genKey(ca.key);
  await openssl([
    "req", "-x509", "-new", "-key", ca.key, "-subj", "/CN=llmfleet-ca", "-days", "3650",
    "-config", join(dir, "openssl.cnf"), "-extensions", "ca", "-out", ca.cert,
  ]);
  const base = { dir, ca };
  const serviceAccount = { key: join(dir, "sa.key"), pub: join(dir, "sa.pub") };
  await genKey(serviceAccount.key);
  await openssl(["pkey", "-in", serviceAccount.key, "-pubout", "-out", serviceAccount.pub]);
  const apiserver = await issue(base, "apiserver", "/CN=kube-apiserver", "server");
  const entries = await Promise.all(
    Object.entries(CLIENTS).map(async ([name, subject]) => [name, await issue(base, name, subject, "client")] as const),
  );
  const clients = Object.fromEntries(entries) as Record<ClientName, CertFiles>;
  return { dir, ca, apiserver, clients, serviceAccount };
}
