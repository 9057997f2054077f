package switches

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// Store keeps the operators' overrides, so that a restart finds them and,
// in a cluster, every node (those that start later too). Put and Delete
// touch one (switch, app) override each, so that flips of different
// switches on different nodes never undo one another.
type Store interface {
	// Load returns every override saved.
	Load(ctx context.Context) ([]State, error)
	// Put saves an override (on or off) of st.Name for st.App.
	Put(ctx context.Context, st State) error
	// Delete drops the override of name for app, if any.
	Delete(ctx context.Context, name, app string) error
}

// Override returns the operator's override of sw for app, if any.
func (s *Set) Override(sw Switch, app string) (State, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.overrides[key{sw, app}]
	if !ok {
		return State{}, false
	}
	return State{Name: sw.String(), App: app, On: m.on, Source: m.source, Since: m.since, SinceMilli: m.since.UnixMilli()}, true
}

// Save writes the override of sw for app as it stands in s to st (a Put,
// or a Delete when the switch follows the configuration).
func (s *Set) Save(ctx context.Context, st Store, sw Switch, app string) error {
	if o, ok := s.Override(sw, app); ok {
		return st.Put(ctx, o)
	}
	return st.Delete(ctx, sw.String(), app)
}

// FileStore keeps the overrides in one JSON file (a node alone: in its
// data directory), replaced atomically at each change.
type FileStore struct {
	path string
	mu   sync.Mutex
}

// NewFileStore returns a store in the file at path.
func NewFileStore(path string) *FileStore { return &FileStore{path: path} }

// Load implements Store. A missing file holds no override.
func (f *FileStore) Load(context.Context) ([]State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.read()
}

func (f *FileStore) read() ([]State, error) {
	data, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("switches: %w", err)
	}
	var saved struct {
		Overrides []State `json:"overrides"`
	}
	if err := json.Unmarshal(data, &saved); err != nil {
		return nil, fmt.Errorf("switches: %s: %w", f.path, err)
	}
	for _, st := range saved.Overrides {
		if _, err := Parse(st.Name); err != nil {
			return nil, fmt.Errorf("switches: %s: %w", f.path, err)
		}
	}
	return saved.Overrides, nil
}

// Put implements Store.
func (f *FileStore) Put(_ context.Context, st State) error {
	return f.change(func(m map[[2]string]State) { m[[2]string{st.Name, st.App}] = st })
}

// Delete implements Store.
func (f *FileStore) Delete(_ context.Context, name, app string) error {
	return f.change(func(m map[[2]string]State) { delete(m, [2]string{name, app}) })
}

// change reads the file, applies do and writes it back.
func (f *FileStore) change(do func(map[[2]string]State)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	saved, err := f.read()
	if err != nil {
		return err
	}
	m := make(map[[2]string]State, len(saved)+1)
	for _, st := range saved {
		m[[2]string{st.Name, st.App}] = st
	}
	do(m)
	out := make([]State, 0, len(m))
	for _, st := range m {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].App != out[j].App {
			return out[i].App < out[j].App
		}
		return out[i].Name < out[j].Name
	})
	data, err := json.MarshalIndent(struct {
		Overrides []State `json:"overrides"`
	}{out}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(f.path, data)
}

// writeFileAtomic writes data to path through a synced temporary file and
// a rename.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("switches: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".switches-*")
	if err != nil {
		return fmt.Errorf("switches: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("switches: %w", err)
	}
	return nil
}
