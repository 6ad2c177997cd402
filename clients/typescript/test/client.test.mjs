import fs from "node:fs";
import path from "node:path";
import {
  open,
  encodeIntent,
  segmentName,
  writerAddress,
  WriterBusyError,
  ClosedError,
  TimeoutError,
  ConflictError,
  RejectedError,
  BadRecordError,
} from "../dist/index.js";
import { nameBound, flockHeld } from "../dist/lock.js";
import {
  test,
  assert,
  assertEqual,
  waitFor,
  tmpDir,
  startWatcher,
  runAgent,
  runProcess,
  statewardBin,
  here,
  repoRoot,
  goAgentBin,
  readSegments,
  checkOneResultPerIntent,
  startGate,
  lastLine,
} from "./harness.mjs";

// ---- format and local behaviour (no watcher) ----

test("encodeIntent writes the Go writer's line, byte for byte", async () => {
  assertEqual(
    encodeIntent(7, { file: "tasks.json", patch: [{ op: "inc", path: "/n", value: 1 }], ifVersion: 0, id: "claim-42" }),
    '{"seq":7,"file":"tasks.json","patch":[{"op":"inc","path":"/n","value":1}],"if_version":0,"id":"claim-42"}\n',
    "patch line",
  );
  assertEqual(encodeIntent(1, { file: "a.json", merge: null }), '{"seq":1,"file":"a.json","merge":null}\n', "merge null is a merge patch");
  assertEqual(encodeIntent(2, { file: "a.json", merge: { x: "<&>" } }), '{"seq":2,"file":"a.json","merge":{"x":"<&>"}}\n', "no HTML escaping");
  for (const [bad, why] of [
    [{ file: "../x.json", merge: 1 }, "bad file"],
    [{ file: "a.json" }, "neither patch nor merge"],
    [{ file: "a.json", merge: 1, patch: [] }, "both"],
    [{ file: "a.json", merge: 1, id: "x".repeat(129) }, "long id"],
    [{ file: "a.json", merge: 1, ifVersion: -1 }, "negative if_version"],
  ]) {
    let threw = false;
    try {
      encodeIntent(1, bad);
    } catch (err) {
      threw = err instanceof BadRecordError;
    }
    assert(threw, `${why}: BadRecordError`);
  }
  assertEqual(segmentName(1), "00000000000000000001.jsonl", "segment name");
});

test("the writer socket name fills sun_path, as Go's journal.WriterAddress", async (t) => {
  const dir = tmpDir(t);
  const a = await open({ dir, agent: "a" });
  t.cleanup(() => a.close());
  const folder = path.join(dir, "journal", "a");
  const addr = await writerAddress(folder);
  assertEqual(addr.length, 108, "length");
  const st = fs.statSync(folder, { bigint: true });
  assert(addr.startsWith(`\0stateward-writer/${st.dev}/${st.ino}\0`), `name ${JSON.stringify(addr.replace(/\0+$/, ""))}`);
  assert(fs.existsSync(path.join(folder, ".lock")), ".lock created");
});

// Under Bun a failed bind or flock is told Busy also by these, since errno
// read by a second FFI call may have changed in between.
test("a held writer lock is seen in /proc: the bound name (nameBound), the flock (flockHeld)", async (t) => {
  const dir = tmpDir(t);
  const a = await open({ dir, agent: "a" });
  const folder = path.join(dir, "journal", "a");
  const addr = await writerAddress(folder);
  assert(await nameBound(addr), "the name of an open writer is not seen bound");
  await a.close();
  assert(!(await nameBound(addr)), "the name is seen bound after close");
  const lockPath = path.join(folder, ".lock");
  const fh = await fs.promises.open(lockPath, "r");
  t.cleanup(() => fh.close());
  assert(!(await flockHeld(fh)), "a flock is seen with no holder");
  let locked;
  const lockedP = new Promise((res) => (locked = res));
  const holder = runProcess("flock", ["-x", lockPath, "-c", "echo locked; cat"], { ctx: t, onLine: (l) => l === "locked" && locked() });
  await lockedP;
  assert(await flockHeld(fh), "the flock held by flock(1) is not seen");
  holder.proc.stdin.end();
  await holder;
  assert(!(await flockHeld(fh)), "a flock is seen after flock(1) exited");
});

