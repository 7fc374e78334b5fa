'use strict';
// Tests of devsup.js, Node core only: `node --test contrib/node/`.
// (tests/tests/it/unchanged.rs runs them, and runs devsup.js under devsup
// with reloads under load.)

const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const http = require('http');
const net = require('net');
const os = require('os');
const path = require('path');
const devsup = require('./devsup.js');

function withEnv(vars, f) {
  const saved = {};
  for (const k of Object.keys(vars)) {
    saved[k] = process.env[k];
    if (vars[k] === undefined) delete process.env[k];
    else process.env[k] = vars[k];
  }
  try {
    return f();
  } finally {
    for (const k of Object.keys(saved)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

test('takes fd 3 when sockets are passed, and binds alone otherwise', () => {
  const fd3 = { fd: 3 };
  const alone = { port: 8080, host: '127.0.0.1' };
  assert.deepStrictEqual(withEnv({ LISTEN_FDS: '1', LISTEN_PID: undefined }, () => devsup.listenOptions(8080)), fd3);
  assert.deepStrictEqual(withEnv({ LISTEN_FDS: '1', LISTEN_PID: String(process.pid) }, () => devsup.listenOptions(8080)), fd3);
  // LISTEN_PID names another process: the sockets are not ours.
  assert.deepStrictEqual(withEnv({ LISTEN_FDS: '1', LISTEN_PID: '1' }, () => devsup.listenOptions(8080)), alone);
  assert.deepStrictEqual(withEnv({ LISTEN_FDS: undefined, LISTEN_PID: undefined }, () => devsup.listenOptions(8080)), alone);
});

test('says READY=1 on DEVSUP_READY_FD', () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'devsup-js-')), 'ready');
  const fd = fs.openSync(file, 'w');
  try {
    withEnv({ DEVSUP_READY_FD: String(fd), NOTIFY_SOCKET: undefined }, () => devsup.ready());
  } finally {
    fs.closeSync(fd);
  }
  assert.strictEqual(fs.readFileSync(file, 'utf8'), 'READY=1\n');
});

function get(agent, port) {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, agent, path: '/' }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.headers));
      })
      .on('error', reject);
  });
}

test('on SIGTERM: stops accepting, answers Connection: close, then closes', async () => {
  const server = http.createServer((req, res) => res.end('ok\n'));
  const closed = new Promise((resolve) => {
    devsup.drainOnSignal(server, { grace: 200, timeout: 5000, done: resolve });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const before = await get(agent, port);
  assert.strictEqual(before.connection, 'keep-alive');
  process.emit('SIGTERM', 'SIGTERM');
  // The open keep-alive connection is still served, and told to close.
  const during = await get(agent, port);
  assert.strictEqual(during.connection, 'close');
  // No new connection is accepted.
  await assert.rejects(
    new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(s));
      s.on('error', reject);
    }),
    /ECONNREFUSED/,
  );
  // Every connection is gone: the server has closed.
  await closed;
  agent.destroy();
});
