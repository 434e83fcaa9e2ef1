/**
 * The native TCP hand-off (engine/native/src/kv-stream.cpp) on its own: a state crosses intact,
 * a full or corrupt or dying peer gives a clear answer within the timeout (never a hang), and a
 * sender that dies mid-stream leaves nothing staged or reserved on the receiver.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { eventually } from "../../testing/eventually.ts";
import { kvSendErrorCode, KV_SEND_STATUS } from "./kv-transport.ts";
import { useKvListener } from "../../testing/kv-listener.ts";

const listener = useKvListener();

/**
 * The LFKN head for `bytes` of state (kv-stream.h): v1, or with a stripe (index, count, offset,
 * length) the v2 head of that stripe.
 */
function head(id: string, header: string, bytes: number, stripe?: [number, number, number, number]): Buffer {
  const fixed = Buffer.alloc(stripe ? 48 : 24);
  fixed.write("LFKN", 0, "latin1");
  fixed.writeUInt32LE(stripe ? 2 : 1, 4);
  fixed.writeUInt32LE(Buffer.byteLength(id), 8);
  fixed.writeUInt32LE(Buffer.byteLength(header), 12);
  fixed.writeBigUInt64LE(BigInt(bytes), 16);
  if (stripe) {
    const [index, count, offset, length] = stripe;
    fixed.writeUInt32LE(index, 24);
    fixed.writeUInt32LE(count, 28);
    fixed.writeBigUInt64LE(BigInt(offset), 32);
    fixed.writeBigUInt64LE(BigInt(length), 40);
  }
  return Buffer.concat([fixed, Buffer.from(id), Buffer.from(header)]);
}

function frame(chunk: Buffer, crc: number): Buffer {
  const f = Buffer.alloc(8);
  f.writeUInt32LE(chunk.length, 0);
  f.writeUInt32LE(crc >>> 0, 4);
  return f;
}

async function rawConnection(): Promise<Socket> {
  const s = connect(listener.port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => s.once("connect", resolve).once("error", reject));
  return s;
}

/** Reads one reply (u32 status, u32 length, message) from a raw socket. */
function reply(s: Socket): Promise<{ status: number; message: string }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 8 || buf.length < 8 + buf.readUInt32LE(4)) return;
      s.off("data", onData);
      resolve({ status: buf.readUInt32LE(0), message: buf.subarray(8, 8 + buf.readUInt32LE(4)).toString() });
    };
    s.on("data", onData);
    s.once("error", reject);
  });
}

test("CRC-32C is the Castagnoli checksum (the standard check value of '123456789')", () => {
  assert.equal(listener.kv.kvChecksum(Buffer.from("123456789")), 0xe3069283);
  assert.equal(listener.kv.kvChecksum(Buffer.alloc(0)), 0);
});

test("a state crosses byte for byte in chunks, is staged once, and is taken once", async () => {
  const state = randomBytes(10 * 2 ** 20 + 123); // not a multiple of the chunk size
  const r = await listener.kv.kvSend(state, "127.0.0.1", listener.port, "h-roundtrip", '{"model":"m"}', 1 << 20, 10_000);
  assert.equal(r.status, KV_SEND_STATUS.ok);
  assert.equal(r.message, "127.0.0.1", "without an advertised URL the receiver names the address the connection reached");
  assert.equal(r.bytes, state.length);
  const taken = listener.kv.kvTake(listener.handle, "h-roundtrip");
  assert.ok(taken);
  assert.ok(taken.state.equals(state));
  assert.equal(taken.header, '{"model":"m"}');
  assert.equal(taken.pinned, false, "no GPU here: plain page-aligned host memory");
  assert.equal(listener.kv.kvTake(listener.handle, "h-roundtrip"), null);
  const again = await listener.kv.kvSend(state.subarray(0, 4096), "127.0.0.1", listener.port, "h-exists", "{}", 4096, 10_000);
  assert.equal(again.status, KV_SEND_STATUS.ok);
  const dup = await listener.kv.kvSend(state.subarray(0, 4096), "127.0.0.1", listener.port, "h-exists", "{}", 4096, 10_000);
  assert.equal(dup.status, KV_SEND_STATUS.exists);
  assert.ok(listener.kv.kvTake(listener.handle, "h-exists"));
});

