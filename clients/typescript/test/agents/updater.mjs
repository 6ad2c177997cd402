// Read-modify-write under contention: K updates of counter.json's /n, each
// writing n+1 from the value read (no inc), through Agent.update.
// Usage: updater.mjs DIR AGENT K
import { open } from "../../dist/index.js";
import { gate } from "./gate.mjs";

const [dir, agentName, k] = process.argv.slice(2);
const agent = await open({ dir, agent: agentName, lockTimeoutMs: 5000 });
await gate();
let intents = 0;
for (let i = 0; i < Number(k); i++) {
  const r = await agent.update(
    "counter.json",
    (data) => {
      intents++;
      return [{ op: "replace", path: "/n", value: data.n + 1 }];
    },
    { maxAttempts: 1000, timeoutMs: 120_000 },
  );
  if (!r || r.status !== "applied") throw new Error(`update: ${JSON.stringify(r)}`);
}
await agent.close();
console.log(JSON.stringify({ agent: agentName, updates: Number(k), intents }));
