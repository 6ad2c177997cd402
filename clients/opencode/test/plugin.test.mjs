import fs from "node:fs";
import path from "node:path";
import { open } from "@stateward/client";
import { StatewardPlugin } from "../dist/index.js";
import { createTools, agentNameFrom } from "../dist/tools.js";
import { test, assert, assertEqual, waitFor, tmpDir, startWatcher, runProcess, statewardBin, checkOneResultPerIntent, startGate, lastLine } from "../../typescript/test/harness.mjs";

const here = path.dirname(new URL(import.meta.url).pathname);

function ctxFor(dir, sessionID = "ses_1", agent = "build") {
  return { sessionID, messageID: "m", agent, directory: dir, worktree: dir, abort: new AbortController().signal, metadata() {}, async ask() {} };
}

async function call(hooks, name, args, ctx) {
  return JSON.parse(await hooks.tool[name].execute(args, ctx));
}

test("plugin entry exports only the plugin function (opencode calls every export)", async () => {
  const m = await import("../dist/index.js");
  assertEqual(Object.keys(m), ["StatewardPlugin"], "exports");
  assertEqual(agentNameFrom("build-ses_01J/x y"), "build-ses_01J-x-y", "agent name from a session");
  assertEqual(agentNameFrom("..x"), "a.x", "no leading dot, no ..");
});

test("tools: create, claim, transitions, spawn, memory, metrics; dispose frees the agent", async (t) => {
  const dir = tmpDir(t);
  startWatcher(t, dir);
  const alice = await StatewardPlugin({ directory: dir, worktree: dir }, { dir, agent: "alice" });
  const bob = await StatewardPlugin({ directory: dir, worktree: dir }, { dir, agent: "bob" });
  t.cleanup(() => alice.dispose());
  t.cleanup(() => bob.dispose());
  const ctx = ctxFor(dir);
  const c1 = await call(alice, "task_create", { title: "Write the parser" }, ctx);
  assert(c1.ok && c1.id.startsWith("alice-"), `create: ${JSON.stringify(c1)}`);
  const c2 = await call(bob, "task_create", { title: "Tests", description: "all of them" }, ctx);
  assert(c2.ok && c2.id !== c1.id, "second create, another id");

  assert((await call(alice, "task_claim", { id: c1.id }, ctx)).ok, "alice claims");
  const lost = await call(bob, "task_claim", { id: c1.id }, ctx);
  assert(!lost.ok && lost.reason.includes('"alice"'), `bob told who has it: ${JSON.stringify(lost)}`);
  assert(!(await call(bob, "task_claim", { id: "nope" }, ctx)).ok, "no such task");

  const skip = await call(alice, "task_update", { id: c1.id, status: "done" }, ctx);
  assert(!skip.ok && /cannot move/.test(skip.reason), `claimed -> done refused: ${JSON.stringify(skip)}`);
  assert(!(await call(bob, "task_update", { id: c1.id, status: "in_progress" }, ctx)).ok, "not bob's task");
  assert((await call(alice, "task_update", { id: c1.id, status: "in_progress" }, ctx)).ok, "claimed -> in_progress");

  const sub = await call(bob, "task_spawn", { parent: c1.id, title: "Tokens" }, ctx);
  assert(sub.ok, `spawn under a task in progress: ${JSON.stringify(sub)}`);
  assert(!(await call(bob, "task_spawn", { parent: c2.id, title: "x" }, ctx)).ok, "spawn under an open task refused");
  assert((await call(alice, "task_update", { id: c1.id, status: "done" }, ctx)).ok, "in_progress -> done");
  assert(!(await call(bob, "task_spawn", { parent: c1.id, title: "late" }, ctx)).ok, "spawn under a done task refused");

  assert((await call(bob, "task_claim", { id: c2.id }, ctx)).ok, "bob claims");
  assert((await call(bob, "task_update", { id: c2.id, status: "open" }, ctx)).ok, "release");

  assert((await call(alice, "memory_update", { key: "build", value: '"green"' }, ctx)).ok, "memory set");
  assert((await call(bob, "memory_update", { key: "plan", value: '{"steps":[1,2]}' }, ctx)).ok, "memory set, other key");
  assert((await call(bob, "memory_update", { key: "plan", value: '{"steps":[3]}' }, ctx)).ok, "memory replaced");
  assert((await call(alice, "memory_update", { key: "gone", value: "null" }, ctx)).ok, "memory delete of a missing key");

  assert((await call(alice, "metrics_record", { metric: "tests_run", by: 5 }, ctx)).ok, "metric");
  assert((await call(alice, "metrics_record", { metric: "tests_run", id: "once" }, ctx)).ok, "metric with id");
  const again = await call(alice, "metrics_record", { metric: "tests_run", id: "once" }, ctx);
  assert(again.ok && again.result.retry === true, "same id: a retry, not counted twice");

  const reader = await open({ dir, agent: "reader" });
  const { data: board } = await reader.read("tasks.json");
  const { data: state } = await reader.read("state.json");
  const { data: metrics } = await reader.read("metrics.json");
  await reader.close();
  assertEqual([board.tasks[c1.id].status, board.tasks[c1.id].owner, board.tasks[c1.id].subtasks], ["done", "alice", [sub.id]], "parent");
  assertEqual([board.tasks[sub.id].parent, board.tasks[sub.id].status], [c1.id, "open"], "subtask linked to its parent");
  assertEqual([board.tasks[c2.id].status, board.tasks[c2.id].owner, board.tasks[c2.id].description], ["open", null, "all of them"], "released");
  assertEqual(state, { build: "green", plan: { steps: [3] } }, "state.json");
  assertEqual(metrics, { claims: { alice: 1, bob: 1 }, tests_run: { alice: 6 } }, "metrics.json");

  // dispose closes the client: the agent name is free at once.
  await alice.dispose();
  const a = await open({ dir, agent: "alice" });
  await a.close();

  // Without the agent option the name comes from the session.
  const anon = createTools({ dir });
  t.cleanup(() => anon.dispose());
  const r = JSON.parse(await anon.tools.task_create.execute({ title: "x" }, ctxFor(dir, "ses_42", "plan")));
  assert(r.ok && r.id.startsWith("plan-ses_42-"), `session agent: ${r.id}`);
});

