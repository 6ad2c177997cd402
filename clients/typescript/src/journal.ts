// The agent's journal: DIR/journal/<agent>/<N>.jsonl, N the seq of the
// segment's first record in 20 digits. Mirrors the Go journal.Writer: one
// write and one fsync per append, a new segment's folder entry fsynced
// before anything is written to it, a torn tail cut on open.

import { promises as fsp, constants as fsc } from "node:fs";
import path from "node:path";
import { BadRecordError, ClosedError, StatewardError } from "./errors.js";
import { FILE_MODE, listSegments, syncDir } from "./fsutil.js";
import { segmentName, checkDocName } from "./names.js";
import type { IntentInput } from "./types.js";

/** Default size past which a new segment is started (as the Go writer). */
export const DEFAULT_SEGMENT_SIZE = 64 << 20;
/** Default longest line (the watcher's default --max-line). */
export const DEFAULT_MAX_LINE = 1 << 20;
/** Longest id, in bytes. */
export const MAX_ID_LEN = 128;

const NL = 0x0a;
const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Encodes an intent as its journal line, fields in the Go writer's order
 * (seq, file, patch, merge, if_version, id, time), compact, "\n"-terminated.
 */
export function encodeIntent(seq: number, input: IntentInput): string {
  if (!Number.isSafeInteger(seq) || seq < 1) throw new BadRecordError(`stateward: bad record: seq ${seq} must be an integer >= 1 and <= ${Number.MAX_SAFE_INTEGER}`);
  checkDocName(input.file);
  const hasPatch = input.patch !== undefined;
  const hasMerge = Object.prototype.hasOwnProperty.call(input, "merge") && input.merge !== undefined;
  if (hasPatch === hasMerge) throw new BadRecordError("stateward: bad record: exactly one of patch and merge is required");
  if (hasPatch && !Array.isArray(input.patch)) throw new BadRecordError("stateward: bad record: patch must be an array of operations");
  let line = `{"seq":${seq},"file":${JSON.stringify(input.file)}`;
  if (hasPatch) line += `,"patch":${JSON.stringify(input.patch)}`;
  if (hasMerge) {
    const m = JSON.stringify(input.merge);
    if (m === undefined) throw new BadRecordError("stateward: bad record: merge is not JSON");
    line += `,"merge":${m}`;
  }
  if (input.ifVersion !== undefined && input.ifVersion !== null) {
    if (!Number.isSafeInteger(input.ifVersion) || input.ifVersion < 0) throw new BadRecordError(`stateward: bad record: ifVersion ${input.ifVersion} must be an integer >= 0`);
    line += `,"if_version":${input.ifVersion}`;
  }
  if (input.id !== undefined && input.id !== null && input.id !== "") {
    if (typeof input.id !== "string") throw new BadRecordError("stateward: bad record: id must be a string");
    if (loneSurrogate.test(input.id)) throw new BadRecordError("stateward: bad record: id is not valid UTF-8");
    const n = Buffer.byteLength(input.id);
    if (n > MAX_ID_LEN) throw new BadRecordError(`stateward: bad record: id is ${n} bytes, longer than ${MAX_ID_LEN}`);
    line += `,"id":${JSON.stringify(input.id)}`;
  }
  if (input.time !== undefined && input.time !== null && input.time !== "") {
    if (typeof input.time !== "string" || Number.isNaN(Date.parse(input.time))) throw new BadRecordError(`stateward: bad record: time ${JSON.stringify(input.time)} is not RFC 3339`);
    line += `,"time":${JSON.stringify(input.time)}`;
  }
  return line + "}\n";
}

/** The seq of a journal line as the watcher reads it (0 if none). */
export function peekSeq(line: string): number | bigint {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return 0;
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) return 0;
  const s = (v as { seq?: unknown }).seq;
  if (typeof s !== "number" || !Number.isInteger(s) || s < 1) return 0;
  if (!Number.isSafeInteger(s)) {
    // Past 2^53 the double is not the seq: read the digits themselves.
    const m = /"seq"\s*:\s*([0-9]+)/.exec(line);
    return m ? BigInt(m[1]) : 0;
  }
  return s;
}

/** The offset just past the last complete line of data, and its highest seq. */
export function lastSeq(data: Buffer): { end: number; seq: number | bigint } {
  const end = data.lastIndexOf(NL) + 1;
  let seq: number | bigint = 0;
  let start = 0;
  while (start < end) {
    const nl = data.indexOf(NL, start);
    const s = peekSeq(data.toString("utf8", start, nl));
    if (s > seq) seq = s;
    start = nl + 1;
  }
  return { end, seq };
}

