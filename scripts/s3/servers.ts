/**
 * The S3-compatible servers tests and benchmarks can run against, by name: moto (Python, the
 * default, an emulator) and seaweedfs (Go, a real object store). Both bind 127.0.0.1 only.
 */
import { startS3Server, type S3Server } from "./moto-server.ts";
import { startSeaweedfsServer } from "./seaweedfs-server.ts";

export const S3_SERVER_KINDS = ["moto", "seaweedfs"] as const;
export type S3ServerKind = (typeof S3_SERVER_KINDS)[number];

/** `value` as a server kind (undefined: moto); anything else throws with the choices. */
export function s3ServerKind(value: string | undefined): S3ServerKind {
  const kind = value ?? "moto";
  if (!(S3_SERVER_KINDS as readonly string[]).includes(kind)) throw new Error(`unknown S3 server "${kind}": one of ${S3_SERVER_KINDS.join(", ")}`);
  return kind as S3ServerKind;
}

export function startS3ServerOf(kind: S3ServerKind): Promise<S3Server> {
  return kind === "seaweedfs" ? startSeaweedfsServer() : startS3Server();
}
