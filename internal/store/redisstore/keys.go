package redisstore

import (
	"fmt"
	"strings"

	"github.com/herald-push/herald/internal/store"
)

// keys names the store's Redis keys under its prefix P:
//
//	P{<stream>}:meta   hash: epoch, last, mark, gen, idx
//	P{<stream>}:msgs   stream of the held messages, entry ids 0-<seq>
//	P{<stream>}:ids    hash: message id → seq[:expiry]; "" → 0 marks it as created
//	P{<stream>}:acks   hash: device → cursor
//	Pexpiry            sorted set: "<seq>:<stream>" scored by expiry (Unix ms)
//	Pgen               the data's generation (see bootLua)
//	Pboot              the Redis process last seen: "<run_id>:<durable>"
//
// The braces are a Redis Cluster hash tag: one stream's keys hash to one
// slot, so each stream script only touches keys of one slot, except the
// global gen and expiry keys (see the package comment on Redis Cluster).
// In the tag, '%' and '}' of the stream name are escaped as %25 and %7D,
// so that the tag is the whole name and keys of different streams differ.
type keys struct {
	prefix string
	boot   string
	gen    string
	expiry string
}

func newKeys(prefix string) (keys, error) {
	if strings.ContainsAny(prefix, "{}") {
		return keys{}, fmt.Errorf("%w: redis key prefix %q contains a brace", store.ErrInvalid, prefix)
	}
	return keys{prefix: prefix, boot: prefix + "boot", gen: prefix + "gen", expiry: prefix + "expiry"}, nil
}

var tagEscaper = strings.NewReplacer("%", "%25", "}", "%7D")

// tag returns P{<escaped stream>}.
func (k *keys) tag(stream string) string {
	if strings.ContainsAny(stream, "%}") {
		stream = tagEscaper.Replace(stream)
	}
	return k.prefix + "{" + stream + "}"
}

// stream returns the keys a stream script takes, in its order (see
// prologue).
func (k *keys) stream(stream string) []string {
	t := k.tag(stream)
	return []string{t + ":meta", t + ":msgs", t + ":ids", t + ":acks", k.gen, k.expiry}
}

// Indexes into keys.stream's result.
const (
	keyMeta = iota
	keyMsgs
	keyIDs
	keyAcks
)
