/**
 * A minimal S3 client (path-style, AWS Signature Version 4 signed with node:crypto): PUT, GET,
 * HEAD and DELETE of objects and PUT of a bucket. Payloads are sent UNSIGNED-PAYLOAD: every
 * KV entry carries its own SHA-256, checked on read.
 */
import { createHash, createHmac } from "node:crypto";

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

export class S3Client {
  constructor(readonly config: S3Config) {}

  private sign(method: string, path: string, now: Date): Record<string, string> {
    const { region, accessKeyId, secretAccessKey } = this.config;
    const url = new URL(this.config.endpoint);
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
    const key = hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, day), region), "s3"), "aws4_request");
    const signature = createHmac("sha256", key).update(toSign).digest("hex");
    headers.authorization = `AWS4-HMAC-SHA256 Credential=${accessKeyId}/${scope}, SignedHeaders=${signed.join(";")}, Signature=${signature}`;
    return headers;
  }

  private async request(method: string, key: string | undefined, body?: Buffer): Promise<Response> {
    const base = new URL(this.config.endpoint).pathname.replace(/\/+$/, "");
    const path = `${base}/${encodeURIComponent(this.config.bucket)}${key === undefined ? "" : `/${encodeURIComponent(key)}`}`;
    const headers = this.sign(method, path, new Date());
    delete headers.host;
    return fetch(`${new URL(this.config.endpoint).origin}${path}`, {
      method,
      headers,
      ...(body ? { body: body as unknown as BodyInit } : {}),
      signal: AbortSignal.timeout(this.config.timeoutMs ?? 30_000),
    });
  }

  private static async fail(res: Response, what: string): Promise<never> {
    const text = await res.text().catch(() => "");
    throw new S3Error(res.status, `S3 ${what}: ${res.status} ${text.slice(0, 300)}`);
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
    if (res.ok || res.status === 409) return void (await res.arrayBuffer());
    await S3Client.fail(res, `create bucket ${this.config.bucket}`);
  }

  async put(key: string, body: Buffer): Promise<void> {
    const res = await this.request("PUT", key, body);
    if (!res.ok) await S3Client.fail(res, `put ${key}`);
    await res.arrayBuffer();
  }

  async get(key: string): Promise<S3Object | undefined> {
    const res = await this.request("GET", key);
    if (res.status === 404) return void (await res.arrayBuffer());
    if (!res.ok) await S3Client.fail(res, `get ${key}`);
    const lastModified = Date.parse(res.headers.get("last-modified") ?? "") || Date.now();
    return { body: Buffer.from(await res.arrayBuffer()), lastModified };
  }

  async head(key: string): Promise<{ size: number; lastModified: number } | undefined> {
    const res = await this.request("HEAD", key);
    if (res.status === 404) return undefined;
    if (!res.ok) await S3Client.fail(res, `head ${key}`);
    return { size: Number(res.headers.get("content-length") ?? 0), lastModified: Date.parse(res.headers.get("last-modified") ?? "") || Date.now() };
  }

  async delete(key: string): Promise<void> {
    const res = await this.request("DELETE", key);
    if (!res.ok && res.status !== 404) await S3Client.fail(res, `delete ${key}`);
    await res.arrayBuffer();
  }
}
