//go:build rdmaverbs && cgo

package verbs

/*
#cgo LDFLAGS: -libverbs -lrdmacm
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

// tether_wc is the part of a work completion Go needs.
typedef struct {
	uint64_t wr_id;
	uint32_t status;
	uint32_t opcode;
	uint32_t byte_len;
	uint32_t pad;
} tether_wc;

// tether_post is one send or RDMA write of a slot.
typedef struct {
	uint64_t wr_id;
	uint64_t raddr;
	uint32_t slot;
	uint32_t len;
	uint32_t rkey;
	uint32_t write;
} tether_post;

// tether_cm_event is the part of a connection manager event Go needs.
typedef struct {
	int event;
	int status;
	struct rdma_cm_id *id;
	struct rdma_cm_id *listen_id;
} tether_cm_event;

static int tether_set_nonblock(int fd) {
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0) return -errno;
	return fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ? -errno : 0;
}

// tether_drain acknowledges the completion channel's pending events and
// polls up to n completions into out, 32 at a time. When the queue is empty
// it re-arms notification and polls once more, which closes the race between
// the last poll and the arming. It returns how many completions it stored,
// less than n only when it re-armed, or -errno.
static int tether_drain(struct ibv_cq *cq, struct ibv_comp_channel *ch, tether_wc *out, int n) {
	struct ibv_cq *ev_cq;
	void *ev_ctx;
	unsigned int events = 0;
	while (ibv_get_cq_event(ch, &ev_cq, &ev_ctx) == 0) events++;
	if (events) ibv_ack_cq_events(cq, events);
	struct ibv_wc wc[32];
	int total = 0, armed = 0;
	while (total < n) {
		int want = n - total < 32 ? n - total : 32;
		int k = ibv_poll_cq(cq, want, wc);
		if (k < 0) return -EIO;
		for (int i = 0; i < k; i++) {
			out[total + i].wr_id = wc[i].wr_id;
			out[total + i].status = wc[i].status;
			out[total + i].opcode = wc[i].opcode;
			out[total + i].byte_len = wc[i].byte_len;
		}
		total += k;
		if (k == 0) {
			if (armed) break;
			if (ibv_req_notify_cq(cq, 0)) return -EIO;
			armed = 1;
		}
	}
	return total;
}

// tether_post_recvs posts receive buffers for the n slots listed in idx,
// chained 32 at a time.
static int tether_post_recvs(struct ibv_qp *qp, uint32_t lkey, char *base, uint32_t slot_size, const uint32_t *idx, int n) {
	struct ibv_recv_wr wr[32], *bad;
	struct ibv_sge sge[32];
	for (int done = 0; done < n;) {
		int k = n - done < 32 ? n - done : 32;
		for (int i = 0; i < k; i++) {
			uint32_t s = idx[done + i];
			sge[i].addr = (uintptr_t)(base + (size_t)s * slot_size);
			sge[i].length = slot_size;
			sge[i].lkey = lkey;
			wr[i].wr_id = s;
			wr[i].sg_list = &sge[i];
			wr[i].num_sge = 1;
			wr[i].next = i + 1 < k ? &wr[i + 1] : NULL;
		}
		int err = ibv_post_recv(qp, wr, &bad);
		if (err) return -err;
		done += k;
	}
	return 0;
}

// tether_post_sends posts n sends or RDMA writes of slots, chained 32 at a
// time, every one signalled (its completion frees its slot).
static int tether_post_sends(struct ibv_qp *qp, uint32_t lkey, char *base, uint32_t slot_size, const tether_post *p, int n) {
	struct ibv_send_wr wr[32], *bad;
	struct ibv_sge sge[32];
	for (int done = 0; done < n;) {
		int k = n - done < 32 ? n - done : 32;
		memset(wr, 0, sizeof(wr[0]) * k);
		for (int i = 0; i < k; i++) {
			const tether_post *q = &p[done + i];
			sge[i].addr = (uintptr_t)(base + (size_t)q->slot * slot_size);
			sge[i].length = q->len;
			sge[i].lkey = lkey;
			wr[i].wr_id = q->wr_id;
			wr[i].sg_list = &sge[i];
			wr[i].num_sge = 1;
			wr[i].send_flags = IBV_SEND_SIGNALED;
			if (q->write) {
				wr[i].opcode = IBV_WR_RDMA_WRITE;
				wr[i].wr.rdma.remote_addr = q->raddr;
				wr[i].wr.rdma.rkey = q->rkey;
			} else {
				wr[i].opcode = IBV_WR_SEND;
			}
			wr[i].next = i + 1 < k ? &wr[i + 1] : NULL;
		}
		int err = ibv_post_send(qp, wr, &bad);
		if (err) return -err;
		done += k;
	}
	return 0;
}

static int tether_addr(const char *host, const char *port, int passive, struct sockaddr_storage *out) {
	struct addrinfo hints, *res;
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res)) return -EINVAL;
	memcpy(out, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

static int tether_resolve_addr(struct rdma_cm_id *id, const char *host, const char *port, int timeout_ms) {
	struct sockaddr_storage sa;
	int err = tether_addr(host, port, 0, &sa);
	if (err) return err;
	return rdma_resolve_addr(id, NULL, (struct sockaddr *)&sa, timeout_ms) ? -errno : 0;
}

static int tether_bind(struct rdma_cm_id *id, const char *host, const char *port) {
	struct sockaddr_storage sa;
	int err = tether_addr(host, port, 1, &sa);
	if (err) return err;
	return rdma_bind_addr(id, (struct sockaddr *)&sa) ? -errno : 0;
}

static int tether_port(struct rdma_cm_id *id) { return ntohs(rdma_get_src_port(id)); }

static int tether_create_id(struct rdma_event_channel *ch, struct rdma_cm_id **id) {
	return rdma_create_id(ch, id, NULL, RDMA_PS_TCP) ? -errno : 0;
}

static int tether_get_event(struct rdma_event_channel *ch, tether_cm_event *out) {
	struct rdma_cm_event *ev;
	if (rdma_get_cm_event(ch, &ev)) return -errno;
	out->event = ev->event;
	out->status = ev->status;
	out->id = ev->id;
	out->listen_id = ev->listen_id;
	rdma_ack_cm_event(ev);
	return 0;
}

static int tether_create_qp(struct rdma_cm_id *id, struct ibv_pd *pd, struct ibv_cq *cq, int send_wr, int recv_wr) {
	struct ibv_qp_init_attr a;
	memset(&a, 0, sizeof a);
	a.send_cq = cq;
	a.recv_cq = cq;
	a.qp_type = IBV_QPT_RC;
	a.cap.max_send_wr = send_wr;
	a.cap.max_recv_wr = recv_wr;
	a.cap.max_send_sge = 1;
	a.cap.max_recv_sge = 1;
	return rdma_create_qp(id, pd, &a) ? -errno : 0;
}

static void tether_conn_param(struct rdma_conn_param *p) {
	memset(p, 0, sizeof *p);
	p->responder_resources = 1;
	p->initiator_depth = 1;
	p->retry_count = 7;
	p->rnr_retry_count = 7; // retry forever while the peer has no buffer posted
}

static int tether_connect(struct rdma_cm_id *id) {
	struct rdma_conn_param p;
	tether_conn_param(&p);
	return rdma_connect(id, &p) ? -errno : 0;
}

static int tether_accept(struct rdma_cm_id *id) {
	struct rdma_conn_param p;
	tether_conn_param(&p);
	return rdma_accept(id, &p) ? -errno : 0;
}

static int tether_device_count(void) {
	int n = 0;
	struct ibv_device **list = ibv_get_device_list(&n);
	if (!list) return 0;
	ibv_free_device_list(list);
	return n;
}

static struct ibv_context *tether_id_verbs(struct rdma_cm_id *id) { return id->verbs; }
static struct ibv_qp *tether_id_qp(struct rdma_cm_id *id) { return id->qp; }
static int tether_channel_fd(struct ibv_comp_channel *ch) { return ch->fd; }
static int tether_cm_fd(struct rdma_event_channel *ch) { return ch->fd; }
static uint32_t tether_mr_lkey(struct ibv_mr *mr) { return mr->lkey; }
static uint32_t tether_mr_rkey(struct ibv_mr *mr) { return mr->rkey; }

static void *tether_alloc(size_t size) {
	void *p = NULL;
	if (posix_memalign(&p, 4096, size)) return NULL;
	memset(p, 0, size);
	return p;
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// Completion status and opcodes the Go side looks at.
const (
	wcSuccess   = C.IBV_WC_SUCCESS
	wcRecv      = C.IBV_WC_RECV
	wcSend      = C.IBV_WC_SEND
	wcRDMAWrite = C.IBV_WC_RDMA_WRITE
)

// Connection manager events.
const (
	cmAddrResolved   = C.RDMA_CM_EVENT_ADDR_RESOLVED
	cmRouteResolved  = C.RDMA_CM_EVENT_ROUTE_RESOLVED
	cmConnectRequest = C.RDMA_CM_EVENT_CONNECT_REQUEST
	cmEstablished    = C.RDMA_CM_EVENT_ESTABLISHED
	cmDisconnected   = C.RDMA_CM_EVENT_DISCONNECTED
	cmDeviceRemoval  = C.RDMA_CM_EVENT_DEVICE_REMOVAL
	cmTimewaitExit   = C.RDMA_CM_EVENT_TIMEWAIT_EXIT
)

func errnoErr(what string, rc C.int) error {
	return fmt.Errorf("%s: %w", what, syscall.Errno(-rc))
}

// deviceCount returns how many RDMA devices the system has.
func deviceCount() int { return int(C.tether_device_count()) }

// pollFile wraps a descriptor owned by libibverbs or librdmacm for Go's
// poller: it polls a duplicate, so that closing the file never closes the
// library's descriptor.
type pollFile struct {
	f   *os.File
	raw syscall.RawConn
}

func newPollFile(fd C.int, name string) (*pollFile, error) {
	if rc := C.tether_set_nonblock(fd); rc < 0 {
		return nil, errnoErr("set "+name+" non-blocking", rc)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", name, err)
	}
	f := os.NewFile(uintptr(dup), name)
	raw, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &pollFile{f: f, raw: raw}, nil
}

// wait calls try until it reports true, sleeping in Go's poller while the
// descriptor is not readable.
func (p *pollFile) wait(try func() bool) error {
	return p.raw.Read(func(uintptr) bool { return try() })
}

func (p *pollFile) close() { _ = p.f.Close() }

// cmChannel is a connection manager event channel.
type cmChannel struct {
	ch *C.struct_rdma_event_channel
	pf *pollFile
}

func newCMChannel() (*cmChannel, error) {
	ch := C.rdma_create_event_channel()
	if ch == nil {
		return nil, errors.New("rdma_create_event_channel failed")
	}
	pf, err := newPollFile(C.tether_cm_fd(ch), "rdma cm channel")
	if err != nil {
		C.rdma_destroy_event_channel(ch)
		return nil, err
	}
	return &cmChannel{ch: ch, pf: pf}, nil
}

type cmEvent struct {
	event    int
	status   int
	id       *C.struct_rdma_cm_id
	listenID *C.struct_rdma_cm_id
}

// next returns the next event (acknowledged already), waiting until
// deadline (zero: no deadline).
func (c *cmChannel) next(deadline time.Time) (cmEvent, error) {
	_ = c.pf.f.SetReadDeadline(deadline)
	var ev C.tether_cm_event
	var rc C.int
	err := c.pf.wait(func() bool {
		rc = C.tether_get_event(c.ch, &ev) //nolint:gocritic // cgo's expansion of the call
		return rc != -C.EAGAIN
	})
	if err != nil {
		return cmEvent{}, err
	}
	if rc < 0 {
		return cmEvent{}, errnoErr("rdma_get_cm_event", rc)
	}
	return cmEvent{event: int(ev.event), status: int(ev.status), id: ev.id, listenID: ev.listen_id}, nil
}

// expect waits for event want on id.
func (c *cmChannel) expect(deadline time.Time, want int) error {
	ev, err := c.next(deadline)
	if err != nil {
		return err
	}
	if ev.event != want || ev.status != 0 {
		return fmt.Errorf("%w: connection manager event %s (status %d), want %s", rdma.ErrUnreachable,
			C.GoString(C.rdma_event_str(uint32(ev.event))), ev.status, C.GoString(C.rdma_event_str(uint32(want))))
	}
	return nil
}

func (c *cmChannel) close() {
	c.pf.close()
	C.rdma_destroy_event_channel(c.ch)
}

// splitHostPort splits an "ip:port" address for getaddrinfo.
func splitHostPort(addr string) (*C.char, *C.char, func(), error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: address %q: %w", rdma.ErrInvalidArgument, addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: port %q", rdma.ErrInvalidArgument, port)
	}
	ch, cp := C.CString(host), C.CString(port)
	return ch, cp, func() {
		C.free(unsafe.Pointer(ch))
		C.free(unsafe.Pointer(cp))
	}, nil
}

// qp is a queue pair with its completion queue, completion channel and
// registered slot buffers, all outside the Go heap.
type qp struct {
	id       *C.struct_rdma_cm_id
	pd       *C.struct_ibv_pd
	cch      *C.struct_ibv_comp_channel
	cq       *C.struct_ibv_cq
	qp       *C.struct_ibv_qp
	slots    int
	slotSize int
	sendBuf  unsafe.Pointer
	recvBuf  unsafe.Pointer
	sendMR   *C.struct_ibv_mr
	recvMR   *C.struct_ibv_mr
	wcs      *C.tether_wc
	nwc      int
	pf       *pollFile
	created  bool // rdma_create_qp succeeded
}

// newQP allocates everything a channel needs on id and posts the receive
// buffers. On error it releases what it took.
func newQP(id *C.struct_rdma_cm_id, slots, slotSize int) (q *qp, err error) {
	q = &qp{id: id, slots: slots, slotSize: slotSize, nwc: 64}
	defer func() {
		if err != nil {
			q.destroy()
		}
	}()
	ctx := C.tether_id_verbs(id)
	if ctx == nil {
		return nil, fmt.Errorf("%w: no RDMA device behind the address", rdma.ErrUnreachable)
	}
	if q.pd = C.ibv_alloc_pd(ctx); q.pd == nil {
		return nil, errors.New("ibv_alloc_pd failed")
	}
	if q.cch = C.ibv_create_comp_channel(ctx); q.cch == nil {
		return nil, errors.New("ibv_create_comp_channel failed")
	}
	if q.cq = C.ibv_create_cq(ctx, C.int(2*slots+8), nil, q.cch, 0); q.cq == nil {
		return nil, errors.New("ibv_create_cq failed")
	}
	if q.pf, err = newPollFile(C.tether_channel_fd(q.cch), "rdma completion channel"); err != nil {
		return nil, err
	}
	size := C.size_t(slots * slotSize)
	if q.sendBuf = C.tether_alloc(size); q.sendBuf == nil {
		return nil, errors.New("allocate send slots")
	}
	if q.recvBuf = C.tether_alloc(size); q.recvBuf == nil {
		return nil, errors.New("allocate receive slots")
	}
	if q.sendMR = C.ibv_reg_mr(q.pd, q.sendBuf, size, C.IBV_ACCESS_LOCAL_WRITE); q.sendMR == nil {
		return nil, errors.New("register send slots")
	}
	if q.recvMR = C.ibv_reg_mr(q.pd, q.recvBuf, size, C.IBV_ACCESS_LOCAL_WRITE); q.recvMR == nil {
		return nil, errors.New("register receive slots")
	}
	if q.wcs = (*C.tether_wc)(C.calloc(C.size_t(q.nwc), C.size_t(unsafe.Sizeof(C.tether_wc{})))); q.wcs == nil {
		return nil, errors.New("allocate completions")
	}
	if rc := C.tether_create_qp(id, q.pd, q.cq, C.int(slots+1), C.int(slots)); rc < 0 {
		return nil, errnoErr("rdma_create_qp", rc)
	}
	q.created = true
	q.qp = C.tether_id_qp(id)
	if rc := C.ibv_req_notify_cq(q.cq, 0); rc != 0 {
		return nil, errnoErr("ibv_req_notify_cq", -rc)
	}
	idx := make([]uint32, slots)
	for i := range idx {
		idx[i] = uint32(i)
	}
	if err := q.postRecvs(idx); err != nil {
		return nil, err
	}
	return q, nil
}

// sendSlot and recvSlot return a slot's memory.
func (q *qp) sendSlot(i uint32) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(q.sendBuf, int(i)*q.slotSize)), q.slotSize)
}

func (q *qp) recvSlot(i uint32) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(q.recvBuf, int(i)*q.slotSize)), q.slotSize)
}

func (q *qp) postRecvs(idx []uint32) error {
	if len(idx) == 0 {
		return nil
	}
	rc := C.tether_post_recvs(q.qp, C.tether_mr_lkey(q.recvMR), (*C.char)(q.recvBuf), C.uint32_t(q.slotSize), (*C.uint32_t)(unsafe.Pointer(&idx[0])), C.int(len(idx)))
	if rc < 0 {
		return errnoErr("ibv_post_recv", rc)
	}
	return nil
}

// post is one send or write of a slot.
type post struct {
	wrID  uint64
	raddr uint64
	slot  uint32
	len   uint32
	rkey  uint32
	write uint32
}

func (q *qp) postSends(ps []post) error {
	if len(ps) == 0 {
		return nil
	}
	cps := make([]C.tether_post, len(ps))
	for i, p := range ps {
		cps[i] = C.tether_post{wr_id: C.uint64_t(p.wrID), raddr: C.uint64_t(p.raddr), slot: C.uint32_t(p.slot), len: C.uint32_t(p.len), rkey: C.uint32_t(p.rkey), write: C.uint32_t(p.write)}
	}
	rc := C.tether_post_sends(q.qp, C.tether_mr_lkey(q.sendMR), (*C.char)(q.sendBuf), C.uint32_t(q.slotSize), &cps[0], C.int(len(cps)))
	if rc < 0 {
		return errnoErr("ibv_post_send", rc)
	}
	return nil
}

// completion is a drained work completion.
type completion struct {
	wrID   uint64
	status int
	opcode int
	length int
}

// drain returns the pending completions (at most q.nwc) and whether the
// queue was emptied and notification re-armed.
func (q *qp) drain(out []completion) ([]completion, bool, error) {
	n := C.tether_drain(q.cq, q.cch, q.wcs, C.int(q.nwc))
	if n < 0 {
		return out, false, errnoErr("poll the completion queue", n)
	}
	wcs := unsafe.Slice(q.wcs, q.nwc)
	for i := range int(n) {
		out = append(out, completion{wrID: uint64(wcs[i].wr_id), status: int(wcs[i].status), opcode: int(wcs[i].opcode), length: int(wcs[i].byte_len)})
	}
	return out, int(n) < q.nwc, nil
}

// statusString names a completion status.
func statusString(status int) string {
	return C.GoString(C.ibv_wc_status_str(uint32(status)))
}

func (q *qp) disconnect() { C.rdma_disconnect(q.id) }

// destroy releases everything but the connection manager ID.
func (q *qp) destroy() {
	if q.pf != nil {
		q.pf.close()
	}
	if q.created {
		C.rdma_destroy_qp(q.id)
	}
	if q.sendMR != nil {
		C.ibv_dereg_mr(q.sendMR)
	}
	if q.recvMR != nil {
		C.ibv_dereg_mr(q.recvMR)
	}
	if q.cq != nil {
		C.ibv_destroy_cq(q.cq)
	}
	if q.cch != nil {
		C.ibv_destroy_comp_channel(q.cch)
	}
	if q.pd != nil {
		C.ibv_dealloc_pd(q.pd)
	}
	C.free(q.sendBuf)
	C.free(q.recvBuf)
	C.free(unsafe.Pointer(q.wcs))
}

// memRegion is memory registered for remote writes.
type memRegion struct {
	buf  unsafe.Pointer
	size int
	mr   *C.struct_ibv_mr
}

func (q *qp) registerRegion(size int) (*memRegion, error) {
	buf := C.tether_alloc(C.size_t(size))
	if buf == nil {
		return nil, fmt.Errorf("allocate a region of %d bytes", size)
	}
	mr := C.ibv_reg_mr(q.pd, buf, C.size_t(size), C.IBV_ACCESS_LOCAL_WRITE|C.IBV_ACCESS_REMOTE_WRITE)
	if mr == nil {
		C.free(buf)
		return nil, fmt.Errorf("register a region of %d bytes", size)
	}
	return &memRegion{buf: buf, size: size, mr: mr}, nil
}

func (r *memRegion) bytes() []byte        { return unsafe.Slice((*byte)(r.buf), r.size) }
func (r *memRegion) addr() uint64         { return uint64(uintptr(r.buf)) }
func (r *memRegion) rkey() uint32         { return uint32(C.tether_mr_rkey(r.mr)) }
func (r *memRegion) release()             { C.ibv_dereg_mr(r.mr); C.free(r.buf) }
func cmDestroyID(id *C.struct_rdma_cm_id) { C.rdma_destroy_id(id) }

// createID creates a connection manager ID on ch.
func createID(ch *cmChannel) (*C.struct_rdma_cm_id, error) {
	var id *C.struct_rdma_cm_id
	if rc := C.tether_create_id(ch.ch, &id); rc < 0 { //nolint:gocritic // cgo's expansion of the call
		return nil, errnoErr("rdma_create_id", rc)
	}
	return id, nil
}

// resolve resolves addr and a route to it on id.
func resolve(ctx context.Context, ch *cmChannel, id *C.struct_rdma_cm_id, addr string, deadline time.Time) error {
	host, port, free, err := splitHostPort(addr)
	if err != nil {
		return err
	}
	defer free()
	timeout := max(time.Until(deadline), time.Millisecond)
	if rc := C.tether_resolve_addr(id, host, port, C.int(timeout/time.Millisecond)); rc < 0 {
		return fmt.Errorf("%w: %w", rdma.ErrUnreachable, errnoErr("rdma_resolve_addr", rc))
	}
	if err := ch.expect(deadline, cmAddrResolved); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if rc := C.rdma_resolve_route(id, C.int(timeout/time.Millisecond)); rc != 0 {
		return fmt.Errorf("%w: rdma_resolve_route failed", rdma.ErrUnreachable)
	}
	return ch.expect(deadline, cmRouteResolved)
}

func connectID(id *C.struct_rdma_cm_id) error {
	if rc := C.tether_connect(id); rc < 0 {
		return errnoErr("rdma_connect", rc)
	}
	return nil
}

func acceptID(id *C.struct_rdma_cm_id) error {
	if rc := C.tether_accept(id); rc < 0 {
		return errnoErr("rdma_accept", rc)
	}
	return nil
}

func rejectID(id *C.struct_rdma_cm_id) { C.rdma_reject(id, nil, 0) }

// bindListen binds id to addr and listens; it returns the bound port.
func bindListen(id *C.struct_rdma_cm_id, addr string) (int, error) {
	host, port, free, err := splitHostPort(addr)
	if err != nil {
		return 0, err
	}
	defer free()
	if rc := C.tether_bind(id, host, port); rc < 0 {
		return 0, errnoErr("rdma_bind_addr", rc)
	}
	if rc := C.rdma_listen(id, 128); rc != 0 {
		return 0, errors.New("rdma_listen failed")
	}
	return int(C.tether_port(id)), nil
}

func eventName(ev int) string { return C.GoString(C.rdma_event_str(uint32(ev))) }

// cmID is a connection manager ID.
type cmID = C.struct_rdma_cm_id
