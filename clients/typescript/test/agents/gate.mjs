// A start line for racing agents: with STATEWARD_TEST_GATE set, print
// "ready" and wait until that file exists, so that processes which start at
// different speeds (Go at once, Node and Bun later) really race.
import fs from "node:fs";

export async function gate() {
  const p = process.env.STATEWARD_TEST_GATE;
  if (!p) return;
  console.log("ready");
  while (!fs.existsSync(p)) await new Promise((r) => setTimeout(r, 5));
}
