package rdmatest

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
)

// rawCodec carries *[]byte messages as they are, so that the gRPC baseline
// measures gRPC's transport, not a serialisation library.
type rawCodec struct{}

func (rawCodec) Name() string { return "tether-raw" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, errors.New("raw codec: not a *[]byte")
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return errors.New("raw codec: not a *[]byte")
	}
	n := data.Len()
	if cap(*b) < n {
		*b = make([]byte, n)
	}
	*b = (*b)[:n]
	data.CopyTo(*b)
	return nil
}

type streamHandler func(grpc.ServerStream) error

var grpcDesc = grpc.ServiceDesc{
	ServiceName: "tether.rdmatest.Baseline",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		Handler:       func(srv any, s grpc.ServerStream) error { return srv.(streamHandler)(s) },
		ServerStreams: true,
		ClientStreams: true,
	}},
}

// grpcStream starts a gRPC server on loopback whose bidirectional stream
// runs handler, and opens a client stream to it.
func grpcStream(b *testing.B, handler streamHandler) grpc.ClientStream {
	b.Helper()
	var lc net.ListenConfig
	lis, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}))
	srv.RegisterService(&grpcDesc, handler)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	cc, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := cc.NewStream(ctx, &grpcDesc.Streams[0], "/tether.rdmatest.Baseline/Stream")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cancel()
		_ = cc.Close()
		srv.Stop()
		<-served
	})
	return stream
}

// GRPCPingPong measures a round trip of size-byte messages on a gRPC
// bidirectional stream over loopback: what a user would otherwise pick.
func GRPCPingPong(b *testing.B, size int) {
	stream := grpcStream(b, func(s grpc.ServerStream) error {
		var msg []byte
		for {
			if err := s.RecvMsg(&msg); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			if err := s.SendMsg(&msg); err != nil {
				return err
			}
		}
	})
	out := make([]byte, size)
	var in []byte
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := stream.SendMsg(&out); err != nil {
			b.Fatal(err)
		}
		if err := stream.RecvMsg(&in); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_ = stream.CloseSend()
}

// GRPCThroughput measures one-way throughput of size-byte messages on a
// gRPC bidirectional stream over loopback.
func GRPCThroughput(b *testing.B, size int) {
	stream := grpcStream(b, func(s grpc.ServerStream) error {
		var msg []byte
		n := 0
		for {
			if err := s.RecvMsg(&msg); err != nil {
				if errors.Is(err, io.EOF) {
					count := []byte{byte(n)}
					return s.SendMsg(&count)
				}
				return err
			}
			n++
		}
	})
	out := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := stream.SendMsg(&out); err != nil {
			b.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		b.Fatal(err)
	}
	var done []byte
	if err := stream.RecvMsg(&done); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}
