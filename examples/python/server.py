#!/usr/bin/env python3
"""A Python 3 (stdlib only) HTTP server that reloads under devsup without
dropping a request.

Opting in takes two lines: take the listening socket devsup passed at fd 3,
and say "ready" once it is set up:

    listener = socket.socket(fileno=3)      # 1: the inherited listener
    notify_ready()                          # 2: READY=1 to devsup

notify_ready() speaks systemd's sd_notify: it sends the datagram "READY=1"
to the unix socket named by NOTIFY_SOCKET (an abstract name when it starts
with '@'), so the same server runs unchanged under systemd's Type=notify.
When NOTIFY_SOCKET is not set, it falls back to devsup's own ready channel,
writing "READY=1\\n" to the fd in DEVSUP_READY_FD (devsup versions that do
not yet set NOTIFY_SOCKET). Run on its own, it binds 127.0.0.1:8080 and tells
nobody.

On SIGTERM (devsup's drain signal) it stops accepting, closes its copy of
the listener (the socket stays open in devsup and in the new generation, so
connections queued in it are not lost), finishes the requests it has, and
exits 0. Every response is "Connection: close", so no keep-alive connection
is left to race the drain.

GET / answers "gen=N pid=P" (N from DEVSUP_GENERATION).

    devsup -- python3 examples/python/server.py
"""

import http.server
import os
import signal
import socket
import socketserver
import sys
import threading

FALLBACK_ADDR = ("127.0.0.1", 8080)
FIRST_FD = 3


def take_listener():
    """The first socket devsup (or systemd) passed, or a bound one."""
    if int(os.environ.get("LISTEN_FDS", "0")) >= 1:
        listener = socket.socket(fileno=FIRST_FD)
    else:
        listener = socket.create_server(FALLBACK_ADDR)
    # Two generations share this socket during a hand-off: the other one may
    # take a connection select() announced to us, and a blocking accept()
    # would then wait, deaf to shutdown, for the next one.
    listener.setblocking(False)
    return listener


def notify_ready():
    """Tells devsup (or systemd) that this server accepts connections."""
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        if path.startswith("@"):
            path = "\0" + path[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.sendto(b"READY=1", path)
        return True
    fd = os.environ.get("DEVSUP_READY_FD")
    if fd:
        os.write(int(fd), b"READY=1\n")
        return True
    return False


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A client that sends nothing for this long is dropped, so that a drain
    # cannot hang on it.
    timeout = 5

    def do_GET(self):
        generation = os.environ.get("DEVSUP_GENERATION", "0")
        if self.path == "/":
            status, body = 200, f"gen={generation} pid={os.getpid()}\n"
        else:
            status, body = 404, "not found\n"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-generation", generation)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    # server_close() joins the request threads: that is the drain.
    daemon_threads = False
    block_on_close = True

    def __init__(self, listener):
        super().__init__(listener.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener


def main():
    # Blocked in every thread, so they arrive only through sigwait below.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server = Server(take_listener())
    accept = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    accept.start()
    notify_ready()
    received = signal.sigwait(stop_signals)
    print(f"server.py: {signal.Signals(received).name}, draining", file=sys.stderr)
    server.shutdown()  # stop accepting: serve_forever returns
    server.server_close()  # close our copy of the listener, join requests
    accept.join()


if __name__ == "__main__":
    main()
