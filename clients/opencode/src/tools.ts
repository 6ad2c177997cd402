// @stateward/opencode: the task-board tools of an opencode plugin, backed by
// stateward intents instead of a .lock file with backoff and stale-lock
// cleanup. Each tool is one of the recipes of docs/recipes.md: a change that
// commutes (create, count, remember), or a conditional change whose
// precondition the watcher checks at commit time (claim, move, spawn).

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { tool, type ToolContext } from "@opencode-ai/plugin";
import { open, type Agent, type PatchOp, type Result } from "@stateward/client";

/** Options of the plugin (opencode.json: ["@stateward/opencode", {...}]). */
export interface StatewardOptions {
  /** The state directory. Default: $STATEWARD_DIR, else <project>/.opencode/state. */
  dir?: string;
  /** The agent name all tools write as. Default: from the session, "<agent>-<sessionID>". */
  agent?: string;
  /** Start `stateward watch --dir DIR` at start-up (a second watcher exits at once). Default false. */
  startWatcher?: boolean;
  /** The stateward command. Default "stateward" (on PATH). */
  statewardBin?: string;
  /** How long a tool waits for its result, in ms. Default 30000. */
  timeoutMs?: number;
}

/** Task statuses and the one status each move may come from (recipe 3). */
export const TRANSITIONS: Record<string, string[]> = {
  in_progress: ["claimed"],
  done: ["in_progress"],
  open: ["claimed", "in_progress"], // a release: the owner gives the task back
};

/** An agent name from any text: [A-Za-z0-9._-], alphanumeric first, no "..", at most 64. */
export function agentNameFrom(text: string): string {
  let s = text.replace(/[^A-Za-z0-9._-]/g, "-").replace(/\.\.+/g, ".");
  if (!/^[A-Za-z0-9]/.test(s)) s = "a" + s;
  return s.slice(0, 64);
}

