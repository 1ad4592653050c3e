package metrics

import (
	"context"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// GRPC counts the calls a gRPC server handled, by service, method and
// status code, when they end:
//
//	tether_<subsystem>_requests_total{service, method, code}
//
// Errors are the series whose code is not OK; for example the rate of
// failed connection requests is
// rate(tether_forwarder_requests_total{service="networkservice.NetworkService",method="Request",code!="OK"}[5m]).
// A stream counts once, with the status it ended with.
type GRPC struct {
	handled *prometheus.CounterVec
}

// NewGRPC returns the collector of a process's gRPC server; subsystem names
// the process ("forwarder", "member").
func NewGRPC(subsystem string) *GRPC {
	return &GRPC{handled: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: subsystem, Name: "requests_total",
		Help: "gRPC calls handled, by service, method and status code (errors are the codes other than OK).",
	}, []string{"service", "method", "code"})}
}

// Describe implements prometheus.Collector.
func (g *GRPC) Describe(ch chan<- *prometheus.Desc) { g.handled.Describe(ch) }

// Collect implements prometheus.Collector.
func (g *GRPC) Collect(ch chan<- prometheus.Metric) { g.handled.Collect(ch) }

// Init creates the series of every method s serves with code OK at zero,
// so that a rate over them starts from the first scrape. Call it once the
// services are registered.
func (g *GRPC) Init(s *grpc.Server) {
	for service, info := range s.GetServiceInfo() {
		for _, m := range info.Methods {
			g.handled.WithLabelValues(service, m.Name, codes.OK.String())
		}
	}
}

// Observe counts one call of fullMethod ("/package.Service/Method") that
// ended with err.
func (g *GRPC) Observe(fullMethod string, err error) {
	service, method := splitMethod(fullMethod)
	g.handled.WithLabelValues(service, method, status.Code(err).String()).Inc()
}

// UnaryServerInterceptor counts unary calls.
func (g *GRPC) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		g.Observe(info.FullMethod, err)
		return resp, err
	}
}

// StreamServerInterceptor counts streams when they end.
func (g *GRPC) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		g.Observe(info.FullMethod, err)
		return err
	}
}

func splitMethod(fullMethod string) (service, method string) {
	s := strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:]
	}
	return "unknown", s
}
