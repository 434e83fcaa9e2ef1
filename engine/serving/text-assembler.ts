/**
 * Turns the growing detokenized text into safe deltas: never emits half a UTF-8 character
 * (detokenizing a partial multi-byte sequence yields U+FFFD) and holds back text that may be
 * the beginning of a stop string, so a stop string never reaches the client.
 */
export interface AssemblerStep {
  delta: string;
  stopped: boolean;
}

export class TextAssembler {
  private emitted = 0;
  private finalText: string | undefined;

  constructor(private readonly stops: readonly string[]) {}

  /** `full` is the whole generated text so far. */
  push(full: string): AssemblerStep {
    const stopAt = this.firstStop(full);
    if (stopAt >= 0) {
      this.finalText = full.slice(0, stopAt);
      return { delta: this.take(this.finalText, this.finalText.length), stopped: true };
    }
    let safe = full.length - this.heldBack(full);
    if (full.endsWith("\uFFFD")) safe = Math.min(safe, full.length - 1);
    return { delta: this.take(full, safe), stopped: false };
  }

  /** Flushes what was held back at the end of generation. */
  finish(full: string): string {
    const text = this.finalText ?? full.replace(/\uFFFD$/, "");
    return this.take(text, text.length);
  }

  /** The whole text, as the streamed deltas add up to. */
  text(full: string): string {
    return this.finalText ?? full.replace(/\uFFFD$/, "");
  }

  private take(text: string, upTo: number): string {
    if (upTo <= this.emitted) return "";
    const delta = text.slice(this.emitted, upTo);
    this.emitted = upTo;
    return delta;
  }

  private firstStop(full: string): number {
    let first = -1;
    for (const stop of this.stops) {
      const i = full.indexOf(stop, Math.max(0, this.emitted - stop.length));
      if (i >= 0 && (first < 0 || i < first)) first = i;
    }
    return first;
  }

  /** Longest suffix of `full` that is a proper prefix of some stop string. */
  private heldBack(full: string): number {
    let hold = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, full.length); k > hold; k--) {
        if (full.endsWith(stop.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    return hold;
  }
}
