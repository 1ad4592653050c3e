package sandbox

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

// proxy forwards the connections it accepts to a target. Paused, it stops
// moving bytes in both directions without closing anything: what was sent
// waits in the kernel's buffers, as the packets of a partitioned network
// wait to be sent again, and neither side hears a reset.
type proxy struct {
	lis           net.Listener
	network, addr string // of the target
	mu            sync.Mutex
	flowing       chan struct{} // closed while bytes may move
	conns         map[net.Conn]struct{}
	closed        bool
	wg            sync.WaitGroup
}

func newProxy(lis net.Listener, network, addr string) *proxy {
	p := &proxy{lis: lis, network: network, addr: addr, flowing: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.flowing)
	p.wg.Add(1)
	go p.accept()
	return p
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		var d net.Dialer
		up, err := d.DialContext(context.Background(), p.network, p.addr)
		if err != nil {
			_ = c.Close()
			continue
		}
		if !p.track(c, up) {
			return
		}
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

// pipe copies from src to dst, waiting while the proxy is paused.
func (p *proxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	defer func() {
		_ = src.Close()
		_ = dst.Close()
		p.mu.Lock()
		delete(p.conns, src)
		delete(p.conns, dst)
		p.mu.Unlock()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.wait() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			if tc, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}

// wait blocks while the proxy is paused; false means it closed.
func (p *proxy) wait() bool {
	p.mu.Lock()
	flowing, closed := p.flowing, p.closed
	p.mu.Unlock()
	if closed {
		return false
	}
	<-flowing
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed
}

// pause stops the bytes; resume lets them go on.
func (p *proxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flowing:
		p.flowing = make(chan struct{})
	default:
	}
}

func (p *proxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flowing:
	default:
		close(p.flowing)
	}
}

// close stops the proxy and every connection through it.
func (p *proxy) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	select {
	case <-p.flowing:
	default:
		close(p.flowing)
	}
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.lis.Close()
	p.wg.Wait()
}
