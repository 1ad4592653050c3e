package view

import (
	"cmp"
	"errors"
	"strconv"
	"strings"
)

// ID identifies a view of a group. IDs are totally ordered: by Epoch, then
// by Seq. The zero ID is the view of a group that has no view yet.
type ID struct {
	// Epoch changes when a group is created from nothing; a later epoch is
	// greater than every earlier one.
	Epoch uint64
	// Seq numbers the views of one epoch. It strictly increases with every
	// view installed, but need not increase by one (etcd uses revisions).
	Seq uint64
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool {
	return id == ID{}
}

// Compare returns -1, 0 or +1 as id is less than, equal to or greater than
// other.
func (id ID) Compare(other ID) int {
	if c := cmp.Compare(id.Epoch, other.Epoch); c != 0 {
		return c
	}
	return cmp.Compare(id.Seq, other.Seq)
}

// Less reports whether id comes before other.
func (id ID) Less(other ID) bool {
	return id.Compare(other) < 0
}

// String formats id as "epoch.seq" in decimal, the form ParseID reads.
func (id ID) String() string {
	var b [41]byte
	return string(id.AppendText(b[:0]))
}

// AppendText appends id as String formats it.
func (id ID) AppendText(b []byte) []byte {
	b = strconv.AppendUint(b, id.Epoch, 10)
	b = append(b, '.')
	return strconv.AppendUint(b, id.Seq, 10)
}

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) {
	return id.AppendText(nil), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	parsed, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = parsed
	return nil
}

// ErrBadID is returned by ParseID for text that is not an ID.
var ErrBadID = errors.New("view: malformed view ID")

// ParseID reads an ID in the form String writes: two unsigned decimal
// numbers, without signs or leading zeros, separated by a dot.
func ParseID(s string) (ID, error) {
	epoch, seq, ok := strings.Cut(s, ".")
	if !ok {
		return ID{}, ErrBadID
	}
	e, err := parseDecimal(epoch)
	if err != nil {
		return ID{}, err
	}
	q, err := parseDecimal(seq)
	if err != nil {
		return ID{}, err
	}
	return ID{Epoch: e, Seq: q}, nil
}

func parseDecimal(s string) (uint64, error) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, ErrBadID
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return 0, ErrBadID
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, ErrBadID
	}
	return n, nil
}
