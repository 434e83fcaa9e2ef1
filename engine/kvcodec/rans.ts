/**
 * Table-driven rANS (Duda; byte-wise renormalisation as in ryg_rans) over small alphabets, with
 * several frequency tables ("contexts") chosen per symbol and two interleaved states sharing one
 * byte stream. Frequencies are normalised to 2^12; the state stays in [2^23, 2^31), so every
 * step is exact in int32 arithmetic. The decoder allocates nothing per symbol: one lookup gives
 * the symbol, one the packed (freq, slot - cum) pair.
 */
export const PROB_BITS = 12;
const PROB = 1 << PROB_BITS;
const MASK = PROB - 1;
const LOW = 1 << 23;

/** Scales symbol counts to frequencies summing to 2^12, every seen symbol at least 1. */
export function normaliseCounts(counts: Uint32Array): Uint16Array {
  const total = counts.reduce((a, b) => a + b, 0);
  const freq = new Uint16Array(counts.length);
  if (total === 0) return freq;
  let largest = 0;
  for (let s = 0; s < counts.length; s++) {
    if (counts[s] === 0) continue;
    freq[s] = Math.max(1, Math.floor((counts[s]! * PROB) / total));
    if (counts[s]! > counts[largest]!) largest = s;
  }
  fixRounding(freq, largest);
  return freq;
}

/** Rounding error goes to the most frequent symbol, or is taken from the symbols that can best afford it. */
function fixRounding(freq: Uint16Array, largest: number): void {
  let sum = freq.reduce((a, b) => a + b, 0);
  if (sum < PROB) freq[largest] = freq[largest]! + (PROB - sum);
  for (let s = 0; sum > PROB; s = (s + 1) % freq.length) {
    const take = Math.min(sum - PROB, freq[s]! - 1, Math.ceil(freq[s]! / 4));
    if (take <= 0) continue;
    freq[s] = freq[s]! - take;
    sum -= take;
  }
}

/** Per context, each symbol's cumulative frequency (the sum of the frequencies below it). */
function cumulative(freqs: readonly Uint16Array[]): Uint16Array[] {
  return freqs.map((f) => {
    const c = new Uint16Array(f.length);
    for (let s = 1; s < f.length; s++) c[s] = c[s - 1]! + f[s - 1]!;
    return c;
  });
}

/** Encodes `symbols[k]` with table `freqs[contexts[k]]`; returns the byte stream. */
export function ransEncode(symbols: Uint8Array, contexts: Uint8Array, freqs: readonly Uint16Array[]): Buffer {
  const cums = cumulative(freqs);
  const out = Buffer.allocUnsafe(symbols.length * 2 + 16);
  let p = out.length;
  const x = [LOW, LOW];
  for (let k = symbols.length - 1; k >= 0; k--) {
    const ctx = contexts[k]!;
    const f = freqs[ctx]![symbols[k]!]!;
    const i = k & 1;
    let s = x[i]!;
    const max = (LOW >>> PROB_BITS) * 256 * f;
    while (s >= max) {
      out[--p] = s & 0xff;
      s >>>= 8;
    }
    x[i] = Math.floor(s / f) * PROB + (s % f) + cums[ctx]![symbols[k]!]!;
  }
  p -= 8;
  out.writeUInt32LE(x[0]!, p);
  out.writeUInt32LE(x[1]!, p + 4);
  return out.subarray(p);
}

/** Decoding tables for a set of contexts: per slot the symbol, and freq << 16 | (slot - cum). */
export interface DecodeTables {
  symbol: Uint8Array;
  step: Uint32Array;
}

export function decodeTables(freqs: readonly Uint16Array[]): DecodeTables {
  const symbol = new Uint8Array(PROB * freqs.length);
  const step = new Uint32Array(PROB * freqs.length);
  freqs.forEach((f, ctx) => {
    let slot = ctx * PROB;
    for (let s = 0; s < f.length; s++) {
      for (let i = 0; i < f[s]!; i++, slot++) {
        symbol[slot] = s;
        step[slot] = (f[s]! << 16) | i;
      }
    }
  });
  return { symbol, step };
}

/** Decodes `out.length` symbols written by ransEncode with the same contexts and tables. */
export function ransDecode(stream: Uint8Array, contexts: Uint8Array, tables: DecodeTables, out: Uint8Array): void {
  const { symbol, step } = tables;
  let p = 8;
  let x0 = (stream[0]! | (stream[1]! << 8) | (stream[2]! << 16) | (stream[3]! << 24)) >>> 0;
  let x1 = (stream[4]! | (stream[5]! << 8) | (stream[6]! << 16) | (stream[7]! << 24)) >>> 0;
  const n = out.length;
  // Symbols in pairs, even ones from state 0 and odd ones from state 1 (as ransEncode wrote them).
  for (let k = 0; k < n; k += 2) {
    const s0 = (contexts[k]! << PROB_BITS) + (x0 & MASK);
    const st0 = step[s0]!;
    out[k] = symbol[s0]!;
    x0 = (st0 >>> 16) * (x0 >>> PROB_BITS) + (st0 & 0xffff);
    while (x0 < LOW) x0 = (x0 << 8) | stream[p++]!;
    if (k + 1 === n) break;
    const s1 = (contexts[k + 1]! << PROB_BITS) + (x1 & MASK);
    const st1 = step[s1]!;
    out[k + 1] = symbol[s1]!;
    x1 = (st1 >>> 16) * (x1 >>> PROB_BITS) + (st1 & 0xffff);
    while (x1 < LOW) x1 = (x1 << 8) | stream[p++]!;
  }
}

