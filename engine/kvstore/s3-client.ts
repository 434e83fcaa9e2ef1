/**
 * A minimal S3 client (path-style, AWS Signature Version 4 signed with node:crypto): PUT, GET,
 * HEAD and DELETE of objects and PUT of a bucket. Payloads are sent UNSIGNED-PAYLOAD: every
 * KV entry carries its own SHA-256, checked on read.
 */
import { createHash, createHmac } from "node:crypto";
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";

export interface S3Config {
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Per request. Default 30 s. */
  timeoutMs?: number;
}

export class S3Error extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const hmac = (key: Buffer | string, data: string): Buffer => createHmac("sha256", key).update(data).digest();
const sha256Hex = (data: string): string => createHash("sha256").update(data).digest("hex");

export interface S3Object {
  body: Buffer;
  lastModified: number;
}

interface S3Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

const ok = (res: S3Response): boolean => res.status >= 200 && res.status < 300;
const lastModifiedOf = (res: S3Response): number => Date.parse(String(res.headers["last-modified"] ?? "")) || Date.now();

/** The whole body (none for a HEAD), into one buffer of content-length when the server gives it (one copy per chunk, no concatenation). */
function readResponse(res: IncomingMessage, head: boolean): Promise<S3Response> {
  return new Promise((resolve, reject) => {
    const length = Number(res.headers["content-length"]);
    const known = !head && Number.isSafeInteger(length) && length >= 0;
    const chunks: Buffer[] = [];
    let body = known ? Buffer.allocUnsafe(length) : Buffer.alloc(0);
    let at = 0;
    res.on("data", (chunk: Buffer) => {
      if (known && at + chunk.length <= length) at += chunk.copy(body, at);
      else chunks.push(chunk);
    });
    res.on("error", reject);
    res.on("close", () => {
      if (!res.complete) reject(new Error(`S3 response cut short after ${at} bytes`));
    });
    res.on("end", () => {
      if (!known || chunks.length > 0 || at !== length) body = Buffer.concat([body.subarray(0, at), ...chunks]);
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
    });
  });
}

export class S3Client {
  /** Connections kept open between requests (a load's block reads reuse them). */
  private readonly agents = { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true }) };

  /** The SigV4 signing key of the day (four HMACs, the same for every request that day). */
  private signingKey: { day: string; key: Buffer } | undefined;

  constructor(readonly config: S3Config) {}

  private sign(method: string, url: URL, path: string, now: Date): Record<string, string> {
    const { region, accessKeyId, secretAccessKey } = this.config;
    const amzDate = now
      .toISOString()
      .replace(/[-:]/g, "")
      .replace(/\.\d{3}/, "");
    const day = amzDate.slice(0, 8);
    const headers: Record<string, string> = { host: url.host, "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-date": amzDate };
    const signed = Object.keys(headers).sort();
    const canonicalHeaders = signed.map((h) => `${h}:${headers[h]}\n`).join("");
    const canonical = [method, path, "", canonicalHeaders, signed.join(";"), "UNSIGNED-PAYLOAD"].join("\n");
    const scope = `${day}/${region}/s3/aws4_request`;
    const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256Hex(canonical)].join("\n");
    if (this.signingKey?.day !== day) this.signingKey = { day, key: hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, day), region), "s3"), "aws4_request") };
    const key = this.signingKey.key;
    const signature = createHmac("sha256", key).update(toSign).digest("hex");
    headers.authorization = `AWS4-HMAC-SHA256 Credential=${accessKeyId}/${scope}, SignedHeaders=${signed.join(";")}, Signature=${signature}`;
    return headers;
  }

  /**
   * One signed request over node:http(s) on a keep-alive agent, the whole body read. Not fetch: a
   * load reads an entry's ~33 blocks at once, and fetch's streams cost the store's event loop about
   * twice the CPU per GET (bench:s3-get), CPU that on a busy host delayed the push of blocks
   * already read (docs/kv-store.md).
   */
  private request(method: string, key: string | undefined, body?: Buffer): Promise<S3Response> {
    const url = new URL(this.config.endpoint);
    const path = `${url.pathname.replace(/\/+$/, "")}/${encodeURIComponent(this.config.bucket)}${key === undefined ? "" : `/${encodeURIComponent(key)}`}`;
    const headers: Record<string, string | number> = this.sign(method, url, path, new Date());
    if (body) headers["content-length"] = body.length;
    const { request, agent } =
      url.protocol === "https:" ? { request: httpsRequest, agent: this.agents.https } : { request: httpRequest, agent: this.agents.http };
    return new Promise((resolve, reject) => {
      const req = request(
        { host: url.hostname, port: url.port || undefined, path, method, headers, agent, signal: AbortSignal.timeout(this.config.timeoutMs ?? 30_000) },
        (res) => void readResponse(res, method === "HEAD").then(resolve, reject),
      );
      req.on("error", reject);
      req.end(body);
    });
  }

  private static fail(res: S3Response, what: string): never {
    throw new S3Error(res.status, `S3 ${what}: ${res.status} ${res.body.toString("utf8", 0, 300)}`);
  }

  /** Creates the bucket; an existing bucket owned by us is fine. */
  async ensureBucket(): Promise<void> {
    const { region } = this.config;
    const location =
      region === "us-east-1"
        ? undefined
        : Buffer.from(
            `<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>${region}</LocationConstraint></CreateBucketConfiguration>`,
          );
    const res = await this.request("PUT", undefined, location);
    if (ok(res) || res.status === 409) return;
    S3Client.fail(res, `create bucket ${this.config.bucket}`);
  }

  async put(key: string, body: Buffer): Promise<void> {
    const res = await this.request("PUT", key, body);
    if (!ok(res)) S3Client.fail(res, `put ${key}`);
  }

  async get(key: string): Promise<S3Object | undefined> {
    const res = await this.request("GET", key);
    if (res.status === 404) return undefined;
    if (!ok(res)) S3Client.fail(res, `get ${key}`);
    return { body: res.body, lastModified: lastModifiedOf(res) };
  }

  async head(key: string): Promise<{ size: number; lastModified: number } | undefined> {
    const res = await this.request("HEAD", key);
    if (res.status === 404) return undefined;
    if (!ok(res)) S3Client.fail(res, `head ${key}`);
    return { size: Number(res.headers["content-length"] ?? 0), lastModified: lastModifiedOf(res) };
  }

  async delete(key: string): Promise<void> {
    const res = await this.request("DELETE", key);
    if (!ok(res) && res.status !== 404) S3Client.fail(res, `delete ${key}`);
  }
}
