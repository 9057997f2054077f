// Package registry records who is online: which users, with which devices,
// on which node, since when. Memory is the embedded implementation; a
// clustered one keeps the same contract on a shared store.
package registry

import (
	"hash/maphash"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Session is one online device of a user. The registry keeps a pointer to
// the caller's Session, not a copy: one connection's session exists once in
// memory. Its fields must not change after Claim.
type Session struct {
	App       string    `json:"-"`
	User      string    `json:"-"`
	Device    string    `json:"device"`
	Node      string    `json:"node"`
	ConnID    uint64    `json:"conn_id"`
	Since     time.Time `json:"since"`
	Transport string    `json:"transport"`
	Remote    string    `json:"remote,omitempty"`
}

const numShards = 64

// Memory is an in-process registry, safe for concurrent use.
type Memory struct {
	seed   maphash.Seed
	shards [numShards]shard
	count  atomic.Int64
}

type shard struct {
	mu sync.RWMutex
	m  map[string][]*Session // app\x00user → sessions, one per device
}

// NewMemory returns an empty registry.
func NewMemory() *Memory {
	m := &Memory{seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].m = make(map[string][]*Session)
	}
	return m
}

func (m *Memory) shard(app, user string) (*shard, string) {
	k := app + "\x00" + user
	return &m.shards[maphash.String(m.seed, k)%numShards], k
}

// Claim records s as the session of its user's device. If the device already
// has a session, Claim replaces it when replace is true and returns the old
// one, or leaves it and reports ok == false. The check and the update are
// atomic, so two connections of one device cannot both win.
func (m *Memory) Claim(s *Session, replace bool) (prev Session, hadPrev, ok bool) {
	sh, k := m.shard(s.App, s.User)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.m[k]
	for i := range list {
		if list[i].Device == s.Device {
			if !replace {
				return *list[i], true, false
			}
			prev = *list[i]
			next := append([]*Session(nil), list...)
			next[i] = s
			sh.m[k] = next
			return prev, true, true
		}
	}
	sh.m[k] = append(list[:len(list):len(list)], s)
	m.count.Add(1)
	return Session{}, false, true
}

// Release removes s if it is still the session of its device (a newer
// session that replaced it is left alone).
func (m *Memory) Release(s *Session) {
	sh, k := m.shard(s.App, s.User)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.m[k]
	for i := range list {
		if list[i] == s {
			if len(list) == 1 {
				delete(sh.m, k)
			} else {
				next := make([]*Session, 0, len(list)-1)
				next = append(next, list[:i]...)
				sh.m[k] = append(next, list[i+1:]...)
			}
			m.count.Add(-1)
			return
		}
	}
}

// Lookup returns the sessions of a user, sorted by device.
func (m *Memory) Lookup(app, user string) []Session {
	sh, k := m.shard(app, user)
	sh.mu.RLock()
	list := sh.m[k]
	sh.mu.RUnlock()
	out := make([]Session, len(list))
	for i, s := range list {
		out[i] = *s
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

// Count returns the number of sessions.
func (m *Memory) Count() int { return int(m.count.Load()) }
