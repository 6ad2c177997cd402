import path from "node:path";
import { BadRecordError, ClosedError, ConflictError, RejectedError, TimeoutError, WriterBusyError, abortReason } from "./errors.js";
import { mkdirDurable, sleep } from "./fsutil.js";
import { JournalWriter } from "./journal.js";
import { Busy, tryLock, type WriterLock } from "./lock.js";
import { readDocument } from "./document.js";
import { checkAgentName, checkDocName } from "./names.js";
import { ResultsFollower } from "./results.js";
import type { Change, DocumentRead, IntentInput, Json, OpenOptions, ReadOptions, Result, UpdateOptions, WaitOptions } from "./types.js";

/** Defaults of update's backoff, as the Go journal.Updater's. */
export const DEFAULT_INITIAL_DELAY_MS = 5;
export const DEFAULT_BACKOFF_FACTOR = 2;
export const DEFAULT_MAX_DELAY_MS = 500;
export const DEFAULT_MAX_ATTEMPTS = 50;

/**
 * Opens the writer of agent in the state directory dir: creates its journal
 * folder (fsyncing each new folder's parent), takes the agent's writer lock
 * (a WriterBusyError if another writer, in any process or language, holds
 * it), cuts a torn tail and continues seq after the last complete record.
 */
export async function open(opts: OpenOptions): Promise<Agent> {
  if (!opts || typeof opts.dir !== "string" || opts.dir === "") throw new BadRecordError("stateward: open needs a state directory (dir)");
  checkAgentName(opts.agent);
  const dir = path.resolve(opts.dir);
  const folder = path.join(dir, "journal", opts.agent);
  await mkdirDurable(folder);
  const lockTimeoutMs = opts.lockTimeoutMs ?? 0;
  const deadline = Date.now() + lockTimeoutMs;
  let lock: WriterLock;
  for (;;) {
    try {
      lock = await tryLock(folder);
      break;
    } catch (err) {
      if (!(err instanceof Busy)) throw err;
      if (Date.now() >= deadline) throw new WriterBusyError(opts.agent, folder, lockTimeoutMs);
      await sleep(Math.min(20, deadline - Date.now()));
    }
  }
  const w = new JournalWriter(folder);
  if (opts.segmentSize !== undefined) w.segmentSize = opts.segmentSize;
  if (opts.maxLine !== undefined) w.maxLine = opts.maxLine;
  let cut;
  try {
    ({ cut } = await w.recover());
  } catch (err) {
    await w.close();
    await lock.release();
    throw err;
  }
  const results = new ResultsFollower(dir, opts.agent);
  if (opts.pollMs !== undefined) results.pollMs = opts.pollMs;
  return new Agent(dir, opts.agent, w, lock, results, cut);
}

/** One agent's writer and results follower. Concurrent calls are serialised in call order. */
export class Agent {
  /** The state directory (absolute). */
  readonly dir: string;
  readonly agent: string;
  /** Bytes of a torn tail cut by open (0 if none). */
  readonly tornBytesCut: number;

  private w: JournalWriter;
  private lock: WriterLock | undefined;
  private results: ResultsFollower;
  private queue: Promise<unknown> = Promise.resolve(); // appends, in call order
  private closing: Promise<void> | undefined;

  /** @internal use open() */
  constructor(dir: string, agent: string, w: JournalWriter, lock: WriterLock, results: ResultsFollower, cut: number) {
    this.dir = dir;
    this.agent = agent;
    this.w = w;
    this.lock = lock;
    this.results = results;
    this.tornBytesCut = cut;
  }

  /** The seq of the last record written (0 if none). */
  get lastSeq(): number {
    return this.w.lastSeq;
  }

  /**
   * Appends one intent to the journal with one write and one fsync. It is
   * durable when the promise resolves. Calls are written in call order.
   */
  append(intent: IntentInput): Promise<{ seq: number }> {
    if (this.closing) return Promise.reject(new ClosedError());
    const run = this.queue.then(async () => {
      if (this.w.closed) throw new ClosedError();
      try {
        return { seq: await this.w.append(intent) };
      } catch (err) {
        if (this.w.closed) await this.releaseLock(); // a failed write or fsync: the next open repairs
        throw err;
      }
    });
    this.queue = run.catch(() => {});
    return run;
  }

  /** Waits for the result of seq: the first result written for it. */
  async wait(seq: number, opts: WaitOptions = {}): Promise<Result> {
    if (!Number.isSafeInteger(seq) || seq < 1) throw new BadRecordError(`stateward: bad record: seq must be an integer >= 1, got ${seq}`);
    if (this.closing) throw new ClosedError();
    try {
      return await this.results.wait(seq, opts);
    } catch (err) {
      if (this.closing && !(err instanceof TimeoutError) && !opts.signal?.aborted) throw new ClosedError();
      throw err;
    }
  }

