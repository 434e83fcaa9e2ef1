/**
 * bench:s3-get's floor: an object "server" that is only a Map behind node:http, in its own
 * process (so it does not share the client's event loop). It checks no signature and keeps
 * nothing on disk; what a GET costs here is what the client and loopback cost by themselves.
 * Run as a program: `tsx bench/s3-get-floor.ts`; prints its port on stdout once listening.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";

const objects = new Map<string, { body: Buffer; lastModified: string }>();

async function bodyOf(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = req.url ?? "/";
  if (req.method === "PUT") {
    objects.set(path, { body: await bodyOf(req), lastModified: new Date().toUTCString() });
    return void res.writeHead(200).end();
  }
  const obj = objects.get(path);
  if (!obj) return void res.writeHead(404).end();
  res.writeHead(200, { "content-length": obj.body.length, "last-modified": obj.lastModified });
  res.end(req.method === "HEAD" ? undefined : obj.body);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const server = createServer((req, res) => void handle(req, res));
  server.listen(0, "127.0.0.1", () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
}
