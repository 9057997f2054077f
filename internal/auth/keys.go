package auth

import "crypto/sha256"

// Keys maps server API keys to app ids. Lookups compare SHA-256 digests, so
// their timing reveals nothing useful about the stored keys. It is safe for
// concurrent use.
type Keys struct {
	apps map[[sha256.Size]byte]string
}

// NewKeys returns Keys for the given API key -> app id map. Empty keys are
// ignored.
func NewKeys(keys map[string]string) *Keys {
	k := &Keys{apps: make(map[[sha256.Size]byte]string, len(keys))}
	for key, app := range keys {
		if key != "" {
			k.apps[sha256.Sum256([]byte(key))] = app
		}
	}
	return k
}

// App returns the id of the app that owns key.
func (k *Keys) App(key string) (string, bool) {
	if key == "" {
		return "", false
	}
	app, ok := k.apps[sha256.Sum256([]byte(key))]
	return app, ok
}
