// Fan-out benchmark, JavaScript side: the workload of ../fanout.rs for the npm
// `writable-consumable-stream` 4.2.0 (the version SocketCluster 20 uses), so that the Rust bench
// can print it as a peer in the same run. One writer, N consumers, every consumer receives every
// message.
//
// Usage (node's garbage collector must be exposed):
//
//   node --expose-gc fanout.mjs SCENARIO N MESSAGES [PAYLOAD] [REPS]
//   node --expose-gc fanout.mjs '{"scenario":"live","n":100,"messages":20000,"payload":"number"}'
//
// SCENARIO is `live`, `drain` or `memory`; PAYLOAD is `number` (default) or `buffer`; REPS
// (default 3) is the number of timed repetitions. It prints one line of JSON on stdout.
//
// - live: the consumers are `for await` loops, started before the writer; the writer writes in
//   batches of 64 and yields to the event loop after each batch with `setImmediate` (see
//   `yieldToEventLoop`).
// - drain: the consumers are created before the writes (so they buffer everything), the writer
//   writes everything and closes the stream, then the consumers iterate.
//
// Timed cases print {"ns_per_delivery": median over REPS of elapsed / (N × MESSAGES), ...}. The
// timer runs from just before the consumers' loops start (live) or the first write (drain) to the
// last consumer's end; creating the stream and its consumers is outside it, as in the Rust bench.
// Before the timed repetitions, one untimed warm-up repetition with a tenth of the messages lets
// V8 compile the hot paths (the Rust side is compiled ahead of time); `global.gc()` runs before
// every repetition, outside the timer, so that one repetition's garbage is not collected on the
// next one's clock.
//
// Payloads: `number` is the sequence number itself (a small integer, no allocation); `buffer` is
// one of 1024 pre-built 64-byte Buffers (message i is POOL[i % 1024], which holds i % 1024 in its
// first 4 bytes, little-endian), like the Rust bench's pool of `Arc<[u8; 64]>`. Every consumer
// checks that it got every message, in order, and then the end of the stream (`stream.close()`),
// so a case cannot silently measure nothing.
//
// memory: N consumers (N = 1 for the bench's table) that read nothing, MESSAGES writes. Prints V8
// `process.memoryUsage().heapUsed` after `global.gc()`, relative to before the stream was
// created: `setup` (stream and consumers created), `written` (after the writes), `drained` (after
// every consumer read everything and the end) and `dropped` (after dropping the stream and its
// consumers). B/message = written / MESSAGES. heapUsed is V8's heap: it counts the list nodes and
// their objects, not Buffer backing stores (those are pre-built in the pool anyway). It varies by
// a few hundred kB from one collection to the next, so setup, drained and dropped are noise; one
// untimed small run first keeps the pool and compiled code out of the baseline.

import { createRequire } from 'node:module';
import WritableConsumableStream from 'writable-consumable-stream'; // its CommonJS main, as SocketCluster uses it

const require = createRequire(import.meta.url);
const WCS_VERSION = require('writable-consumable-stream/package.json').version;
const EXPECTED_VERSION = '4.2.0';

/** The live writer yields to the event loop after this many writes (as YIELD_EVERY in Rust). */
const YIELD_EVERY = 64;
const POOL_LEN = 1024;

/** Message types: build message `i`, and check that a value is message `i`. */
const PAYLOADS = {
  number: {
    make: (i) => i,
    is: (v, i) => v === i,
  },
  buffer: (() => {
    const pool = Array.from({ length: POOL_LEN }, (_, k) => {
      const b = Buffer.alloc(64);
      b.writeUInt32LE(k, 0);
      return b;
    });
    return {
      make: (i) => pool[i % POOL_LEN],
      is: (v, i) => v.readUInt32LE(0) === i % POOL_LEN,
    };
  })(),
};

