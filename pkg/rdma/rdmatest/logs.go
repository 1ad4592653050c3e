package rdmatest

import (
	"context"
	"io"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
)

// LogRecorder is a logger whose entries a test can wait for. Give
// Logger() to the provider under test.
type LogRecorder struct {
	logger *logrus.Logger
	mu     sync.Mutex
	all    []string
	events chan *logrus.Entry
}

// NewLogRecorder returns a recorder that keeps every entry at Debug level
// and above.
func NewLogRecorder() *LogRecorder {
	r := &LogRecorder{logger: logrus.New(), events: make(chan *logrus.Entry, 1024)}
	r.logger.SetOutput(io.Discard)
	r.logger.SetLevel(logrus.DebugLevel)
	r.logger.AddHook(r)
	return r
}

// Logger is the logger to hand to the provider.
func (r *LogRecorder) Logger() *logrus.Logger { return r.logger }

// Levels implements logrus.Hook.
func (r *LogRecorder) Levels() []logrus.Level { return logrus.AllLevels }

// Fire implements logrus.Hook: it records the entry's text form (message
// and fields) and queues the entry for WaitFor.
func (r *LogRecorder) Fire(e *logrus.Entry) error {
	text, err := (&logrus.TextFormatter{DisableTimestamp: true}).Format(e)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.all = append(r.all, string(text))
	r.mu.Unlock()
	select {
	case r.events <- e:
	default: // nobody waits for that many entries; the text is kept
	}
	return nil
}

// WaitFor returns the first queued entry that match accepts, dropping the
// ones before it, or nil when ctx ends first.
func (r *LogRecorder) WaitFor(ctx context.Context, match func(*logrus.Entry) bool) *logrus.Entry {
	for {
		select {
		case e := <-r.events:
			if match(e) {
				return e
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// Contains reports whether any recorded entry contains s.
func (r *LogRecorder) Contains(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, line := range r.all {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}
