import { promises as fsp } from "node:fs";
import path from "node:path";
import { parseSegmentName } from "./names.js";

/** Mode of the folders the client creates, before the umask. */
export const DIR_MODE = 0o775;
/** Mode of the files the client creates, before the umask. */
export const FILE_MODE = 0o664;

/** fsyncs a folder, making the entries created or renamed in it durable. */
export async function syncDir(p: string): Promise<void> {
  const h = await fsp.open(p, "r");
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * Creates p and any missing parents with DIR_MODE, fsyncing each parent
 * whose entries it changed.
 */
export async function mkdirDurable(p: string, sync: (p: string) => Promise<void> = syncDir): Promise<void> {
  try {
    const st = await fsp.stat(p);
    if (!st.isDirectory()) throw new Error(`stateward: create folder ${p}: not a directory`);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const parent = path.dirname(p);
  if (parent !== p) await mkdirDurable(parent, sync);
  try {
    await fsp.mkdir(p, { mode: DIR_MODE });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  await sync(parent);
}

/**
 * The first seqs of the segments in folder, in order: regular files named
 * as segments, nothing else. A missing folder has none.
 */
export async function listSegments(folder: string): Promise<(number | bigint)[]> {
  let ents;
  try {
    ents = await fsp.readdir(folder, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  const segs: (number | bigint)[] = [];
  for (const e of ents) {
    const n = parseSegmentName(e.name);
    if (n !== undefined && e.isFile()) segs.push(n);
  }
  return segs.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Resolves after ms, or rejects with the signal's reason when it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new DOMException("This operation was aborted", "AbortError"));
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason ?? new DOMException("This operation was aborted", "AbortError"));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