  /** append, then wait for the result. The result is returned whatever its status. */
  async submit(intent: IntentInput, opts: WaitOptions = {}): Promise<Result> {
    if (opts.signal?.aborted) throw abortReason(opts.signal);
    const { seq } = await this.append(intent);
    return this.wait(seq, opts);
  }

  /** Reads a document with its version, taken together. data is null if it does not exist. */
  read(file: string, opts: ReadOptions = {}): Promise<DocumentRead> {
    return readDocument(this.dir, file, opts);
  }

  /**
   * Optimistic read-modify-write: reads file with its version, has fn build
   * a change from it, submits it with ifVersion set to that version, and on
   * a conflict backs off (full jitter: a random delay in [0, c], c =
   * initialDelayMs * backoffFactor^(n-1), capped at maxDelayMs) and starts
   * again from a fresh read. Resolves to the applied result, or to null when
   * fn returns null (nothing to do). Throws ConflictError after maxAttempts
   * conflicts, RejectedError if the watcher rejects the change, TimeoutError
   * past timeoutMs, and the signal's reason when it aborts.
   */
  async update(file: string, fn: (data: Json, version: number) => Change | Promise<Change>, opts: UpdateOptions = {}): Promise<Result | null> {
    checkDocName(file);
    const maxAttempts = opts.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    const initial = opts.initialDelayMs ?? DEFAULT_INITIAL_DELAY_MS;
    const factor = opts.backoffFactor ?? DEFAULT_BACKOFF_FACTOR;
    const maxDelay = opts.maxDelayMs ?? DEFAULT_MAX_DELAY_MS;
    if (!(maxAttempts >= 1)) throw new BadRecordError(`stateward: maxAttempts must be >= 1, got ${maxAttempts}`);
    if (!(initial >= 0) || !(maxDelay >= initial) || !(factor >= 1) || !Number.isFinite(factor)) {
      throw new BadRecordError("stateward: update needs 0 <= initialDelayMs <= maxDelayMs and a finite backoffFactor >= 1");
    }
    const signals = [opts.signal, opts.timeoutMs !== undefined ? AbortSignal.timeout(opts.timeoutMs) : undefined].filter((s): s is AbortSignal => !!s);
    const signal = signals.length > 1 ? anySignal(signals) : signals[0];
    const timedOut = () => opts.timeoutMs !== undefined && signal?.aborted && !opts.signal?.aborted;
    try {
      let last: Result | undefined;
      for (let attempt = 1; attempt <= maxAttempts; attempt++) {
        if (signal?.aborted) throw abortReason(signal);
        const doc = await this.read(file, { signal });
        const change = await fn(doc.data, doc.version);
        if (change === null || change === undefined) return null;
        const intent: IntentInput = { file, ifVersion: doc.version };
        if (Array.isArray(change)) intent.patch = change;
        else if ("patch" in change) Object.assign(intent, { patch: change.patch, id: change.id });
        else if ("merge" in change) Object.assign(intent, { merge: change.merge, id: change.id });
        else throw new BadRecordError("stateward: an update function returns a patch (an array), {patch}, {merge} or null");
        const r = await this.submit(intent, { signal });
        if (r.status === "applied") return r;
        if (r.status === "rejected") throw new RejectedError(`stateward: rejected: ${file}: ${r.error ?? ""}`, r);
        last = r;
        if (attempt < maxAttempts) {
          const ceiling = Math.min(initial * factor ** (attempt - 1), maxDelay);
          await sleep(Math.random() * ceiling, signal);
        }
      }
      throw new ConflictError(`stateward: conflict: ${file}: ${maxAttempts} attempts, each in conflict (last: ${last?.error ?? ""})`, last!, maxAttempts);
    } catch (err) {
      if (timedOut()) throw new TimeoutError(`stateward: update of ${file} did not apply within ${opts.timeoutMs} ms`);
      throw err;
    }
  }

  /**
   * Closes the agent: lets the appends already called finish, releases the
   * writer lock, and makes pending waits throw ClosedError.
   */
  close(): Promise<void> {
    if (!this.closing) {
      this.closing = (async () => {
        await this.queue;
        await this.w.close();
        await this.results.close();
        await this.releaseLock();
      })();
    }
    return this.closing;
  }

  private async releaseLock(): Promise<void> {
    const l = this.lock;
    this.lock = undefined;
    if (l) await l.release();
  }
}

/** AbortSignal.any, for runtimes without it. */
function anySignal(signals: AbortSignal[]): AbortSignal {
  const any = (AbortSignal as unknown as { any?: (s: AbortSignal[]) => AbortSignal }).any;
  if (any) return any(signals);
  const c = new AbortController();
  for (const s of signals) {
    if (s.aborted) {
      c.abort(s.reason);
      break;
    }
    s.addEventListener("abort", () => c.abort(s.reason), { once: true });
  }
  return c.signal;
}
