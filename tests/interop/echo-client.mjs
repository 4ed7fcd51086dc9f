// The official socketcluster-client against our server: connects to URL (ws:// or wss://, then
// trusting the CA in CA_FILE; `-` for none), invokes `echo`, subscribes and publishes, then
// prints one JSON line and exits 0; on a failure it prints {"fail": reason} and exits 1. With
// --reject-expected it expects a wss:// connection to be refused because the CA is not trusted.
// Every step is bounded by a timeout.
//
//   node tests/interop/echo-client.mjs URL CA_FILE [--reject-expected]
import { readFileSync } from 'node:fs';
import socketClusterClient from 'socketcluster-client';

const [url, caFile, mode] = process.argv.slice(2);
const u = new URL(url);
const fail = (reason) => {
  process.stdout.write(JSON.stringify({ fail: String(reason) }) + '\n');
  process.exit(1);
};
setTimeout(() => fail('timed out after 20 s'), 20000).unref();

const socket = socketClusterClient.create({
  hostname: u.hostname,
  port: Number(u.port),
  path: u.pathname,
  secure: u.protocol === 'wss:',
  autoReconnect: false,
  // Without `ca`, Node trusts its own roots only, which do not include the test CA.
  wsOptions: mode === '--reject-expected' || caFile === '-' ? {} : { ca: readFileSync(caFile) },
});

if (mode === '--reject-expected') {
  (async () => {
    for await (const { error } of socket.listener('error')) {
      // socketcluster-client does not pass Node's TLS error on: the refusal is the 1006 close.
      process.stdout.write(JSON.stringify({ refused: error.code, message: error.message }) + '\n');
      process.exit(0);
    }
  })();
  (async () => {
    for await (const _ of socket.listener('connect')) fail('connected with an untrusted certificate');
  })();
} else {
  (async () => {
    for await (const { error } of socket.listener('error')) process.stderr.write(`echo-client: ${error}\n`);
  })();
  (async () => {
    try {
      await socket.listener('connect').once();
      const echoed = await socket.invoke('echo', { over: u.protocol });
      if (JSON.stringify(echoed) !== JSON.stringify({ over: u.protocol })) fail(`echo gave ${JSON.stringify(echoed)}`);
      const channel = socket.subscribe('echo-js');
      await channel.listener('subscribe').once();
      // The consumer buffers from its creation: made before the publish, it cannot miss it.
      const messages = channel.createConsumer();
      await socket.invokePublish('echo-js', 'hi');
      const { value } = await messages.next();
      if (value !== 'hi') fail(`channel gave ${JSON.stringify(value)}`);
      process.stdout.write(JSON.stringify({ ok: true, id: socket.id }) + '\n');
      socket.disconnect();
      process.exit(0);
    } catch (e) {
      fail(e && e.stack || e);
    }
  })();
}
