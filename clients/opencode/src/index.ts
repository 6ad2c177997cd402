// @stateward/opencode: the opencode plugin. This entry exports the plugin
// function and nothing else, because opencode calls every export of a plugin
// module as a plugin; the tools themselves, for scripts and tests, are in
// "@stateward/opencode/tools".

import path from "node:path";
import type { Plugin, PluginInput } from "@opencode-ai/plugin";
import { createTools, startWatcher, type StatewardOptions } from "./tools.js";

export type { StatewardOptions } from "./tools.js";

/**
 * The stateward plugin: the tools task_create, task_claim, task_update,
 * task_spawn, memory_update and metrics_record on a state directory;
 * dispose closes the clients.
 */
export const StatewardPlugin: Plugin = async (input: PluginInput, options?: Record<string, unknown>) => {
  const o = (options ?? {}) as StatewardOptions;
  const dir = o.dir ?? process.env.STATEWARD_DIR ?? path.join(input.directory, ".opencode", "state");
  if (o.startWatcher) startWatcher(o.statewardBin ?? "stateward", dir);
  const { tools, dispose } = createTools({ dir, agent: o.agent, timeoutMs: o.timeoutMs });
  return { tool: tools, dispose };
};
