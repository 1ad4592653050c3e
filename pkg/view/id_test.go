package view_test

import (
	"errors"
	"math"
	"testing"

	"github.com/tether-mesh/tether/pkg/view"
)

func TestIDOrder(t *testing.T) {
	t.Parallel()
	ordered := []view.ID{{}, {Epoch: 0, Seq: 1}, {Epoch: 1, Seq: 0}, {Epoch: 1, Seq: 2}, {Epoch: 1, Seq: 10}, {Epoch: 2, Seq: 1}, {Epoch: math.MaxUint64, Seq: math.MaxUint64}}
	for i, a := range ordered {
		for j, b := range ordered {
			want := 0
			switch {
			case i < j:
				want = -1
			case i > j:
				want = 1
			}
			if got := a.Compare(b); got != want {
				t.Errorf("%v.Compare(%v) = %d, want %d", a, b, got, want)
			}
			if got := a.Less(b); got != (want < 0) {
				t.Errorf("%v.Less(%v) = %v", a, b, got)
			}
		}
	}
	if !(view.ID{}).IsZero() || (view.ID{Seq: 1}).IsZero() {
		t.Error("IsZero")
	}
}

func TestIDText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		text string
		id   view.ID
		ok   bool
	}{
		{"0.0", view.ID{}, true},
		{"1.2", view.ID{Epoch: 1, Seq: 2}, true},
		{"1700000000000000000.17", view.ID{Epoch: 1700000000000000000, Seq: 17}, true},
		{"18446744073709551615.18446744073709551615", view.ID{Epoch: math.MaxUint64, Seq: math.MaxUint64}, true},
		{"18446744073709551616.1", view.ID{}, false},
		{"", view.ID{}, false},
		{".", view.ID{}, false},
		{"1.", view.ID{}, false},
		{".1", view.ID{}, false},
		{"1", view.ID{}, false},
		{"1.2.3", view.ID{}, false},
		{"01.2", view.ID{}, false},
		{"+1.2", view.ID{}, false},
		{"-1.2", view.ID{}, false},
		{"1.2 ", view.ID{}, false},
		{"1_0.2", view.ID{}, false},
		{"0x1.2", view.ID{}, false},
	}
	for _, tt := range tests {
		id, err := view.ParseID(tt.text)
		if tt.ok {
			if err != nil || id != tt.id {
				t.Errorf("ParseID(%q) = %v, %v; want %v", tt.text, id, err, tt.id)
			}
			if id.String() != tt.text {
				t.Errorf("%v.String() = %q, want %q", id, id.String(), tt.text)
			}
			var u view.ID
			b, _ := id.MarshalText()
			if err := u.UnmarshalText(b); err != nil || u != id {
				t.Errorf("text round trip of %v: %v, %v", id, u, err)
			}
			continue
		}
		if !errors.Is(err, view.ErrBadID) {
			t.Errorf("ParseID(%q) = %v, %v; want ErrBadID", tt.text, id, err)
		}
		var u view.ID
		if err := u.UnmarshalText([]byte(tt.text)); err == nil {
			t.Errorf("UnmarshalText(%q) succeeded", tt.text)
		}
	}
}

// FuzzParseID checks that any text ParseID accepts is an ID String writes
// back unchanged, and that nothing makes it panic: view IDs come from peers
// (connection contexts, etcd).
func FuzzParseID(f *testing.F) {
	for _, s := range []string{"0.0", "1.2", "18446744073709551615.1", "01.2", "1..2", "", "9999999999999999999999.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := view.ParseID(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("ParseID(%q) = %v, which formats as %q", s, id, id.String())
		}
	})
}
