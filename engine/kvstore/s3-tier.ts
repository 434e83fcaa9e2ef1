/**
 * Object-store tier on an S3-compatible server. Credentials come from AWS_ACCESS_KEY_ID and
 * AWS_SECRET_ACCESS_KEY. TTL is judged from the object's Last-Modified. Capacity is enforced
 * over the objects this process wrote (an LRU index in memory); objects left by an earlier
 * process age out by TTL (or the bucket's lifecycle rule).
 */
import { isValidStoredValue } from "./kv-entry.ts";
import { S3Client } from "./s3-client.ts";
import type { KvTier, TierEntry, TierStats } from "./tier.ts";
import type { TierSpec } from "./tier-spec.ts";

export class S3Tier implements KvTier {
  readonly medium = "objectStore" as const;
  readonly name: string;
  corrupt = 0;
  private readonly index = new Map<string, number>();
  private bytes = 0;

  private constructor(
    private readonly spec: TierSpec,
    private readonly client: S3Client,
  ) {
    this.name = spec.name;
  }

  static async open(spec: TierSpec, env: NodeJS.ProcessEnv = process.env): Promise<S3Tier> {
    if (!spec.endpoint || !spec.bucket) throw new Error(`objectStore tier ${spec.name} needs endpoint and bucket`);
    const client = new S3Client({
      endpoint: spec.endpoint,
      bucket: spec.bucket,
      region: spec.region ?? "us-east-1",
      accessKeyId: env.AWS_ACCESS_KEY_ID ?? "",
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY ?? "",
    });
    await client.ensureBucket();
    return new S3Tier(spec, client);
  }

  private expired(lastModified: number): boolean {
    return this.spec.ttlMs !== undefined && Date.now() - lastModified > this.spec.ttlMs;
  }

  async get(key: string): Promise<Buffer | undefined> {
    const obj = await this.client.get(key);
    if (!obj) return undefined;
    if (this.expired(obj.lastModified) || !isValidStoredValue(obj.body)) {
      if (!this.expired(obj.lastModified)) this.corrupt++;
      await this.delete(key);
      return undefined;
    }
    this.touch(key, obj.body.length);
    return obj.body;
  }

  async has(key: string): Promise<boolean> {
    const head = await this.client.head(key);
    return head !== undefined && !this.expired(head.lastModified);
  }

  async put(key: string, value: Buffer): Promise<TierEntry[]> {
    const capacity = this.spec.capacityBytes ?? Infinity;
    if (value.length > capacity) return [{ key, value }];
    for (const [k, size] of this.index) {
      if (this.bytes + value.length <= capacity) break;
      this.forget(k, size);
      await this.client.delete(k);
    }
    await this.client.put(key, value);
    this.touch(key, value.length);
    return [];
  }

  private touch(key: string, size: number): void {
    const old = this.index.get(key);
    if (old !== undefined) this.forget(key, old);
    this.index.set(key, size);
    this.bytes += size;
  }

  private forget(key: string, size: number): void {
    this.index.delete(key);
    this.bytes -= size;
  }

  async delete(key: string): Promise<void> {
    const size = this.index.get(key);
    if (size !== undefined) this.forget(key, size);
    await this.client.delete(key);
  }

  stats(): TierStats {
    return { bytes: this.bytes, blocks: this.index.size };
  }
}
