#!/usr/bin/env node
// An MLGym agent in JavaScript: it joins a run (`mlgym run --external NAME ...`) through the bus
// protocol only (docs/protocol.md, "Team messages"; the bus client is examples/js/bus.mjs) and
// plays one fixed strategy: it writes STRATEGY over the submission file with the ACI editor,
// validates, and submits. It publishes an acked agent_step and an agent_status per turn, so the
// supervisor accounts for it and its trajectory is exported like any other agent's; every
// agent_status declares what it is (`model`, `implementation`), which the run's result credits.
//
//   node agents/examples/agent.mjs --bus ipc:///path/run/bus --name agent --strategy-file s.py \
//        [--model fixed-strategy]
//
// Prints one JSON line per turn and a last line {"agent", "exit_status", "scores"}.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { BusClient, endpointsOf } from "../../examples/js/bus.mjs";

const { values: args } = parseArgs({
  options: {
    bus: { type: "string" },
    name: { type: "string", default: "agent" },
    role: { type: "string", default: "single" },
    "strategy-file": { type: "string" },
    model: { type: "string", default: "fixed-strategy" },
    "timeout-ms": { type: "string", default: "600000" },
  },
});
const name = args.name;
// what this member is, declared in every agent_status (docs/client.md, "Joining a run")
const declared = { model: args.model, implementation: `javascript/agent.mjs (node ${process.version})` };
const timeoutMs = Number(args["timeout-ms"]);
const strategy = readFileSync(args["strategy-file"], "utf8");

// 1. Join: the latest run_info (history first) says which session and where the env server is.
const bus = new BusClient(endpointsOf(args.bus), { sender: name, timeoutMs: 30000 });
await bus.connect();
const { envelopes } = await bus.history({ prefixes: ["run/info"] });
const infos = envelopes.filter((e) => e.body.kind === "run_info");
if (infos.length === 0) throw new Error("no run_info on this bus: is `mlgym run` serving it?");
const info = infos.reduce((a, b) => (b.body.generation > a.body.generation ? b : a)).body;
bus.run = info.run;
// The environment server is its own RPC endpoint: a second client whose rpc socket points there.
const env = new BusClient({ ...endpointsOf(args.bus), rpc: info.env }, { sender: name, run: info.run, timeoutMs });
await env.connect();
await bus.publish(`status/${name}`, { kind: "agent_status", agent: name, role: args.role, state: "starting",
                                      ...declared });

// 2. Stop when told (control addressed to us or everyone, or the run's end). An order of an
// earlier generation than the run_info we joined with is an old one (a resumed run's log holds
// the `stop` that interrupted it): history, not an order.
let stopped = null;
(async () => {
  for await (const e of bus.subscribe(["run/"], { fromSeq: 1 })) {
    const b = e.body;
    if ((b.kind === "control" && ["stop", "submit"].includes(b.action) && ["", name, args.role].includes(b.target ?? "")
         && (b.generation ?? 0) >= info.generation)
        || b.kind === "run_end") {
      stopped = b.kind === "run_end" ? `run ended (${b.exit_status})` : `${b.action}: ${b.reason ?? ""}`;
    }
  }
})().catch(() => {});

let step = 0;
async function act(command, thought) {
  if (stopped) return null;
  const t0 = performance.now();
  const obs = await env.request("env", { kind: "act", session: info.session,
                                         token: info.session_token, command, agent: name });
  step += 1;
  const seconds = (performance.now() - t0) / 1000;
  const response = `DISCUSSION\n${thought}\n\n\`\`\`\n${command}\n\`\`\`\n`;
  const messages = [
    ...(step === 1 ? [{ role: "system", content: "A JavaScript agent with a fixed plan." },
                      { role: "user", content: info.observation }] : []),
    { role: "assistant", content: response },
    { role: "user", content: obs.output, _obs: true },
  ];
  const record = {
    kind: "agent_step", agent: name, role: args.role, step, action: command, observation: obs.output,
    response, thought, messages, execution_time: seconds, exit_code: obs.exit_code, env_step: obs.step,
    scores: obs.scores ?? {}, done: Boolean(obs.done),
    state: { open_file: obs.info?.open_file ?? "", cwd: obs.info?.cwd ?? "" },
  };
  await bus.publishAcked(`agents/${name}/step`, record);
  await bus.publish(`status/${name}`, { kind: "agent_status", agent: name, role: args.role, state: "working",
                                        step, detail: command.split("\n")[0], ...declared });
  console.log(JSON.stringify({ step, command: command.split("\n")[0], exit_code: obs.exit_code, scores: obs.scores ?? {} }));
  return obs;
}

// 3. The plan: open the file (to learn its length), replace it, validate, submit.
let exitStatus = "stopped";
let scores = {};
const submission = "strategy.py";
const opened = await act(`open "${submission}"`, "I look at the current strategy.");
const total = Number(/\((\d+) lines total\)/.exec(opened?.output ?? "")?.[1] ?? 1);
const body = strategy.endsWith("\n") ? strategy : `${strategy}\n`;
await act(`edit 1:${total}\n${body}end_of_edit`, "I replace it with my strategy.");
const validated = await act("validate", "I validate it.");
if (validated && Object.keys(validated.scores ?? {}).length) {
  const done = await act("submit", `It scored ${JSON.stringify(validated.scores)}; I submit.`);
  if (done) {
    exitStatus = done.info?.exit_status || "submitted";
    scores = done.scores ?? {};
  }
}
if (stopped) exitStatus = `stopped (${stopped})`;
await bus.publishAcked(`status/${name}`, { kind: "agent_status", agent: name, role: args.role, state: "stopped",
                                           step, detail: exitStatus, ...declared });
console.log(JSON.stringify({ agent: name, exit_status: exitStatus, scores }));
env.close();
bus.close();
process.exit(0);
