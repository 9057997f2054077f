package broker

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSOptions configure NewNATS.
type NATSOptions struct {
	// URL is the NATS server, or several separated by commas (members of
	// one NATS cluster). Default nats://127.0.0.1:4222.
	URL string
	// Prefix is the first token(s) of every subject (ValidatePrefix);
	// clusters sharing a NATS server need different prefixes. Default
	// DefaultPrefix.
	Prefix string
	// Node is this node's id, unique in the cluster: it names the NATS
	// connections and the self-check subjects.
	Node string
	// Options are the settings every broker shares.
	Options
	// Logger gets the connection's events; default slog.Default().
	Logger *slog.Logger
	// Dispatchers is how many goroutines call handlers; each subject is
	// handled by one of them, chosen by a hash of its NATS subject.
	// Default 4 × GOMAXPROCS.
	Dispatchers int
	// ReconnectWait is the pause between reconnection attempts, which go
	// on for ever. Default 250ms.
	ReconnectWait time.Duration
	// PingInterval is how often the connection pings the server (two
	// unanswered pings count as a broken connection). Default 5s.
	PingInterval time.Duration
	// CheckInterval is how often the self-check runs; CheckTimeout how
	// long it waits. Defaults 1s and 2s.
	CheckInterval, CheckTimeout time.Duration
	// SubscribeTimeout bounds the confirmation of a Subscribe whose ctx
	// has no deadline. Default 5s.
	SubscribeTimeout time.Duration
	// NATS are extra nats.go options (credentials, TLS). They must not
	// set the handlers, NoEcho, ReconnectBufSize or MaxReconnects.
	NATS []nats.Option
}

// NATS is a Broker on a NATS server. See NewNATS.
type NATS struct {
	o      NATSOptions
	log    *slog.Logger
	nc     *nats.Conn // messages
	cc     *nats.Conn // the self-check's publisher
	disp   []*dispatcher
	tag    [8]byte // this instance's self-check tag
	closed atomic.Bool
	stop   chan struct{}
	wg     sync.WaitGroup

	mu   sync.RWMutex
	subs map[string]*natsSubject // by NATS subject
	gone uint64                  // drops of unsubscribed subjects

	hmu         sync.Mutex
	down        error                // disconnected; cleared when the reconnect is resynced
	broken      error                // the server refused something (permissions)
	unconfirmed map[Subject]struct{} // subscriptions not confirmed by a flush
	checkErr    error                // the last self-check's failure

	reconnected chan struct{} // a reconnect to resync
	checked     chan struct{} // a dispatcher saw a self-check
	resyncMu    sync.Mutex

	published, publishErrors, received, resyncs, reconnects atomic.Uint64
}

// dispatcher calls the handlers of its subjects, one message at a time.
type dispatcher struct {
	i       int
	ch      chan *nats.Msg
	wake    chan struct{}
	check   *nats.Subscription
	seen    atomic.Uint64 // the last self-check round seen
	lossy   atomic.Bool   // a slow-consumer drop not yet reported
	entries map[*natsSubject]struct{}
}

// natsSubject is one subject's registration: its NATS subscription and
// local subscribers.
type natsSubject struct {
	subj     Subject
	name     string
	d        *dispatcher
	sub      *nats.Subscription
	ready    chan struct{} // closed when the first Subscribe confirmed it (or gave up)
	handlers atomic.Pointer[[]*natsSub]
	refs     int    // guarded by NATS.mu
	reported uint64 // drops reported; guarded by NATS.mu
}

type natsSub struct {
	n  *NATS
	e  *natsSubject
	h  Handler
	on atomic.Bool
}

var _ Broker = (*NATS)(nil)