test("one writer per agent in one process; close releases it; other agents free", async (t) => {
  const dir = tmpDir(t);
  const a = await open({ dir, agent: "a" });
  let err;
  try {
    await open({ dir, agent: "a" });
  } catch (e) {
    err = e;
  }
  assert(err instanceof WriterBusyError, `second open: ${err}`);
  assert(err.message.includes('"a"') && err.message.includes(path.join(dir, "journal", "a")), `message names agent and folder: ${err.message}`);
  const b = await open({ dir, agent: "b" });
  await b.close();
  // A waiting open gets the agent once the holder closes.
  const waiting = open({ dir, agent: "a", lockTimeoutMs: 10_000 });
  await a.close();
  const a2 = await waiting;
  await a2.close();
  let closedErr;
  try {
    await a2.append({ file: "x.json", merge: 1 });
  } catch (e) {
    closedErr = e;
  }
  assert(closedErr instanceof ClosedError, `append after close: ${closedErr}`);
});

test("appends are durable, in call order, seq continues after reopen and segments rotate", async (t) => {
  const dir = tmpDir(t);
  const a = await open({ dir, agent: "a", segmentSize: 300 });
  const seqs = await Promise.all(Array.from({ length: 20 }, (_, i) => a.append({ file: "x.json", patch: [{ op: "inc", path: "/n", value: i }] })));
  assertEqual(seqs.map((s) => s.seq), Array.from({ length: 20 }, (_, i) => i + 1), "seqs in call order");
  await a.close();
  const folder = path.join(dir, "journal", "a");
  const lines = readSegments(folder);
  assertEqual(lines.map((l) => l.patch[0].value), Array.from({ length: 20 }, (_, i) => i), "lines in call order");
  const segs = fs.readdirSync(folder).filter((n) => n.endsWith(".jsonl")).sort();
  assert(segs.length > 3, `rotated: ${segs}`);
  for (const s of segs) {
    const first = readSegments(folder).length && JSON.parse(fs.readFileSync(path.join(folder, s), "utf8").split("\n")[0]).seq;
    assertEqual(s, segmentName(first), "segment named by its first seq");
  }
  const b = await open({ dir, agent: "a" });
  assertEqual(b.lastSeq, 20, "lastSeq after reopen");
  assertEqual((await b.append({ file: "x.json", merge: 1 })).seq, 21, "next seq");
  await assertRejects(() => b.append({ file: "x.json", merge: 1, seq: 21 }), BadRecordError, "explicit seq not above the last");
  assertEqual((await b.append({ file: "x.json", merge: 1, seq: 100 })).seq, 100, "explicit seq");
  await b.close();
});

test("a torn tail is cut on open and seq continues after the last complete record", async (t) => {
  const dir = tmpDir(t);
  const a = await open({ dir, agent: "a" });
  await a.append({ file: "x.json", merge: 1 });
  await a.append({ file: "x.json", merge: 2 });
  await a.close();
  const seg = path.join(dir, "journal", "a", segmentName(1));
  const complete = fs.readFileSync(seg);
  for (let cut = 1; cut < 30; cut += 7) {
    fs.appendFileSync(seg, '{"seq":3,"file":"x.json","merge":3}'.slice(0, cut));
    const b = await open({ dir, agent: "a" });
    assertEqual(b.tornBytesCut, cut, "bytes cut");
    assert(fs.readFileSync(seg).equals(complete), "file back to its complete records");
    await b.close();
  }
  const b = await open({ dir, agent: "a" });
  assertEqual((await b.append({ file: "x.json", merge: 3 })).seq, 3, "seq after a torn tail");
  await b.close();
  // An empty newest segment (created, then killed before its first line)
  // names the next seq; older segments give the last seq.
  fs.writeFileSync(path.join(dir, "journal", "a", segmentName(10)), "");
  const c = await open({ dir, agent: "a" });
  assertEqual(c.lastSeq, 3, "lastSeq from the older segment");
  assertEqual((await c.append({ file: "x.json", merge: 4 })).seq, 10, "seq named by the empty segment");
  await c.close();
});

