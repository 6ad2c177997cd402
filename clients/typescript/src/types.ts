/** A JSON value as JSON.parse returns it. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One RFC 6902 operation, or stateward's `inc`. */
export interface PatchOp {
  op: "add" | "remove" | "replace" | "move" | "copy" | "test" | "inc";
  path: string;
  value?: Json;
  from?: string;
}

/** An intent as given to append and submit: exactly one of patch and merge. */
export interface IntentInput {
  /** Document name, `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.json$`. */
  file: string;
  /** RFC 6902 operations, plus `{"op":"inc","path":P,"value":N}`. */
  patch?: PatchOp[];
  /** An RFC 7396 merge patch (`null` included: it makes the document null). */
  merge?: Json;
  /** Apply only at this version; 0 = the document must not exist yet. */
  ifVersion?: number;
  /** Idempotency key (<= 128 bytes), echoed in the result. */
  id?: string;
  /** RFC 3339; informational. Set to the current time unless given or null. */
  time?: string | null;
  /** Explicit seq, greater than the last; assigned by the client when absent. */
  seq?: number;
}

/** A result record, with the record's own field names (docs/format.md). */
export interface Result {
  seq?: number;
  id?: string;
  file?: string;
  status: "applied" | "conflict" | "rejected";
  version: number;
  commit: number;
  error?: string;
  retry?: boolean;
  segment?: string;
  offset?: number;
}

export interface WaitOptions {
  /** Give up with a TimeoutError after this long (default: no limit). */
  timeoutMs?: number;
  /** Give up when aborted, with the signal's reason. */
  signal?: AbortSignal;
}

export interface ReadOptions {
  /** How long to retry while the watcher replaces the file (default 10000). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** A document's data and the version it has, read together. */
export interface DocumentRead {
  file: string;
  version: number;
  /** null when the document does not exist. */
  data: Json;
}

/** What an update function returns: a patch, a merge, or null (nothing to do). */
export type Change = PatchOp[] | { patch: PatchOp[]; id?: string } | { merge: Json; id?: string } | null;

export interface UpdateOptions {
  /** Intents submitted at most before a ConflictError (default 50). */
  maxAttempts?: number;
  /** Ceiling of the first backoff in ms (default 5). */
  initialDelayMs?: number;
  /** Growth of the ceiling per conflict (default 2). */
  backoffFactor?: number;
  /** Cap of the ceiling in ms (default 500). */
  maxDelayMs?: number;
  /** Bounds the whole update, backoffs and waits included. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface OpenOptions {
  /** The state directory. */
  dir: string;
  /** The agent name, `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` without "..". */
  agent: string;
  /** How long open retries while another writer holds the agent (default 0: fail at once). */
  lockTimeoutMs?: number;
  /** Start a new segment past this many bytes (default 64 MiB). */
  segmentSize?: number;
  /** Longest line append writes (default 1 MiB, the watcher's default limit). */
  maxLine?: number;
  /** Interval of the stat poll behind fs.watch while waiting (default 100 ms). */
  pollMs?: number;
}