// NewNATS connects a node to NATS.
//
// Subjects are <prefix>.<kind>.<app>.<name> (see NATSSubject): u for a
// user, t for a topic, b for an app's broadcast (no name), n for a node.
// The node holds one NATS subscription per subject with local interest,
// and publishes with NoEcho: it never gets its own messages.
//
// Ordering: NATS keeps one publisher connection's messages to one
// subscriber in order, and every subject is handled by one dispatcher
// goroutine, so handlers see each publisher's messages of a subject in
// publish order. A dispatcher queues at most PendingLimit messages (for
// all its subjects); past that nats.go drops them as a slow consumer: the
// drop is counted, Health is non-nil and, once the queue is empty,
// OnResync names the subjects concerned.
//
// Outages: nothing is buffered while disconnected; Publish fails at once
// with ErrUnavailable and Health is non-nil. The connection retries for
// ever every ReconnectWait; when it is back and the server has confirmed
// the subscriptions (a flush), OnResync is called with nil Subjects and
// Health turns nil. A Subscribe that cannot be confirmed in time returns
// its subscription anyway and is reported through OnResync when
// confirmed.
//
// Health also runs a self-check every CheckInterval: a second, small
// connection publishes to <prefix>.hc.<node>.<i> for each dispatcher i,
// and each dispatcher must see its message within CheckTimeout; this
// proves the server delivers to this node and that no dispatcher is stuck.
// A permissions error from the server keeps Health non-nil until the next
// reconnect.
//
// The NATS server needs no special settings: core NATS only, no
// JetStream. Its max_payload (1 MiB by default) must hold Herald's largest
// message with its framing. If it enforces permissions, each node needs
// publish and subscribe on <prefix>.> .
func NewNATS(ctx context.Context, o NATSOptions) (*NATS, error) {
	if o.URL == "" {
		o.URL = nats.DefaultURL
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if err := ValidatePrefix(o.Prefix); err != nil {
		return nil, err
	}
	if o.Node == "" || len(o.Node) > MaxNameLen {
		return nil, fmt.Errorf("broker: node id %q must be 1-%d bytes", o.Node, MaxNameLen)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Dispatchers <= 0 {
		o.Dispatchers = 4 * runtime.GOMAXPROCS(0)
	}
	if o.ReconnectWait <= 0 {
		o.ReconnectWait = 250 * time.Millisecond
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 5 * time.Second
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = time.Second
	}
	if o.CheckTimeout <= 0 {
		o.CheckTimeout = 2 * time.Second
	}
	if o.SubscribeTimeout <= 0 {
		o.SubscribeTimeout = 5 * time.Second
	}
	n := &NATS{
		o:           o,
		log:         o.Logger.With("broker", "nats", "node", o.Node),
		stop:        make(chan struct{}),
		subs:        make(map[string]*natsSubject),
		unconfirmed: make(map[Subject]struct{}),
		reconnected: make(chan struct{}, 1),
		checked:     make(chan struct{}, o.Dispatchers),
	}
	_, _ = rand.Read(n.tag[:])
	limit := o.pendingLimit()
	for i := range o.Dispatchers {
		n.disp = append(n.disp, &dispatcher{i: i, ch: make(chan *nats.Msg, limit), wake: make(chan struct{}, 1), entries: make(map[*natsSubject]struct{})})
	}
	common := []nats.Option{
		nats.NoEcho(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(o.ReconnectWait),
		nats.ReconnectJitter(o.ReconnectWait/4, o.ReconnectWait/4),
		nats.ReconnectBufSize(-1), // fail, not buffer, while disconnected
		nats.PingInterval(o.PingInterval),
		nats.MaxPingsOutstanding(2),
	}
	if dl, ok := ctx.Deadline(); ok {
		common = append(common, nats.Timeout(time.Until(dl)))
	}
	opts := append(append(append([]nats.Option{}, o.NATS...), common...),
		nats.Name("herald "+o.Node),
		nats.DisconnectErrHandler(n.onDisconnect),
		nats.ReconnectHandler(n.onReconnect),
		nats.ErrorHandler(n.onError),
	)
	var err error
	if n.nc, err = nats.Connect(o.URL, opts...); err != nil {
		return nil, fmt.Errorf("broker: connecting to NATS at %s: %w: %w", o.URL, ErrUnavailable, err)
	}
	copts := append(append(append([]nats.Option{}, o.NATS...), common...), nats.Name("herald "+o.Node+" self-check"))
	if n.cc, err = nats.Connect(o.URL, copts...); err != nil {
		n.nc.Close()
		return nil, fmt.Errorf("broker: connecting the self-check to NATS at %s: %w: %w", o.URL, ErrUnavailable, err)
	}
	for _, d := range n.disp {
		if d.check, err = n.nc.ChanSubscribe(checkSubject(o.Prefix, o.Node, d.i), d.ch); err != nil {
			n.nc.Close()
			n.cc.Close()
			return nil, fmt.Errorf("broker: self-check subscription: %w", err)
		}
	}
	if err := n.flush(ctx); err != nil {
		n.nc.Close()
		n.cc.Close()
		return nil, fmt.Errorf("broker: confirming the self-check subscriptions: %w: %w", ErrUnavailable, err)
	}
	for _, d := range n.disp {
		n.wg.Add(1)
		go n.dispatch(d)
	}
	// The first self-check round, so that Health means something at once.
	if n.checkErr = n.selfCheck(1); n.checkErr != nil {
		n.log.Warn("broker self-check failing", "err", n.checkErr)
	}
	n.wg.Add(2)
	go n.control()
	go n.checker(1)
	return n, nil
}

// natsErr maps an error of nats.go to the broker's.
func (n *NATS) natsErr(what string, err error) error {
	switch {
	case n.closed.Load():
		return ErrClosed
	case errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrNoServers), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("broker: %s: %w: %w", what, ErrUnavailable, err)
	}
	return fmt.Errorf("broker: %s: %w", what, err)
}

// Publish sends data to the other nodes subscribed to subj. It fails with
// ErrUnavailable at once while the connection is down.
func (n *NATS) Publish(ctx context.Context, subj Subject, data []byte) error {
	name, err := NATSSubject(n.o.Prefix, subj)
	if err != nil {
		n.publishErrors.Add(1)
		return err
	}
	if n.closed.Load() {
		n.publishErrors.Add(1)
		return ErrClosed
	}
	if st := n.nc.Status(); st != nats.CONNECTED {
		n.publishErrors.Add(1)
		return fmt.Errorf("broker: publish to %v: NATS connection %v: %w", subj, st, ErrUnavailable)
	}
	if err := n.nc.Publish(name, data); err != nil {
		n.publishErrors.Add(1)
		return n.natsErr(fmt.Sprintf("publish to %v", subj), err)
	}
	n.published.Add(1)
	return nil
}

// dispatcherFor returns the dispatcher of NATS subject name (FNV-1a).
func (n *NATS) dispatcherFor(name string) *dispatcher {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return n.disp[h%uint32(len(n.disp))]
}

// Subscribe registers h for subj and waits until the server confirms the
// node's interest (or ctx ends: then the subscription is reported through
// OnResync once confirmed).
func (n *NATS) Subscribe(ctx context.Context, subj Subject, h Handler) (Subscription, error) {
	name, err := NATSSubject(n.o.Prefix, subj)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("broker: Subscribe with a nil handler")
	}
	n.mu.Lock()
	if n.closed.Load() {
		n.mu.Unlock()
		return nil, ErrClosed
	}
	e := n.subs[name]
	first := e == nil
	if first {
		e = &natsSubject{subj: subj, name: name, d: n.dispatcherFor(name), ready: make(chan struct{})}
		if e.sub, err = n.nc.ChanSubscribe(name, e.d.ch); err != nil {
			n.mu.Unlock()
			return nil, n.natsErr(fmt.Sprintf("subscribe to %v", subj), err)
		}
		n.subs[name] = e
		e.d.entries[e] = struct{}{}
		empty := []*natsSub{}
		e.handlers.Store(&empty)
	}
	s := &natsSub{n: n, e: e, h: h}
	s.on.Store(true)
	hs := append(append([]*natsSub{}, *e.handlers.Load()...), s)
	e.handlers.Store(&hs)
	e.refs++
	n.mu.Unlock()
	if !first {
		select {
		case <-e.ready:
		case <-ctx.Done():
		}
		return s, nil
	}
	defer close(e.ready)
	if err := n.flush(ctx); err != nil {
		n.hmu.Lock()
		n.unconfirmed[subj] = struct{}{}
		n.hmu.Unlock()
		n.log.Warn("subscription not confirmed yet; reported through a resync when it is", "subject", subj.String(), "err", err)
	}
	return s, nil
}

// flush waits until the server has processed what the connection sent.
func (n *NATS) flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.o.SubscribeTimeout)
		defer cancel()
	}
	if st := n.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("NATS connection %v: %w", st, ErrUnavailable)
	}
	return n.nc.FlushWithContext(ctx)
}

