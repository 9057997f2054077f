// Package damage deliberately damages an embedded store: its newest
// write-ahead log, the way a failing disk or a careless copy would, or its
// disk, which can be made to refuse writes. Tests use it to check that
// Herald never opens damaged data as if nothing happened and never
// acknowledges what it could not store.
package damage

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// Kinds of damage.
const (
	Truncated = "truncated" // the log is cut to 60 % of its size
	Tail      = "tail"      // the last 30 % of the log is overwritten with garbage
	Middle    = "middle"    // 4 KiB in the middle of the log are overwritten with garbage
)

// Kinds lists every kind of damage.
var Kinds = []string{Truncated, Tail, Middle}

// NewestLog returns the path of the newest write-ahead log in dir.
func NewestLog(dir string) (string, error) {
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		return "", err
	}
	if len(logs) == 0 {
		return "", fmt.Errorf("damage: no write-ahead log in %s", dir)
	}
	slices.Sort(logs) // numbered with leading zeros
	return logs[len(logs)-1], nil
}

// Log damages the newest write-ahead log in dir (a store's directory, as
// given to embedded.Open) in the way kind names. The garbage is the same
// for the same seed.
func Log(dir, kind string, seed uint64) error {
	path, err := NewestLog(dir)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	size := fi.Size()
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	garbage := func(n int64) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	switch kind {
	case Truncated:
		err = f.Truncate(size * 6 / 10)
	case Tail:
		_, err = f.WriteAt(garbage(size*3/10), size*7/10)
	case Middle:
		_, err = f.WriteAt(garbage(min(4096, size/4)), size/2)
	default:
		err = fmt.Errorf("damage: unknown kind %q", kind)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("damage %s: %w", path, err)
	}
	return nil
}

// FullDisk returns a file system over the operating system's whose writes
// fail with ENOSPC, as on a full disk, while the returned toggle is on.
func FullDisk() (vfs.FS, *errorfs.Toggle) {
	tg := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
			return syscall.ENOSPC
		}
		return nil
	})}
	return errorfs.Wrap(vfs.Default, tg), tg
}
