#!/usr/bin/env node
// Demo of bus.mjs against a running broker (`mlgym bus serve --tcp 127.0.0.1:5550 --run-dir R`):
//   node demo.mjs --url tcp://127.0.0.1:5550 --publish js/notes --count 3 \
//                 --subscribe py/ --from-seq 1 --expect 5
// Prints one JSON object per line: pong, ready, published, acked, message (with seq), history,
// done. Exits 1 with an "error" line if something fails or `--expect` messages do not arrive.
// `--team-kind x_<team>_<name>` also publishes, acked, a body of that kind (one the broker does
// not know) on `--team-topic` and prints `team_acked` with its seq.
import { parseArgs } from "node:util";
import { BusClient, endpointsOf } from "./bus.mjs";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    pub: { type: "string" },
    sub: { type: "string" },
    rpc: { type: "string" },
    sender: { type: "string", default: "js-client" },
    publish: { type: "string", default: "js/notes" },
    count: { type: "string", default: "3" },
    subscribe: { type: "string", multiple: true, default: [] },
    "from-seq": { type: "string" },
    expect: { type: "string", default: "0" },
    timeout: { type: "string", default: "20" },
    "team-kind": { type: "string" },
    "team-topic": { type: "string", default: "team/js" },
  },
});

function print(obj) {
  // bytes as base64 (`this[key]` is the value before Buffer's own toJSON runs)
  const replacer = function (key, value) {
    const raw = this[key];
    return raw instanceof Uint8Array ? Buffer.from(raw).toString("base64") : value;
  };
  process.stdout.write(JSON.stringify(obj, replacer) + "\n");
}

async function main() {
  const endpoints = args.url
    ? endpointsOf(args.url)
    : { pub: args.pub, sub: args.sub, rpc: args.rpc };
  if (!endpoints.pub || !endpoints.sub || !endpoints.rpc) {
    throw new Error("give --url tcp://HOST:PORT, or --pub, --sub and --rpc endpoints");
  }
  const bus = new BusClient(endpoints, { sender: args.sender });
  await bus.connect();
  const deadline = setTimeout(() => {
    print({ event: "error", message: `timed out after ${args.timeout} s` });
    process.exit(1);
  }, Number(args.timeout) * 1000);

  const pong = await bus.request("bus", { kind: "ping", payload: new Uint8Array([1, 2, 3]) });
  print({ event: "pong", service: pong.service, epoch: pong.epoch, payload: pong.payload });

  const expect = Number(args.expect);
  let received = Promise.resolve();
  if (args.subscribe.length > 0) {
    const fromSeq = args["from-seq"] ? Number(args["from-seq"]) : null;
    const messages = bus.subscribe(args.subscribe, { fromSeq, onReady: () => print({ event: "ready" }) });
    received = (async () => {
      let n = 0;
      if (expect === 0) return;
      for await (const env of messages) {
        print({ event: "message", seq: env.seq, epoch: env.epoch, topic: env.topic, sender: env.sender,
                kind: env.body.kind, body: env.body });
        if (++n >= expect) return;
      }
    })();
  }

  for (let i = 0; i < Number(args.count); i++) {
    const body = { kind: "note", text: `hello ${i} from node`, data: { i, lang: "js", nested: { ok: true, pi: 3.25 } } };
    const env = await bus.publish(args.publish, body);
    print({ event: "published", topic: args.publish, id: env.id, text: body.text });
  }
  const seq = await bus.publishAcked(args.publish, { kind: "note", text: "acked from node" });
  print({ event: "acked", seq });
  if (args["team-kind"]) {
    const body = { kind: args["team-kind"], votes: [3, 1, 2], blob: new Uint8Array([0, 255]) };
    const teamSeq = await bus.publishAcked(args["team-topic"], body);
    print({ event: "team_acked", kind: body.kind, topic: args["team-topic"], seq: teamSeq });
  }

  await received;
  const { envelopes, headSeq } = await bus.history({ prefixes: [args.publish], toSeq: seq });
  print({ event: "history", count: envelopes.length, head_seq: headSeq, seqs: envelopes.map((e) => e.seq) });
  clearTimeout(deadline);
  bus.close();
  print({ event: "done" });
}

main().catch((err) => {
  print({ event: "error", message: String(err?.stack ?? err), code: err?.code });
  process.exit(1);
});