// Unsubscribe drops the subscription; the subject's last one ends the
// NATS subscription.
func (s *natsSub) Unsubscribe() error {
	if !s.on.Swap(false) {
		return nil
	}
	n, e := s.n, s.e
	n.mu.Lock()
	defer n.mu.Unlock()
	old := *e.handlers.Load()
	hs := make([]*natsSub, 0, len(old))
	for _, x := range old {
		if x != s {
			hs = append(hs, x)
		}
	}
	e.handlers.Store(&hs)
	if e.refs--; e.refs > 0 || n.subs[e.name] != e {
		return nil
	}
	delete(n.subs, e.name)
	delete(e.d.entries, e)
	if d, err := e.sub.Dropped(); err == nil {
		n.gone += uint64(d)
	}
	n.hmu.Lock()
	delete(n.unconfirmed, e.subj)
	n.hmu.Unlock()
	if err := e.sub.Unsubscribe(); err != nil && !n.closed.Load() && !errors.Is(err, nats.ErrConnectionClosed) {
		return n.natsErr(fmt.Sprintf("unsubscribe from %v", e.subj), err)
	}
	return nil
}

// dispatch runs dispatcher d until Close.
func (n *NATS) dispatch(d *dispatcher) {
	defer n.wg.Done()
	full := false // the queue was full: look for drops when it is empty
	for !n.closed.Load() {
		select {
		case m := <-d.ch:
			if len(d.ch) >= cap(d.ch)-1 {
				full = true
			}
			n.handle(d, m)
		case <-d.wake:
		case <-n.stop:
			return
		}
		if len(d.ch) == 0 && (full || d.lossy.Load()) {
			full = false
			n.reportDrops(d)
		}
	}
}

