package auth

import (
	"crypto/sha256"
	"sync/atomic"
)

// Keys maps server API keys to app ids. Lookups compare SHA-256 digests, so
// their timing reveals nothing useful about the stored keys. It is safe for
// concurrent use, Set included.
type Keys struct {
	apps atomic.Pointer[map[[sha256.Size]byte]string]
}

// NewKeys returns Keys for the given API key -> app id map. Empty keys are
// ignored.
func NewKeys(keys map[string]string) *Keys {
	k := &Keys{}
	k.Set(keys)
	return k
}

// Set replaces, atomically, the API key -> app id map. Empty keys are
// ignored.
func (k *Keys) Set(keys map[string]string) {
	m := make(map[[sha256.Size]byte]string, len(keys))
	for key, app := range keys {
		if key != "" {
			m[sha256.Sum256([]byte(key))] = app
		}
	}
	k.apps.Store(&m)
}

// App returns the id of the app that owns key.
func (k *Keys) App(key string) (string, bool) {
	if key == "" {
		return "", false
	}
	app, ok := (*k.apps.Load())[sha256.Sum256([]byte(key))]
	return app, ok
}
