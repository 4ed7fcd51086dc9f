#!/usr/bin/env node
// Reference implementation of the interop contract's test server (§1 of
// shared/interop-contract.md, `examples/interop_server`), built on the official
// socketcluster-server 20.0.1.
//
//   node tests/interop/server.mjs [--port 0] [--protocol-version 1] ...
//
// Prints exactly one line {"listening":"HOST:PORT"} on stdout when it accepts
// connections. SIGTERM/SIGINT: every socket is disconnected with 1001 (so JS clients
// reconnect), the server closes, exit 0. Errors go to stderr; bad flags exit 2.
//
// Also used as the Node side of the fan-out benchmark: no per-message logging.

import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import socketClusterServer from 'socketcluster-server';

const USAGE =
  'usage: server.mjs [--host ADDR] [--port N] [--path P] [--runtime smol|tokio] ' +
  '[--protocol-version 1|2] [--ping-interval MS] [--ping-timeout MS] ' +
  '[--handshake-timeout MS] [--ack-timeout MS] [--auth-key SECRET] ' +
  '[--no-client-publish] [--socket-channel-limit N] [--max-payload BYTES] ' +
  '[--foo-delay MS] [--broker memory] [--tls-cert PEM --tls-key PEM]';

function usageError(message) {
  process.stderr.write(`interop server: ${message}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------------------
// Flags

function parseFlags(argv) {
  const opts = {
    host: '127.0.0.1',
    port: 8000,
    path: '/socketcluster/',
    runtime: 'smol',
    protocolVersion: 2,
    pingInterval: 8000,
    pingTimeout: 30000,
    handshakeTimeout: 10000,
    ackTimeout: 10000,
    authKey: null,
    allowClientPublish: true,
    socketChannelLimit: null,
    maxPayload: null,
    fooDelay: 1000,
    broker: 'memory',
  };
  const int = (flag, value, min, max = Number.MAX_SAFE_INTEGER) => {
    if (!/^\d+$/.test(value)) usageError(`${flag}: expected a non-negative integer, got ${JSON.stringify(value)}`);
    const n = Number(value);
    if (n < min || n > max) usageError(`${flag}: ${n} is out of range ${min}..${max}`);
    return n;
  };
  // Timer values must fit a JS timer (2^31 - 1 ms).
  const ms = (flag, value, min = 1) => int(flag, value, min, 2 ** 31 - 1);
  const valued = {
    '--host': (v) => { opts.host = v; },
    '--tls-cert': (v) => { opts.tlsCert = v; },
    '--tls-key': (v) => { opts.tlsKey = v; },
    '--port': (v) => { opts.port = int('--port', v, 0, 65535); },
    '--path': (v) => {
      if (!v.startsWith('/')) usageError(`--path: must start with "/", got ${JSON.stringify(v)}`);
      opts.path = v;
    },
    '--runtime': (v) => {
      if (v !== 'smol' && v !== 'tokio') usageError(`--runtime: expected smol or tokio, got ${JSON.stringify(v)}`);
      opts.runtime = v; // accepted and ignored: Node has one runtime
    },
    '--protocol-version': (v) => {
      if (v !== '1' && v !== '2') usageError(`--protocol-version: expected 1 or 2, got ${JSON.stringify(v)}`);
      opts.protocolVersion = Number(v);
    },
    '--ping-interval': (v) => { opts.pingInterval = ms('--ping-interval', v); },
    '--ping-timeout': (v) => { opts.pingTimeout = ms('--ping-timeout', v); },
    '--handshake-timeout': (v) => { opts.handshakeTimeout = ms('--handshake-timeout', v); },
    '--ack-timeout': (v) => { opts.ackTimeout = ms('--ack-timeout', v); },
    '--auth-key': (v) => {
      if (v === '') usageError('--auth-key: must not be empty');
      opts.authKey = v;
    },
    '--socket-channel-limit': (v) => { opts.socketChannelLimit = int('--socket-channel-limit', v, 1); },
    '--max-payload': (v) => { opts.maxPayload = int('--max-payload', v, 1, 2 ** 31 - 1); },
    '--foo-delay': (v) => { opts.fooDelay = ms('--foo-delay', v, 0); },
    '--outbound-limit': (v) => {
      int('--outbound-limit', v, 1);
      usageError('--outbound-limit is not supported by the socketcluster-server reference server');
    },
    '--broker': (v) => {
      if (v !== 'memory') usageError(`--broker ${v}: not supported by the reference server (only "memory")`);
      opts.broker = v;
    },
  };
  const switches = {
    '--no-client-publish': () => { opts.allowClientPublish = false; },
  };

  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let inlineValue;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq !== -1) {
      inlineValue = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    }
    if (switches[arg]) {
      if (inlineValue !== undefined) usageError(`${arg} takes no value`);
      switches[arg]();
    } else if (valued[arg]) {
      let value = inlineValue;
      if (value === undefined) {
        if (i + 1 >= argv.length) usageError(`${arg} needs a value`);
        value = argv[++i];
      }
      valued[arg](value);
    } else {
      usageError(`unknown argument ${JSON.stringify(argv[i])}`);
    }
  }
  if (!opts.tlsCert !== !opts.tlsKey) usageError('--tls-cert and --tls-key go together');
  return opts;
}

const opts = parseFlags(process.argv.slice(2));

// ---------------------------------------------------------------------------
// Helpers

function namedError(name, message, extra) {
  const err = new Error(message);
  // An own enumerable `name` is what sc-errors puts on the wire.
  err.name = name;
  if (extra) Object.assign(err, extra);
  return err;
}

function isValidCloseCode(code) {
  return Number.isInteger(code) &&
    ((code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
     (code >= 3000 && code <= 4999));
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// Per-socket state of the `foo` receiver, created when the socket is created (before
// its #handshake is processed) so that nothing sent right after connecting is lost.
const fooState = new WeakMap();

// ---------------------------------------------------------------------------
// Server

// With --tls-cert/--tls-key: HTTPS (wss://), the way a Node deployment terminates TLS itself.
const tls = opts.tlsCert ? { cert: readFileSync(opts.tlsCert), key: readFileSync(opts.tlsKey) } : null;
const httpServer = (tls ? https.createServer.bind(https, tls) : http.createServer)((req, res) => {
  // Same as socketcluster-server's listen(): plain HTTP is not served.
  res.writeHead(501);
  res.end('Not Implemented');
});

const serverOptions = {
  path: opts.path,
  protocolVersion: opts.protocolVersion,
  pingInterval: opts.pingInterval,
  pingTimeout: opts.pingTimeout,
  handshakeTimeout: opts.handshakeTimeout,
  ackTimeout: opts.ackTimeout,
  allowClientPublish: opts.allowClientPublish,
  // ws: maxPayload 0 = unlimited (the ws default would be 100 MiB).
  maxPayload: opts.maxPayload ?? 0,
};
if (opts.authKey != null) serverOptions.authKey = opts.authKey;
if (opts.socketChannelLimit != null) serverOptions.socketChannelLimit = opts.socketChannelLimit;

const agServer = socketClusterServer.attach(httpServer, serverOptions);

// Errors and warnings (blocked actions, protocol closes, ...) are expected in the
// interop tests; they are consumed and dropped so that nothing is logged per message.
(async () => { for await (const _ of agServer.listener('warning')) { /* dropped */ } })();
(async () => {
  for await (const { error } of agServer.listener('error')) {
    process.stderr.write(`interop server: server error: ${error && error.message}\n`);
  }
})();

// --- Access rules (middleware) ----------------------------------------------

agServer.setMiddleware(agServer.MIDDLEWARE_HANDSHAKE, async (stream) => {
  for await (const action of stream) {
    if (action.type === action.HANDSHAKE_WS) {
      const url = new URL(action.request.url, 'http://localhost');
      if (url.searchParams.getAll('reject').includes('1')) {
        // HTTP 401 with this text as the body.
        action.block(namedError('HandshakeRejectedError', 'Rejected by the reject=1 rule'));
        continue;
      }
    } else if (action.type === action.HANDSHAKE_SC) {
      const token = action.data && action.data.authToken;
      if (isPlainObject(token) && token.banned === true) {
        action.block(namedError('BannedError', 'This auth token is banned', { statusCode: 4501 }));
        continue;
      }
    }
    action.allow();
  }
});

agServer.setMiddleware(agServer.MIDDLEWARE_INBOUND, async (stream) => {
  for await (const action of stream) {
    if (action.type === action.SUBSCRIBE) {
      if (action.channel.startsWith('private/') && action.socket.authState !== action.socket.AUTHENTICATED) {
        action.block(namedError('AuthRequiredError', `Subscribing to ${action.channel} requires authentication`));
        continue;
      }
    } else if (action.type === action.PUBLISH_IN) {
      if (action.channel.startsWith('readonly/')) {
        action.block(); // SilentMiddlewareBlockedError, type "inbound"
        continue;
      }
    }
    action.allow();
  }
});

// --- Handlers -----------------------------------------------------------------

const receivers = {
  echo(socket, data) {
    socket.transmit('echo', data);
  },
};

// Each procedure gets (socket, request). Responses go out with request.end/error.
const procedures = {
  echo(socket, req) {
    req.end(req.data);
  },
  fail(socket, req) {
    req.error(namedError('CustomError', 'boom', { extra: 42 }));
  },
  'fail-plain'(socket, req) {
    req.error(new Error('plain')); // wire form {"message":"plain"}
  },
  'foo-log'(socket, req) {
    const state = fooState.get(socket);
    req.end(state ? state.log.slice() : []);
  },
  async login(socket, req) {
    if (!isPlainObject(req.data)) {
      req.error(namedError('InvalidArgumentsError', 'login expects a JSON object as its data'));
      return;
    }
    try {
      await socket.setAuthToken(req.data);
    } catch (err) {
      req.error(err);
      return;
    }
    req.end('ok');
  },
  deauth(socket, req) {
    socket.deauthenticate();
    req.end();
  },
  whoami(socket, req) {
    req.end(socket.authToken == null ? null : socket.authToken);
  },
  async 'server-publish'(socket, req) {
    const d = req.data;
    if (!isPlainObject(d) || typeof d.channel !== 'string') {
      req.error(namedError('InvalidArgumentsError', 'server-publish expects {"channel":C,"data":D}'));
      return;
    }
    try {
      await agServer.exchange.invokePublish(d.channel, d.data);
    } catch (err) {
      req.error(err);
      return;
    }
    req.end();
  },
  async kick(socket, req) {
    const d = req.data;
    if (!isPlainObject(d) || typeof d.channel !== 'string') {
      req.error(namedError('InvalidArgumentsError', 'kick expects {"channel":C,"message":M}'));
      return;
    }
    // socket.kickOut on a channel the socket is not in would still send #kickOut;
    // the contract says: nothing else happens.
    if (socket.isSubscribed(d.channel)) {
      try {
        await socket.kickOut(d.channel, d.message);
      } catch (err) {
        req.error(err);
        return;
      }
    }
    req.end();
  },
  'disconnect-me'(socket, req) {
    const d = isPlainObject(req.data) ? req.data : {};
    const code = d.code == null ? 1000 : d.code;
    const reason = d.reason == null ? undefined : d.reason;
    // ws throws on codes a close frame may not carry, and on reasons over 123 bytes.
    if (!isValidCloseCode(code) || (reason !== undefined &&
        (typeof reason !== 'string' || Buffer.byteLength(reason) > 123))) {
      req.error(namedError('InvalidArgumentsError',
        'disconnect-me expects {"code":N,"reason":R} with a valid close code and a reason of at most 123 bytes'));
      return;
    }
    req.end();
    socket.disconnect(code, reason);
  },
  async 'call-me-back'(socket, req) {
    const d = req.data;
    if (!isPlainObject(d) || typeof d.procedure !== 'string') {
      req.error(namedError('InvalidArgumentsError', 'call-me-back expects {"procedure":P,"data":D}'));
      return;
    }
    let result;
    try {
      result = await socket.invoke(d.procedure, d.data);
    } catch (err) {
      req.error(err);
      return;
    }
    req.end(result);
  },
  'transmit-me'(socket, req) {
    const d = req.data;
    if (!isPlainObject(d) || typeof d.event !== 'string' ||
        typeof d.count !== 'number' || !Number.isInteger(d.count) || d.count < 0) {
      req.error(namedError('InvalidArgumentsError',
        'transmit-me expects {"event":E,"data":D,"count":N} with a non-negative integer count'));
      return;
    }
    for (let i = 0; i < d.count; i++) {
      socket.transmit(d.event, { i, data: d.data });
    }
    req.end();
  },
  stats(socket, req) {
    const channels = {};
    for (const client of Object.values(agServer.clients)) {
      for (const channel of Object.keys(client.channelSubscriptions)) {
        channels[channel] = (channels[channel] || 0) + 1;
      }
    }
    req.end({ clients: agServer.clientsCount, channels, pendingClients: agServer.pendingClientsCount });
  },
};

function setUpSocket(socket) {
  // `foo`: the consumer exists from now on; it is iterated only after the delay.
  const state = { log: [] };
  fooState.set(socket, state);
  const fooConsumer = socket.receiver('foo').createConsumer();
  (async () => {
    await socket.listener('connect').once();
    await new Promise((resolve) => setTimeout(resolve, opts.fooDelay));
    for await (const data of fooConsumer) {
      state.log.push(data);
    }
  })();

  for (const [name, handler] of Object.entries(receivers)) {
    (async () => {
      for await (const data of socket.receiver(name)) handler(socket, data);
    })();
  }
  for (const [name, handler] of Object.entries(procedures)) {
    (async () => {
      // Not awaited: a slow call (call-me-back, login) must not hold back the next one.
      for await (const req of socket.procedure(name)) {
        const fail = (err) => {
          if (!req.sent) req.error(err);
        };
        try {
          const result = handler(socket, req);
          if (result && typeof result.catch === 'function') result.catch(fail);
        } catch (err) {
          fail(err);
        }
      }
    })();
  }
}

// `handshake` fires when the WebSocket is accepted, before any frame of the socket is
// processed, so all consumers exist before the #handshake (and anything after it).
(async () => {
  for await (const { socket } of agServer.listener('handshake')) {
    setUpSocket(socket);
  }
})();

// A bug in a handler must not take the whole server down.
process.on('unhandledRejection', (err) => {
  process.stderr.write(`interop server: unhandled rejection: ${err && err.stack || err}\n`);
});

// --- Start and stop -------------------------------------------------------------

httpServer.on('error', (err) => {
  process.stderr.write(`interop server: cannot listen on ${opts.host}:${opts.port}: ${err.message}\n`);
  process.exit(1);
});

httpServer.listen(opts.port, opts.host, () => {
  const addr = httpServer.address();
  const host = addr.family === 'IPv6' || addr.family === 6 ? `[${addr.address}]` : addr.address;
  process.stdout.write(JSON.stringify({ listening: `${host}:${addr.port}` }) + '\n');
});

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  // 1001 "going away": the JS client reconnects (with its backoff).
  for (const socket of [...Object.values(agServer.clients), ...Object.values(agServer.pendingClients)]) {
    socket.disconnect(1001);
  }
  agServer.close(true).catch(() => {});
  // Resolves once every TCP connection (upgraded ones included) has ended.
  httpServer.close(() => process.exit(0));
  // Peers that do not answer the close frame must not keep us alive.
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
