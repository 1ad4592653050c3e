package rdmatest

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// PeerConfig tells a peer what to dial.
type PeerConfig struct {
	Provider string `json:"provider"`
	Addr     string `json:"addr"`
	ConnID   string `json:"conn_id"`
	Secret   string `json:"secret"` // rdma.Secret.Encode
}

// Classify names the kind of a channel or dial error, for the peer's replies.
func Classify(err error) string {
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, rdma.ErrAuth):
		return "auth"
	case errors.Is(err, rdma.ErrUnknownConnection):
		return "unknown"
	case errors.Is(err, rdma.ErrAlreadyAttached):
		return "attached"
	case errors.Is(err, rdma.ErrRejected):
		return "rejected"
	case errors.Is(err, rdma.ErrUnreachable):
		return "unreachable"
	case errors.Is(err, rdma.ErrProtocol):
		return "protocol"
	case errors.Is(err, rdma.ErrPeerClosed):
		return "peerclosed"
	case errors.Is(err, rdma.ErrPeerLost):
		return "peerlost"
	case errors.Is(err, rdma.ErrClosed):
		return "closed"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "timeout"
	default:
		return "other"
	}
}

// commandTimeout bounds every command a peer runs, so that a broken
// channel makes the test fail instead of hanging.
const commandTimeout = 60 * time.Second

// ServePeer dials cfg with p, reports the outcome on out ("ok dialed" or
// "err <class> <error>"), then runs one command per line read from in and
// answers each with one line, until "exit" or the end of in. onChannel, when
// not nil, is given the channel once dialed (a goroutine peer's Kill uses it).
func ServePeer(p rdma.Provider, cfg PeerConfig, in io.Reader, out io.Writer, onChannel func(rdma.Channel)) error {
	secret, err := rdma.ParseSecret(cfg.Secret)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	ch, err := p.Dial(ctx, cfg.Addr, cfg.ConnID, secret)
	cancel()
	if err != nil {
		// The failure is the answer, not an error of the peer.
		_, werr := fmt.Fprintf(out, "err %s %s\n", Classify(err), oneLine(err))
		return werr
	}
	defer ch.Close()
	if onChannel != nil {
		onChannel(ch)
	}
	if _, err := fmt.Fprintln(out, "ok dialed"); err != nil {
		return err
	}
	pr := &peerRunner{ch: ch}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		args := strings.Fields(sc.Text())
		if len(args) == 0 {
			continue
		}
		if args[0] == "exit" {
			_, err := fmt.Fprintln(out, "ok bye")
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		reply, err := pr.run(ctx, args)
		cancel()
		if err != nil {
			reply = fmt.Sprintf("err %s %s", Classify(err), oneLine(err))
		} else {
			reply = strings.TrimSpace("ok " + reply)
		}
		if _, err := fmt.Fprintln(out, reply); err != nil {
			return err
		}
	}
	return sc.Err()
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " | ")
}

type peerRunner struct {
	ch     rdma.Channel
	m      rdma.Message
	region rdma.Region
}

func atoi(args []string, i int) (int, error) {
	if i >= len(args) {
		return 0, fmt.Errorf("command %q needs %d arguments", args[0], i)
	}
	return strconv.Atoi(args[i])
}

