// Follows one agent's results folder, DIR/results/<agent>/, and hands out
// results by seq, as the Go journal.Results does: it reads on in the open
// segment, lists the folder only when that did not find the result, starts
// at the newest segment that begins at or before the lowest seq wanted and
// whose first line is an original result, and keeps the first result
// written for each seq (the original, not a retry copy).
//
// Waiting: fs.watch on the folder (or on results/, or on DIR, until the
// folder exists) wakes the waiters early; a stat poll every pollMs is the
// backstop, because fs.watch misses events in known cases in Node and Bun.

import fs, { promises as fsp } from "node:fs";
import path from "node:path";
import { ClosedError, ResultGoneError, TimeoutError, abortReason } from "./errors.js";
import { listSegments } from "./fsutil.js";
import { segmentName } from "./names.js";
import type { Result } from "./types.js";

/** Default interval of the stat poll behind fs.watch. */
export const DEFAULT_POLL_MS = 100;
/** Results kept in memory before the oldest are dropped (and read again if asked for). */
const KEEP = 4096;

const NL = 0x0a;

/** Parses a result line; undefined if it is not a result. */
export function parseResult(line: string): Result | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) return undefined;
  const r = v as Result;
  if (typeof r.status !== "string" || (r.status as string) === "") return undefined;
  return r;
}

export class ResultsFollower {
  readonly dir: string;
  readonly folder: string;
  pollMs = DEFAULT_POLL_MS;

  private seg: number | bigint = 0; // current segment (first seq), 0 before the first scan
  private off = 0; // offset in it of the next unread line
  private floor = 0; // lowest seq kept
  private found = new Map<number, Result>();
  private fh: fsp.FileHandle | undefined; // segment seg, kept open between reads
  private oldest: number | bigint = 0; // first seq of the oldest segment at the last listing
  private busy: Promise<void> = Promise.resolve(); // serialises scans
  private watcher: fs.FSWatcher | undefined;
  private watching = ""; // what the watcher watches
  private wakers = new Set<() => void>();
  private closed = false;

  constructor(dir: string, agent: string) {
    this.dir = dir;
    this.folder = path.join(dir, "results", agent);
  }

