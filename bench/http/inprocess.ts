/**
 * The same requests as the HTTP client sends, given to the engine in this process: the pod that
 * engine/main.ts would serve (createModelPod: tokenizer, admission, step scheduler, text assembly),
 * called through its CompletionService with no HTTP, JSON or SSE in between. The ratio of the HTTP
 * figure to this one is what the HTTP path costs.
 */
import { parseOpenAIRequest } from "../../engine/http/openai-request.ts";
import type { ModelPod } from "../../engine/pod.ts";
import type { CompletionRequest, StreamOutcome } from "./load-client.ts";

export function inProcessSender(pod: ModelPod): (req: CompletionRequest) => Promise<StreamOutcome> {
  return async (req) => {
    const t0 = performance.now();
    const outcome: StreamOutcome = { ok: false, status: 200, tokens: 0, ttftMs: NaN, gapsMs: [], disconnected: false, complete: false };
    try {
      const body = { model: "default", prompt: req.prompt, max_tokens: req.maxTokens, temperature: 0, stream: true, ...req.extra };
      const prepared = pod.service.prepare(parseOpenAIRequest(body, "completion", pod.service.runtime.info), t0);
      const gen = pod.service.generate(prepared, { signal: new AbortController().signal });
      let last = t0;
      let step = await gen.next();
      while (!step.done) {
        const now = performance.now();
        if (Number.isNaN(outcome.ttftMs)) outcome.ttftMs = now - t0;
        else outcome.gapsMs.push(now - last);
        last = now;
        step = await gen.next();
      }
      outcome.tokens = step.value.completionTokens;
      outcome.finishReason = step.value.finishReason;
      outcome.complete = true;
      outcome.ok = true;
    } catch (err) {
      outcome.error = (err as Error).message;
    }
    return outcome;
  };
}
