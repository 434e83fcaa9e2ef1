import { test } from "node:test";
import assert from "node:assert/strict";
import { parseEngineOptions, type EngineOptions } from "./options.ts";

const parse = (...args: string[]): EngineOptions => parseEngineOptions(args) as EngineOptions;

test("the native backend is the default, with its flags at their defaults", () => {
  const o = parse();
  assert.deepEqual([o.backend, o.gpuLayers, o.decodeLookahead], ["native", 0, 1]);
  assert.equal(parse("--gpu-layers", "all").gpuLayers, -1);
});

test("--backend native takes --gpu-layers (all = -1) and --decode-lookahead", () => {
  const o = parse("--backend", "native", "--gpu-layers", "all", "--decode-lookahead", "4");
  assert.deepEqual([o.backend, o.gpuLayers, o.decodeLookahead], ["native", -1, 4]);
  assert.equal(parse("--backend", "native", "--gpu-layers=-1").gpuLayers, -1);
  assert.equal(parse("--backend", "native", "--gpu-layers", "12").gpuLayers, 12);
});

test("bad backend values are refused with the flag named", () => {
  const cases: [string[], RegExp][] = [
    [["--backend", "vllm"], /--backend must be one of llama, native; got vllm/],
    [["--backend", "native", "--gpu-layers=-2"], /--gpu-layers must be an integer >= -1/],
    [["--backend", "native", "--gpu-layers", "1.5"], /--gpu-layers must be an integer/],
    [["--backend", "native", "--gpu-layers", ""], /--gpu-layers must be an integer/],
    [["--backend", "native", "--decode-lookahead", "0"], /--decode-lookahead must be a positive integer/],
    [["--backend", "llama", "--gpu-layers", "all"], /--gpu-layers applies only to --backend native/],
    [["--backend", "llama", "--decode-lookahead", "4"], /--decode-lookahead applies only to --backend native/],
  ];
  for (const [args, message] of cases) assert.throws(() => parseEngineOptions(args), message, args.join(" "));
});

test("--split-mode and --tensor-split: a replica over several GPUs; absent, llama.cpp's defaults", () => {
  const none = parse();
  assert.deepEqual([none.splitMode, none.tensorSplit], [undefined, undefined]);
  const o = parse("--split-mode", "row", "--tensor-split", "3,1");
  assert.deepEqual([o.splitMode, o.tensorSplit], ["row", [3, 1]]);
  const cases: [string[], RegExp][] = [
    [["--split-mode", "diagonal"], /--split-mode must be one of layer, row, none; got diagonal/],
    [["--tensor-split", "1,-1"], /--tensor-split must be 1 to 16 comma-separated shares >= 0/],
    [["--tensor-split", "0,0"], /not all 0/],
    [["--tensor-split", "a"], /--tensor-split must be/],
    [["--backend", "llama", "--split-mode", "row"], /--split-mode applies only to --backend native/],
  ];
  for (const [args, message] of cases) assert.throws(() => parseEngineOptions(args), message, args.join(" "));
});

test("--warm-up-tokens takes a count or auto (the default), and refuses anything else naming the flag", () => {
  assert.equal(parse().warmUpTokens, "auto");
  assert.equal(parse("--warm-up-tokens", "auto").warmUpTokens, "auto");
  assert.equal(parse("--warm-up-tokens", "300").warmUpTokens, 300);
  for (const bad of ["-1", "1.5", "many"]) assert.throws(() => parseEngineOptions([`--warm-up-tokens=${bad}`]), /--warm-up-tokens must be an integer >= 0/, bad);
});

test("--kv-host-warm takes bytes or auto (the default)", () => {
  assert.equal(parse().kvHostWarm, "auto");
  assert.equal(parse("--kv-host-warm", "auto").kvHostWarm, "auto");
  assert.equal(parse("--kv-host-warm", "0").kvHostWarm, 0);
  assert.equal(parse("--kv-host-warm", String(2 ** 31)).kvHostWarm, 2 ** 31);
  for (const bad of ["-1", "1.5", "2G"]) assert.throws(() => parseEngineOptions([`--kv-host-warm=${bad}`]), /--kv-host-warm must be an integer >= 0/, bad);
});

test("--kv-streams takes 1..16; without it the hand-off uses half the CPUs, 1 to 8", async () => {
  assert.equal(parse().kvStreams, undefined);
  assert.equal(parse("--kv-streams", "8").kvStreams, 8);
  assert.equal(parse("--kv-streams", "1").kvStreams, 1);
  for (const bad of ["0", "17", "x"]) assert.throws(() => parseEngineOptions(["--kv-streams", bad]), /--kv-streams must be/, bad);
  const { defaultTcpStreams } = await import("../pd/kv-transport.ts");
  assert.deepEqual([2, 3, 4, 8, 16, 128].map((n) => defaultTcpStreams(n)), [1, 1, 2, 4, 8, 8]);
});

test("--kv-part-tokens: whole states (0) by default, auto, else tokens per part", async () => {
  assert.equal(parse().kvPartTokens, 0);
  assert.equal(parse("--kv-part-tokens", "auto").kvPartTokens, "auto");
  assert.equal(parse("--kv-part-tokens", "0").kvPartTokens, 0);
  assert.equal(parse("--kv-part-tokens", "512").kvPartTokens, 512);
  assert.throws(() => parseEngineOptions(["--kv-part-tokens=-1"]), /--kv-part-tokens must be an integer >= 0/);
  assert.throws(() => parseEngineOptions(["--kv-part-tokens", "some"]), /--kv-part-tokens must be an integer >= 0/);
  const { handoffParts } = await import("../pd/kv-transport.ts");
  assert.deepEqual(handoffParts(511, "auto"), [511], "auto: one part below 512 tokens");
  assert.deepEqual(handoffParts(1023, "auto"), [256, 512, 768, 1023]);
  assert.deepEqual(handoffParts(4095, "auto"), [1024, 2048, 3072, 4095]);
  assert.deepEqual(handoffParts(4095), [4095], "whole states by default");
  assert.deepEqual(handoffParts(100, 0), [100]);
  assert.deepEqual(handoffParts(20, 8), [8, 16, 20]);
  assert.deepEqual(handoffParts(16, 8), [8, 16]);
});

test("--served-model-name: a Model's name is taken as given; blanks, spaces and 'default' are refused", () => {
  assert.equal(parse("--served-model-name", "gemma-270m").servedModelName, "gemma-270m");
  assert.equal(parse().servedModelName, undefined);
  for (const bad of ["", "two words", "x".repeat(257)]) assert.throws(() => parseEngineOptions(["--served-model-name", bad]), /--served-model-name must be 1-256 printable characters/, bad);
  assert.throws(() => parseEngineOptions(["--served-model-name", "default"]), /'default' already names every pod's model/);
});
