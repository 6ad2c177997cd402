// Runs the plugin's tests under the runtime that runs this script (node or bun).
import { run } from "../../typescript/test/harness.mjs";
import "./plugin.test.mjs";

await run(process.argv[2]);
