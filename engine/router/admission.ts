/**
 * Router admission: at most `max` completions in flight through this router; past that a request
 * is answered at once with 429 and Retry-After (the client retries, or another replica takes it)
 * instead of being queued in the router's memory or dropped. A slot is held until the response
 * has closed, streams included.
 */
import type { NextFunction, Request, Response } from "express";
import { HttpError } from "../http/http-error.ts";

/** Default --max-streams: well above what one engine pod runs at once, bounded for the router's memory. */
export const DEFAULT_MAX_STREAMS = 1024;

export interface Admission {
  (req: Request, res: Response, next: NextFunction): void;
  readonly inFlight: number;
  readonly max: number;
}

export function admission(max: number = DEFAULT_MAX_STREAMS): Admission {
  let inFlight = 0;
  const admit = (_req: Request, res: Response, next: NextFunction): void => {
    if (inFlight >= max) {
      // The client backs off before it tries again: no point in keeping its connection idle meanwhile.
      res.shouldKeepAlive = false;
      next(new HttpError(429, `the router has ${inFlight} requests in flight, its limit (--max-streams ${max}); retry shortly`, {
        type: "rate_limit_error",
        code: "router_at_capacity",
        headers: { "Retry-After": "1" },
      }));
      return;
    }
    inFlight++;
    res.once("close", () => inFlight--);
    next();
  };
  return Object.defineProperties(admit, {
    inFlight: { get: () => inFlight },
    max: { value: max },
  }) as Admission;
}
