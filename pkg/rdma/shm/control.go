package shm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// ctlType is the type of a control message on the unix socket.
type ctlType uint8

// Control messages. The setup (after the handshake) follows memif, in one
// message each way: the dialer sends the region and its eventfds for the
// rings, the listener answers connected with its own. Later both sides add
// and delete memory regions and say goodbye.
const (
	ctlSetup      ctlType = 1 // a: slots, b: data size, c: region size; the memfd, the eventfd the dialer sleeps on as producer of ring 0 (dialer to listener), the one it sleeps on as consumer of ring 1
	ctlConnected  ctlType = 2 // the listener's eventfds: the one it sleeps on as consumer of ring 0, as producer of ring 1
	ctlRegionAdd  ctlType = 3 // a: key, b: size; the memfd
	ctlRegionAck  ctlType = 4 // a: key, b: 0 mapped, 1 refused
	ctlRegionDel  ctlType = 5 // a: key
	ctlDisconnect ctlType = 6 // a clean close
)

// ctlSize is the size of a control message: type (u8), three zero bytes,
// a (u32), b (u64), c (u64), little endian.
const ctlSize = 24

// maxFDs is the most descriptors a control message carries.
const maxFDs = 3

type ctlMsg struct {
	typ ctlType
	a   uint32
	b   uint64
	c   uint64
}

// fdsOf returns how many descriptors a message of type t carries.
func fdsOf(t ctlType) int {
	switch t {
	case ctlRegionAdd:
		return 1
	case ctlConnected:
		return 2
	case ctlSetup:
		return 3
	default:
		return 0
	}
}

func (m *ctlMsg) encode() []byte {
	b := make([]byte, ctlSize)
	b[0] = byte(m.typ)
	binary.LittleEndian.PutUint32(b[4:], m.a)
	binary.LittleEndian.PutUint64(b[8:], m.b)
	binary.LittleEndian.PutUint64(b[16:], m.c)
	return b
}

// decodeCtl parses a control message that arrived with nfds descriptors.
func decodeCtl(b []byte, nfds int) (ctlMsg, error) {
	if len(b) != ctlSize || b[1] != 0 || b[2] != 0 || b[3] != 0 {
		return ctlMsg{}, fmt.Errorf("%w: malformed control message of %d bytes", rdma.ErrProtocol, len(b))
	}
	m := ctlMsg{
		typ: ctlType(b[0]),
		a:   binary.LittleEndian.Uint32(b[4:]),
		b:   binary.LittleEndian.Uint64(b[8:]),
		c:   binary.LittleEndian.Uint64(b[16:]),
	}
	if m.typ < ctlSetup || m.typ > ctlDisconnect {
		return ctlMsg{}, fmt.Errorf("%w: control message type %d", rdma.ErrProtocol, m.typ)
	}
	if want := fdsOf(m.typ); nfds != want {
		return ctlMsg{}, fmt.Errorf("%w: control message type %d with %d descriptors, want %d", rdma.ErrProtocol, m.typ, nfds, want)
	}
	return m, nil
}

// sendCtl writes a control message with its descriptors.
func sendCtl(conn *net.UnixConn, m ctlMsg, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err := conn.WriteMsgUnix(m.encode(), oob, nil)
	return err
}

// recvCtl reads one control message. The descriptors it returns are the
// caller's to close; on error none are left open.
func recvCtl(conn *net.UnixConn) (ctlMsg, []int, error) {
	var buf [ctlSize + 1]byte
	oob := make([]byte, unix.CmsgSpace(4*maxFDs))
	n, oobn, flags, _, err := conn.ReadMsgUnix(buf[:], oob)
	if err != nil {
		return ctlMsg{}, nil, err
	}
	fds, perr := parseRights(oob[:oobn])
	if perr == nil && flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0 {
		perr = fmt.Errorf("%w: truncated control message", rdma.ErrProtocol)
	}
	var m ctlMsg
	if perr == nil {
		m, perr = decodeCtl(buf[:n], len(fds))
	}
	if perr != nil {
		closeFDs(fds)
		return ctlMsg{}, nil, perr
	}
	return m, fds, nil
}

// parseRights extracts every descriptor passed with SCM_RIGHTS.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: control data: %w", rdma.ErrProtocol, err)
	}
	var fds []int
	var errs []error
	for i := range cmsgs {
		got, err := unix.ParseUnixRights(&cmsgs[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fds = append(fds, got...)
	}
	if len(errs) > 0 {
		closeFDs(fds)
		return nil, fmt.Errorf("%w: control data: %w", rdma.ErrProtocol, errors.Join(errs...))
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}