test("sends and received connections reuse kept threads instead of starting one each", async () => {
  const kv = listener.kv;
  assert.ok(kv.kvTaskThreads, "the addon reports its kept threads");
  const before = kv.kvTaskThreads!().started;
  const state = randomBytes(64 << 10);
  for (let i = 0; i < 12; i++) {
    const r = await kv.kvSend(state, "127.0.0.1", listener.port, `h-reuse-${i}`, "{}", 16 << 10, 10_000);
    assert.equal(r.status, KV_SEND_STATUS.ok);
    assert.ok(kv.kvTake(listener.handle, `h-reuse-${i}`), "staged");
  }
  // 24 tasks (12 sends, 12 received connections); a thread per task would be 24 started.
  const started = kv.kvTaskThreads!().started - before;
  assert.ok(started <= 6, `${started} threads started for 24 tasks run one after another`);
  const now = kv.kvTaskThreads!();
  assert.ok(now.threads >= 1 && now.idle <= now.threads, JSON.stringify(now));
});

test("the staged answer names the advertised URL, else this pod's HTTP port at the address the connection reached", async () => {
  for (const [opts, want] of [
    [{ httpPort: 8000 }, "http://127.0.0.1:8000"],
    [{ httpPort: 8000, advertise: "http://decode-0.example:8000" }, "http://decode-0.example:8000"],
  ] as const) {
    const l = listener.kv.kvListen("127.0.0.1", 0, opts);
    try {
      const r = await listener.kv.kvSend(Buffer.alloc(16), "127.0.0.1", l.port, "h-named", "{}", 4096, 5_000);
      assert.equal(r.message, want);
    } finally {
      listener.kv.kvClose(l.handle);
    }
  }
});

test("an empty state and a one-byte state cross too", async () => {
  for (const [id, state] of [
    ["h-empty", Buffer.alloc(0)],
    ["h-one", Buffer.from([7])],
  ] as const) {
    const r = await listener.kv.kvSend(state, "127.0.0.1", listener.port, id, "{}", 4096, 10_000);
    assert.equal(r.status, KV_SEND_STATUS.ok, id);
    assert.ok(listener.kv.kvTake(listener.handle, id)!.state.equals(state), id);
  }
});

