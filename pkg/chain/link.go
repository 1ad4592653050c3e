package chain

import (
	"fmt"

	"github.com/sirupsen/logrus"
)

// A chain is linked once, when it is built: every element becomes a link (a
// NextServer or NextClient) that holds the element and the link after it;
// the last link is serverEnd or clientEnd. Elements
// that contain other elements (groups, adapters, tails, the Logger marker)
// take part in linking through serverLinker and clientLinker, so that
// nesting costs nothing at call time either.

// linkConfig is what linking knows besides the elements themselves.
type linkConfig struct {
	// logging is set when the chain is linked for its debug path: Logger
	// markers then wrap the elements after them.
	logging bool
	// log is the logger of the nearest Logger marker before the element.
	log *logrus.Entry
	// loggers collects the loggers of every marker found while linking.
	loggers *[]*logrus.Logger
}

type serverLinker interface {
	linkServer(next *NextServer, cfg linkConfig) *NextServer
}

type clientLinker interface {
	linkClient(next *NextClient, cfg linkConfig) *NextClient
}

// linkServers links elems in front of tail and returns the first link.
func linkServers(elems []ServerElement, tail *NextServer, cfg linkConfig) *NextServer {
	cfgs := markerScopes(elems, cfg)
	next := tail
	if next == nil {
		next = serverEnd
	}
	for i := len(elems) - 1; i >= 0; i-- {
		e := elems[i]
		switch {
		case isLinker[serverLinker](e):
			next = e.(serverLinker).linkServer(next, cfgs[i])
		case cfgs[i].log != nil:
			next = &NextServer{elem: &serverLogElement{elem: e, log: cfgs[i].log, name: elementName(e)}, next: next}
		default:
			next = &NextServer{elem: e, next: next}
		}
	}
	return next
}

// linkClients links elems in front of tail and returns the first link.
func linkClients(elems []ClientElement, tail *NextClient, cfg linkConfig) *NextClient {
	cfgs := markerScopes(elems, cfg)
	next := tail
	if next == nil {
		next = clientEnd
	}
	for i := len(elems) - 1; i >= 0; i-- {
		e := elems[i]
		switch {
		case isLinker[clientLinker](e):
			next = e.(clientLinker).linkClient(next, cfgs[i])
		case cfgs[i].log != nil:
			next = &NextClient{elem: &clientLogElement{elem: e, log: cfgs[i].log, name: elementName(e)}, next: next}
		default:
			next = &NextClient{elem: e, next: next}
		}
	}
	return next
}

func isLinker[L any](e any) bool {
	_, ok := e.(L)
	return ok
}

// markerScopes returns the configuration each element is linked with: a
// Logger marker applies to the elements after it in the same list.
func markerScopes[E any](elems []E, cfg linkConfig) []linkConfig {
	cfgs := make([]linkConfig, len(elems))
	for i, e := range elems {
		if m, ok := any(e).(interface{ marker() *logrus.Entry }); ok && cfg.logging {
			cfg.log = m.marker()
			if cfg.loggers != nil {
				*cfg.loggers = append(*cfg.loggers, cfg.log.Logger)
			}
		}
		cfgs[i] = cfg
	}
	return cfgs
}

func elementName(e any) string {
	if n, ok := e.(interface{ Name() string }); ok {
		return n.Name()
	}
	return fmt.Sprintf("%T", e)
}