// run executes one command:
//
//	echo N               receive N messages and send each back unchanged
//	order G M            receive G*M messages from G concurrent streams, check the order
//	recvseqs N           receive N messages, answer their sequence numbers
//	drain N              receive N messages, check their payload patterns
//	send N SIZE          send N messages of SIZE bytes (stream 7)
//	stats                answer the channel's stats
//	region SIZE          register a region and send its key and size in a message
//	checkregion OFF LEN SEED  receive one (fence) message, then check region bytes
//	zeroes OFF LEN       check that region bytes are zero
//	wait-end             wait until the channel ends and answer how
//	recv-end             call Recv until it fails, answer how and how many arrived first
//	close                close the channel
func (pr *peerRunner) run(ctx context.Context, args []string) (string, error) {
	ch := pr.ch
	switch args[0] {
	case "echo":
		n, err := atoi(args, 1)
		if err != nil {
			return "", err
		}
		for range n {
			if err := ch.Recv(ctx, &pr.m); err != nil {
				return "", err
			}
			out := rdma.Message{Flags: pr.m.Flags, Header: pr.m.Header, Payload: pr.m.Payload}
			if _, err := ch.Send(ctx, &out); err != nil {
				return "", err
			}
			pr.m.Detach() // the echoed payload stays with the channel until acknowledged
		}
		return "", nil
	case "order":
		g, err := atoi(args, 1)
		if err != nil {
			return "", err
		}
		n, err := atoi(args, 2)
		if err != nil {
			return "", err
		}
		next := make([]uint32, g)
		var last uint64
		for range g * n {
			if err := ch.Recv(ctx, &pr.m); err != nil {
				return "", err
			}
			s, i, seed, err := parseHeader(pr.m.Header)
			if err != nil {
				return "", err
			}
			if int(s) >= g || i != next[s] {
				return "", fmt.Errorf("stream %d: got index %d, want %d", s, i, next[min(int(s), g-1)])
			}
			if pr.m.Seq <= last {
				return "", fmt.Errorf("sequence number %d after %d", pr.m.Seq, last)
			}
			if err := CheckPattern(pr.m.Payload, seed); err != nil {
				return "", err
			}
			next[s]++
			last = pr.m.Seq
		}
		return "", nil
	case "recvseqs":
		n, err := atoi(args, 1)
		if err != nil {
			return "", err
		}
		seqs := make([]string, 0, n)
		for range n {
			if err := ch.Recv(ctx, &pr.m); err != nil {
				return "", err
			}
			seqs = append(seqs, strconv.FormatUint(pr.m.Seq, 10))
		}
		return strings.Join(seqs, " "), nil
	case "drain":
		n, err := atoi(args, 1)
		if err != nil {
			return "", err
		}
		for range n {
			if err := ch.Recv(ctx, &pr.m); err != nil {
				return "", err
			}
			_, _, seed, err := parseHeader(pr.m.Header)
			if err != nil {
				return "", err
			}
			if err := CheckPattern(pr.m.Payload, seed); err != nil {
				return "", err
			}
		}
		return "", nil
	case "send":
		n, err := atoi(args, 1)
		if err != nil {
			return "", err
		}
		size, err := atoi(args, 2)
		if err != nil {
			return "", err
		}
		for i := range n {
			seed := uint64(7000 + i)
			m := rdma.Message{Header: header(7, uint32(i), seed, 16), Payload: Pattern(seed, size)}
			if _, err := ch.Send(ctx, &m); err != nil {
				return "", err
			}
		}
		return "", nil
	case "stats":
		st := ch.Stats()
		return fmt.Sprintf("queued=%d queuedbytes=%d window=%d windowbytes=%d received=%d",
			st.Queued, st.QueuedBytes, st.WindowMessages, st.WindowBytes, st.Received), nil
	case "region":
		size, err := atoi(args, 1)
		if err != nil {
			return "", err
		}
		r, err := ch.RegisterRegion(size)
		if err != nil {
			return "", err
		}
		pr.region = r
		payload := binary.LittleEndian.AppendUint32(nil, uint32(r.Key()))
		payload = binary.LittleEndian.AppendUint64(payload, uint64(size))
		if _, err := ch.Send(ctx, &rdma.Message{Header: []byte("region"), Payload: payload}); err != nil {
			return "", err
		}
		return strconv.FormatUint(uint64(r.Key()), 10), nil
	case "checkregion", "zeroes":
		off, err := atoi(args, 1)
		if err != nil {
			return "", err
		}
		n, err := atoi(args, 2)
		if err != nil {
			return "", err
		}
		if pr.region == nil {
			return "", errors.New("no region registered")
		}
		b := pr.region.Bytes()
		if off+n > len(b) {
			return "", fmt.Errorf("range %d+%d outside region of %d", off, n, len(b))
		}
		if args[0] == "zeroes" {
			for i, c := range b[off : off+n] {
				if c != 0 {
					return "", fmt.Errorf("region byte %d is %d, want 0", off+i, c)
				}
			}
			return "", nil
		}
		seed, err := atoi(args, 3)
		if err != nil {
			return "", err
		}
		// The fence message orders the writes before it.
		if err := ch.Recv(ctx, &pr.m); err != nil {
			return "", err
		}
		return "", CheckPattern(b[off:off+n], uint64(seed))
	case "wait-end":
		select {
		case <-ch.Done():
			return Classify(ch.Err()), nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	case "recv-end":
		got := 0
		for {
			if err := ch.Recv(ctx, &pr.m); err != nil {
				return fmt.Sprintf("%s %d", Classify(err), got), nil
			}
			got++
		}
	case "close":
		return "", ch.Close()
	default:
		return "", fmt.Errorf("unknown command %q", args[0])
	}
}
