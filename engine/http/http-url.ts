/** `v` without trailing slashes when it is an http(s) URL; undefined otherwise. */
export function httpUrl(v: string): string | undefined {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    return undefined;
  }
  return u.protocol === "http:" || u.protocol === "https:" ? v.replace(/\/+$/, "") : undefined;
}