function fail(message) {
  process.stderr.write(`fanout.mjs: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  let c;
  if (argv.length === 1 && argv[0].trim().startsWith('{')) {
    c = JSON.parse(argv[0]);
  } else {
    const [scenario, n, messages, payload, reps] = argv;
    c = { scenario, n: Number(n), messages: Number(messages), payload, reps: reps && Number(reps) };
  }
  c.payload ??= 'number';
  c.reps ??= 3;
  if (!['live', 'drain', 'memory'].includes(c.scenario)) fail(`unknown scenario ${c.scenario}`);
  if (!(c.payload in PAYLOADS)) fail(`unknown payload ${c.payload} (number or buffer)`);
  for (const k of ['n', 'messages', 'reps']) {
    if (!Number.isSafeInteger(c[k]) || c[k] < 1) fail(`${k} must be a positive integer, got ${c[k]}`);
  }
  return c;
}

/**
 * Yields to the event loop. `setImmediate` runs its callback after the microtask queue is empty,
 * i.e. after every consumer woken by the last batch has run until it waits again: like the Rust
 * writer's yield-once future, which goes to the back of the executor's run queue behind the
 * consumer tasks it woke. (`await null` / `queueMicrotask` would resume the writer after only the
 * first step of each consumer's promise chain, and `setTimeout(0)` sleeps at least 1 ms.)
 */
function yieldToEventLoop() {
  return new Promise(setImmediate);
}

/** Writes messages `0..messages`, yielding every `yieldEvery` writes if set, then closes. */
async function write(stream, messages, payload, yieldEvery) {
  for (let i = 0; i < messages; i++) {
    stream.write(payload.make(i));
    if (yieldEvery && (i + 1) % yieldEvery === 0) {
      await yieldToEventLoop();
    }
  }
  stream.close();
}

/** Reads until the stream ends, checking that it got messages `0..messages` in order. */
async function consume(consumer, messages, payload) {
  let got = 0;
  for await (const v of consumer) {
    if (!payload.is(v, got)) throw new Error(`message ${got} out of order`);
    got++;
  }
  if (got !== messages) throw new Error(`a consumer got ${got} of ${messages} messages`);
}

/** A stream with `n` consumers created (and so registered) before any write. */
function open(n) {
  const stream = new WritableConsumableStream();
  const consumers = Array.from({ length: n }, () => stream.createConsumer());
  return { stream, consumers };
}

/** One timed repetition; returns nanoseconds. */
async function runOnce(scenario, n, messages, payload) {
  const { stream, consumers } = open(n);
  global.gc();
  const start = process.hrtime.bigint();
  let done;
  if (scenario === 'live') {
    done = consumers.map((c) => consume(c, messages, payload));
    await write(stream, messages, payload, YIELD_EVERY);
  } else {
    await write(stream, messages, payload, 0);
    done = consumers.map((c) => consume(c, messages, payload));
  }
  await Promise.all(done);
  return Number(process.hrtime.bigint() - start);
}

async function timed(c) {
  const payload = PAYLOADS[c.payload];
  await runOnce(c.scenario, c.n, Math.max(1, Math.ceil(c.messages / 10)), payload); // warm-up
  const samples = [];
  for (let r = 0; r < c.reps; r++) {
    samples.push(await runOnce(c.scenario, c.n, c.messages, payload));
  }
  const sorted = [...samples].sort((a, b) => a - b);
  const deliveries = c.n * c.messages;
  return {
    ns_per_delivery: sorted[Math.floor(sorted.length / 2)] / deliveries,
    samples_ns_per_delivery: samples.map((s) => s / deliveries),
  };
}

function heapUsed() {
  global.gc();
  global.gc();
  return process.memoryUsage().heapUsed;
}

/** Writes `messages` that the stream's `n` consumers do not read, then drains them. */
async function memory(c) {
  const payload = PAYLOADS[c.payload];
  // Build the pool and run the code once before the baseline, so that neither is counted.
  await memoryRun(c.n, Math.min(c.messages, 1000), payload, () => 0);
  return memoryRun(c.n, c.messages, payload, heapUsed);
}

async function memoryRun(n, messages, payload, heapUsed) {
  const base = heapUsed();
  let { stream, consumers } = open(n);
  const setup = heapUsed() - base;
  for (let i = 0; i < messages; i++) {
    stream.write(payload.make(i));
  }
  const written = heapUsed() - base;
  stream.close();
  for (const consumer of consumers) {
    await consume(consumer, messages, payload);
  }
  const drained = heapUsed() - base;
  stream = null;
  consumers = null;
  const dropped = heapUsed() - base;
  return {
    setup,
    written,
    drained,
    dropped,
    bytes_per_message: written / messages,
    bytes_per_message_growth: (written - setup) / messages,
  };
}

async function main() {
  const c = parseArgs(process.argv.slice(2));
  if (typeof global.gc !== 'function') fail('run with `node --expose-gc`');
  if (WCS_VERSION !== EXPECTED_VERSION) {
    fail(`writable-consumable-stream ${WCS_VERSION} installed, expected ${EXPECTED_VERSION}: run \`npm ci\``);
  }
  const result = c.scenario === 'memory' ? await memory(c) : await timed(c);
  const out = {
    scenario: c.scenario,
    n: c.n,
    messages: c.messages,
    payload: c.payload,
    reps: c.reps,
    ...result,
    node: process.version,
    writable_consumable_stream: WCS_VERSION,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((e) => fail(e.stack ?? String(e)));
