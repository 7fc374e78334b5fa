// Package devsup serves an http.Server on the socket devsup (or systemd
// socket activation) passes, says READY=1, and drains on SIGTERM without
// losing a request. Standard library only: vendor it by copying this one
// file into your module (e.g. internal/devsup/devsup.go).
//
//	srv := &http.Server{Handler: mux}
//	if err := devsup.ListenAndServe(srv, ":8080"); err != nil { log.Fatal(err) }
//
// Run alone, it listens on the address given. Under devsup or systemd it
// takes fd 3 (LISTEN_FDS; LISTEN_PID is checked only when set), sends
// READY=1 (DEVSUP_READY_FD, else NOTIFY_SOCKET), and on SIGTERM or SIGINT
// stops accepting, answers with "Connection: close" for Grace (so clients
// leave their keep-alive connections themselves), then runs Shutdown
// (which closes the connections idle since, and waits for busy ones, up to
// 8 s). The same program runs unchanged under systemd socket activation.
package devsup

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// Grace is how long a draining server keeps answering requests on its open
// connections with "Connection: close" before Shutdown closes idle ones.
var Grace = 500 * time.Millisecond

// Listener returns the first passed socket (fd 3), or listens on addr when
// nothing was passed.
func Listener(addr string) (net.Listener, error) {
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	pid := os.Getenv("LISTEN_PID")
	if n < 1 || (pid != "" && pid != strconv.Itoa(os.Getpid())) {
		return net.Listen("tcp", addr)
	}
	f := os.NewFile(3, "LISTEN_FD_3")
	defer f.Close()
	syscall.CloseOnExec(3)
	return net.FileListener(f)
}

// Ready tells devsup (or systemd) that the server accepts connections.
func Ready() error {
	if fd, err := strconv.Atoi(os.Getenv("DEVSUP_READY_FD")); err == nil {
		_, err := syscall.Write(fd, []byte("READY=1\n"))
		return err
	}
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte("READY=1"))
	return err
}

// ListenAndServe serves srv on the passed socket (or addr), says READY=1,
// and returns once a SIGTERM or SIGINT drain has finished.
func ListenAndServe(srv *http.Server, addr string) error {
	ln, err := Listener(addr)
	if err != nil {
		return err
	}
	return Serve(srv, ln)
}

// Serve serves srv on ln, says READY=1, and drains on SIGTERM or SIGINT.
func Serve(srv *http.Server, ln net.Listener) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	// While draining, every response says "Connection: close", and its
	// client leaves. (SetKeepAlivesEnabled(false) would do that too, but
	// it also closes idle connections at once, racing a client's next
	// request.)
	var draining atomic.Bool
	handler := srv.Handler
	if handler == nil {
		handler = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			w.Header().Set("Connection", "close")
		}
		handler.ServeHTTP(w, r)
	})
	done := make(chan error, 1)
	go func() {
		<-sig
		draining.Store(true)
		// Stop accepting: the next generation takes new connections.
		ln.Close()
		time.Sleep(Grace)
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	if err := Ready(); err != nil {
		return err
	}
	err := srv.Serve(ln)
	if err != nil && !errors.Is(err, net.ErrClosed) && err != http.ErrServerClosed {
		return err
	}
	return <-done
}