// handle calls the handlers of m's subject, or notes a self-check.
func (n *NATS) handle(d *dispatcher, m *nats.Msg) {
	if m.Sub == d.check {
		if len(m.Data) == 16 && [8]byte(m.Data[:8]) == n.tag {
			d.seen.Store(binary.BigEndian.Uint64(m.Data[8:]))
			select {
			case n.checked <- struct{}{}:
			default:
			}
		}
		return
	}
	n.received.Add(1)
	n.mu.RLock()
	e := n.subs[m.Subject]
	n.mu.RUnlock()
	if e == nil || e.sub != m.Sub {
		return // unsubscribed meanwhile
	}
	for _, s := range *e.handlers.Load() {
		if s.on.Load() && !n.closed.Load() {
			s.h(m.Data)
		}
	}
}

// reportDrops reports the subjects of d that lost messages since their
// last report.
func (n *NATS) reportDrops(d *dispatcher) {
	d.lossy.Store(false)
	var subjects []Subject
	n.mu.Lock()
	for e := range d.entries {
		if dr, err := e.sub.Dropped(); err == nil && uint64(dr) > e.reported {
			e.reported = uint64(dr)
			subjects = append(subjects, e.subj)
		}
	}
	n.mu.Unlock()
	if len(subjects) > 0 {
		n.resync(Resync{Subjects: subjects, Reason: "messages dropped: handlers fell behind"})
	}
}

// resync calls OnResync, one call at a time.
func (n *NATS) resync(r Resync) {
	n.resyncMu.Lock()
	defer n.resyncMu.Unlock()
	if n.closed.Load() {
		return
	}
	n.resyncs.Add(1)
	n.log.Info("broker resync", "subjects", len(r.Subjects), "all", r.Subjects == nil, "reason", r.Reason)
	if n.o.OnResync != nil {
		n.o.OnResync(r)
	}
}

func (n *NATS) onDisconnect(_ *nats.Conn, err error) {
	if n.closed.Load() {
		return
	}
	n.hmu.Lock()
	n.down = fmt.Errorf("broker: disconnected from NATS (%v): %w", err, ErrUnavailable)
	n.hmu.Unlock()
	n.log.Warn("disconnected from NATS; reconnecting", "err", err)
}

func (n *NATS) onReconnect(nc *nats.Conn) {
	n.reconnects.Add(1)
	n.log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
	select {
	case n.reconnected <- struct{}{}:
	default:
	}
}

func (n *NATS) onError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if n.closed.Load() {
		return
	}
	switch {
	case errors.Is(err, nats.ErrSlowConsumer) && sub != nil:
		n.mu.RLock()
		e := n.subs[sub.Subject]
		n.mu.RUnlock()
		if e != nil {
			e.d.lossy.Store(true)
			select {
			case e.d.wake <- struct{}{}:
			default:
			}
		}
	case errors.Is(err, nats.ErrPermissionViolation):
		n.hmu.Lock()
		n.broken = fmt.Errorf("broker: NATS refused: %w", err)
		n.hmu.Unlock()
		n.log.Error("NATS permissions violation", "err", err)
	default:
		n.log.Warn("NATS error", "err", err)
	}
}

