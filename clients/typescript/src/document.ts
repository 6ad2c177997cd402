// Reads a document together with its version, as the Go journal.ReadDocument
// does: DIR/.stateward/versions.json before and after the document, paired
// with the document's bytes through their SHA-256.

import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { UnversionedError, abortReason } from "./errors.js";
import { sleep } from "./fsutil.js";
import { checkDocName } from "./names.js";
import type { DocumentRead, Json, ReadOptions } from "./types.js";

/** The versions file under a state directory. */
export const VERSIONS_PATH = ".stateward/versions.json";

interface DocVersion {
  version: number;
  exists: boolean;
  sha256?: string;
  broken?: string;
}

async function readVersions(dir: string): Promise<Record<string, DocVersion>> {
  let text: string;
  try {
    text = await fsp.readFile(path.join(dir, VERSIONS_PATH), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw err;
  }
  const v = JSON.parse(text) as { docs?: Record<string, DocVersion> };
  return v.docs ?? {};
}

async function readOnce(dir: string, name: string): Promise<DocumentRead | undefined> {
  const before = await readVersions(dir);
  let data: Buffer | undefined;
  try {
    data = await fsp.readFile(path.join(dir, name));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const after = await readVersions(dir);
  const hash = data ? createHash("sha256").update(data).digest("hex") : "";
  for (const docs of [after, before]) {
    const dv: DocVersion | undefined = docs[name];
    if (!data && !dv?.exists) return { file: name, version: dv?.version ?? 0, data: null };
    if (data && dv?.exists && dv.sha256 === hash) {
      return { file: name, version: dv.version, data: JSON.parse(data.toString("utf8")) as Json };
    }
  }
  return undefined;
}

/**
 * Reads document name of dir with its version. While a commit is replacing
 * the file it retries (1 ms doubling to 100 ms) for up to timeoutMs
 * (default 10 s); then it throws UnversionedError.
 */
export async function readDocument(dir: string, name: string, opts: ReadOptions = {}): Promise<DocumentRead> {
  checkDocName(name);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  let delay = 1;
  for (;;) {
    if (opts.signal?.aborted) throw abortReason(opts.signal);
    const doc = await readOnce(dir, name);
    if (doc) return doc;
    if (Date.now() >= deadline) {
      throw new UnversionedError(`stateward: document on disk matches no committed version: ${name} (for ${timeoutMs} ms; is the watcher running?)`);
    }
    await sleep(Math.min(delay, Math.max(deadline - Date.now(), 0)), opts.signal);
    delay = Math.min(2 * delay, 100);
  }
}


