/**
 * Query-aware channel gains for the keys of Gemma 3 270M (Q4_K_M), per layer of a state section
 * (3 full-attention layers: blocks 5, 11, 17; 15 sliding-window layers: the others, in order).
 * The attention-logit error of a key error dk is q·dk, so for a given rate the squared logit
 * error is least when the step of a channel scales like 1/rms(q_c) (reverse water-filling). With
 * QK-norm, q_c = normalised_c · attn_q_norm.weight[c]; RoPE (neox) mixes channels i and i + 128,
 * so a pair's query energy is taken as (w_i² + w_{i+128}²) / 2 of blk.N.attn_q_norm.weight (f32
 * in the GGUF). Gain of pair i: (energy_i / max)^½, at least 0.1 (pairs the queries ignore still
 * get a finite step), over the pairs' geometric mean. Stored as 128 signed codes per layer,
 * gain = 2^(code / 32), base64. The table is generated from the GGUF by
 * scripts/kvcodec/query-gains.ts (`npm run kvcodec:query-gains`); do not edit it by hand.
 */

import type { KvTensor } from "./state-tensors.ts";

/** Per section size (layers in the state), per layer: base64 of 128 int8 pair codes. */
export const GEMMA3_270M_QUERY_GAINS: Record<number, string[]> = {
  3: [
    "vb0Svb0Cvf69+g7/BPIGDAgDBv3+BAj9AgL/BfQMBQH1+v8B9gwDAPr9B/oNAwn7AwUJAAUJAQ0ICAkGDQwMDQ0OEBIWEg8OEBINDhQPExMTEA0FEycSEhoZFRUWGRYYFwwZFhQXAPQN9/zp2tXT3wIP+wHv1frj3vDU49n03eI=",
    "DAUIBfgWIgAY/PsHDAUDCAfS/xIOFyAIBBQJAhEk/wkQEyACCi0oDQkOCxYL5RgdGRTyHA8THPcRGxwYDhccHRkVGR8gF/wRFxQUFRoPEhoPEBARFw8P/TwH+e707Ovj5eHk493a2dzc3NXSB9TS1NfS0tLZ0tLS0tLS0tLq0tI=",
    "/+sC6wsF6woGABcM/vwA/P0MCQQIAw35CQEFCvoKDQ4W6/kFBAj8+gsHAQL9+xL+B/oE+PLz7/b66+vr6xnr6+vr6+v+6+vr6+vr6xDr6+/r6+vr6+vrVevr6+vr6+vr6+/r9A7yIfLyHussFTkNGgQTGScaHBMbLxIcLjERJh8=",
  ],
  15: [
    "Bgf7//wE/PP3++ny/Pn3+fL98wUC/Pb//Pj3+PX68f4H/v3z/Pr1//4AAgAA/+b//wD/8QAA//7iAfwBAP////8BAPsI7vgBDQb9BQIFCAEDAQEHAgIJAwQGBwQNBwQMAgkHBAcIAw8WBwYEDggNCQICBgEFBwQCDgMDBAT/BAA=",
    "A/z5/wD++Pn9/f78/v399fz//f3/6/39//3+/f0D/f///v7+/f4R/vX//v///+r+/v/+GP79AP4d/v8AAP/V/v7//v7+AAgEPwcHAgwHAAcDAwf/BAcEAAMDBwUD8wkDAQUJHesGCO0IDgoLAAIMAA/8AOkAA/3y/PL9+P74+vw=",
    "BQHxAQEC+AAA/QEBBAH7BwL8/P/2AgcFDfgEAgICA/kBDP4DFwcGEgUFBgMECAUDBe0B8wUEAPUGCwUA+gIB7QML/wMAABYEA/wBxAAI+wIGAwECAAIHCgECCQkKAwT4AQMF/w7/AgkI7vQD+P/9/f3m/ff9+fX97f/78vz5//E=",
    "CgMFAAH78//4/fsGE/wCBQACAAf0BRIYAQgHHAQJBgwLBh4FAgcQAgjzB/AO+xAJCwUIBwkJ+QwJCAUKCQj9CiYIDgfuFA8MCQUREP//CPz5+Az6+Pn09fT29fj18g/x8Pb18PDy9fPx+/Hz8PL19vL+CPL39fb09PHx7fX4+PM=",
    "EAYE/vnx7vT29vL7+/H48fbj7u/28/no7gMP////C/HnHBokAi0IBAsnGQf3CeMLBOv77/4PCQbn9wsFBv4LDQ4OCOIC0RQlFPcFFBDwBesRFMwTFw4PDRXoGyD9GRwUEQH7IAQAGgQf3OX29QP8Avz98/H99/7v7PLy7ury8e0=",
    "A/v17+0H6wIF7ub4/BD9+vj/9/MPB/QD7P8GDwT8AQP8CQQIAAIF6gELCPMGBQgDCwYHEgUKCAYBA/oAAgUEDgQOEQwODQcYDQkV6wkSHwQGA/8C/wP9/gEH+vn79wD/CAf28wT7ChH29w/r9vj6+QP1+vT4/O/qAvfzAfLtBPE=",
    "+/3z9f3xAvv+5fP4//n96fn/6gj4+vru9fH+/u38/PsDAvv9/wcBAgAC/v4H/wMdAQT9/Q0B7wMC/Qr8AwUIAf8CBQoJCQwQ/woO/xAWAwUREQgIAP8FAAYBA//j/QjxBgoI5f4HCAj7A/0KEA0MCRQdGQf8+O/oDfz44+zzAP0=",
    "Cv8PA/0J6PcTAPz7+vPh/P3/Avz5APz8FPz6Bf39BQQC+AQWAAL9CwEFBQ0HAQIDGPUJCgUGCg0GBQkHDxEQERQWCwYWORQOGh8DGBMOQQ4YDQMB9xQbCAX0A/oB+vz/5gX38P377vn///fj69bo1tYC7/j319v31tbs1vTv7PY=",
    "/On44eb99OP4/+f16Qbo7P3rCPzwAu8AAv/yAAUA//gBH/8B/wj/LAUCCP8ECgH+BAQKAwAEAgb3AgIBCAYCAgb8BgcQEAsLCxAQCfwMDAwKCgwFAwgEAQsK+wv+Awf3BwEBCQYDCw8G6f0OFOoEARfu+PT3BfvsBu/5BeEc5N4=",
    "FhALAQ33DAS39PoJ/uru6g7+BgHq9wMF8vMM+AEBARb8BfwAAwoLAPoHDv8GDgMRDPQBCAoHCQ4R/wgPBwYFAwoPCAblBOYfGBYWAhsJCRMMCxAC6xAU9ssPAgEG/tIACODXB+sX+AT+Av4B+fb4+gcO6+L55xvn9g7i4gcG1Q0=",
    "uAe4uLgGuLgHuA+4ALgGCAUI+QgKDAv6/f0AAP78CQb9DQQH/BMEEf0NEQIK/BcGAw0MDgcICBIKBwUWCAoHCBgNCgsYDAUZIwkPDwgFBAgHEA8KBw0LAwsKCvPhCf8O/RMQCgAPBvYLC+/0A/nVDu/5FxUJ9gz6APT1Avzm7/I=",
    "EQv6B/MNFQIM7QopDPELBxoODhATEAYPAhMRFxIWFxkiEBsIIBMeEh04FQcPDxgMFRsXFBEfEQ44DQwLEA8MExILKA4RChYSDRAPJOzm5Pfi4uHh39/e3t7f397h3t3d3N7e4d3d3+fg5eLk3+bk8PIS6+Py9+Dp7ePy8/b07Rc=",
    "+rW18P749rW18v217bUC9v7y+/vx+/7tAgD++wT6A/73BwYCBwAHBQ4BCgMEBAgFBwUGBgYOBwkIBQQEBgYOB/8GCwgIFQcMFgoOBRAVCwUJEwsQCAQL/N4R8Pfm9wwOARAFF/gEAhIWByAIF/HjCRX/ERn5+QkBEAUbAwAG8v8=",
    "JesI/Q3qBg/qEukLH+0K7CHw/Sb7Ffj16yXo9Oob8xf/+Ab7COoe9xP8/QUQ+wDtCvT08fcA+x0H9fMA+UH1+ev8HAP+CfwQEDcUJBREEBBMBQAE/vY/+fHz+vjxAef+A/AC4u8b8e/i4g0R6fLnCPziLBEB4vDiBOLi4uLi5eI=",
    "BgQCAewC/f8BAQoA/wH//wAE9wAyAvsBBAgGAQL9/wIG8gUBBgUCB/4BCgUDAgEB/yD+/gH/AAsKAQAKAP8A/v/9/wAABz8LDgYLHAMfBAsC/QT9Af7/AP388v/+//3+6f3h+PIA59kF/QACEgYK8PoA6vvz/vrl9PwA5QDe++k=",
  ],
};

const HEAD_DIM = 256;

/** Gain codes for a key tensor of a Gemma 3 270M state, undefined for anything else; pairs i, i + 128 (neox) share one. */
export function gemma3QueryGains(t: Pick<KvTensor, "kind" | "layer" | "layers" | "rows" | "cols" | "tokenAxis">): Int8Array | undefined {
  const pairs = t.kind === "k" ? GEMMA3_270M_QUERY_GAINS[t.layers]?.[t.layer] : undefined;
  if (!pairs || (t.tokenAxis === 0 ? t.cols : t.rows) !== HEAD_DIM) return undefined;
  const codes = new Int8Array(Buffer.from(pairs, "base64"));
  return Int8Array.from({ length: HEAD_DIM }, (_, j) => codes[j % (HEAD_DIM / 2)]!);
}
