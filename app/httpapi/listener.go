package httpapi

import (
	"container/list"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// boundedListener caps the client connections open at once. At the cap, a
// new connection makes room by closing the connection that has waited
// longest for its next request (an idle keep-alive), or else the oldest
// one that has not finished sending its first request's headers; if every
// connection is busy serving a request, the new one is closed at once. So
// idle or slow connections, however many a client opens, cannot keep
// another client out, nor exhaust file descriptors, and no Accept ever
// waits for room (netutil.LimitListener does: new clients would queue in
// the kernel behind the idle ones until they time out).
//
// The http.Server tells it each connection's state through ConnState,
// which must be set to the listener's track method. It is safe for
// concurrent use.
type boundedListener struct {
	net.Listener
	max int

	mu     sync.Mutex
	conns  map[net.Conn]*tracked
	idle   list.List    // of *tracked in StateIdle, longest idle first
	fresh  list.List    // of *tracked in StateNew, oldest first
	closed atomic.Int64 // connections closed to make room, or refused
}

// tracked is one open connection; elem is its place on idle or fresh, nil
// while it serves a request.
type tracked struct {
	conn  net.Conn
	state http.ConnState
	elem  *list.Element
	on    *list.List
}

func newBoundedListener(ln net.Listener, max int) *boundedListener {
	return &boundedListener{Listener: ln, max: max, conns: map[net.Conn]*tracked{}}
}

// Accept returns the next connection, making room for it first when the
// cap is reached; a connection refused for want of room is closed and
// never returned.
func (l *boundedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		var victim net.Conn
		if len(l.conns) >= l.max {
			if victim = l.victimLocked(); victim == nil {
				l.mu.Unlock()
				l.closed.Add(1)
				_ = c.Close() // every connection is serving: refuse this one
				continue
			}
		}
		// Counted from now: the server reports StateNew only once its
		// goroutine for c runs.
		t := &tracked{conn: c}
		l.conns[c] = t
		l.moveLocked(t, http.StateNew)
		l.mu.Unlock()
		if victim != nil {
			l.closed.Add(1)
			_ = victim.Close() // the server sees the error and lets it go
		}
		return c, nil
	}
}

// victimLocked picks the connection to close for a new one and stops
// tracking it, or returns nil when every connection is serving.
func (l *boundedListener) victimLocked() net.Conn {
	for _, q := range []*list.List{&l.idle, &l.fresh} {
		if e := q.Front(); e != nil {
			t := e.Value.(*tracked)
			l.moveLocked(t, http.StateClosed)
			delete(l.conns, t.conn)
			return t.conn
		}
	}
	return nil
}

// moveLocked puts t on the list of its new state, at the back.
func (l *boundedListener) moveLocked(t *tracked, state http.ConnState) {
	if t.on != nil {
		t.on.Remove(t.elem)
		t.on, t.elem = nil, nil
	}
	t.state = state
	switch state {
	case http.StateIdle:
		t.on = &l.idle
	case http.StateNew:
		t.on = &l.fresh
	default:
		return
	}
	t.elem = t.on.PushBack(t)
}

// track is the http.Server's ConnState hook.
func (l *boundedListener) track(c net.Conn, state http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.conns[c]
	if t == nil || t.state == state {
		return // closed to make room, or not accepted through l
	}
	l.moveLocked(t, state)
	if state == http.StateClosed || state == http.StateHijacked {
		delete(l.conns, c)
	}
}

// open returns the number of connections open.
func (l *boundedListener) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}
