// A TypeScript agent for the mixed-language test, through the
// @stateward/client package built in clients/typescript (dist/):
//
//   node ts_agent.mjs claim CLIENT_INDEX_JS DIR AGENT   claim open tasks of tasks.json as
//                                                       agent_proc.py claim does; same summary
//   node ts_agent.mjs hold  CLIENT_INDEX_JS DIR AGENT   hold the agent name until stdin closes
//   node ts_agent.mjs try   CLIENT_INDEX_JS DIR AGENT   open once: exit 0, or 3 on WriterBusyError
import { pathToFileURL } from "node:url";

const [mode, clientPath, dir, name] = process.argv.slice(2);
const { open, WriterBusyError } = await import(pathToFileURL(clientPath).href);
if (mode === "try") {
  try {
    const a = await open({ dir, agent: name });
    await a.close();
    process.exit(0);
  } catch (e) {
    if (e instanceof WriterBusyError) {
      console.error(String(e.message));
      process.exit(3);
    }
    throw e;
  }
}
const agent = await open({ dir, agent: name });
if (mode === "hold") {
  console.log("held");
  process.stdin.resume();
  await new Promise((resolve) => process.stdin.on("end", resolve));
  await agent.close();
  process.exit(0);
}
if (mode !== "claim") throw new Error(`unknown mode ${mode}`);
const s = { agent: name, claimed: [], conflicts: 0, intents: 0, results: [] };
const submit = async (file, patch) => {
  const { seq } = await agent.append({ file, patch });
  s.intents++;
  const r = await agent.wait(seq, { timeoutMs: 60_000 });
  s.results.push(r.seq);
  return r;
};
for (;;) {
  const { data } = await agent.read("tasks.json");
  const open_ = Object.keys(data.tasks).filter((t) => data.tasks[t].status === "open").sort();
  if (open_.length === 0) break;
  const t = open_[Math.floor(Math.random() * open_.length)];
  const r = await submit("tasks.json", [
    { op: "test", path: `/tasks/${t}/status`, value: "open" },
    { op: "replace", path: `/tasks/${t}/status`, value: "claimed" },
    { op: "replace", path: `/tasks/${t}/assignee`, value: name },
  ]);
  if (r.status === "conflict") {
    s.conflicts++;
    continue;
  }
  if (r.status !== "applied") throw new Error(`claim ${t}: ${JSON.stringify(r)}`);
  s.claimed.push(t);
  const m = await submit("metrics.json", [{ op: "inc", path: `/claims/${name}`, value: 1 }]);
  if (m.status !== "applied") throw new Error(`count claim: ${JSON.stringify(m)}`);
}
await agent.close();
console.log(JSON.stringify(s));
