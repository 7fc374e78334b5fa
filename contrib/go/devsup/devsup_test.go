package devsup

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func TestListenerBindsAloneWithoutPassedSockets(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	ln, err := Listener("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Addr().(*net.TCPAddr).Port == 0 {
		t.Fatalf("not listening: %v", ln.Addr())
	}
	// Passed sockets for another process (LISTEN_PID): not ours either.
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", "1")
	other, err := Listener("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
}

func TestReadyWritesToTheReadyFd(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DEVSUP_READY_FD", strconv.Itoa(int(w.Fd())))
	if err := Ready(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	got, _ := io.ReadAll(r)
	if string(got) != "READY=1\n" {
		t.Fatalf("wrote %q", got)
	}
}

// On SIGTERM: no new connection is accepted, a request on an open
// keep-alive connection is answered with "Connection: close", and Serve
// returns once the connections are gone.
func TestServeDrainsOnSigterm(t *testing.T) {
	t.Setenv("DEVSUP_READY_FD", "")
	t.Setenv("NOTIFY_SOCKET", "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})}
	served := make(chan error, 1)
	go func() { served <- Serve(srv, ln) }()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reader := bufio.NewReader(conn)
	get := func() *http.Response {
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(reader, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(res.Body)
		return res
	}
	if res := get(); res.Close {
		t.Fatal("closed before the drain")
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	// Until the listener is closed, a connect may still succeed: wait.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if res := get(); !res.Close {
		t.Fatal("no Connection: close during the drain")
	}
	conn.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}
