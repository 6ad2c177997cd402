// Opens the writer of an agent, prints "locked", and holds it until stdin
// closes (or the process is killed).
// Usage: holder.mjs DIR AGENT
import { open } from "../../dist/index.js";

const [dir, agentName] = process.argv.slice(2);
const agent = await open({ dir, agent: agentName });
console.log("locked");
process.stdin.resume();
process.stdin.on("end", async () => {
  await agent.close();
  process.exit(0);
});
