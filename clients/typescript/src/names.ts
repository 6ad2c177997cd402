import { BadRecordError } from "./errors.js";

const agentRE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const docRE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.json$/;
const segRE = /^[0-9]{20}\.jsonl$/;

/** Whether name is a valid agent name. */
export function validAgentName(name: string): boolean {
  return typeof name === "string" && agentRE.test(name) && !name.includes("..");
}

/** Whether name is a valid document name. */
export function validDocName(name: string): boolean {
  return typeof name === "string" && docRE.test(name) && !name.includes("..");
}

export function checkAgentName(name: string): void {
  if (!validAgentName(name)) {
    throw new BadRecordError(`stateward: bad name: agent ${JSON.stringify(name)} must match ${agentRE.source} and contain no ".."`);
  }
}

export function checkDocName(name: string): void {
  if (!validDocName(name)) {
    throw new BadRecordError(`stateward: bad name: document ${JSON.stringify(name)} must match ${docRE.source} and contain no ".."`);
  }
}

/** The name of the segment whose first record has seq first: 20 digits. */
export function segmentName(first: number): string {
  return String(first).padStart(20, "0") + ".jsonl";
}

/**
 * The first seq a segment name stands for, or undefined if it is not a
 * segment name. Names past Number.MAX_SAFE_INTEGER come back as a bigint.
 */
export function parseSegmentName(name: string): number | bigint | undefined {
  if (!segRE.test(name)) return undefined;
  const n = BigInt(name.slice(0, 20));
  if (n >= 1n << 64n) return undefined;
  return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}
