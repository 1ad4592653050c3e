package call

import (
	"bytes"
	"testing"
)

func FuzzDecode(f *testing.F) {
	for _, kind := range []Kind{KindSend, KindCall, KindReply, KindError} {
		h := encode(nil, kind, 42, []byte("app"))
		f.Add(h)
	}
	f.Add([]byte{})
	f.Add([]byte{9, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, h []byte) {
		kind, id, header, err := decode(h)
		if err != nil {
			return
		}
		if kind < KindSend || kind > KindError || len(header) > len(h) {
			t.Fatalf("decode accepted kind %d, header of %d bytes", kind, len(header))
		}
		if kind != KindSend && id == 0 {
			t.Fatal("a call or answer without a correlation ID")
		}
		if len(header) <= MaxHeaderSize {
			if again := encode(nil, kind, id, header); !bytes.Equal(again, h) {
				t.Fatalf("decode and encode disagree: %x -> %x", h, again)
			}
		}
	})
}
