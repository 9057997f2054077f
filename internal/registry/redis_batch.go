package registry

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Claims and releases go to Redis in pipelines. In a connection storm
// thousands of claims arrive at once; sent one per round trip, each pays
// a write and a read system call on both sides and Redis spends more time
// on sockets than on scripts. Instead a few workers each take everything
// queued (up to batchSize calls) and send it as one pipeline: one round
// trip for the batch. Calls that arrive while the pipelines are in flight
// form the next batches, so batches grow with the load and a lone call
// still takes a single round trip.

// pipelineWorkers is the number of pipelines in flight at once.
const pipelineWorkers = 8

// call is one script call waiting for a pipeline.
type call struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd // the answer, once done is closed
	done   chan struct{}
	state  atomic.Int32 // callWaiting, then callAnswered or callAbandoned
	// abandoned, if set, is given the answer of a call its caller stopped
	// waiting for: the script ran (or may have) all the same.
	abandoned func(*redis.Cmd)
}

// States of a call: whoever moves it from callWaiting decides who sees
// the answer.
const (
	callWaiting int32 = iota
	callAnswered
	callAbandoned
)

// run queues a call and waits for its answer (whose Err is Redis's
// error), for ctx, or for Close. If ctx ends first, run returns its error
// and the answer, when it comes, goes to abandoned (if not nil).
func (r *Redis) run(ctx context.Context, script *redis.Script, abandoned func(*redis.Cmd), keys []string, args ...any) (*redis.Cmd, error) {
	c := &call{script: script, keys: keys, args: args, done: make(chan struct{}), abandoned: abandoned}
	select {
	case r.calls <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-r.ctx.Done():
		return nil, ErrClosed
	}
	var err error
	select {
	case <-c.done:
		return c.cmd, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-r.ctx.Done():
		err = ErrClosed
	}
	if c.state.CompareAndSwap(callWaiting, callAbandoned) {
		return nil, err
	}
	<-c.done // answered meanwhile
	return c.cmd, nil
}

// pipeline is a worker: it sends what is queued, batchSize calls at a
// time, until the registry stops.
func (r *Redis) pipeline() {
	defer r.workers.Done()
	batch := make([]*call, 0, batchSize)
	for {
		batch = batch[:0]
		select {
		case c := <-r.calls:
			batch = append(batch, c)
		case <-r.ctx.Done():
			return
		}
	more:
		for len(batch) < batchSize {
			select {
			case c := <-r.calls:
				batch = append(batch, c)
			default:
				break more
			}
		}
		r.exec(batch)
		for _, c := range batch {
			if c.state.CompareAndSwap(callWaiting, callAnswered) {
				close(c.done)
			} else if c.abandoned != nil {
				c.abandoned(c.cmd)
			}
		}
	}
}

// exec sends batch as one pipeline and stores each call's answer. A
// script Redis does not know (it restarted) is loaded and its calls sent
// again: they did not run.
func (r *Redis) exec(batch []*call) {
	ctx, cancel := context.WithTimeout(context.Background(), r.lease)
	defer cancel()
	todo := batch
	for attempt := 0; ; attempt++ {
		p := r.c.Pipeline()
		cmds := make([]*redis.Cmd, len(todo))
		for i, c := range todo {
			cmds[i] = p.EvalSha(ctx, c.script.Hash(), c.keys, c.args...)
		}
		_, _ = p.Exec(ctx) // each command has its own error
		var again []*call
		for i, c := range todo {
			c.cmd = cmds[i]
			if attempt == 0 && redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
				again = append(again, c)
			}
		}
		if len(again) == 0 || r.loadScripts(ctx, again) != nil {
			return // the calls keep their NOSCRIPT error
		}
		todo = again
	}
}

// loadScripts loads the scripts of calls into Redis.
func (r *Redis) loadScripts(ctx context.Context, calls []*call) error {
	var errs []error
	seen := map[*redis.Script]bool{}
	for _, c := range calls {
		if !seen[c.script] {
			seen[c.script] = true
			errs = append(errs, c.script.Load(ctx, r.c).Err())
		}
	}
	return errors.Join(errs...)
}
