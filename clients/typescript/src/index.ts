// @stateward/client: append intents to a stateward journal, wait for their
// results, read and update shared JSON documents. Node >= 20 and Bun, on
// Linux; no dependencies beyond node: modules (and bun:ffi under Bun).

export { open, Agent, DEFAULT_BACKOFF_FACTOR, DEFAULT_INITIAL_DELAY_MS, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_DELAY_MS } from "./agent.js";
export {
  StatewardError,
  WriterBusyError,
  ClosedError,
  TimeoutError,
  ConflictError,
  RejectedError,
  BadRecordError,
  ResultGoneError,
  UnversionedError,
} from "./errors.js";
export { readDocument, VERSIONS_PATH } from "./document.js";
export { encodeIntent, DEFAULT_MAX_LINE, DEFAULT_SEGMENT_SIZE, MAX_ID_LEN } from "./journal.js";
export { writerAddress, SUN_PATH_LEN, LOCK_NAME } from "./lock.js";
export { segmentName, validAgentName, validDocName } from "./names.js";
export { DEFAULT_POLL_MS } from "./results.js";
export type { Change, DocumentRead, IntentInput, Json, OpenOptions, PatchOp, ReadOptions, Result, UpdateOptions, WaitOptions } from "./types.js";
