// Package redisswitches keeps the operators' degrade-switch overrides of a
// cluster in Redis (switches.Store): one hash, a field per (switch, app),
// so that every node, and a node that starts later, finds them.
package redisswitches

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/herald-push/herald/internal/switches"
)

// Options configure a Store.
type Options struct {
	Addr string // host:port of the cluster's Redis
	Key  string // the hash, e.g. "herald:switches"
}

// Store is a switches.Store in a Redis hash.
type Store struct {
	c   *redis.Client
	key string
}

var _ switches.Store = (*Store)(nil)

// Open connects to Redis and checks that it answers.
func Open(ctx context.Context, o Options) (*Store, error) {
	c := redis.NewClient(&redis.Options{Addr: o.Addr, PoolSize: 2, MaxRetries: 1})
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("switches on Redis %s: %w", o.Addr, err)
	}
	return &Store{c: c, key: o.Key}, nil
}

// Close closes the connection.
func (s *Store) Close() error { return s.c.Close() }

// field is the hash field of name's override for app.
func field(name, app string) string { return name + "\x00" + app }

// Load implements switches.Store.
func (s *Store) Load(ctx context.Context) ([]switches.State, error) {
	m, err := s.c.HGetAll(ctx, s.key).Result()
	if err != nil {
		return nil, fmt.Errorf("switches: load: %w", err)
	}
	out := make([]switches.State, 0, len(m))
	for f, v := range m {
		var st switches.State
		if err := json.Unmarshal([]byte(v), &st); err != nil {
			return nil, fmt.Errorf("switches: %s field %q: %w", s.key, strings.ReplaceAll(f, "\x00", "/"), err)
		}
		if _, err := switches.Parse(st.Name); err != nil {
			return nil, fmt.Errorf("switches: %s: %w", s.key, err)
		}
		out = append(out, st)
	}
	return out, nil
}

// Put implements switches.Store.
func (s *Store) Put(ctx context.Context, st switches.State) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := s.c.HSet(ctx, s.key, field(st.Name, st.App), data).Err(); err != nil {
		return fmt.Errorf("switches: save: %w", err)
	}
	return nil
}

// Delete implements switches.Store.
func (s *Store) Delete(ctx context.Context, name, app string) error {
	if err := s.c.HDel(ctx, s.key, field(name, app)).Err(); err != nil {
		return fmt.Errorf("switches: save: %w", err)
	}
	return nil
}
