// An opencode agent, without opencode: loads the plugin and calls its
// task_claim tool directly on every task that looks open, in random order,
// until none is left. Prints a JSON summary.
// Usage: claimer.mjs DIR AGENT
import { StatewardPlugin } from "../../dist/index.js";
import { readDocument } from "@stateward/client";
import { gate } from "../../../typescript/test/agents/gate.mjs";

const [dir, agent] = process.argv.slice(2);
const hooks = await StatewardPlugin({ directory: dir, worktree: dir }, { dir, agent });
const ctx = { sessionID: "s", messageID: "m", agent: "build", directory: dir, worktree: dir, abort: new AbortController().signal, metadata() {}, async ask() {} };
await gate();
let claims = 0;
let taken = 0;
for (;;) {
  const { data } = await readDocument(dir, "tasks.json");
  const open = Object.keys(data.tasks).filter((id) => data.tasks[id].owner === null);
  if (open.length === 0) break;
  const id = open[Math.floor(Math.random() * open.length)];
  const r = JSON.parse(await hooks.tool.task_claim.execute({ id }, ctx));
  if (r.ok) {
    if (!r.counted) throw new Error(`claim not counted: ${JSON.stringify(r)}`);
    claims++;
  } else if (r.result.status === "conflict") taken++;
  else throw new Error(`claim: ${JSON.stringify(r)}`);
}
await hooks.dispose();
console.log(JSON.stringify({ agent, claims, conflicts: taken }));