test("wait: timeout, abort, and waits made before the results exist", async (t) => {
  const dir = tmpDir(t);
  const a = await open({ dir, agent: "a", pollMs: 20 });
  t.cleanup(() => a.close());
  const { seq } = await a.append({ file: "x.json", merge: { n: 1 } });
  await assertRejects(() => a.wait(seq, { timeoutMs: 50 }), TimeoutError, "no watcher: timeout");
  const ac = new AbortController();
  const w = a.wait(seq, { signal: ac.signal });
  ac.abort();
  await assertRejects(() => w, Error, "aborted wait", (e) => e.name === "AbortError");
  // Start the watcher only now: the pending wait sees results/ appear.
  const pending = a.wait(seq, { timeoutMs: 30_000 });
  startWatcher(t, dir);
  const r = await pending;
  assertEqual(r, { seq, file: "x.json", status: "applied", version: 1, commit: 1 }, "result fields as written");
  const again = await a.wait(seq, { timeoutMs: 1000 });
  assertEqual(again.seq, seq, "the same seq waited for twice");
});

test("submit returns results of every status; update: conflict, rejected, null, abort", async (t) => {
  const dir = tmpDir(t);
  startWatcher(t, dir);
  const a = await open({ dir, agent: "a" });
  t.cleanup(() => a.close());
  const ok = await a.submit({ file: "s.json", merge: { n: 0 }, ifVersion: 0, id: "create" }, { timeoutMs: 30_000 });
  assertEqual([ok.status, ok.version, ok.id], ["applied", 1, "create"], "create");
  const dup = await a.submit({ file: "s.json", merge: { n: 0 }, ifVersion: 0, id: "create" }, { timeoutMs: 30_000 });
  assertEqual([dup.status, dup.retry, dup.commit], ["applied", true, ok.commit], "reused id answered with a retry copy");
  const c = await a.submit({ file: "s.json", merge: { n: 5 }, ifVersion: 0 }, { timeoutMs: 30_000 });
  assertEqual(c.status, "conflict", "if_version 0 on an existing document");
  const rej = await a.submit({ file: "s.json", patch: [{ op: "bogus", path: "/n" }] }, { timeoutMs: 30_000 });
  assertEqual(rej.status, "rejected", "unknown op");
  assertEqual(await a.read("s.json"), { file: "s.json", version: 1, data: { n: 0 } }, "read");
  assertEqual(await a.read("none.json"), { file: "none.json", version: 0, data: null }, "read of a missing document");

  const u = await a.update("s.json", (data, version) => [{ op: "replace", path: "/n", value: data.n + version }]);
  assertEqual([u.status, u.version], ["applied", 2], "update applied");
  assertEqual(await a.update("s.json", () => null), null, "nothing to do");
  await assertRejects(() => a.update("s.json", () => [{ op: "bogus", path: "/n" }]), RejectedError, "rejected");
  await assertRejects(
    () => a.update("s.json", () => [{ op: "test", path: "/n", value: -1 }], { maxAttempts: 3, initialDelayMs: 1 }),
    ConflictError,
    "always in conflict",
    (e) => e.attempts === 3 && e.result.status === "conflict",
  );
  // A cancelled signal stops it: nothing more is appended after the abort.
  const ac = new AbortController();
  ac.abort();
  const before = a.lastSeq;
  await assertRejects(() => a.update("s.json", () => [{ op: "replace", path: "/n", value: 1 }], { signal: ac.signal }), Error, "pre-aborted", (e) => e.name === "AbortError");
  assertEqual(a.lastSeq, before, "nothing appended for an aborted update");
  const ac2 = new AbortController();
  let calls = 0;
  const running = a.update(
    "s.json",
    () => {
      if (++calls === 3) ac2.abort();
      return [{ op: "test", path: "/n", value: -1 }];
    },
    { signal: ac2.signal, initialDelayMs: 1, maxAttempts: 1000 },
  );
  await assertRejects(() => running, Error, "aborted mid-way", (e) => e.name === "AbortError");
  const at = a.lastSeq;
  await a.wait(at, { timeoutMs: 30_000 });
  assertEqual(calls, 3, "no call after the abort");
  assertEqual(a.lastSeq, at, "no append after the abort");
  await assertRejects(() => a.update("s.json", () => [{ op: "test", path: "/n", value: -1 }], { timeoutMs: 200, maxAttempts: 10_000 }), TimeoutError, "timeoutMs");
});

