/**
 * Runs a generation for an HTTP response, streamed (SSE) or whole. A client that disconnects
 * aborts the generation, which releases its sequence.
 */
import type { Request, Response } from "express";
import type { CompletionService, Delta, GenerateOptions, GenerationResult, PreparedRequest } from "../serving/completion-service.ts";
import { toHttpError } from "./http-error.ts";
import { PROMPT_TOKENS_HEADER } from "../access/identity.ts";
import { chunkBody, newResponseMeta, toolStreamChunks, usageChunkBody, wholeBody, type ResponseMeta } from "./openai-format.ts";

/** Aborts when the client goes away before the response finished. */
export function clientGone(req: Request, res: Response): AbortController {
  const controller = new AbortController();
  res.on("close", () => {
    if (!res.writableFinished) controller.abort();
  });
  req.on("aborted", () => controller.abort());
  return controller;
}

export function writeSse(res: Response, body: object | string): void {
  res.write(`data: ${typeof body === "string" ? body : JSON.stringify(body)}\n\n`);
}

function startSse(res: Response): void {
  // Connection is Node's to set: keep-alive with its timeout, close while draining (engine/router/relay.ts says why).
  res.status(200).set({ "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
  res.flushHeaders();
}

async function streamResponse(
  res: Response,
  meta: ResponseMeta,
  gen: AsyncGenerator<Delta, GenerationResult, void>,
  usage: boolean,
): Promise<void> {
  let started = false;
  try {
    let step = await gen.next();
    startSse(res);
    started = true;
    while (!step.done) {
      // An answer that may call tools is sent whole at its end (toolStreamChunks).
      if (!meta.tools) writeSse(res, chunkBody(meta, step.value, null));
      step = await gen.next();
    }
    if (meta.tools) for (const chunk of toolStreamChunks(meta, step.value)) writeSse(res, chunk);
    else writeSse(res, chunkBody(meta, { text: "" }, step.value.finishReason));
    if (usage) writeSse(res, usageChunkBody(meta, step.value));
    writeSse(res, "[DONE]");
    res.end();
  } catch (err) {
    if (!started) throw err;
    const httpError = toHttpError(err);
    writeSse(res, httpError.body());
    res.end();
  }
}

async function wholeResponse(res: Response, meta: ResponseMeta, gen: AsyncGenerator<Delta, GenerationResult, void>): Promise<void> {
  let step = await gen.next();
  while (!step.done) step = await gen.next();
  res.json(wholeBody(meta, step.value));
}

export async function respondWithGeneration(
  service: CompletionService,
  prepared: PreparedRequest,
  res: Response,
  opts: GenerateOptions,
): Promise<void> {
  const meta = newResponseMeta(prepared.parsed);
  // For the router's per-tenant token count, before the first token is streamed.
  res.setHeader(PROMPT_TOKENS_HEADER, String(prepared.prompt.length));
  const gen = service.generate(prepared, opts);
  if (prepared.parsed.stream) await streamResponse(res, meta, gen, prepared.parsed.streamUsage);
  else await wholeResponse(res, meta, gen);
}