/** A JSON Pointer token for a key. */
function ptr(key: string): string {
  return key.replace(/~/g, "~0").replace(/\//g, "~1");
}

/** A task id that no other agent and no earlier call makes: the agent's name and 48 random bits. */
function newId(agent: string): string {
  return `${agent.slice(0, 48)}-${randomBytes(6).toString("hex")}`;
}

function out(v: unknown): string {
  return JSON.stringify(v);
}

/**
 * The tools, bound to a state directory. The plugin hands them to opencode;
 * tests and scripts may call their execute functions directly.
 */
export function createTools(opts: { dir: string; agent?: string; timeoutMs?: number }) {
  const dir = path.resolve(opts.dir);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const agents = new Map<string, Promise<Agent>>(); // one writer per agent name
  const ensured = new Set<string>(); // documents and metrics known to exist

  function nameOf(ctx: ToolContext | undefined): string {
    if (opts.agent) return opts.agent;
    if (!ctx) throw new Error("stateward: no agent name: set the plugin's agent option");
    return agentNameFrom(`${ctx.agent}-${ctx.sessionID}`);
  }

  function agentFor(ctx: ToolContext | undefined): Promise<Agent> {
    const name = nameOf(ctx);
    let a = agents.get(name);
    if (!a) {
      a = open({ dir, agent: name, lockTimeoutMs: 2000 });
      a.catch(() => agents.delete(name));
      agents.set(name, a);
    }
    return a;
  }

  async function submit(a: Agent, ctx: ToolContext | undefined, intent: Parameters<Agent["submit"]>[0]): Promise<Result> {
    return a.submit(intent, { timeoutMs, signal: ctx?.abort });
  }

  /** Creates a document with value unless it exists (if_version 0: a conflict means it is there). */
  async function ensure(a: Agent, ctx: ToolContext | undefined, file: string, value: unknown): Promise<void> {
    if (ensured.has(file)) return;
    const r = await submit(a, ctx, { file, patch: [{ op: "add", path: "", value: value as never }], ifVersion: 0 });
    if (r.status === "rejected") throw new Error(`stateward: create ${file}: ${r.error}`);
    ensured.add(file);
  }

  /** Adds by to the counter metric of this agent in metrics.json (recipe 5). */
  async function count(a: Agent, ctx: ToolContext | undefined, metric: string, by: number, id?: string): Promise<Result> {
    const key = `metrics.json#${metric}`;
    if (!ensured.has(key)) {
      // A merge of {} creates the metric's object (and metrics.json) if missing, and changes nothing otherwise.
      const m = await submit(a, ctx, { file: "metrics.json", merge: { [metric]: {} } });
      if (m.status !== "applied") throw new Error(`stateward: create metric ${metric}: ${m.error}`);
      ensured.add(key);
    }
    return submit(a, ctx, { file: "metrics.json", patch: [{ op: "inc", path: `/${ptr(metric)}/${ptr(a.agent)}`, value: by }], id });
  }

  async function ownerOf(a: Agent, id: string): Promise<{ owner: unknown; status: unknown } | undefined> {
    const { data } = await a.read("tasks.json");
    const t = (data as { tasks?: Record<string, { owner: unknown; status: unknown }> } | null)?.tasks?.[id];
    return t ? { owner: t.owner, status: t.status } : undefined;
  }

  const s = tool.schema;
  const tools = {
    task_create: tool({
      description: "Create an open task on the shared board (tasks.json); returns its id. Ids are unique by construction: no counter, no race.",
      args: {
        title: s.string().describe("what the task is"),
        description: s.string().optional().describe("details"),
      },
      async execute(args, ctx) {
        const a = await agentFor(ctx);
        await ensure(a, ctx, "tasks.json", { tasks: {} });
        const id = newId(a.agent);
        const task: Record<string, unknown> = { title: args.title, status: "open", owner: null, parent: null, subtasks: [] };
        if (args.description !== undefined) task.description = args.description;
        const r = await submit(a, ctx, { file: "tasks.json", patch: [{ op: "add", path: `/tasks/${ptr(id)}`, value: task as never }], id: `create-${id}` });
        return out({ ok: r.status === "applied", id, result: r });
      },
    }),

    task_claim: tool({
      description: "Claim an open task nobody owns. Exactly one agent wins a task; the others are told who has it. Counts the claim in metrics.json.",
      args: { id: s.string().describe("task id") },
      async execute(args, ctx) {
        const a = await agentFor(ctx);
        const t = `/tasks/${ptr(args.id)}`;
        const r = await submit(a, ctx, {
          file: "tasks.json",
          patch: [
            { op: "test", path: `${t}/owner`, value: null },
            { op: "test", path: `${t}/status`, value: "open" },
            { op: "replace", path: `${t}/owner`, value: a.agent },
            { op: "replace", path: `${t}/status`, value: "claimed" },
          ],
        });
        if (r.status !== "applied") {
          const now = await ownerOf(a, args.id);
          return out({ ok: false, id: args.id, reason: now ? `taken: owner ${JSON.stringify(now.owner)}, status ${JSON.stringify(now.status)}` : "no such task", result: r });
        }
        const m = await count(a, ctx, "claims", 1, `count-claim-${args.id}`);
        return out({ ok: true, id: args.id, owner: a.agent, result: r, counted: m.status === "applied" });
      },
    }),

    task_update: tool({
      description: "Move a task you own along the allowed transitions: claimed -> in_progress -> done, or back to open (release).",
      args: {
        id: s.string().describe("task id"),
        status: s.enum(["in_progress", "done", "open"]).describe("the new status"),
      },
      async execute(args, ctx) {
        const a = await agentFor(ctx);
        const from = TRANSITIONS[args.status];
        if (!from) return out({ ok: false, id: args.id, reason: `no transition to ${args.status}` });
        const t = `/tasks/${ptr(args.id)}`;
        // A release may come from two statuses: test the one read (at most a few tries if it moves meanwhile).
        for (let attempt = 0; attempt < 3; attempt++) {
          const now = await ownerOf(a, args.id);
          if (!now) return out({ ok: false, id: args.id, reason: "no such task" });
          if (now.owner !== a.agent) return out({ ok: false, id: args.id, reason: `not yours: owner ${JSON.stringify(now.owner)}` });
          if (!from.includes(now.status as string)) return out({ ok: false, id: args.id, reason: `cannot move from ${JSON.stringify(now.status)} to ${args.status} (allowed from ${from.join(", ")})` });
          const patch: PatchOp[] = [
            { op: "test", path: `${t}/owner`, value: a.agent },
            { op: "test", path: `${t}/status`, value: now.status as string },
            { op: "replace", path: `${t}/status`, value: args.status },
          ];
          if (args.status === "open") patch.push({ op: "replace", path: `${t}/owner`, value: null });
          const r = await submit(a, ctx, { file: "tasks.json", patch });
          if (r.status === "applied") return out({ ok: true, id: args.id, status: args.status, result: r });
          if (r.status === "rejected") return out({ ok: false, id: args.id, reason: r.error, result: r });
        }
        return out({ ok: false, id: args.id, reason: "the task kept changing; read it and try again" });
      },
    }),

    task_spawn: tool({
      description: "Create an open subtask of a task in progress, linked both ways (the subtask names its parent, the parent lists it).",
      args: {
        parent: s.string().describe("id of the parent task, which must be in progress"),
        title: s.string().describe("what the subtask is"),
      },
      async execute(args, ctx) {
        const a = await agentFor(ctx);
        const id = newId(a.agent);
        const p = `/tasks/${ptr(args.parent)}`;
        const r = await submit(a, ctx, {
          file: "tasks.json",
          patch: [
            { op: "test", path: `${p}/status`, value: "in_progress" },
            { op: "add", path: `/tasks/${ptr(id)}`, value: { title: args.title, status: "open", owner: null, parent: args.parent, subtasks: [] } },
            { op: "add", path: `${p}/subtasks/-`, value: id },
          ],
          id: `spawn-${id}`,
        });
        return out(r.status === "applied" ? { ok: true, id, parent: args.parent, result: r } : { ok: false, parent: args.parent, reason: "the parent is not in progress", result: r });
      },
    }),

    memory_update: tool({
      description: "Set one key of the shared memory (state.json) to a JSON value; null deletes it. Writers of other keys are never affected.",
      args: {
        key: s.string().describe("the key"),
        value: s.string().describe('the value as JSON text: "\\"green\\"", "42", "{\\"a\\":1}"; "null" deletes the key'),
      },
      async execute(args, ctx) {
        const a = await agentFor(ctx);
        let value: unknown;
        try {
          value = JSON.parse(args.value);
        } catch {
          value = args.value; // plain text: kept as a string
        }
        let r: Result;
        if (value === null) {
          r = await submit(a, ctx, { file: "state.json", merge: { [args.key]: null } });
        } else {
          // add replaces the key's value as a whole (a merge would merge objects into it).
          await ensure(a, ctx, "state.json", {});
          r = await submit(a, ctx, { file: "state.json", patch: [{ op: "add", path: `/${ptr(args.key)}`, value: value as never }] });
        }
        return out({ ok: r.status === "applied", key: args.key, result: r });
      },
    }),

    metrics_record: tool({
      description: "Add to one of this agent's counters in metrics.json (inc: never conflicts, never lost).",
      args: {
        metric: s.string().describe("counter name, e.g. tasks_completed"),
        by: s.number().optional().describe("amount to add (default 1)"),
        id: s.string().optional().describe("idempotency key: a repeat with the same id is not counted again"),
      },
      async execute(args, ctx) {
        const a = await agentFor(ctx);
        const r = await count(a, ctx, args.metric, args.by ?? 1, args.id);
        return out({ ok: r.status === "applied", metric: args.metric, agent: a.agent, result: r });
      },
    }),
  };

  async function dispose(): Promise<void> {
    const all = [...agents.values()];
    agents.clear();
    await Promise.all(all.map(async (p) => (await p.catch(() => undefined))?.close()));
  }

  return { tools, dispose, dir };
}

/** Starts `stateward watch --dir dir`, detached; a watcher already running makes it exit at once. */
export function startWatcher(bin: string, dir: string): void {
  const p = spawn(bin, ["watch", "--dir", dir], { detached: true, stdio: "ignore" });
  p.on("error", () => {}); // no binary: the tools wait and time out, saying so
  p.unref();
}
