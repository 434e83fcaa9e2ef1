/**
 * Why the serving layer refuses or ends a request: typed, with no HTTP in them. The HTTP layer
 * renders each one in one place (engine/http/http-error.ts, toHttpError).
 */
export class ContextLengthError extends Error {
  constructor(
    readonly contextSize: number,
    readonly promptTokens: number,
    readonly maxTokens: number,
  ) {
    super(
      `This model's maximum context length is ${contextSize} tokens. However, you requested ${promptTokens + maxTokens} tokens ` +
        `(${promptTokens} in the prompt, ${maxTokens} for the completion). Please reduce the prompt or max_tokens.`,
    );
  }
}

export class EmptyPromptError extends Error {
  constructor() {
    super("prompt is empty");
  }
}

/** Every sequence is busy and the admission queue is full: retry later. */
export class QueueFullError extends Error {
  constructor(readonly maxQueue: number) {
    super(`admission queue is full (${maxQueue} waiting); retry later`);
  }
}

/** The client went away while its request waited for a sequence. */
export class QueueAbortedError extends Error {
  constructor() {
    super("request cancelled while queued");
  }
}