// ---- many processes against the real watcher ----

async function setupBoard(dir, n) {
  const s = await open({ dir, agent: "setup" });
  const tasks = {};
  for (let i = 0; i < n; i++) tasks[`t${i}`] = { status: "open", owner: null };
  // A patch, not a merge: a merge patch deletes the members set to null.
  const r1 = await s.submit({ file: "tasks.json", patch: [{ op: "add", path: "", value: { tasks } }], ifVersion: 0 }, { timeoutMs: 30_000 });
  const r2 = await s.submit({ file: "metrics.json", merge: { claims: {} }, ifVersion: 0 }, { timeoutMs: 30_000 });
  assertEqual([r1.status, r2.status], ["applied", "applied"], "board created");
  await s.close();
}

/** Every task claimed exactly once, counters equal to claims; returns owners' counts. */
async function checkBoard(dir, n, summaries) {
  const reader = await open({ dir, agent: "checker" });
  const { data: board } = await reader.read("tasks.json");
  const { data: metrics } = await reader.read("metrics.json");
  await reader.close();
  const owned = {};
  for (const [id, task] of Object.entries(board.tasks)) {
    assert(task.owner !== null && task.status === "claimed", `task ${id} claimed: ${JSON.stringify(task)}`);
    owned[task.owner] = (owned[task.owner] ?? 0) + 1;
  }
  assertEqual(Object.keys(board.tasks).length, n, "tasks");
  let sum = 0;
  for (const s of summaries) {
    assertEqual(owned[s.agent] ?? 0, s.claims, `${s.agent}: tasks owned = claims it saw applied`);
    assertEqual(metrics.claims[s.agent] ?? 0, s.claims, `${s.agent}: counter = claims`);
    sum += s.claims;
  }
  assertEqual(sum, n, "claims in all (no double claim, none lost)");
  return owned;
}

test("8 processes race to claim 100 tasks through the client", async (t) => {
  const dir = tmpDir(t);
  startWatcher(t, dir);
  await setupBoard(dir, 100);
  const gate = startGate(t, 8);
  const all = Promise.all(Array.from({ length: 8 }, (_, i) => runAgent("claimer.mjs", [dir, `agent-${i}`], { ctx: t, env: gate.env, onLine: gate.onLine })));
  await gate.release(all);
  const t0 = Date.now();
  const runs = await all;
  const ms = Date.now() - t0;
  for (const r of runs) assert(r.code === 0, `agent exited ${r.code}: ${r.stderr}`);
  const summaries = runs.map((r) => JSON.parse(lastLine(r.stdout)));
  await checkBoard(dir, 100, summaries);
  const intents = checkOneResultPerIntent(dir);
  const conflicts = summaries.reduce((s, x) => s + x.conflicts, 0);
  t.log(`FIGURE client race: 8 processes, 100 tasks, claims ${summaries.map((s) => s.claims).join("+")} = 100, conflicts ${conflicts}, double claims 0, intents ${intents} (each with exactly one result), ${ms} ms, ${Math.round((intents * 1000) / ms)} intents/s`);
});