/**
 * The wide stream (block codec compact2b): L lanes (wideLanes: 32, or 4 for a short block, whose 32
 * states would be a large part of it), symbol k in state k % L, each in [2^16, 2^32) and
 * renormalised by at most one 16-bit word per symbol. A decoder takes the symbols in groups of L —
 * every lane decodes its symbol, then the lanes that fell below 2^16 read a word each, in lane
 * order — so the native decoder runs a group of 32 lanes as two AVX-512 (or four AVX2) vectors,
 * one table gather each, where the two-state stream decodes one symbol at a time. Stream: the final
 * states, u32 each, then the words (u16), all little-endian. A valid stream ends with every state back at 2^16
 * and every word read, which the decoders check.
 */
const WIDE_LOW = 2 ** 16;
/** Symbols from which a wide stream has 32 lanes (below: 4): 128 bytes of states are under 1.5 % of its bytes. */
export const WIDE_MIN_SYMBOLS = 16384;
export const wideLanes = (symbols: number): number => (symbols >= WIDE_MIN_SYMBOLS ? 32 : 4);

/** Encodes `symbols[k]` with table `freqs[contexts[k]]` into the wide stream. */
export function ransEncodeWide(symbols: Uint8Array, contexts: Uint8Array, freqs: readonly Uint16Array[]): Buffer {
  const cums = cumulative(freqs);
  const words = new Uint16Array(symbols.length);
  let p = words.length;
  const lanes = wideLanes(symbols.length);
  const x = new Array<number>(lanes).fill(WIDE_LOW);
  for (let k = symbols.length - 1; k >= 0; k--) {
    const ctx = contexts[k]!;
    const f = freqs[ctx]![symbols[k]!]!;
    const lane = k % lanes;
    let s = x[lane]!;
    // At most one word: from below 2^32, one leaves less than 2^16, under the bound 2^20 * f.
    if (s >= (WIDE_LOW >>> PROB_BITS) * WIDE_LOW * f) {
      words[--p] = s % WIDE_LOW;
      s = Math.floor(s / WIDE_LOW);
    }
    x[lane] = Math.floor(s / f) * PROB + (s % f) + cums[ctx]![symbols[k]!]!;
  }
  const out = Buffer.allocUnsafe(4 * lanes + 2 * (words.length - p));
  x.forEach((s, i) => out.writeUInt32LE(s, 4 * i));
  for (let i = p; i < words.length; i++) out.writeUInt16LE(words[i]!, 4 * lanes + 2 * (i - p));
  return out;
}

/**
 * Wide decode tables: per context 2^12 slots of symbol | (freq - 1) << 8 | (slot - cum) << 20, the
 * one word a decode step needs (the native decoder builds the same).
 */
export function wideDecodeTables(freqs: readonly Uint16Array[]): Uint32Array {
  const table = new Uint32Array(PROB * freqs.length);
  freqs.forEach((f, ctx) => {
    let slot = ctx * PROB;
    for (let s = 0; s < f.length; s++) {
      for (let i = 0; i < f[s]!; i++, slot++) table[slot] = (s | ((f[s]! - 1) << 8) | (i << 20)) >>> 0;
    }
  });
  return table;
}

/** Decodes `out.length` symbols written by ransEncodeWide with the same contexts and tables; throws on a truncated or corrupt stream. */
export function ransDecodeWide(stream: Uint8Array, contexts: Uint8Array, table: Uint32Array, out: Uint8Array): void {
  const lanes = wideLanes(out.length);
  const head = 4 * lanes;
  if (stream.length < head || (stream.length - head) % 2 !== 0) throw new Error("KV codec payload is corrupt: a wide rANS stream has a partial state or word");
  const view = new DataView(stream.buffer, stream.byteOffset, stream.length);
  const x = Array.from({ length: lanes }, (_, i) => view.getUint32(4 * i, true));
  let p = head;
  for (let g = 0; g < out.length; g += lanes) {
    const m = Math.min(lanes, out.length - g);
    for (let i = 0; i < m; i++) {
      const e = table[(contexts[g + i]! << PROB_BITS) + (x[i]! & MASK)]!;
      out[g + i] = e & 0xff;
      const s = (((e >>> 8) & 0xfff) + 1) * (x[i]! >>> PROB_BITS) + (e >>> 20);
      if (s >= WIDE_LOW) x[i] = s;
      else {
        // Past the stream's end a word reads as 0, and the check below refuses the stream.
        x[i] = s * WIDE_LOW + (p + 2 <= stream.length ? view.getUint16(p, true) : 0);
        p += 2;
      }
    }
  }
  if (p !== stream.length || x.some((s) => s !== WIDE_LOW)) throw new Error("KV codec payload is corrupt: a wide rANS stream does not end where its symbols do");
}
