/** Handlers throw HttpError; one error handler renders OpenAI-style error bodies. */
import type { ErrorRequestHandler, RequestHandler } from "express";
import { ContextLengthError, EmptyPromptError, QueueAbortedError, QueueFullError } from "../serving/errors.ts";

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export interface HttpErrorOptions {
  type?: string;
  param?: string | null;
  code?: string | null;
  headers?: Record<string, string>;
  cause?: unknown;
}

export class HttpError extends Error {
  readonly type: string;
  readonly param: string | null;
  readonly code: string | null;
  readonly headers: Record<string, string>;

  constructor(
    readonly status: number,
    message: string,
    opts: HttpErrorOptions = {},
  ) {
    super(message, { cause: opts.cause });
    this.type = opts.type ?? (status >= 500 ? "server_error" : "invalid_request_error");
    this.param = opts.param ?? null;
    this.code = opts.code ?? null;
    this.headers = opts.headers ?? {};
  }

  body(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const invalidParam = (param: string, message: string, code = "invalid_value"): HttpError => new HttpError(400, message, { param, code });

/** The serving layer's typed refusals, as OpenAI-style HTTP errors. */
function servingError(err: unknown): HttpError | undefined {
  if (err instanceof ContextLengthError) return new HttpError(400, err.message, { param: "max_tokens", code: "context_length_exceeded" });
  if (err instanceof EmptyPromptError) return new HttpError(400, err.message, { param: "prompt" });
  if (err instanceof QueueFullError) return new HttpError(429, err.message, { type: "rate_limit_error", code: "queue_full", headers: { "Retry-After": "1" } });
  if (err instanceof QueueAbortedError) return new HttpError(499, err.message, { code: "cancelled" });
  return undefined;
}

/**
 * Any error as the HTTP error to answer with: HttpErrors as they are, the serving layer's typed
 * errors, body-parser's (marked with `type`; mapped before they look like server errors), else 500.
 */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  const serving = servingError(err);
  if (serving) return serving;
  const e = err as { type?: string; status?: number; message?: string };
  if (e.type === "entity.parse.failed") return new HttpError(400, `malformed JSON in request body: ${e.message}`, { code: "invalid_json" });
  if (e.type === "entity.too.large") return new HttpError(413, "request body too large", { code: "body_too_large" });
  if (typeof e.status === "number" && e.status >= 400 && e.status < 500) return new HttpError(e.status, e.message ?? "bad request");
  return new HttpError(500, `internal error: ${e.message ?? String(err)}`, { cause: err });
}

/**
 * Writes a 5xx answer's method, path and message to stderr, at most LOG_BURST lines a second (the
 * next line says how many were left out): a server error is otherwise seen by its client alone.
 */
class ServerErrorLog {
  private windowStart = 0;
  private inWindow = 0;
  private skipped = 0;

  write(method: string, path: string, e: HttpError): void {
    const now = Date.now();
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.inWindow = 0;
    }
    if (++this.inWindow > LOG_BURST) {
      this.skipped++;
      return;
    }
    const more = this.skipped > 0 ? ` (${this.skipped} more server errors not logged)` : "";
    this.skipped = 0;
    console.error(`engine: ${method} ${path} answered ${e.status}: ${e.message}${more}`);
  }
}

const LOG_BURST = 5;
const serverErrors = new ServerErrorLog();

export function errorHandler(onError?: (status: number) => void): ErrorRequestHandler {
  return (err, req, res, next) => {
    const httpError = toHttpError(err);
    onError?.(httpError.status);
    if (httpError.status >= 500) serverErrors.write(req.method, req.path, httpError);
    if (res.headersSent) {
      // Streaming already started: the SSE writer reports errors in-band; just close.
      res.end();
      return next === undefined ? undefined : undefined;
    }
    res.status(httpError.status).set(httpError.headers).json(httpError.body());
  };
}

/** The OpenAI API's routes and their methods. */
const API_METHODS: Record<string, string> = { "/v1/completions": "POST", "/v1/chat/completions": "POST", "/v1/models": "GET" };

/** Another method on one of the API's routes is a 405 naming the allowed one (Allow), before any body is read. */
export const wrongMethod: RequestHandler = (req, _res, next) => {
  const allowed = API_METHODS[req.path.replace(/\/+$/, "")];
  if (allowed && allowed !== req.method && !(allowed === "GET" && req.method === "HEAD")) {
    next(new HttpError(405, `${req.method} ${req.path}: this route takes ${allowed}`, { code: "method_not_allowed", headers: { Allow: allowed } }));
    return;
  }
  next();
};

export const notFound: RequestHandler = (req, _res, next) => {
  next(new HttpError(404, `no route for ${req.method} ${req.path}`, { code: "not_found" }));
};