test("update under contention from 8 processes: no lost update", async (t) => {
  const dir = tmpDir(t);
  startWatcher(t, dir);
  const s = await open({ dir, agent: "setup" });
  await s.submit({ file: "counter.json", merge: { n: 0 }, ifVersion: 0 }, { timeoutMs: 30_000 });
  await s.close();
  const K = 15;
  const gate = startGate(t, 8);
  const all = Promise.all(Array.from({ length: 8 }, (_, i) => runAgent("updater.mjs", [dir, `u${i}`, String(K)], { ctx: t, env: gate.env, onLine: gate.onLine })));
  await gate.release(all);
  const t0 = Date.now();
  const runs = await all;
  const ms = Date.now() - t0;
  for (const r of runs) assert(r.code === 0, `updater exited ${r.code}: ${r.stderr}`);
  const summaries = runs.map((r) => JSON.parse(lastLine(r.stdout)));
  const c = await open({ dir, agent: "checker" });
  const { data } = await c.read("counter.json");
  await c.close();
  assertEqual(data.n, 8 * K, "n: every read-modify-write counted once");
  const intents = summaries.reduce((s, x) => s + x.intents, 0);
  checkOneResultPerIntent(dir);
  t.log(`FIGURE update contention: 8 processes x ${K} read-modify-writes of /n: n = ${data.n} (want ${8 * K}), ${intents} intents (${(intents / (8 * K)).toFixed(2)} attempts per update), ${ms} ms`);
});

test("kill -9 of a Node agent mid-append: torn tail cut, seq continues, nothing applied twice", async (t) => {
  const dir = tmpDir(t);
  startWatcher(t, dir);
  const s = await open({ dir, agent: "setup" });
  await s.submit({ file: "kill.json", merge: { n: 0 }, ifVersion: 0 }, { timeoutMs: 30_000 });
  await s.close();
  const folder = path.join(dir, "journal", "k");
  const pad = 900_000;
  let acked = 0;
  let naturalTears = 0;
  const rounds = 8;
  for (let round = 0; round < rounds; round++) {
    const want = 1 + Math.floor(Math.random() * 4);
    let seen = 0;
    let opened;
    const killAt = Math.random() * 5;
    const done = runAgent("appender.mjs", [dir, "k", String(pad)], {
      ctx: t,
      onLine: (line, p) => {
        const [what, a, b] = line.split(" ");
        if (what === "open") opened = { lastSeq: Number(a), cut: Number(b) };
        if (what === "acked") {
          acked = Math.max(acked, Number(a));
          if (++seen === want) setTimeout(() => p.kill("SIGKILL"), killAt);
        }
      },
    });
    const r = await done;
    assertEqual(r.signal, "SIGKILL", `round ${round}: killed (stderr ${r.stderr})`);
    assert(opened && opened.lastSeq >= (round === 0 ? 0 : 1), `round ${round}: opened`);
    if (opened.cut > 0) naturalTears++;
    // The newest segment: does it end in a torn line now?
    const segs = fs.readdirSync(folder).filter((n) => n.endsWith(".jsonl")).sort();
    const last = fs.readFileSync(path.join(folder, segs[segs.length - 1]));
    if (round === rounds - 1 && last.length > 0 && last[last.length - 1] === 0x0a) {
      // Make sure the last restart has a torn tail to cut: the first bytes
      // of a next line, as a kill in the middle of its write leaves them.
      fs.appendFileSync(path.join(folder, segs[segs.length - 1]), `{"seq":${acked + 1000},"file":"kill.json","patch":[{"op":"inc","path":"/n","value":1}`);
    }
  }
  // Restart once more: the tail is cut, seq continues after the last complete record.
  const complete = readSegments(folder).map((l) => l.seq);
  const lastComplete = Math.max(...complete);
  assert(lastComplete >= acked, `every acknowledged append is there (${lastComplete} >= ${acked})`);
  const a = await open({ dir, agent: "k" });
  assert(a.tornBytesCut > 0, "the final restart cut a torn tail");
  assertEqual(a.lastSeq, lastComplete, "lastSeq = last complete record");
  const { seq } = await a.append({ file: "kill.json", patch: [{ op: "inc", path: "/n", value: 1 }] });
  assertEqual(seq, lastComplete + 1, "seq continues");
  const r = await a.wait(seq, { timeoutMs: 60_000 });
  assertEqual(r.status, "applied", "the append after the restarts applies");
  await a.close();
  const c = await open({ dir, agent: "checker" });
  const { data } = await c.read("kill.json");
  await c.close();
  const lines = readSegments(folder).length;
  assertEqual(data.n, lines, "n = complete journal lines: each applied once, torn ones never");
  checkOneResultPerIntent(dir);
  t.log(`FIGURE kill -9: ${rounds} kills mid-append of 900 KB lines, ${naturalTears} torn tails left by the kill itself (+1 made), ${lines} complete lines, n = ${data.n}, applied twice 0`);
}, { timeoutMs: 240_000 });