test("8 processes race to claim 100 tasks through the plugin's tools", async (t) => {
  const dir = tmpDir(t);
  startWatcher(t, dir);
  // 4 creators make the board at once (unique ids: no counter race).
  const creators = await Promise.all(["c1", "c2", "c3", "c4"].map((agent) => StatewardPlugin({ directory: dir, worktree: dir }, { dir, agent })));
  const ids = (await Promise.all(creators.map((h, i) => Promise.all(Array.from({ length: 25 }, (_, j) => call(h, "task_create", { title: `task ${i}.${j}` }, ctxFor(dir)))))))
    .flat()
    .map((r) => {
      assert(r.ok, `create: ${JSON.stringify(r)}`);
      return r.id;
    });
  await Promise.all(creators.map((h) => h.dispose()));
  assertEqual(new Set(ids).size, 100, "100 distinct ids");
  const gate = startGate(t, 8);
  const all = Promise.all(
    Array.from({ length: 8 }, (_, i) => runProcess(process.execPath, [path.join(here, "agents", "claimer.mjs"), dir, `agent-${i}`], { ctx: t, env: gate.env, onLine: gate.onLine })),
  );
  await gate.release(all);
  const t0 = Date.now();
  const runs = await all;
  const ms = Date.now() - t0;
  for (const r of runs) assert(r.code === 0, `claimer exited ${r.code}: ${r.stderr}`);
  const summaries = runs.map((r) => JSON.parse(lastLine(r.stdout)));
  const reader = await open({ dir, agent: "reader" });
  const { data: board } = await reader.read("tasks.json");
  const { data: metrics } = await reader.read("metrics.json");
  await reader.close();
  assertEqual(Object.keys(board.tasks).length, 100, "tasks on the board");
  const owned = {};
  for (const [id, task] of Object.entries(board.tasks)) {
    assert(task.status === "claimed" && task.owner, `task ${id} claimed`);
    owned[task.owner] = (owned[task.owner] ?? 0) + 1;
  }
  let sum = 0;
  for (const s of summaries) {
    assertEqual(owned[s.agent] ?? 0, s.claims, `${s.agent}: owned = claims`);
    assertEqual(metrics.claims[s.agent] ?? 0, s.claims, `${s.agent}: counter = claims`);
    sum += s.claims;
  }
  assertEqual(sum, 100, "every task claimed exactly once");
  const intents = checkOneResultPerIntent(dir);
  t.log(`FIGURE plugin race: 8 processes, 100 tasks (created by 4 agents at once), claims ${summaries.map((s) => s.claims).join("+")} = 100, conflicts ${summaries.reduce((a, s) => a + s.conflicts, 0)}, double claims 0, intents ${intents} (each with exactly one result), ${ms} ms`);
});

test("startWatcher: racing starts leave one watcher, and the tools work", async (t) => {
  const dir = tmpDir(t);
  const bin = statewardBin();
  const hooks = await Promise.all(
    ["w1", "w2", "w3"].map((agent) => StatewardPlugin({ directory: dir, worktree: dir }, { dir, agent, startWatcher: true, statewardBin: bin, timeoutMs: 30_000 })),
  );
  t.cleanup(async () => {
    await Promise.all(hooks.map((h) => h.dispose()));
    const pid = Number(fs.readFileSync(path.join(dir, ".stateward", "lock"), "utf8").trim());
    if (pid > 0) {
      process.kill(pid, "SIGTERM");
      await waitFor(() => {
        try {
          process.kill(pid, 0);
          return false;
        } catch {
          return true;
        }
      }, { what: "the watcher to stop" });
    }
  });
  const rs = await Promise.all(hooks.map((h) => call(h, "metrics_record", { metric: "starts" }, ctxFor(dir))));
  assert(rs.every((r) => r.ok), `tools work: ${JSON.stringify(rs)}`);
  const st = await runProcess(bin, ["status", "--dir", dir], {});
  assert(/running/.test(st.stdout), `one watcher running: ${st.stdout}`);
});
