// The demo chat: the official socketcluster-client (served by this server from the pinned npm
// package) subscribes to a channel and publishes to it.
import { create } from '/socketcluster-client.min.js';
// Channels with history (`--history`) recover what was published while disconnected.
import { subscribeWithRecovery } from '/socketcluster-recovery.mjs';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const path = document.querySelector('meta[name="sc-path"]').content;

const socket = create({
  hostname: location.hostname,
  port: location.port || (location.protocol === 'https:' ? 443 : 80),
  secure: location.protocol === 'https:',
  path: path.startsWith('{{') ? '/socketcluster/' : path,
  // Back within a second or two after a restart (the client's default first wait is 10–20 s).
  autoReconnectOptions: { initialDelay: 1000, randomness: 1000, multiplier: 1.5, maxDelay: 10000 },
});

$('name').value = params.get('name') || `guest-${Math.floor(Math.random() * 1000)}`;
$('channel').value = params.get('channel') || 'lobby';

let connectedBefore = false;
let reconnects = 0;
let current = null;

function log(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $('log').prepend(li);
}

function setState(state) {
  const el = $('state');
  el.textContent = state;
  el.className = `state ${state}`;
}

(async () => {
  for await (const { id } of socket.listener('connect')) {
    if (connectedBefore) {
      reconnects += 1;
      $('reconnects').textContent = String(reconnects);
    }
    connectedBefore = true;
    setState('open');
    $('socket-id').textContent = id;
    log(`connected as ${id}`);
  }
})();
(async () => {
  for await (const { code, reason } of socket.listener('disconnect')) {
    setState('connecting');
    log(`disconnected (${code}${reason ? `: ${reason}` : ''}), reconnecting`);
  }
})();
(async () => {
  for await (const { error } of socket.listener('error')) {
    log(`error: ${error.message}`);
  }
})();

function show(message) {
  const li = document.createElement('li');
  const who = document.createElement('b');
  who.textContent = `${message.name}: `;
  li.append(who, document.createTextNode(message.text));
  li.className = message.name === $('name').value ? 'mine' : '';
  $('messages').append(li);
  li.scrollIntoView({ block: 'end' });
}

async function join(name) {
  if (current) {
    current.stopRecovery();
    current.kill();
    current.unsubscribe();
  }
  const channel = subscribeWithRecovery(socket, name, {
    onRecover: ({ recovered, replayed, reason }) =>
      log(recovered ? `recovered ${replayed} missed message(s)` : `could not recover: ${reason}`),
  });
  current = channel;
  $('joined').textContent = `joining ${name}…`;
  (async () => {
    for await (const _ of channel.listener('subscribe')) {
      $('joined').textContent = `on ${name}`;
      $('joined').dataset.channel = name;
      $('text').disabled = false;
      $('send').disabled = false;
      log(`subscribed to ${name}`);
    }
  })();
  for await (const message of channel) {
    if (message && typeof message.text === 'string') {
      show({ name: String(message.name), text: message.text });
    }
  }
}

$('join-form').addEventListener('submit', (event) => {
  event.preventDefault();
  join($('channel').value.trim() || 'lobby');
});

$('send-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = $('text').value;
  if (!text || !current) return;
  $('text').value = '';
  try {
    await socket.invokePublish(current.name, { name: $('name').value, text });
  } catch (error) {
    log(`publish failed: ${error.message}`);
  }
});

join($('channel').value);
