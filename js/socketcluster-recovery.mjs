// Recovery for the official socketcluster-client (v20) against a socketcluster (Rust) server
// whose channel keeps history (ServerOptions::history).
//
// The server puts each publish's position beside the channel and data of the #publish frame
// ({"channel":C,"data":D,"offset":N,"epoch":E}, which socketcluster-client ignores) and in the
// acknowledgement of a #subscribe. This helper watches the socket's raw inbound messages for
// the positions of one channel and subscribes with data whose `recover` field always holds the
// last one, so that every re-subscription after a reconnect asks the server to replay what was
// published meanwhile. The server replays it before the acknowledgement, in order, without
// duplicates — or answers that it cannot (the history was lost or does not reach back so far),
// and then `onRecover` gets `{recovered: false, reason}` so the application can refetch.
//
//   import { create } from 'socketcluster-client';
//   import { subscribeWithRecovery } from './socketcluster-recovery.mjs';
//
//   const socket = create({ hostname: 'localhost', port: 8000 });
//   const channel = subscribeWithRecovery(socket, 'chat.lobby', {
//     onRecover: ({ recovered, replayed, reason }) => { if (!recovered) refetch(reason); },
//   });
//   for await (const message of channel) { show(message); }
//
// `options` are socketcluster-client's subscribe options (`data` must be an object or absent:
// `recover` is added to it) plus `onRecover`. The returned value is the client's channel, with
// `getPosition()` (the last {offset, epoch} seen, or null) and `stopRecovery()` (stops watching).

/**
 * Subscribes `socket` to `channelName` so that re-subscriptions recover missed publishes.
 * @param {object} socket an AGClientSocket (socketcluster-client's `create()`)
 * @param {string} channelName
 * @param {{data?: object, waitForAuth?: boolean, priority?: number,
 *          onRecover?: (result: {recovered: boolean, replayed?: number, reason?: string}) => void}} [options]
 */
export function subscribeWithRecovery(socket, channelName, options = {}) {
  const { onRecover, data: userData, ...subscribeOptions } = options;
  if (userData != null && (typeof userData !== 'object' || Array.isArray(userData))) {
    throw new TypeError('subscribeWithRecovery: options.data must be an object');
  }
  let position = null;
  // A getter: the client encodes the subscription data each time it (re)subscribes, so each
  // #subscribe carries the position of that moment.
  const data = { ...userData };
  Object.defineProperty(data, 'recover', { enumerable: true, get: () => position ?? undefined });

  const messages = socket.listener('message').createConsumer();
  (async () => {
    for await (const { message } of messages) {
      if (typeof message !== 'string' || !message.includes('"epoch"')) continue;
      let parsed;
      try {
        parsed = JSON.parse(message);
      } catch {
        continue;
      }
      for (const packet of Array.isArray(parsed) ? parsed : [parsed]) {
        const d = packet && packet.data;
        if (!d || d.channel !== channelName || !Number.isSafeInteger(d.offset) || typeof d.epoch !== 'string') {
          continue;
        }
        if (packet.event === '#publish') {
          position = { offset: d.offset, epoch: d.epoch };
        } else if (packet.rid != null) {
          // The subscribe acknowledgement: where the subscription starts.
          position = { offset: d.offset, epoch: d.epoch };
          if (typeof d.recovered === 'boolean' && onRecover) {
            onRecover(d.recovered ? { recovered: true, replayed: d.replayed } : { recovered: false, reason: d.reason });
          }
        }
      }
    }
  })();

  const channel = socket.subscribe(channelName, { ...subscribeOptions, data });
  channel.getPosition = () => (position ? { ...position } : null);
  channel.stopRecovery = () => messages.kill();
  return channel;
}