  /** Waits for the result of seq. */
  async wait(seq: number, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Result> {
    const { signal } = opts;
    const deadline = opts.timeoutMs !== undefined ? Date.now() + opts.timeoutMs : Infinity;
    for (;;) {
      if (this.closed) throw new ClosedError();
      if (signal?.aborted) throw abortReason(signal);
      let wake: (() => void) | undefined;
      const woken = new Promise<void>((res) => (wake = res));
      this.wakers.add(wake!); // before the look, so that no event is missed
      try {
        const r = await this.lookup(seq);
        if (r) return r;
        if (Date.now() >= deadline) throw new TimeoutError(`stateward: no result for seq ${seq} within ${opts.timeoutMs} ms`);
        this.watch();
        await this.idle(woken, Math.min(this.pollMs, deadline - Date.now()), signal);
      } finally {
        this.wakers.delete(wake!);
      }
    }
  }

  private idle(woken: Promise<void>, ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(done, Math.max(ms, 0));
      const onAbort = () => {
        cleanup();
        reject(abortReason(signal!));
      };
      function cleanup() {
        clearTimeout(t);
        signal?.removeEventListener("abort", onAbort);
      }
      function done() {
        cleanup();
        resolve();
      }
      woken.then(done);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** One look for seq's result, serialised with the other waiters'. */
  private lookup(seq: number): Promise<Result | undefined> {
    const run = this.busy.then(() => this.lookupNow(seq));
    this.busy = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  private async lookupNow(seq: number): Promise<Result | undefined> {
    if (this.seg === 0 || seq < this.floor) {
      await this.closeSegment();
      this.seg = 0;
      this.off = 0;
      this.floor = seq;
      this.found.clear();
    }
    if (this.fh) await this.readSegment();
    if (!this.found.has(seq)) await this.scan();
    const r = this.found.get(seq);
    if (r) return r;
    if (this.oldest > seq) {
      // Results are written in seq order and a segment is named by its
      // first: seq's result was in a segment since deleted.
      throw new ResultGoneError(`stateward: result no longer retained: seq ${seq} (the oldest results segment starts at ${this.oldest})`);
    }
    return undefined;
  }

  private async scan(): Promise<void> {
    const segs = await listSegments(this.folder);
    if (segs.length === 0) return;
    this.oldest = segs[0];
    if (this.seg === 0) {
      let i = 0;
      segs.forEach((s, j) => {
        if (s <= this.floor) i = j;
      });
      while (i > 0 && !(await this.startsWithOriginal(segs[i]))) i--;
      this.seg = segs[i];
      this.off = 0;
    }
    for (let i = 0; i < segs.length; i++) {
      const s = segs[i];
      if (s < this.seg) continue;
      if (s > this.seg) {
        await this.closeSegment();
        this.seg = s;
        this.off = 0;
      }
      await this.readSegment();
    }
  }

  private async startsWithOriginal(seg: number | bigint): Promise<boolean> {
    let fh: fsp.FileHandle | undefined;
    try {
      fh = await fsp.open(path.join(this.folder, segName(seg)), "r");
      const chunks: Buffer[] = [];
      let pos = 0;
      for (;;) {
        const buf = Buffer.alloc(64 << 10);
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) return false;
        const part = buf.subarray(0, bytesRead);
        const nl = part.indexOf(NL);
        if (nl >= 0) {
          chunks.push(part.subarray(0, nl));
          const r = parseResult(Buffer.concat(chunks).toString("utf8"));
          return r !== undefined && typeof r.seq === "number" && r.seq > 0 && !r.retry;
        }
        chunks.push(part);
        pos += bytesRead;
      }
    } catch {
      return false;
    } finally {
      await fh?.close();
    }
  }

  private async readSegment(): Promise<void> {
    if (!this.fh) {
      try {
        this.fh = await fsp.open(path.join(this.folder, segName(this.seg)), "r");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return; // compacted away: the next listing moves on
        throw err;
      }
    }
    const st = await this.fh.stat();
    if (st.size <= this.off) return;
    const buf = Buffer.alloc(st.size - this.off);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await this.fh.read(buf, n, buf.length - n, this.off + n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    const data = buf.subarray(0, n);
    const end = data.lastIndexOf(NL) + 1;
    let start = 0;
    while (start < end) {
      const nl = data.indexOf(NL, start);
      const r = parseResult(data.toString("utf8", start, nl));
      start = nl + 1;
      if (!r || typeof r.seq !== "number" || r.seq < this.floor) continue;
      if (!this.found.has(r.seq)) this.found.set(r.seq, r);
    }
    this.off += end;
    if (this.found.size > KEEP) {
      // Drop the oldest half; a later wait for one of them reads it again.
      let drop = this.found.size - KEEP / 2;
      for (const k of this.found.keys()) {
        if (drop-- <= 0) break;
        this.found.delete(k);
        this.floor = Math.max(this.floor, k + 1);
      }
    }
  }

  private async closeSegment(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    if (fh) await fh.close().catch(() => {});
  }

  /** Watches the results folder, or the nearest parent that exists. */
  private watch(): void {
    if (this.closed || this.watching === this.folder) return;
    for (const p of [this.folder, path.dirname(this.folder), this.dir]) {
      if (p === this.watching) return; // already on the nearest one that exists
      let w: fs.FSWatcher;
      try {
        w = fs.watch(p, { persistent: false }, () => this.wakeAll());
      } catch {
        continue;
      }
      w.on("error", () => {
        // The folder went away or the watch broke: the poll carries on.
        w.close();
        if (this.watcher === w) {
          this.watcher = undefined;
          this.watching = "";
        }
      });
      this.watcher?.close();
      this.watcher = w;
      this.watching = p;
      return;
    }
  }

  private wakeAll(): void {
    for (const wake of this.wakers) wake();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    this.watcher = undefined;
    this.wakeAll();
    await this.busy;
    await this.closeSegment();
  }
}

function segName(seg: number | bigint): string {
  return typeof seg === "bigint" ? seg.toString().padStart(20, "0") + ".jsonl" : segmentName(seg);
}
