// The official socketcluster-client with js/socketcluster-recovery.mjs: subscribes to CHANNEL
// at URL and reports, as JSON lines: subscribe, connect/disconnect, recover results, and
// {"type":"done",...} once it has received EXPECTED messages (numbers), saying whether they
// were exactly 0..EXPECTED-1 in order. Exits 0 after "done", 1 on a timeout (60 s).
//
//   node recovery-client.mjs URL CHANNEL EXPECTED
import { create } from 'socketcluster-client';
import { subscribeWithRecovery } from '../../js/socketcluster-recovery.mjs';

const [url, channelName, expectedArg] = process.argv.slice(2);
const expected = Number(expectedArg);
const u = new URL(url);
const out = (v) => console.log(JSON.stringify(v));

const socket = create({
  hostname: u.hostname,
  port: Number(u.port),
  path: u.pathname,
  secure: u.protocol === 'wss:',
  autoReconnectOptions: { initialDelay: 50, randomness: 0, multiplier: 1, maxDelay: 50 },
});
(async () => { for await (const { id } of socket.listener('connect')) out({ type: 'connect', id }); })();
(async () => { for await (const { code } of socket.listener('disconnect')) out({ type: 'disconnect', code }); })();

const channel = subscribeWithRecovery(socket, channelName, {
  onRecover: (result) => out({ type: 'recover', ...result }),
});
(async () => { for await (const _ of channel.listener('subscribe')) out({ type: 'subscribe', position: channel.getPosition() }); })();

setTimeout(() => {
  out({ type: 'timeout' });
  process.exit(1);
}, 60000).unref();

const got = [];
for await (const value of channel) {
  got.push(value);
  if (got.length === expected) break;
}
const inOrder = got.every((v, i) => v === i);
out({ type: 'done', count: got.length, inOrder, position: channel.getPosition() });
socket.disconnect();
process.exit(0);
