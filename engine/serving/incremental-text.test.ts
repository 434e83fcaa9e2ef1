/**
 * Standalone, real tokenizer (the tiny synthetic GGUF's: SentencePiece-style pieces with a leading
 * "▁", and byte tokens that spell multi-byte UTF-8 over several tokens): the incremental text of a
 * token sequence is, at every step, the whole detokenization less an incomplete last character.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { ensureModel } from "../model/fetch.ts";
import { NativeRuntime } from "../runtime/native-runtime.ts";
import { IncrementalText } from "./incremental-text.ts";
import { prng } from "../model/synthetic-gguf.ts";

let rt: NativeRuntime;

before(async () => {
  rt = await NativeRuntime.load({ modelPath: await ensureModel("synthetic://tiny"), threads: 1, contextSize: 64, parallel: 1 });
});
after(async () => {
  await rt[Symbol.asyncDispose]();
});

/** The synthetic vocabulary's byte tokens follow its three specials (synthetic-gguf.ts syntheticVocab). */
const bytes = (s: string): number[] => [...Buffer.from(s, "utf8")].map((b) => 3 + b);

function check(tokens: number[]): void {
  const inc = new IncrementalText((t) => rt.detokenize(t));
  for (let i = 0; i < tokens.length; i++) {
    const whole = rt.detokenize(tokens.slice(0, i + 1));
    assert.equal(inc.push(tokens[i]!), whole.replace(/\uFFFD+$/, ""), `after ${i + 1} of ${JSON.stringify(tokens)}`);
  }
  assert.equal(inc.finish(), rt.detokenize(tokens));
}

test("pieces with leading spaces, as a whole detokenization gives them", () => {
  check(rt.tokenize("hello world the capital of France is Paris").slice(1));
});

test("random token sequences, multi-byte characters split over byte tokens included", () => {
  assert.equal(rt.detokenize(bytes("é")), "é");
  assert.equal(rt.detokenize(bytes("é").slice(0, 1)), "\uFFFD");
  const byteTokens = bytes("é€😀");
  const nVocab = rt.engine.info().nVocab;
  const rnd = prng(42);
  for (let n = 0; n < 200; n++) {
    const tokens = Array.from({ length: 1 + Math.floor(rnd() * 24) }, () => (rnd() < 0.4 ? byteTokens[Math.floor(rnd() * byteTokens.length)]! : 3 + Math.floor(rnd() * (nVocab - 3))));
    check(tokens);
  }
  check([...bytes("€"), ...rt.tokenize("hello").slice(1), ...bytes("😀")]);
});