test("a receiver over its byte budget refuses: too large for it ever, or full for now", async () => {
  const tooLarge = await listener.kv.kvSend(Buffer.alloc(65 << 20), "127.0.0.1", listener.port, "h-large", "{}", 1 << 20, 10_000);
  assert.equal(tooLarge.status, KV_SEND_STATUS.tooLarge);
  assert.match(tooLarge.message, /exceeds this pod's hand-off budget/);
  const big = Buffer.alloc(40 << 20, 1);
  assert.equal((await listener.kv.kvSend(big, "127.0.0.1", listener.port, "h-fill", "{}", 1 << 20, 10_000)).status, KV_SEND_STATUS.ok);
  const full = await listener.kv.kvSend(big, "127.0.0.1", listener.port, "h-full", "{}", 1 << 20, 10_000);
  assert.equal(full.status, KV_SEND_STATUS.full);
  assert.ok(listener.kv.kvTake(listener.handle, "h-fill"));
  assert.equal((await listener.kv.kvSend(big, "127.0.0.1", listener.port, "h-full", "{}", 1 << 20, 10_000)).status, KV_SEND_STATUS.ok, "room again once taken");
  assert.ok(listener.kv.kvTake(listener.handle, "h-full"));
});

test("nobody listening is a 'connect' failure (the caller falls back to HTTP)", async () => {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const free = (server.address() as AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  await assert.rejects(listener.kv.kvSend(Buffer.alloc(8), "127.0.0.1", free, "h-x", "{}", 4096, 5_000), (err) => kvSendErrorCode(err) === "connect");
});

async function fakeReceiver(onSocket: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer(onSocket);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

test("a decode pod dying mid-hand-off is a 'closed' failure, not a hang", async () => {
  const { server, port: p } = await fakeReceiver((s) => {
    let got = 0;
    s.once("data", () => s.write(Buffer.alloc(8))); // "go on"
    s.on("data", (d: Buffer) => {
      got += d.length;
      if (got > 3 << 20) s.destroy(); // dies after ~3 MB of 64
    });
  });
  const t0 = performance.now();
  await assert.rejects(listener.kv.kvSend(Buffer.alloc(64 << 20), "127.0.0.1", p, "h-dies", "{}", 1 << 20, 20_000), (err) => kvSendErrorCode(err) === "closed");
  assert.ok(performance.now() - t0 < 10_000);
  server.close();
});

test("a decode pod that stops answering is a 'timeout' failure after the timeout", async () => {
  const sockets: Socket[] = [];
  const { server, port: p } = await fakeReceiver((s) => void sockets.push(s)); // accepts, never answers
  await assert.rejects(listener.kv.kvSend(Buffer.alloc(1024), "127.0.0.1", p, "h-silent", "{}", 4096, 300), (err) => kvSendErrorCode(err) === "timeout");
  for (const s of sockets) s.destroy();
  server.close();
});

test("a prefill pod dying mid-stream leaves nothing staged or reserved on the receiver", async () => {
  const before = listener.kv.kvStats(listener.handle);
  const s = await rawConnection();
  s.write(head("h-partial", "{}", 2 << 20));
  assert.equal((await reply(s)).status, KV_SEND_STATUS.ok);
  const chunk = randomBytes(1 << 20);
  s.write(frame(chunk, listener.kv.kvChecksum(chunk)));
  s.write(chunk.subarray(0, 1000)); // then the process dies
  s.destroy();
  await eventually(async () => {
    const st = listener.kv.kvStats(listener.handle);
    assert.equal(st.aborted, before.aborted! + 1);
    assert.equal(st.receivingBytes, 0);
  });
  assert.equal(listener.kv.kvTake(listener.handle, "h-partial"), null);
});

test("a silent sender is dropped after idleMs and its partial state freed", async () => {
  const before = listener.kv.kvStats(listener.handle);
  const s = await rawConnection();
  s.write(head("h-idle", "{}", 1 << 20));
  assert.equal((await reply(s)).status, KV_SEND_STATUS.ok);
  assert.equal(listener.kv.kvStats(listener.handle).receivingBytes, 1 << 20);
  await eventually(async () => assert.equal(listener.kv.kvStats(listener.handle).aborted, before.aborted! + 1), { timeoutMs: 5_000 });
  assert.equal(listener.kv.kvStats(listener.handle).receivingBytes, 0);
  s.destroy();
});

test("a corrupted chunk is refused with a reason, never staged", async () => {
  const s = await rawConnection();
  const chunk = randomBytes(4096);
  s.write(head("h-corrupt", "{}", chunk.length));
  assert.equal((await reply(s)).status, KV_SEND_STATUS.ok);
  s.write(frame(chunk, listener.kv.kvChecksum(chunk) ^ 1));
  s.write(chunk);
  const r = await reply(s);
  assert.equal(r.status, KV_SEND_STATUS.bad);
  assert.match(r.message, /CRC-32C/);
  s.destroy();
  assert.equal(listener.kv.kvTake(listener.handle, "h-corrupt"), null);
});

test("a stream that is not LFKN is refused", async () => {
  const s = await rawConnection();
  s.write(Buffer.alloc(24, 0x41));
  const r = await reply(s);
  assert.equal(r.status, KV_SEND_STATUS.bad);
  s.destroy();
});

test("staged states expire when no generate call takes them", async () => {
  const l = listener.kv.kvListen("127.0.0.1", 0, { ttlMs: 50 });
  try {
    assert.equal((await listener.kv.kvSend(Buffer.alloc(4096), "127.0.0.1", l.port, "h-ttl", "{}", 4096, 5_000)).status, KV_SEND_STATUS.ok);
    await new Promise((r) => setTimeout(r, 120));
    assert.equal(listener.kv.kvTake(l.handle, "h-ttl"), null);
    assert.equal(listener.kv.kvStats(l.handle).expired, 1);
  } finally {
    listener.kv.kvClose(l.handle);
  }
});

test("bad arguments are TypeErrors and RangeErrors", () => {
  assert.throws(() => listener.kv.kvSend("x" as unknown as Buffer, "127.0.0.1", listener.port, "a", "{}", 4096, 100), TypeError);
  assert.throws(() => listener.kv.kvSend(Buffer.alloc(1), "127.0.0.1", 0, "a", "{}", 4096, 100), RangeError);
  assert.throws(() => listener.kv.kvSend(Buffer.alloc(1), "127.0.0.1", listener.port, "", "{}", 4096, 100), RangeError);
  assert.throws(() => listener.kv.kvSend(Buffer.alloc(1), "127.0.0.1", listener.port, "a", "{}", 1, 100), RangeError);
});

// ---- LFKN v2: one hand-off striped over several connections ----

const END = Buffer.alloc(4);

test("striped over several connections, a state crosses byte for byte and is staged once", async () => {
  for (const [bytes, streams] of [
    [10 * 2 ** 20 + 123, 4], // the last stripe short
    [3 * 2 ** 20, 8], // fewer chunks than streams: one stripe per chunk
    [2 ** 20 + 1, 16],
  ] as const) {
    const state = randomBytes(bytes);
    const id = `h-striped-${bytes}-${streams}`;
    const r = await listener.kv.kvSend(state, "127.0.0.1", listener.port, id, '{"model":"m"}', 1 << 20, 10_000, streams);
    assert.equal(r.status, KV_SEND_STATUS.ok, r.message);
    assert.equal(r.streams, Math.min(streams, Math.ceil(bytes / 2 ** 20)));
    const taken = listener.kv.kvTake(listener.handle, id);
    assert.ok(taken);
    assert.ok(taken.state.equals(state), `${bytes} bytes over ${streams} streams arrive intact`);
    assert.equal(taken.header, '{"model":"m"}');
  }
  const st = listener.kv.kvStats(listener.handle);
  assert.equal(st.receivingBytes, 0);
  assert.equal((st as { assembling?: number }).assembling, 0);
});

test("a state no bigger than one chunk goes over one connection (v1) even when more are asked for", async () => {
  const state = randomBytes(4096);
  const r = await listener.kv.kvSend(state, "127.0.0.1", listener.port, "h-small-striped", "{}", 1 << 20, 5_000, 4);
  assert.equal(r.status, KV_SEND_STATUS.ok);
  assert.equal(r.streams, 1);
  assert.ok(listener.kv.kvTake(listener.handle, "h-small-striped")?.state.equals(state));
});

test("a corrupted chunk in one stripe drops the whole hand-off, with the reason on stripe 0", async () => {
  const before = listener.kv.kvStats(listener.handle);
  const a = randomBytes(4096);
  const b = randomBytes(4096);
  const s0 = await rawConnection();
  s0.write(head("h-stripe-crc", "{}", 8192, [0, 2, 0, 4096]));
  assert.equal((await reply(s0)).status, KV_SEND_STATUS.ok);
  const s1 = await rawConnection();
  s1.write(head("h-stripe-crc", "", 8192, [1, 2, 4096, 4096]));
  assert.equal((await reply(s1)).status, KV_SEND_STATUS.ok);
  s0.write(Buffer.concat([frame(a, listener.kv.kvChecksum(a)), a, END]));
  const last0 = reply(s0);
  s1.write(Buffer.concat([frame(b, listener.kv.kvChecksum(b) ^ 1), b]));
  assert.match((await reply(s1)).message, /CRC-32C/);
  const r = await last0;
  assert.equal(r.status, KV_SEND_STATUS.bad);
  assert.match(r.message, /stripe 1: .*CRC-32C/);
  s0.destroy();
  s1.destroy();
  assert.equal(listener.kv.kvTake(listener.handle, "h-stripe-crc"), null);
  await eventually(async () => {
    const st = listener.kv.kvStats(listener.handle);
    assert.equal(st.aborted, before.aborted! + 1);
    assert.equal(st.receivingBytes, 0);
    assert.equal((st as { assembling?: number }).assembling, 0);
  });
});

test("a stripe that never arrives drops the hand-off after idleMs; its memory is freed", async () => {
  const before = listener.kv.kvStats(listener.handle);
  const a = randomBytes(4096);
  const s0 = await rawConnection();
  s0.write(head("h-stripe-missing", "{}", 8192, [0, 2, 0, 4096]));
  assert.equal((await reply(s0)).status, KV_SEND_STATUS.ok);
  s0.write(Buffer.concat([frame(a, listener.kv.kvChecksum(a)), a, END]));
  const r = await reply(s0); // idleMs is 1 s on this listener
  assert.equal(r.status, KV_SEND_STATUS.bad);
  assert.match(r.message, /did not arrive/);
  s0.destroy();
  const st = listener.kv.kvStats(listener.handle);
  assert.equal(st.aborted, before.aborted! + 1);
  assert.equal(st.receivingBytes, 0);
  assert.equal(listener.kv.kvTake(listener.handle, "h-stripe-missing"), null);
});

test("a stripe for no hand-off, a stripe twice, and stripes that overlap are refused", async () => {
  const stray = await rawConnection();
  stray.write(head("h-nobody", "", 8192, [1, 2, 4096, 4096]));
  const r = await reply(stray);
  assert.equal(r.status, KV_SEND_STATUS.bad);
  assert.match(r.message, /no hand-off h-nobody/);
  stray.destroy();

  const bad = await rawConnection();
  bad.write(head("h-range", "", 8192, [2, 2, 0, 4096]));
  assert.match((await reply(bad)).message, /out of range/);
  bad.destroy();

  // Stripe 1 claiming stripe 0's range: every byte counted, but not every byte covered.
  const a = randomBytes(4096);
  const s0 = await rawConnection();
  s0.write(head("h-overlap", "{}", 8192, [0, 2, 0, 4096]));
  assert.equal((await reply(s0)).status, KV_SEND_STATUS.ok);
  const twice = await rawConnection();
  twice.write(head("h-overlap", "", 8192, [0, 2, 0, 4096]));
  assert.equal((await reply(twice)).status, KV_SEND_STATUS.exists, "a second stripe 0 is a second hand-off of the same id");
  twice.destroy();
  const s1 = await rawConnection();
  s1.write(head("h-overlap", "", 8192, [1, 2, 0, 4096]));
  assert.equal((await reply(s1)).status, KV_SEND_STATUS.ok);
  s1.write(Buffer.concat([frame(a, listener.kv.kvChecksum(a)), a, END]));
  assert.equal((await reply(s1)).status, KV_SEND_STATUS.ok);
  s0.write(Buffer.concat([frame(a, listener.kv.kvChecksum(a)), a, END]));
  const last = await reply(s0);
  assert.equal(last.status, KV_SEND_STATUS.bad);
  assert.match(last.message, /cover the state exactly once/);
  s0.destroy();
  s1.destroy();
  assert.equal(listener.kv.kvTake(listener.handle, "h-overlap"), null);
});

test("a sender whose stripe connection dies mid-stream gets a transport failure, and the receiver keeps nothing", async () => {
  // A receiver that accepts stripe 0 and then closes every other connection mid-stripe.
  const before = listener.kv.kvStats(listener.handle);
  const l = listener.kv.kvListen("127.0.0.1", 0, { idleMs: 500 });
  const sockets: Socket[] = [];
  const proxy: Server = createServer((client) => {
    sockets.push(client);
    const upstream = connect(l.port, "127.0.0.1");
    sockets.push(upstream);
    let seen = 0;
    const n = sockets.length;
    client.on("data", (d) => {
      seen += d.length;
      // The second connection (stripe 1) dies after 100 KB.
      if (n === 4 && seen > 100_000) {
        client.destroy();
        upstream.destroy();
        return;
      }
      upstream.write(d);
    });
    upstream.on("data", (d) => client.write(d));
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
  });
  await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
  try {
    const state = randomBytes(4 << 20);
    const err = await listener.kv.kvSend(state, "127.0.0.1", (proxy.address() as AddressInfo).port, "h-stripe-dies", "{}", 1 << 20, 5_000, 2).then(
      (r) => r,
      (e: unknown) => e,
    );
    if (err instanceof Error) assert.ok(["closed", "timeout", "protocol"].includes(kvSendErrorCode(err) ?? ""), String(err));
    else assert.notEqual((err as { status: number }).status, KV_SEND_STATUS.ok, "never staged");
    await eventually(async () => {
      const st = listener.kv.kvStats(l.handle);
      assert.equal(st.receivingBytes, 0);
      assert.equal((st as { assembling?: number }).assembling, 0);
      assert.equal(st.staged, 0);
    });
  } finally {
    for (const s of sockets) s.destroy();
    proxy.close();
    listener.kv.kvClose(l.handle);
  }
  assert.equal(listener.kv.kvStats(listener.handle).staged, before.staged);
});

test("a paused listener reads nothing more until every hold is released, and holds a connection 2 s at most in all", async () => {
  const kv = listener.kv;
  assert.ok(kv.kvPause, "the addon has kvPause");
  assert.equal(kv.kvPause(999_999, true), false, "no such listener");
  assert.throws(() => kv.kvPause!(listener.handle, "yes" as unknown as boolean), /kvPause\(handle: number, paused: boolean\)/);
  const state = randomBytes(2 * 2 ** 20 + 7);
  const pausedBefore = kv.kvStats(listener.handle).pausedSeconds ?? 0;
  try {
    assert.equal(kv.kvPause(listener.handle, true), true);
    kv.kvPause(listener.handle, true); // two pushes at once: two holds
    let done = false;
    const sent = kv.kvSend(state, "127.0.0.1", listener.port, "h-paused", "{}", 256 << 10, 10_000).then((r) => ((done = true), r));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(done, false, "the hand-off is not staged while the listener is paused");
    kv.kvPause(listener.handle, false);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(done, false, "one hold released, the other still pauses it");
    kv.kvPause(listener.handle, false);
    assert.equal((await sent).status, KV_SEND_STATUS.ok);
    assert.ok((kv.kvStats(listener.handle).pausedSeconds ?? 0) - pausedBefore >= 0.3, "the wait is counted once it ends");
    assert.ok(kv.kvTake(listener.handle, "h-paused")!.state.equals(state), "byte for byte after the pause");

    // Never resumed: the connection goes on after 2 s of waiting in all.
    kv.kvPause(listener.handle, true);
    const t0 = performance.now();
    const capped = await kv.kvSend(state, "127.0.0.1", listener.port, "h-capped", "{}", 256 << 10, 10_000);
    const ms = performance.now() - t0;
    assert.equal(capped.status, KV_SEND_STATUS.ok);
    assert.ok(ms >= 1_900 && ms < 6_000, `staged after the 2 s cap (${Math.round(ms)} ms)`);
    assert.ok(kv.kvTake(listener.handle, "h-capped")!.state.equals(state));
  } finally {
    kv.kvPause(listener.handle, false); // the last test's hold; a release more than held leaves it unpaused
    kv.kvPause(listener.handle, false);
  }
});