/** Appends to one agent's journal; callers serialise the calls. */
export class JournalWriter {
  readonly folder: string;
  segmentSize = DEFAULT_SEGMENT_SIZE;
  maxLine = DEFAULT_MAX_LINE;
  /** Overridable in tests to inject faults. */
  syncDir: (p: string) => Promise<void> = syncDir;

  private fh: fsp.FileHandle | undefined; // newest segment, O_APPEND
  private size = 0;
  private last = 0; // seq of the last record written
  private nextMin = 1; // lowest seq allowed next
  private failed: unknown;
  closed = false;

  constructor(folder: string) {
    this.folder = folder;
  }

  get lastSeq(): number {
    return this.last;
  }

  /** Finds the newest segment, cuts a torn tail and reads the last seq. */
  async recover(): Promise<{ cut: number }> {
    const segs = await listSegments(this.folder);
    let cut = 0;
    if (segs.length === 0) {
      this.nextMin = 1;
      return { cut };
    }
    for (let i = segs.length - 1; i >= 0; i--) {
      const first = segs[i];
      if (typeof first === "bigint") throw new StatewardError("ESEQLIMIT", `stateward: segment ${segmentName(Number(first))} in ${this.folder} starts past seq ${Number.MAX_SAFE_INTEGER}, the limit of this client`);
      const p = path.join(this.folder, segmentName(first));
      const fh = await fsp.open(p, fsc.O_RDWR | fsc.O_APPEND);
      let keep = false;
      try {
        const data = await fh.readFile();
        const { end, seq } = lastSeq(data);
        if (typeof seq === "bigint" || seq > Number.MAX_SAFE_INTEGER) throw new StatewardError("ESEQLIMIT", `stateward: journal ${p} has seq ${seq}, past ${Number.MAX_SAFE_INTEGER}, the limit of this client`);
        if (i === segs.length - 1) {
          if (data.length > end) {
            // A torn tail: its append never resolved, so nobody was told it
            // was written. Cut it before writing after it.
            await fh.truncate(end);
            await fh.sync();
            cut = data.length - end;
          }
          this.fh = fh;
          this.size = end;
          this.nextMin = first;
          keep = true;
        }
        if (seq > 0) {
          this.last = seq;
          return { cut };
        }
      } finally {
        if (!keep) await fh.close();
      }
    }
    return { cut };
  }

  /** The seq the next append gets unless it names one. */
  nextSeq(): number {
    return Math.max(this.last + 1, this.nextMin);
  }

  /** Writes one line with one write and fsyncs it. Resolves when durable. */
  async append(input: IntentInput): Promise<number> {
    if (this.closed) throw new ClosedError(this.failed ? "stateward: agent closed by a failed write or fsync" : undefined, { cause: this.failed });
    const min = this.nextSeq();
    let seq = min;
    if (input.seq !== undefined && input.seq !== null) {
      if (!Number.isSafeInteger(input.seq) || input.seq < min) throw new BadRecordError(`stateward: bad record: seq ${input.seq} is not greater than the last seq ${min - 1}`);
      seq = input.seq;
    }
    if (seq > Number.MAX_SAFE_INTEGER) throw new StatewardError("ESEQLIMIT", `stateward: seq would pass ${Number.MAX_SAFE_INTEGER}, the limit of this client`);
    const buf = Buffer.from(encodeIntent(seq, input));
    if (buf.length > this.maxLine) throw new BadRecordError(`stateward: bad record: line of ${buf.length} bytes is longer than the limit of ${this.maxLine} (the watcher would reject it)`);
    if (!this.fh || (this.size > 0 && this.size + buf.length > this.segmentSize)) await this.rotate(seq);
    const fh = this.fh!;
    try {
      let off = 0;
      while (off < buf.length) {
        const { bytesWritten } = await fh.write(buf, off, buf.length - off, null);
        off += bytesWritten;
        this.size += bytesWritten;
      }
      await fh.sync();
    } catch (err) {
      await this.fail(err);
      throw err;
    }
    this.last = seq;
    return seq;
  }

  /** Starts a segment whose first record has seq first, its entry durable. */
  private async rotate(first: number): Promise<void> {
    const p = path.join(this.folder, segmentName(first));
    const fh = await fsp.open(p, fsc.O_RDWR | fsc.O_APPEND | fsc.O_CREAT | fsc.O_EXCL, FILE_MODE);
    try {
      await this.syncDir(this.folder);
    } catch (err) {
      await fh.close();
      await this.fail(err);
      throw err;
    }
    if (this.fh) await this.fh.close();
    this.fh = fh;
    this.size = 0;
    this.nextMin = first;
  }

  /** Closes the writer after an error that leaves the tail unknown. */
  private async fail(err: unknown): Promise<void> {
    this.failed = err;
    await this.close();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const fh = this.fh;
    this.fh = undefined;
    if (fh) await fh.close().catch(() => {});
  }
}
