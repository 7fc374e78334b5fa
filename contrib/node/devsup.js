'use strict';
// devsup.js: serve a Node http server (or express app) on the socket devsup
// or systemd socket activation passes, say READY=1, and drain on SIGTERM
// without losing a request. Node's core modules only: vendor it by copying
// this one file next to your server.
//
//   const devsup = require('./devsup');
//   devsup.listen(http.createServer(handler), { port: 8080 });
//   devsup.listen(app, { port: 8080 });   // an express app
//
// Run alone, it listens on 127.0.0.1:port. Under devsup or systemd it takes
// fd 3 (LISTEN_FDS; LISTEN_PID is checked only when set) and says READY=1
// (DEVSUP_READY_FD; under systemd, `systemd-notify --ready`, which needs
// NotifyAccess=all). On SIGTERM or SIGINT it stops accepting, answers
// requests with `Connection: close` for `grace` ms (clients leave their
// keep-alive connections themselves), then closes idle connections, and
// every connection after `timeout` ms; it exits once the last is closed.

const fs = require('fs');
const http = require('http');

/** Where to listen: the passed socket, or 127.0.0.1:port. */
function listenOptions(port) {
  const fds = parseInt(process.env.LISTEN_FDS || '0', 10);
  const pid = process.env.LISTEN_PID;
  if (fds >= 1 && (!pid || pid === String(process.pid))) {
    return { fd: 3 };
  }
  return { port, host: '127.0.0.1' };
}

/** Tells devsup (or systemd) that the server accepts connections. */
function ready() {
  const fd = parseInt(process.env.DEVSUP_READY_FD || '', 10);
  if (!Number.isNaN(fd)) {
    fs.writeSync(fd, 'READY=1\n');
  } else if (process.env.NOTIFY_SOCKET) {
    require('child_process').execFile('systemd-notify', ['--ready'], () => {});
  }
}

/** Drains `server` on SIGTERM/SIGINT; `done` runs once it has closed. */
function drainOnSignal(server, { grace = 500, timeout = 8000, done = () => process.exit(0) } = {}) {
  let draining = false;
  server.prependListener('request', (req, res) => {
    if (draining) res.setHeader('Connection', 'close');
  });
  const drain = () => {
    if (draining) return;
    draining = true;
    // net.Server's close: stop accepting, but leave open connections to
    // finish (http.Server's close also drops idle keep-alive connections
    // at once, racing a client's next request).
    require('net').Server.prototype.close.call(server, done);
    setTimeout(() => server.closeIdleConnections(), grace).unref();
    setTimeout(() => server.closeAllConnections(), timeout).unref();
  };
  process.on('SIGTERM', drain);
  process.on('SIGINT', drain);
}

/** Serves `server` (an http.Server, or a request handler such as an
 * express app) on the passed socket or 127.0.0.1:port; says READY=1
 * once listening; drains on SIGTERM. Returns the http.Server. */
function listen(server, options = {}) {
  const srv = server instanceof http.Server ? server : http.createServer(server);
  drainOnSignal(srv, options);
  srv.listen(listenOptions(options.port || 8080), ready);
  return srv;
}

module.exports = { listen, listenOptions, ready, drainOnSignal };
