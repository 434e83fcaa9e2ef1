/**
 * The JSON body of every POST a pod or the router takes, read once at the front: the content
 * type must be JSON (415), the body at most `limit` bytes (413), valid UTF-8 and valid JSON (400
 * `invalid_json`), nested at most `maxDepth` levels (400 `nesting_too_deep`). The depth is checked
 * on the text before it is parsed: a body nested 100,000 levels deep parses, but every later
 * walk of it (JSON.stringify when the router forwards it, a validator) overflows the stack.
 * Methods other than POST (the P/D hand-off's PUT of a KV stream) pass untouched.
 */
import express, { type RequestHandler } from "express";
import { HttpError } from "./http-error.ts";

export interface JsonBodyOptions {
  /** Largest body in bytes. Default 8 MiB. */
  limit?: number;
  /** Deepest nesting of arrays and objects. Default 64 (a JSON schema or tool definition nests far less). */
  maxDepth?: number;
}

export const DEFAULT_BODY_LIMIT = 8 * 2 ** 20;
export const DEFAULT_MAX_DEPTH = 64;

const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACE = 0x7d;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** The index of the quote that ends the string whose opening quote is at `open`. */
function stringEnd(text: string, open: number): number {
  for (let i = open + 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === BACKSLASH) i++;
    else if (c === QUOTE) return i;
  }
  return text.length;
}

/** Whether `text`, read as JSON, nests arrays and objects deeper than `max` (stops as soon as it does). */
export function jsonDepthExceeds(text: string, max: number): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) i = stringEnd(text, i);
    else if (c === OPEN_BRACE || c === OPEN_BRACKET) depth++;
    else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) depth--;
    if (depth > max) return true;
  }
  return false;
}

/** application/json, any `+json` type, or no content type at all (read as JSON). */
function isJsonType(contentType: string | undefined): boolean {
  if (!contentType) return true;
  const type = contentType.split(";")[0]!.trim().toLowerCase();
  return type === "application/json" || type.endsWith("+json");
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function parseJson(raw: Buffer, maxDepth: number): unknown {
  let text: string;
  try {
    text = utf8.decode(raw);
  } catch {
    throw new HttpError(400, "request body is not valid UTF-8", { code: "invalid_json" });
  }
  if (text.trim() === "") throw new HttpError(400, "request body is empty: send a JSON object", { code: "invalid_json" });
  if (jsonDepthExceeds(text, maxDepth)) {
    throw new HttpError(400, `request body is nested deeper than ${maxDepth} levels`, { code: "nesting_too_deep" });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new HttpError(400, `malformed JSON in request body: ${(err as Error).message}`, { code: "invalid_json" });
  }
}

/** Middleware: req.body is the parsed JSON of a POST, or the request fails with a 4xx. */
export function jsonBody(opts: JsonBodyOptions = {}): RequestHandler {
  const maxDepth = opts.maxDepth ?? DEFAULT_MAX_DEPTH;
  const read = express.raw({ type: () => true, limit: opts.limit ?? DEFAULT_BODY_LIMIT });
  return (req, res, next) => {
    if (req.method !== "POST") return next();
    const type = req.headers["content-type"];
    if (!isJsonType(type)) {
      return next(
        new HttpError(415, `unsupported content type '${type}': send the request body as JSON with 'Content-Type: application/json'`, {
          code: "unsupported_media_type",
        }),
      );
    }
    read(req, res, (err?: unknown) => {
      if (err) return next(err);
      try {
        req.body = parseJson(Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0), maxDepth);
        next();
      } catch (parseErr) {
        next(parseErr);
      }
    });
  };
}
