// Runs the test files under the runtime that runs this script (node or bun):
//   node test/run.mjs [FILTER]      bun test/run.mjs [FILTER]
import { run } from "./harness.mjs";
import "./client.test.mjs";

const extra = process.env.STATEWARD_TEST_FILES;
if (extra) for (const f of extra.split(",")) await import(f);
await run(process.argv[2]);
