#!/usr/bin/env node
// Scale-out check with the official socketcluster-client 20.0.2: clients connected to different
// server processes (which share channels through Redis) subscribe to one channel; then every
// client publishes COUNT messages, round-robin with the others. Every client must receive every
// message exactly once, and each publisher's messages in publish order.
//
//   node tests/interop/scale-out.mjs --url WS_URL [--url WS_URL ...] --channel NAME
//        [--clients-per-url N] [--count N] [--timeout MS]
//
// Prints one JSON line: {"ok":true,"clients":N,"received":N} or {"ok":false,"errors":[...]};
// exit code 0 or 1 (2 on usage errors). Every wait is bounded by --timeout.

import socketClusterClient from 'socketcluster-client';

const QUIET = 300; // after everything arrived: watch this long for duplicates

function usage(message) {
  process.stderr.write(`scale-out: ${message}\n`);
  process.exit(2);
}

const args = { urls: [], channel: null, perUrl: 1, count: 100, timeout: 60000 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const next = () => (i + 1 < argv.length ? argv[++i] : usage(`${argv[i]} needs a value`));
  const number = () => {
    const v = next();
    if (!/^[1-9]\d*$/.test(v)) usage(`not a positive integer: ${v}`);
    return Number(v);
  };
  switch (argv[i]) {
    case '--url': args.urls.push(next()); break;
    case '--channel': args.channel = next(); break;
    case '--clients-per-url': args.perUrl = number(); break;
    case '--count': args.count = number(); break;
    case '--timeout': args.timeout = number(); break;
    default: usage(`unknown argument ${argv[i]}`);
  }
}
if (args.urls.length === 0 || args.channel === null) usage('--url and --channel are required');

const deadline = Date.now() + args.timeout;
function bounded(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), Math.max(0, deadline - Date.now()));
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const clients = [];
for (const [u, url] of args.urls.entries()) {
  const { hostname, port, pathname } = new URL(url);
  for (let k = 0; k < args.perUrl; k++) {
    const socket = socketClusterClient.create({ hostname, port: Number(port), path: pathname, autoReconnect: false });
    clients.push({ name: `${u}.${k}`, socket, got: [] });
  }
}

const errors = [];
let received = 0;
try {
  await bounded(Promise.all(clients.map((c) => c.socket.listener('connect').once())), 'connect');
  const total = clients.length * args.count;
  let allArrived;
  const arrived = new Promise((resolve) => { allArrived = resolve; });
  await bounded(
    Promise.all(
      clients.map(async (c) => {
        const channel = c.socket.subscribe(args.channel);
        (async () => {
          for await (const data of channel) {
            c.got.push(data);
            received++;
            if (received === total * clients.length) allArrived();
          }
        })();
        await channel.listener('subscribe').once();
      }),
    ),
    'subscribe acks',
  );
  const acks = [];
  for (let seq = 0; seq < args.count; seq++) {
    for (const c of clients) acks.push(c.socket.invokePublish(args.channel, { from: c.name, seq }));
  }
  await bounded(Promise.all(acks), 'publish acks');
  await bounded(arrived, `all ${total * clients.length} deliveries (got ${received})`).catch((e) => errors.push(e.message));
  await new Promise((resolve) => setTimeout(resolve, QUIET));
  for (const c of clients) {
    for (const p of clients) {
      const seqs = c.got.filter((d) => d && d.from === p.name).map((d) => d.seq);
      const expected = Array.from({ length: args.count }, (_, i) => i);
      if (JSON.stringify(seqs) !== JSON.stringify(expected)) {
        const dup = seqs.length - new Set(seqs).size;
        const inOrder = seqs.every((s, i) => i === 0 || s > seqs[i - 1]);
        errors.push(`${c.name} got ${seqs.length}/${args.count} of ${p.name}'s messages (${dup} duplicates, ${inOrder ? 'in order' : 'OUT OF ORDER'})`);
      }
    }
    const foreign = c.got.filter((d) => !d || !clients.some((p) => p.name === d.from));
    if (foreign.length > 0) errors.push(`${c.name} got unexpected messages: ${JSON.stringify(foreign.slice(0, 3))}`);
  }
} catch (e) {
  errors.push(e.message);
}
for (const c of clients) c.socket.disconnect();
const ok = errors.length === 0;
process.stdout.write(`${JSON.stringify(ok ? { ok, clients: clients.length, received } : { ok, received, errors })}\n`);
process.exit(ok ? 0 : 1);
