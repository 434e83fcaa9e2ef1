/** Type and range checks of OpenAI request fields; each failure is a 400 naming the field's path. */
import { invalidParam } from "./http-error.ts";

export type Body = Record<string, unknown>;

export const isObject = (v: unknown): v is Body => typeof v === "object" && v !== null && !Array.isArray(v);

/** null means absent, as OpenAI's API takes it for every optional field. */
export const absent = (v: unknown): v is undefined | null => v === undefined || v === null;

export type Range = readonly [min: number, max: number];

export function optionalNumber(body: Body, key: string, [min, max]: Range, path = key): number | undefined {
  const v = body[key];
  if (absent(v)) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) {
    throw invalidParam(path, `'${path}' must be a number ${rangeText(min, max)}; got ${JSON.stringify(v)?.slice(0, 40)}`);
  }
  return v;
}

/** "between 0 and 2", or "of at least 1" where the top is only the largest safe integer. */
const rangeText = (min: number, max: number): string => (max >= Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `between ${min} and ${max}`);

export function optionalInt(body: Body, key: string, range: Range, path = key): number | undefined {
  const v = optionalNumber(body, key, range, path);
  if (v !== undefined && !Number.isInteger(v)) throw invalidParam(path, `'${path}' must be an integer`);
  return v;
}

export function optionalBool(body: Body, key: string, path = key): boolean | undefined {
  const v = body[key];
  if (absent(v)) return undefined;
  if (typeof v !== "boolean") throw invalidParam(path, `'${path}' must be a boolean`);
  return v;
}

export function optionalString(body: Body, key: string, path = key, maxLength = 1 << 20): string | undefined {
  const v = body[key];
  if (absent(v)) return undefined;
  if (typeof v !== "string" || v.length > maxLength) throw invalidParam(path, `'${path}' must be a string of at most ${maxLength} characters`);
  return v;
}

export function requiredString(body: Body, key: string, path = key): string {
  const v = optionalString(body, key, path);
  if (v === undefined) throw invalidParam(path, `'${path}' is required and must be a string`);
  return v;
}

export function optionalObject(body: Body, key: string, path = key): Body | undefined {
  const v = body[key];
  if (absent(v)) return undefined;
  if (!isObject(v)) throw invalidParam(path, `'${path}' must be an object`);
  return v;
}

export function optionalEnum<T extends string>(body: Body, key: string, values: readonly T[], path = key): T | undefined {
  const v = body[key];
  if (absent(v)) return undefined;
  if (typeof v !== "string" || !values.includes(v as T)) throw invalidParam(path, `'${path}' must be one of ${values.map((x) => `'${x}'`).join(", ")}`);
  return v as T;
}

/** A field that would change the output and that no engine of this project implements. */
export function notImplemented(path: string, what: string): never {
  throw invalidParam(path, `'${path}' is not supported: ${what}`, "unsupported_parameter");
}

/** Only the keys in `known` may appear in `obj` (OpenAI refuses unknown arguments the same way). */
export function onlyKnownKeys(obj: Body, known: ReadonlySet<string>, prefix = ""): void {
  for (const key of Object.keys(obj)) {
    if (!known.has(key)) throw invalidParam(`${prefix}${key}`, `Unrecognized request argument supplied: ${prefix}${key}`, "unknown_parameter");
  }
}
