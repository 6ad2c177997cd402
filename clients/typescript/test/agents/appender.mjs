// Appends large intents (an inc of /n padded to PAD bytes) as fast as it
// can, printing "acked SEQ" after each append resolves; killed by the test.
// Usage: appender.mjs DIR AGENT PAD
import { open } from "../../dist/index.js";

const [dir, agentName, pad] = process.argv.slice(2);
const agent = await open({ dir, agent: agentName });
console.log(`open ${agent.lastSeq} ${agent.tornBytesCut}`);
for (;;) {
  const { seq } = await agent.append({
    file: "kill.json",
    patch: [
      { op: "inc", path: "/n", value: 1 },
      { op: "add", path: "/pad", value: "x".repeat(Number(pad)) },
      { op: "remove", path: "/pad" },
    ],
  });
  console.log(`acked ${seq}`);
}