// ---- mixed languages ----

test("mixed languages: Go agents, TypeScript agents and stateward submit on one directory", async (t) => {
  const dir = tmpDir(t);
  startWatcher(t, dir);
  await setupBoard(dir, 60);
  const go = goAgentBin();
  const sw = statewardBin();
  const gate = startGate(t, 4);
  const opts = { ctx: t, env: gate.env, onLine: gate.onLine };
  const all = Promise.all([
    runProcess(go, ["claim", dir, "go-1"], opts),
    runProcess(go, ["claim", dir, "go-2"], opts),
    runAgent("claimer.mjs", [dir, "ts-1"], opts),
    runAgent("claimer.mjs", [dir, "ts-2"], opts),
  ]);
  await gate.release(all);
  const cli = (async () => {
    // A shell agent: claims tasks in order through stateward submit.
    let claims = 0;
    let conflicts = 0;
    for (let i = 0; i < 60; i += 4) {
      const patch = JSON.stringify([
        { op: "test", path: `/tasks/t${i}/owner`, value: null },
        { op: "replace", path: `/tasks/t${i}/owner`, value: "cli" },
        { op: "replace", path: `/tasks/t${i}/status`, value: "claimed" },
      ]);
      const r = await runProcess(sw, ["submit", "--dir", dir, "--agent", "cli", "--file", "tasks.json", "--wait", patch], { ctx: t });
      if (r.code === 0) {
        claims++;
        const m = await runProcess(sw, ["submit", "--dir", dir, "--agent", "cli", "--file", "metrics.json", "--wait", '[{"op":"inc","path":"/claims/cli","value":1}]'], { ctx: t });
        assertEqual(m.code, 0, `cli inc: ${m.stderr}`);
      } else {
        assertEqual(r.code, 3, `cli claim exit code (conflict): ${r.stdout} ${r.stderr}`);
        conflicts++;
      }
    }
    return { agent: "cli", claims, conflicts };
  })();
  const runs = await all;
  for (const r of runs) assert(r.code === 0, `agent exited ${r.code}: ${r.stderr} ${r.stdout}`);
  const summaries = [...runs.map((r) => JSON.parse(lastLine(r.stdout))), await cli];
  await checkBoard(dir, 60, summaries);
  const intents = checkOneResultPerIntent(dir);
  t.log(`FIGURE mixed: go ${summaries[0].claims}+${summaries[1].claims}, ts ${summaries[2].claims}+${summaries[3].claims}, cli ${summaries[4].claims} = 60 claims, ${intents} intents, each with exactly one result`);
});

