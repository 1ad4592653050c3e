package core

import (
	"errors"
	"io"
	"net"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestAcceptor(t *testing.T) {
	conns := make(chan net.Conn)
	closed := make(chan struct{})
	accept := func() (net.Conn, error) {
		select {
		case c := <-conns:
			return c, nil
		case <-closed:
			return nil, errors.New("listener closed")
		}
	}
	serving := make(chan net.Conn)
	table := NewTable()
	log := logrus.New()
	log.SetOutput(io.Discard)
	var a *Acceptor[net.Conn]
	a = NewAcceptor(accept, func(c net.Conn) {
		serving <- c
		// The handshake reads until Close of the acceptor closes c.
		_, err := c.Read(make([]byte, 1))
		if err == nil {
			t.Error("read from a connection that should be closed")
		}
		if !a.Handshaken(c) {
			t.Error("Handshaken does not report the close")
		}
	}, 1, table, log)
	a.Start()
	first, peer1 := net.Pipe()
	defer peer1.Close()
	conns <- first
	<-serving
	// The only slot is taken: the next connection is closed and counted.
	second, peer2 := net.Pipe()
	conns <- second
	if _, err := peer2.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection beyond the limit was served")
	}
	if st := table.Stats(); st.HandshakeFailures != 1 {
		t.Errorf("stats %+v", st)
	}
	if err := a.Close(func() error { close(closed); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(func() error { return errors.New("called twice") }); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
