/**
 * The text of a growing token sequence, without detokenizing the whole sequence at every token
 * (quadratic: a 4,000-token answer detokenized 8 million tokens). As vLLM's incremental
 * detokenizer: decode a short window that starts a few tokens back, and keep what it adds beyond
 * the window's already-read part. The window's start stays behind the newest tokens, so a piece's
 * leading space and a multi-byte character split over byte tokens come out as a whole
 * detokenization would give them; a window that ends inside a character (U+FFFD last) waits.
 */
import type { Token } from "../runtime/runtime.ts";

export class IncrementalText {
  private readonly tokens: Token[] = [];
  private text_ = "";
  /** The window: tokens[prefix, read) are already in text_; tokens[read, ...) are not yet. */
  private prefix = 0;
  private read = 0;

  constructor(private readonly detokenize: (tokens: readonly Token[]) => string) {}

  /** Appends one token; returns the whole text so far (a character still incomplete is left out). */
  push(token: Token): string {
    this.tokens.push(token);
    const known = this.detokenize(this.tokens.slice(this.prefix, this.read));
    const now = this.detokenize(this.tokens.slice(this.prefix));
    if (now.length > known.length && !now.endsWith("\uFFFD")) {
      this.text_ += now.slice(known.length);
      this.prefix = this.read;
      this.read = this.tokens.length;
    }
    return this.text_;
  }

  /** The whole text, with an incomplete last character as U+FFFD (what a full detokenization gives). */
  finish(): string {
    const known = this.detokenize(this.tokens.slice(this.prefix, this.read));
    return this.text_ + this.detokenize(this.tokens.slice(this.prefix)).slice(known.length);
  }
}
