package feed_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/internal/feed"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func v(seq uint64, ids ...string) *view.View {
	out := &view.View{Group: "g", ID: view.ID{Epoch: 1, Seq: seq}}
	for i, id := range ids {
		out.Members = append(out.Members, view.Member{ID: id, Incarnation: uint64(i + 1)})
	}
	return out
}

func memberIDs(ms []view.Member) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func next(t *testing.T, f *feed.Feed) view.View {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	got, err := f.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func nothing(t *testing.T, f *feed.Feed) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if got, err := f.Next(ctx); status.Code(err) != codes.Canceled {
		t.Fatalf("Next = %v, %v; want nothing", got.ID, err)
	}
}

func TestInitialZeroView(t *testing.T) {
	t.Parallel()
	f := feed.New(t.Context(), view.View{}, nil)
	defer f.Close()
	f.Publish(&view.View{Group: "g"})
	if got := next(t, f); !got.ID.IsZero() {
		t.Fatalf("first view %v, want the zero view", got.ID)
	}
	f.Publish(&view.View{Group: "g"}) // not newer
	nothing(t, f)
	f.Publish(v(1, "a"))
	if got := next(t, f); got.ID.Seq != 1 || len(got.Joined) != 1 {
		t.Fatalf("got %+v", got)
	}
}

func TestCoalescesAndDiffsAgainstLastDelivered(t *testing.T) {
	t.Parallel()
	f := feed.New(t.Context(), view.View{ID: view.ID{Epoch: 1, Seq: 1}, Members: v(1, "a", "b").Members}, nil)
	defer f.Close()
	f.Publish(v(1, "a", "b")) // the view the observer has: not delivered
	nothing(t, f)
	f.Publish(v(2, "a", "b", "c"))
	f.Publish(v(4, "b", "c")) // incarnations shift with the index: b#1 c#2
	f.Publish(v(3, "x"))      // older than pending: dropped
	got := next(t, f)
	if got.ID.Seq != 4 {
		t.Fatalf("got view %v, want the newest", got.ID)
	}
	// a#1 b#2 -> b#1 c#2: every member changed incarnation.
	if j, l := memberIDs(got.Joined), memberIDs(got.Left); len(j) != 2 || len(l) != 2 {
		t.Fatalf("joined %v left %v", j, l)
	}
	nothing(t, f)
}

func TestFailDeliversPendingFirst(t *testing.T) {
	t.Parallel()
	f := feed.New(t.Context(), view.View{}, nil)
	f.Publish(v(1, "a"))
	boom := status.Error(codes.Unavailable, "boom")
	f.Fail(boom)
	f.Fail(status.Error(codes.Internal, "later"))
	f.Publish(v(2, "a"))
	if got := next(t, f); got.ID.Seq != 1 {
		t.Fatalf("got %v", got.ID)
	}
	if _, err := f.Next(t.Context()); status.Code(err) != codes.Unavailable {
		t.Fatalf("after Fail: %v", err)
	}
	if status.Code(f.Err()) != codes.Unavailable {
		t.Fatal(f.Err())
	}
}

func TestCloseAndContextEnd(t *testing.T) {
	t.Parallel()
	closed := make(chan *feed.Feed, 2)
	f := feed.New(t.Context(), view.View{}, func(f *feed.Feed) { closed <- f })
	f.Publish(v(1, "a"))
	f.Close()
	f.Close()
	if _, err := f.Next(t.Context()); status.Code(err) != codes.Canceled {
		t.Fatalf("Next after Close: %v", err)
	}
	if got := <-closed; got != f {
		t.Fatal("onClose got another feed")
	}

	ctx, cancel := context.WithCancel(t.Context())
	g := feed.New(ctx, view.View{}, func(f *feed.Feed) { closed <- f })
	done := make(chan error)
	go func() {
		_, err := g.Next(t.Context())
		done <- err
	}()
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("Next when the watch's context ended: %v", err)
	}
	if got := <-closed; got != g {
		t.Fatal("onClose got another feed")
	}
	select {
	case <-closed:
		t.Fatal("onClose ran twice")
	default:
	}

	// A context that already ended ends the feed at once.
	h := feed.New(ctx, view.View{}, nil)
	if _, err := h.Next(t.Context()); status.Code(err) != codes.Canceled {
		t.Fatalf("Next on a feed whose context had ended: %v", err)
	}
}

func TestNextWaitsForPublish(t *testing.T) {
	t.Parallel()
	f := feed.New(t.Context(), view.View{}, nil)
	defer f.Close()
	got := make(chan view.View)
	go func() {
		v, err := f.Next(t.Context())
		if err == nil {
			got <- v
		}
	}()
	f.Publish(v(7, "a"))
	select {
	case g := <-got:
		if g.ID.Seq != 7 {
			t.Fatalf("got %v", g.ID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not return after Publish")
	}
}
