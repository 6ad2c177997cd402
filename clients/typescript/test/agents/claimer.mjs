// A task-board agent: claims open tasks of tasks.json until none is left,
// counting each claim in metrics.json. Prints a JSON summary.
// Usage: claimer.mjs DIR AGENT
import { open } from "../../dist/index.js";
import { gate } from "./gate.mjs";

const [dir, agentName] = process.argv.slice(2);
const agent = await open({ dir, agent: agentName, lockTimeoutMs: 5000 });
await gate();
let claims = 0;
let conflicts = 0;
let intents = 0;
for (;;) {
  const { data } = await agent.read("tasks.json");
  const open = Object.keys(data.tasks).filter((id) => data.tasks[id].owner === null);
  if (open.length === 0) break;
  const id = open[Math.floor(Math.random() * open.length)];
  const r = await agent.submit(
    {
      file: "tasks.json",
      patch: [
        { op: "test", path: `/tasks/${id}/owner`, value: null },
        { op: "replace", path: `/tasks/${id}/owner`, value: agentName },
        { op: "replace", path: `/tasks/${id}/status`, value: "claimed" },
      ],
    },
    { timeoutMs: 60_000 },
  );
  intents++;
  if (r.status === "applied") {
    claims++;
    const m = await agent.submit({ file: "metrics.json", patch: [{ op: "inc", path: `/claims/${agentName}`, value: 1 }] }, { timeoutMs: 60_000 });
    intents++;
    if (m.status !== "applied") throw new Error(`inc: ${JSON.stringify(m)}`);
  } else if (r.status === "conflict") {
    conflicts++;
  } else {
    throw new Error(`claim: ${JSON.stringify(r)}`);
  }
}
await agent.close();
console.log(JSON.stringify({ agent: agentName, claims, conflicts, intents }));
