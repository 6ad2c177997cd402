// A tiny test runner that behaves the same under Node and Bun: tests run one
// after another, each bounded in time; the closing summary says how many
// passed and failed, and the exit code is 1 if any failed.

import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "../../..");
export const runtime = typeof globalThis.Bun !== "undefined" ? `bun ${globalThis.Bun.version}` : `node ${process.version}`;

const tests = [];

/** Registers a test; fn gets a context with cleanup(fn) and log(...). */
export function test(name, fn, { timeoutMs = 120_000 } = {}) {
  tests.push({ name, fn, timeoutMs });
}

export async function run(filter) {
  const started = Date.now();
  let pass = 0;
  let fail = 0;
  console.log(`TAP version 13\n# runtime: ${runtime}`);
  let n = 0;
  for (const t of tests) {
    if (filter && !t.name.includes(filter)) continue;
    n++;
    const cleanups = [];
    const ctx = { cleanup: (f) => cleanups.push(f), log: (...a) => console.log("#   ", ...a) };
    const t0 = Date.now();
    let timer;
    try {
      await Promise.race([
        t.fn(ctx),
        new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`timed out after ${t.timeoutMs} ms`)), t.timeoutMs))),
      ]);
      pass++;
      console.log(`ok ${n} - ${t.name} # ${Date.now() - t0} ms`);
    } catch (err) {
      fail++;
      console.log(`not ok ${n} - ${t.name} # ${Date.now() - t0} ms`);
      console.log(String(err?.stack ?? err).split("\n").map((l) => "  # " + l).join("\n"));
    } finally {
      clearTimeout(timer);
      for (const f of cleanups.reverse()) {
        try {
          await f();
        } catch (err) {
          console.log(`  # cleanup: ${err}`);
        }
      }
    }
  }
  console.log(`1..${n}\n# tests ${n}\n# pass ${pass}\n# fail ${fail}\n# duration_ms ${Date.now() - started}`);
  process.exitCode = fail > 0 || n === 0 ? 1 : 0;
}

/** Throws unless cond. */
export function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

export function assertEqual(got, want, msg) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${msg}: got ${g}, want ${w}`);
}

/** Waits for cond() to be truthy, polling, until the deadline. */
export async function waitFor(cond, { timeoutMs = 20_000, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function tmpDir(ctx, prefix = "sw-ts-") {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  ctx.cleanup(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

let binDir;
function buildDir() {
  if (!binDir) {
    binDir = fs.mkdtempSync(path.join(os.tmpdir(), "sw-ts-bin-"));
    process.on("exit", () => fs.rmSync(binDir, { recursive: true, force: true }));
  }
  return binDir;
}

let bin;
/** The stateward binary built from this checkout (once per run). */
export function statewardBin() {
  if (process.env.STATEWARD_BIN) return process.env.STATEWARD_BIN;
  if (!bin) {
    bin = path.join(buildDir(), "stateward");
    execFileSync("go", ["build", "-o", bin, "./cmd/stateward"], { cwd: repoRoot, stdio: "inherit" });
  }
  return bin;
}

let goAgent;
/** The Go test agent (test/testdata/goagent), which writes through package journal. */
export function goAgentBin() {
  if (!goAgent) {
    goAgent = path.join(buildDir(), "goagent");
    execFileSync("go", ["build", "-o", goAgent, "./clients/typescript/test/testdata/goagent"], { cwd: repoRoot, stdio: "inherit" });
  }
  return goAgent;
}

/** Starts `stateward watch` on dir; stopped (SIGTERM, then waited) at cleanup. */
export function startWatcher(ctx, dir) {
  const p = spawn(statewardBin(), ["watch", "--dir", dir, "--log-level", "warn"], { stdio: ["ignore", "inherit", "inherit"] });
  const exited = new Promise((res) => p.on("exit", res));
  ctx.cleanup(async () => {
    p.kill("SIGTERM");
    await exited;
  });
  return p;
}

/**
 * Runs a command to its end; resolves to {code, signal, stdout, stderr}.
 * With onLine, each stdout line is passed to it as it comes.
 */
export function runProcess(cmd, args, { env, onLine, input, ctx } = {}) {
  const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let pending = "";
  p.stdout.on("data", (b) => {
    stdout += b;
    if (onLine) {
      pending += b;
      let i;
      while ((i = pending.indexOf("\n")) >= 0) {
        onLine(pending.slice(0, i), p);
        pending = pending.slice(i + 1);
      }
    }
  });
  p.stderr.on("data", (b) => (stderr += b));
  if (input !== undefined) p.stdin.end(input);
  const done = new Promise((res) => p.on("close", (code, signal) => res({ code, signal, stdout, stderr })));
  ctx?.cleanup(async () => {
    if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    await done;
  });
  done.proc = p;
  return done;
}

/** Runs a script of test/agents under the same runtime as the tests. */
export function runAgent(script, args, opts = {}) {
  return runProcess(process.execPath, [path.join(here, "agents", script), ...args], opts);
}

/** Parsed lines of every segment in folder, in segment order. */
export function readSegments(folder) {
  let names;
  try {
    names = fs.readdirSync(folder).filter((n) => /^[0-9]{20}\.jsonl$/.test(n)).sort();
  } catch (err) {
    if (err.code === "ENOENT") return [];
    throw err;
  }
  const out = [];
  for (const n of names) {
    const text = fs.readFileSync(path.join(folder, n), "utf8");
    for (const line of text.split("\n").slice(0, -1)) out.push(JSON.parse(line));
  }
  return out;
}

/**
 * Checks that every intent in every journal of dir has exactly one original
 * result, and returns the number of intents.
 */
export function checkOneResultPerIntent(dir) {
  let total = 0;
  const agents = fs.readdirSync(path.join(dir, "journal"));
  for (const a of agents) {
    const intents = readSegments(path.join(dir, "journal", a));
    const results = readSegments(path.join(dir, "results", a)).filter((r) => !r.retry);
    const seqs = intents.map((i) => i.seq);
    assertEqual(new Set(seqs).size, seqs.length, `agent ${a}: seqs unique`);
    const bySeq = new Map();
    for (const r of results) bySeq.set(r.seq, (bySeq.get(r.seq) ?? 0) + 1);
    for (const s of seqs) assertEqual(bySeq.get(s), 1, `agent ${a}: results of seq ${s}`);
    assertEqual(results.length, seqs.length, `agent ${a}: original results`);
    total += seqs.length;
  }
  return total;
}

/**
 * A start line for n racing processes (agents/gate.mjs): pass env and
 * onLine to each, then release(runs) once they are all ready (or any ended).
 */
export function startGate(ctx, n) {
  const file = path.join(tmpDir(ctx, "sw-gate-"), "go");
  let ready = 0;
  let allReady;
  const all = new Promise((r) => (allReady = r));
  return {
    env: { STATEWARD_TEST_GATE: file },
    onLine: (l) => {
      if (l === "ready" && ++ready === n) allReady();
    },
    async release(runs) {
      await Promise.race([all, runs]);
      fs.writeFileSync(file, "");
    },
  };
}

/** The last line of a process's output. */
export function lastLine(s) {
  return s.trim().split("\n").pop();
}