// control resyncs after reconnects and retries unconfirmed subscriptions.
func (n *NATS) control() {
	defer n.wg.Done()
	tick := time.NewTicker(n.o.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-n.reconnected:
			// The subscriptions were sent again on reconnecting; the flush
			// confirms the server has them.
			for n.flush(context.Background()) != nil {
				select {
				case <-n.stop:
					return
				case <-time.After(n.o.ReconnectWait):
				}
			}
			n.hmu.Lock()
			n.down, n.broken = nil, nil
			clear(n.unconfirmed)
			n.hmu.Unlock()
			n.resync(Resync{Reason: "reconnected to NATS"})
		case <-tick.C:
			n.hmu.Lock()
			if n.down != nil { // the reconnect's resync covers them
				n.hmu.Unlock()
				continue
			}
			var subjects []Subject
			for s := range n.unconfirmed {
				subjects = append(subjects, s)
			}
			n.hmu.Unlock()
			if len(subjects) == 0 || n.flush(context.Background()) != nil {
				continue
			}
			n.hmu.Lock()
			for _, s := range subjects {
				delete(n.unconfirmed, s)
			}
			n.hmu.Unlock()
			n.resync(Resync{Subjects: subjects, Reason: "subscriptions confirmed"})
		}
	}
}

// checker runs the self-check, often while it fails.
func (n *NATS) checker(round uint64) {
	defer n.wg.Done()
	wait := n.o.CheckInterval
	for {
		select {
		case <-n.stop:
			return
		case <-time.After(wait):
		}
		round++
		err := n.selfCheck(round)
		n.hmu.Lock()
		prev := n.checkErr
		n.checkErr = err
		n.hmu.Unlock()
		wait = n.o.CheckInterval
		if err != nil {
			wait = min(wait, 100*time.Millisecond)
			if prev == nil {
				n.log.Warn("broker self-check failing", "err", err)
			}
		} else if prev != nil {
			n.log.Info("broker self-check passes again")
		}
	}
}

// selfCheck publishes round to every dispatcher through the check
// connection and waits until each has seen it.
func (n *NATS) selfCheck(round uint64) error {
	if st := n.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("broker: self-check: NATS connection %v: %w", st, ErrUnavailable)
	}
	var msg [16]byte
	copy(msg[:8], n.tag[:])
	binary.BigEndian.PutUint64(msg[8:], round)
	for _, d := range n.disp {
		if err := n.cc.Publish(checkSubject(n.o.Prefix, n.o.Node, d.i), msg[:]); err != nil {
			return fmt.Errorf("broker: self-check: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.o.CheckTimeout)
	defer cancel()
	if err := n.cc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("broker: self-check: flush: %w", err)
	}
	for _, d := range n.disp {
		for d.seen.Load() < round {
			select {
			case <-n.checked:
			case <-n.stop:
				return ErrClosed
			case <-ctx.Done():
				return fmt.Errorf("broker: self-check: dispatcher %d did not get its message within %v (stuck handler or lost subscription)", d.i, n.o.CheckTimeout)
			}
		}
	}
	return nil
}

// Health is nil while the connection is up, resynced, every subscription
// confirmed, no drop unreported and the self-check passes.
func (n *NATS) Health() error {
	if n.closed.Load() {
		return ErrClosed
	}
	if st := n.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("broker: NATS connection %v: %w", st, ErrUnavailable)
	}
	n.hmu.Lock()
	down, broken, unconfirmed, checkErr := n.down, n.broken, len(n.unconfirmed), n.checkErr
	n.hmu.Unlock()
	switch {
	case down != nil:
		return fmt.Errorf("%w (reconnected, not yet resynced)", down)
	case broken != nil:
		return broken
	case unconfirmed > 0:
		return fmt.Errorf("broker: %d subscriptions not confirmed by the NATS server", unconfirmed)
	}
	for _, d := range n.disp {
		if d.lossy.Load() {
			return fmt.Errorf("broker: dispatcher %d dropped messages (handlers fell behind); not yet resynced", d.i)
		}
	}
	return checkErr
}

// Stats returns the broker's counters.
func (n *NATS) Stats() Stats {
	n.mu.Lock()
	dropped := n.gone
	for _, e := range n.subs {
		if d, err := e.sub.Dropped(); err == nil {
			dropped += uint64(d)
		}
	}
	subjects := len(n.subs)
	n.mu.Unlock()
	return Stats{
		Published:     n.published.Load(),
		PublishErrors: n.publishErrors.Load(),
		Received:      n.received.Load() + dropped,
		Dropped:       dropped,
		Resyncs:       n.resyncs.Load(),
		Reconnects:    n.reconnects.Load(),
		Subjects:      int64(subjects),
	}
}

// Close closes the connections and waits for the handler calls under
// way.
func (n *NATS) Close() error {
	n.mu.Lock()
	if n.closed.Swap(true) {
		n.mu.Unlock()
		return ErrClosed
	}
	n.mu.Unlock()
	close(n.stop)
	n.nc.Close()
	n.cc.Close()
	n.wg.Wait()
	return nil
}
