package chain

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// secretKeys are the map keys whose values the debug log never shows: the
// per-connection secrets and tokens a mechanism carries.
var secretKeys = []string{"secret", "token", "password", "key"}

// redacted reports whether values under key k are hidden from logs.
func redacted(k string) bool {
	k = strings.ToLower(k)
	for _, s := range secretKeys {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

const redactedValue = `"<redacted>"`

// maxChanges bounds the lines one diff produces, so that a debug log line
// stays readable whatever the message holds.
const maxChanges = 64

// changes lists how b differs from a, two messages of one type, as lines
// "path: old -> new". Either may be nil.
func changes(a, b proto.Message) []string {
	var d differ
	var am, bm protoreflect.Message
	switch {
	case a != nil:
		am = a.ProtoReflect()
		if b != nil {
			bm = b.ProtoReflect()
		} else {
			bm = am.Type().Zero()
		}
	case b != nil:
		bm = b.ProtoReflect()
		am = bm.Type().Zero()
	default:
		return nil
	}
	if am.IsValid() != bm.IsValid() {
		d.add("", describe(am), describe(bm))
		return d.out
	}
	d.message("", am, bm)
	return d.out
}

type differ struct {
	out []string
}

func (d *differ) add(path, from, to string) {
	if len(d.out) == maxChanges {
		d.out = append(d.out, "...")
	}
	if len(d.out) > maxChanges {
		return
	}
	if path == "" {
		path = "."
	}
	d.out = append(d.out, fmt.Sprintf("%s: %s -> %s", path, from, to))
}

func (d *differ) message(path string, a, b protoreflect.Message) {
	fields := a.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		p := join(path, string(fd.Name()))
		switch {
		case fd.IsList():
			d.list(p, fd, a.Get(fd).List(), b.Get(fd).List())
		case fd.IsMap():
			d.mapField(p, fd, a.Get(fd).Map(), b.Get(fd).Map())
		case fd.Message() != nil:
			ah, bh := a.Has(fd), b.Has(fd)
			switch {
			case !ah && !bh:
			case ah != bh:
				d.add(p, describeField(a, fd), describeField(b, fd))
			default:
				d.message(p, a.Get(fd).Message(), b.Get(fd).Message())
			}
		default:
			if av, bv := a.Get(fd), b.Get(fd); !av.Equal(bv) {
				d.add(p, scalar(av), scalar(bv))
			}
		}
	}
}

func (d *differ) list(path string, fd protoreflect.FieldDescriptor, a, b protoreflect.List) {
	for i := range max(a.Len(), b.Len()) {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case i >= a.Len():
			d.add(p, "<none>", value(fd, b.Get(i)))
		case i >= b.Len():
			d.add(p, value(fd, a.Get(i)), "<none>")
		case fd.Message() != nil:
			d.message(p, a.Get(i).Message(), b.Get(i).Message())
		case !a.Get(i).Equal(b.Get(i)):
			d.add(p, scalar(a.Get(i)), scalar(b.Get(i)))
		}
	}
}

func (d *differ) mapField(path string, fd protoreflect.FieldDescriptor, a, b protoreflect.Map) {
	var keys []protoreflect.MapKey
	collect := func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		if !slices.ContainsFunc(keys, func(x protoreflect.MapKey) bool { return x.Value().Equal(k.Value()) }) {
			keys = append(keys, k)
		}
		return true
	}
	a.Range(collect)
	b.Range(collect)
	slices.SortFunc(keys, func(x, y protoreflect.MapKey) int { return strings.Compare(x.String(), y.String()) })
	vd := fd.MapValue()
	for _, k := range keys {
		p := fmt.Sprintf("%s[%q]", path, k.String())
		ah, bh := a.Has(k), b.Has(k)
		if vd.Message() == nil && redacted(k.String()) {
			if ah != bh || !a.Get(k).Equal(b.Get(k)) {
				d.add(p, redactedIf(ah), redactedIf(bh))
			}
			continue
		}
		switch {
		case !ah:
			d.add(p, "<none>", value(vd, b.Get(k)))
		case !bh:
			d.add(p, value(vd, a.Get(k)), "<none>")
		case vd.Message() != nil:
			d.message(p, a.Get(k).Message(), b.Get(k).Message())
		case !a.Get(k).Equal(b.Get(k)):
			d.add(p, scalar(a.Get(k)), scalar(b.Get(k)))
		}
	}
}

func redactedIf(present bool) string {
	if present {
		return redactedValue
	}
	return "<none>"
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func value(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	if fd.Message() != nil {
		return describe(v.Message())
	}
	return scalar(v)
}

func describeField(m protoreflect.Message, fd protoreflect.FieldDescriptor) string {
	if !m.Has(fd) {
		return "<none>"
	}
	return describe(m.Get(fd).Message())
}

// describe writes a message on one line, its set fields in declaration
// order. (prototext's output is deliberately unstable, which a log that is
// read and tested must not be.)
func describe(m protoreflect.Message) string {
	if !m.IsValid() {
		return "<none>"
	}
	var b strings.Builder
	writeMessage(&b, m)
	return b.String()
}

func writeMessage(b *strings.Builder, m protoreflect.Message) {
	b.WriteByte('{')
	fields := m.Descriptor().Fields()
	first := true
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		if !first {
			b.WriteByte(' ')
		}
		first = false
		b.WriteString(string(fd.Name()))
		b.WriteByte(':')
		v := m.Get(fd)
		switch {
		case fd.IsList():
			b.WriteByte('[')
			for j := range v.List().Len() {
				if j > 0 {
					b.WriteByte(' ')
				}
				writeValue(b, fd, v.List().Get(j))
			}
			b.WriteByte(']')
		case fd.IsMap():
			var keys []protoreflect.MapKey
			v.Map().Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			slices.SortFunc(keys, func(x, y protoreflect.MapKey) int { return strings.Compare(x.String(), y.String()) })
			b.WriteByte('{')
			for j, k := range keys {
				if j > 0 {
					b.WriteByte(' ')
				}
				fmt.Fprintf(b, "%q:", k.String())
				if fd.MapValue().Message() == nil && redacted(k.String()) {
					b.WriteString(redactedValue)
					continue
				}
				writeValue(b, fd.MapValue(), v.Map().Get(k))
			}
			b.WriteByte('}')
		default:
			writeValue(b, fd, v)
		}
	}
	b.WriteByte('}')
}

func writeValue(b *strings.Builder, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	if fd.Message() != nil {
		writeMessage(b, v.Message())
		return
	}
	b.WriteString(scalar(v))
}

func scalar(v protoreflect.Value) string {
	if s, ok := v.Interface().(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v.Interface())
}