test("mixed languages: the second writer of one agent is refused in both directions; SIGKILL frees it", async (t) => {
  const dir = tmpDir(t);
  const go = goAgentBin();
  const sw = statewardBin();
  // TypeScript holds: Go and the CLI are refused.
  const a = await open({ dir, agent: "shared" });
  const g = await runProcess(go, ["hold", dir, "shared"], { ctx: t, input: "" });
  assertEqual(g.code, 2, `Go writer refused: ${g.stdout}`);
  assert(g.stdout.includes("locked by another writer") && g.stdout.includes('"shared"'), `Go error names the agent: ${g.stdout}`);
  const c = await runProcess(sw, ["submit", "--dir", dir, "--agent", "shared", "--file", "x.json", "--timeout", "300ms", "--merge", "1"], { ctx: t });
  assert(c.code !== 0 && /locked/.test(c.stderr), `stateward submit refused: ${c.code} ${c.stderr}`);
  await a.close();
  const g2 = await runProcess(go, ["hold", dir, "shared"], { ctx: t, input: "" });
  assertEqual([g2.code, g2.stdout.trim()], [0, "locked"], "Go writer after the TypeScript one closed");

  // Go holds: TypeScript is refused; kill -9 of the Go writer frees the agent at once.
  let locked;
  const lockedP = new Promise((res) => (locked = res));
  const holder = runProcess(go, ["hold", dir, "shared"], { ctx: t, onLine: (l) => l === "locked" && locked() });
  await lockedP;
  await assertRejects(() => open({ dir, agent: "shared" }), WriterBusyError, "TypeScript writer refused while Go holds");
  holder.proc.kill("SIGKILL");
  await holder;
  const b = await open({ dir, agent: "shared" }); // no lockTimeoutMs: nothing to wait out
  await b.append({ file: "x.json", merge: 1 });
  await b.close();

  // TypeScript killed by SIGKILL: Go takes over at once.
  let opened;
  const openedP = new Promise((res) => (opened = res));
  const tsHolder = runAgent("appender.mjs", [dir, "shared", "10"], { ctx: t, onLine: (l, p) => l.startsWith("acked") && (opened(), p.kill("SIGKILL")) });
  await openedP;
  await tsHolder;
  const g3 = await runProcess(go, ["hold", dir, "shared"], { ctx: t, input: "" });
  assertEqual([g3.code, g3.stdout.trim()], [0, "locked"], "Go writer right after a killed TypeScript writer");
});

async function assertRejects(fn, cls, what, check = () => true) {
  let err;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  if (!(err instanceof cls) || !check(err)) throw new Error(`${what}: want ${cls.name}, got ${err === undefined ? "no error" : `${err.name}: ${err.message}`}`);
}

test("Node and Bun writers of one agent exclude each other", async (t) => {
  // The other runtime: Bun from this package's devDependencies under Node,
  // node from PATH under Bun (or as set by STATEWARD_TEST_OTHER_RUNTIME).
  const isBun = typeof globalThis.Bun !== "undefined";
  const other = process.env.STATEWARD_TEST_OTHER_RUNTIME ?? (isBun ? "node" : path.join(here, "..", "node_modules", ".bin", "bun"));
  const dir = tmpDir(t);
  let locked;
  const lockedP = new Promise((res) => (locked = res));
  const holder = runProcess(other, [path.join(here, "agents", "holder.mjs"), dir, "x"], { ctx: t, onLine: (l) => l === "locked" && locked() });
  await lockedP;
  await assertRejects(() => open({ dir, agent: "x" }), WriterBusyError, `this runtime refused while ${other} holds`);
  holder.proc.kill("SIGKILL");
  await holder;
  const a = await open({ dir, agent: "x" });
  const mine = runProcess(other, [path.join(here, "agents", "holder.mjs"), dir, "x"], { ctx: t, input: "" });
  const r = await mine;
  assert(r.code !== 0 && /WriterBusyError|held by another writer/.test(r.stderr), `${other} refused while this runtime holds: ${r.code} ${r.stderr.slice(0, 300)}`);
  await a.close();
});

