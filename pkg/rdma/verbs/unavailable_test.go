//go:build !rdmaverbs || !cgo

package verbs

import (
	"context"
	"errors"
	"testing"

	"github.com/tether-mesh/tether/pkg/rdma"
)

func TestNotBuilt(t *testing.T) {
	p := New()
	if p.Name() != Name {
		t.Errorf("name %q", p.Name())
	}
	if _, err := p.Listen(context.Background(), "127.0.0.1:0"); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("Listen: %v", err)
	}
	if _, err := p.Dial(context.Background(), "127.0.0.1:1", "x", rdma.NewSecret()); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("Dial: %v", err)
	}
	if !errors.Is(Available(), ErrNotBuilt) {
		t.Error("Available")
	}
}
