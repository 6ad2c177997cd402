import type { Result } from "./types.js";

/** Base class of every error the client throws on purpose. `code` is stable. */
export class StatewardError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Another writer (in any process or language) holds the agent's journal. */
export class WriterBusyError extends StatewardError {
  readonly agent: string;
  readonly folder: string;
  constructor(agent: string, folder: string, waitedMs: number) {
    super(
      "EWRITERBUSY",
      `stateward: agent "${agent}" is held by another writer (journal folder ${folder}; waited ${waitedMs} ms): ` +
        `is another process writing as agent "${agent}"?`,
    );
    this.agent = agent;
    this.folder = folder;
  }
}

/** The Agent is closed, or a failed write or fsync closed it. */
export class ClosedError extends StatewardError {
  constructor(message = "stateward: agent is closed", options?: { cause?: unknown }) {
    super("ECLOSED", message, options);
  }
}

/** No result (or no consistent read) within the time allowed. */
export class TimeoutError extends StatewardError {
  constructor(message: string) {
    super("ETIMEDOUT", message);
  }
}

/** update: every attempt allowed ended in a conflict. `result` is the last one. */
export class ConflictError extends StatewardError {
  readonly result: Result;
  readonly attempts: number;
  constructor(message: string, result: Result, attempts: number) {
    super("ECONFLICT", message);
    this.result = result;
    this.attempts = attempts;
  }
}

/** update: the watcher rejected the intent as invalid; retrying cannot help. */
export class RejectedError extends StatewardError {
  readonly result: Result;
  constructor(message: string, result: Result) {
    super("EREJECTED", message);
    this.result = result;
  }
}

/** An intent or name the watcher would reject, refused before it is written. */
export class BadRecordError extends StatewardError {
  constructor(message: string) {
    super("EBADRECORD", message);
  }
}

/** The result was written but its segment has since been deleted (retention). */
export class ResultGoneError extends StatewardError {
  constructor(message: string) {
    super("ERESULTGONE", message);
  }
}

/** The document on disk matches no version the watcher committed (yet). */
export class UnversionedError extends StatewardError {
  constructor(message: string) {
    super("EUNVERSIONED", message);
  }
}

/** The error an aborted signal stands for: its reason, or an AbortError. */
export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("This operation was aborted", "AbortError");
}