test("Python and TypeScript writers of one agent exclude each other", async (t) => {
  const dir = tmpDir(t);
  const env = { PYTHONPATH: path.join(repoRoot, "clients", "python", "src") };
  const py = [
    "-c",
    "import sys, stateward\ntry:\n    a = stateward.open(sys.argv[1], agent=sys.argv[2])\nexcept stateward.WriterBusy as e:\n    print('busy', e, flush=True); sys.exit(2)\nprint('locked', flush=True)\nsys.stdin.read()\na.close()",
    dir,
    "shared",
  ];
  // TypeScript holds: Python is refused.
  const a = await open({ dir, agent: "shared" });
  const refused = await runProcess("python3", py, { ctx: t, env, input: "" });
  assertEqual(refused.code, 2, `Python writer refused while TypeScript holds: ${refused.stdout} ${refused.stderr}`);
  await a.close();
  // Python holds: TypeScript is refused; kill -9 of Python frees the agent at once.
  let locked;
  const lockedP = new Promise((res) => (locked = res));
  const holder = runProcess("python3", py, { ctx: t, env, onLine: (l) => l === "locked" && locked() });
  await Promise.race([lockedP, holder.then((r) => Promise.reject(new Error(`python holder ended: ${r.code} ${r.stderr}`)))]);
  await assertRejects(() => open({ dir, agent: "shared" }), WriterBusyError, "TypeScript writer refused while Python holds");
  holder.proc.kill("SIGKILL");
  await holder;
  const b = await open({ dir, agent: "shared" });
  await b.close();
});

test("folder fsyncs: each new folder's parent, and the journal folder before a new segment is written", async (t) => {
  const { JournalWriter } = await import("../dist/journal.js");
  const { mkdirDurable } = await import("../dist/fsutil.js");
  const dir = tmpDir(t);
  const synced = [];
  const folder = path.join(dir, "journal", "a");
  await mkdirDurable(folder, async (p) => synced.push(p));
  assertEqual(synced, [dir, path.join(dir, "journal")], "parents fsynced after each mkdir");
  const w = new JournalWriter(folder);
  w.segmentSize = 100;
  const seen = [];
  w.syncDir = async (p) => {
    // The new segment exists and is still empty when its folder is fsynced.
    const segs = fs.readdirSync(p).filter((n) => n.endsWith(".jsonl")).sort();
    seen.push([p, segs[segs.length - 1], fs.statSync(path.join(p, segs[segs.length - 1])).size]);
  };
  await w.recover();
  for (let i = 0; i < 3; i++) await w.append({ file: "x.json", merge: "x".repeat(60) });
  assertEqual(seen, [1, 2, 3].map((s) => [folder, segmentName(s), 0]), "one folder fsync per segment, before its first write");
  // A failed folder fsync closes the writer: the tail is unknown.
  w.syncDir = async () => {
    throw Object.assign(new Error("injected EIO"), { code: "EIO" });
  };
  await assertRejects(() => w.append({ file: "x.json", merge: "x".repeat(60) }), Error, "failing fsync", (e) => e.code === "EIO");
  await assertRejects(() => w.append({ file: "x.json", merge: 1 }), ClosedError, "append after a failed fsync");
});

test("seq limit: Number.MAX_SAFE_INTEGER, refused past it, and a journal beyond it is not opened", async (t) => {
  const dir = tmpDir(t);
  const a = await open({ dir, agent: "a" });
  assertEqual((await a.append({ file: "x.json", merge: 1, seq: Number.MAX_SAFE_INTEGER })).seq, Number.MAX_SAFE_INTEGER, "the last safe seq");
  await assertRejects(() => a.append({ file: "x.json", merge: 1 }), Error, "past the limit", (e) => e.code === "ESEQLIMIT");
  await a.close();
  const b = await open({ dir, agent: "a" });
  assertEqual(b.lastSeq, Number.MAX_SAFE_INTEGER, "lastSeq read back exactly");
  await b.close();
  const folder = path.join(dir, "journal", "big");
  fs.mkdirSync(folder, { recursive: true });
  fs.writeFileSync(path.join(folder, "00000000000000000001.jsonl"), '{"seq":9007199254740993,"file":"x.json","merge":1}\n');
  await assertRejects(() => open({ dir, agent: "big" }), Error, "a seq beyond 2^53 in the journal", (e) => e.code === "ESEQLIMIT");
  const c = await open({ dir, agent: "big", lockTimeoutMs: 1000 }).catch(() => undefined);
  assert(c === undefined, "still refused");
  // The failed opens let the agent go.
  fs.rmSync(path.join(folder, "00000000000000000001.jsonl"));
  const d = await open({ dir, agent: "big" });
  await d.close();
});
