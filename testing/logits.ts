/** Logits of the same tokens from two engines (or two ways into one): equal to within 1e-3 of the largest. */
import assert from "node:assert/strict";

export function assertCloseLogits(a: Float32Array, b: Float32Array): void {
  assert.equal(a.length, b.length);
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  assert.ok(worst <= 1e-3 * scale, `logits moved by ${worst} (largest ${scale})`);
}
