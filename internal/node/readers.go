package node

import "sync"

// readers runs the store reads that connections need (inbox catch-ups,
// topic recoveries, the head of a stream joined for the first time) on a
// bounded number of goroutines, in the order they were asked for: a storm
// of reconnecting clients queues its reads instead of starting one
// goroutine per client. The queue itself is unbounded (one small closure
// per waiting connection, which the connection's own limits bound), so
// that the event loop that asks never blocks.
type readers struct {
	mu     sync.Mutex
	cond   sync.Cond
	queue  []func()
	closed bool
	wg     sync.WaitGroup
}

func newReaders(n int) *readers {
	r := &readers{}
	r.cond.L = &r.mu
	r.wg.Add(n)
	for range n {
		go r.run()
	}
	return r
}

// submit queues job. After close, job runs on a goroutine of its own so
// that nothing a connection waits for is lost during shutdown.
func (r *readers) submit(job func()) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		job()
		return
	}
	r.queue = append(r.queue, job)
	r.mu.Unlock()
	r.cond.Signal()
}

func (r *readers) run() {
	defer r.wg.Done()
	r.mu.Lock()
	for {
		for len(r.queue) == 0 && !r.closed {
			r.cond.Wait()
		}
		if len(r.queue) == 0 {
			r.mu.Unlock()
			return
		}
		job := r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
		r.mu.Unlock()
		job()
		r.mu.Lock()
	}
}

// close runs what is queued and stops the goroutines.
func (r *readers) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cond.Broadcast()
	r.wg.Wait()
}

// queued returns how many reads wait for a reader.
func (r *readers) queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

// ReadsQueued returns how many store reads (catch-ups, recoveries,
// claims in a cluster) wait for a reader: the node's read lag.
func (n *Node) ReadsQueued() int { return n.readers.queued() }
