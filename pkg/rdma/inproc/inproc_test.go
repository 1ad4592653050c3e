package inproc

import (
	"context"
	"io"
	"testing"

	"go.uber.org/goleak"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
	"github.com/tether-mesh/tether/pkg/rdma/rdmatest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func TestConformance(t *testing.T) {
	logs := rdmatest.NewLogRecorder()
	rdmatest.Run(t, rdmatest.Harness{
		Provider:  New(WithLogger(logs.Logger())),
		Logs:      logs,
		StartPeer: rdmatest.GoroutinePeer(New(), func(ch rdma.Channel) { ch.(*end).abort() }),
		RawDial: func(ctx context.Context, addr string) (handshake.Conn, io.Closer, error) {
			c, err := dialPipe(addr)
			if err != nil {
				return nil, nil, err
			}
			c.ctx = ctx
			// Close returns once the listener is done with the connection
			// (its side of the pipe closes last): until then a handshake
			// that succeeded still holds the connection ID's reservation,
			// and the next dialer of that ID, a goroutine here rather than a
			// process, would be refused as a second channel.
			return c, closerFunc(func() error {
				c.link.giveUp()
				c.close()
				select {
				case <-c.peerClosed:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}), nil
		},
	})
}
