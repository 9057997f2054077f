package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/herald-push/herald/internal/store"
)

// Key layout. Every key of a stream starts with the stream's prefix
// 's' uvarint(len(name)) name; a length prefix is self-delimiting, so no
// stream's keys fall inside another's, and names need no escaping. After the
// prefix a kind byte orders the stream's keys:
//
//	prefix 'a'              → meta: last u64, mark u64 (newest trimmed seq)
//	prefix 'c' device       → cursor: seq u64
//	prefix 'i' id           → id index: seq u64, expires i64 (0: never)
//	prefix 'm' seq(BE u64)  → message: see encodeMessage
//	'x' expires(BE u64) uvarint(len(name)) name seq(BE u64) → id  (expiry index)
//	'g' "epoch"             → the store's epoch
//	'g' "format"            → formatVersion
//	'g' "open"              → when the store was last opened (its write tells
//	                          where Pebble's recovered log ends; see mark.go)
//
// Range is one iterator over [prefix 'a', prefix 'n'): it reads the meta
// key and then seeks to the first message, both from one consistent view.
// Integers are big-endian so that byte order is numeric order.
const (
	tagStream = 's'
	tagExpiry = 'x'
	tagGlobal = 'g'

	kindMeta   = 'a'
	kindCursor = 'c'
	kindID     = 'i'
	kindMsg    = 'm'
	kindEnd    = 'n' // upper bound of a stream's message keys

	formatVersion = "1"
	msgVersion    = 1
)

// ErrCorrupt: a record in the data directory is not one this package
// wrote.
var ErrCorrupt = errors.New("embedded: corrupt record")

const (
	epochKey  = string(tagGlobal) + "epoch"
	openKey   = string(tagGlobal) + "open"
	formatKey = string(tagGlobal) + "format"
)

// streamPrefix returns the prefix of stream's keys, with room for more.
func streamPrefix(stream string, extra int) []byte {
	k := make([]byte, 0, 1+binary.MaxVarintLen64+len(stream)+1+extra)
	k = append(k, tagStream)
	k = binary.AppendUvarint(k, uint64(len(stream)))
	return append(k, stream...)
}

func metaKey(stream string) []byte { return append(streamPrefix(stream, 0), kindMeta) }

func endKey(stream string) []byte { return append(streamPrefix(stream, 0), kindEnd) }

func cursorKey(stream, device string) []byte {
	return append(append(streamPrefix(stream, len(device)), kindCursor), device...)
}

func idKey(stream, id string) []byte {
	return append(append(streamPrefix(stream, len(id)), kindID), id...)
}

func msgKey(stream string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(streamPrefix(stream, 8), kindMsg), seq)
}

// msgKeySeq returns the sequence of a message key.
func msgKeySeq(k []byte) (uint64, error) {
	if len(k) < 8 {
		return 0, fmt.Errorf("%w: message key %q", ErrCorrupt, k)
	}
	return binary.BigEndian.Uint64(k[len(k)-8:]), nil
}

func expiryKey(expires int64, stream string, seq uint64) []byte {
	k := make([]byte, 0, 1+8+binary.MaxVarintLen64+len(stream)+8)
	k = append(k, tagExpiry)
	k = binary.BigEndian.AppendUint64(k, uint64(expires))
	k = binary.AppendUvarint(k, uint64(len(stream)))
	k = append(k, stream...)
	return binary.BigEndian.AppendUint64(k, seq)
}

// expiryBound returns the smallest expiry key of messages expiring at or
// after expires.
func expiryBound(expires int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{tagExpiry}, uint64(expires))
}

// parseExpiryKey returns the stream and sequence of an expiry key.
func parseExpiryKey(k []byte) (stream string, seq uint64, err error) {
	if len(k) < 1+8+1+8 || k[0] != tagExpiry {
		return "", 0, fmt.Errorf("%w: expiry key %q", ErrCorrupt, k)
	}
	rest := k[9:]
	n, w := binary.Uvarint(rest)
	if w <= 0 || uint64(len(rest)-w) != n+8 {
		return "", 0, fmt.Errorf("%w: expiry key %q", ErrCorrupt, k)
	}
	rest = rest[w:]
	return string(rest[:n]), binary.BigEndian.Uint64(rest[n:]), nil
}

// meta is a stream's counters.
type meta struct {
	last uint64 // newest sequence ever appended
	mark uint64 // newest trimmed sequence; first is mark+1
}

func (m meta) encode() []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), m.last), m.mark)
}

func decodeMeta(v []byte) (meta, error) {
	if len(v) != 16 {
		return meta{}, fmt.Errorf("%w: meta of %d bytes", ErrCorrupt, len(v))
	}
	return meta{last: binary.BigEndian.Uint64(v), mark: binary.BigEndian.Uint64(v[8:])}, nil
}

func encodeU64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func decodeU64(v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: counter of %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// idEntry is the id index's value: which message holds the id and when it
// expires, so that a lookup needs no second read.
type idEntry struct {
	seq     uint64
	expires int64
}

func (e idEntry) encode() []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), e.seq), uint64(e.expires))
}

func decodeIDEntry(v []byte) (idEntry, error) {
	if len(v) != 16 {
		return idEntry{}, fmt.Errorf("%w: id entry of %d bytes", ErrCorrupt, len(v))
	}
	return idEntry{seq: binary.BigEndian.Uint64(v), expires: int64(binary.BigEndian.Uint64(v[8:]))}, nil
}

// expired reports whether a message expiring at expires (0: never) has
// expired at now.
func expired(expires, now int64) bool { return expires != 0 && expires <= now }

// unixNano returns t in nanoseconds, 0 for the zero time. A non-zero time at
// or before 1970 becomes 1: already expired, and still non-zero.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(t.UnixNano(), 1)
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// encodeMessage returns a message value:
//
//	version byte, varint time, varint expires (0: never), uvarint len(id), id, payload
func encodeMessage(timeNano, expires int64, id string, payload []byte) []byte {
	v := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(id)+len(payload))
	v = append(v, msgVersion)
	v = binary.AppendVarint(v, timeNano)
	v = binary.AppendVarint(v, expires)
	v = binary.AppendUvarint(v, uint64(len(id)))
	v = append(v, id...)
	return append(v, payload...)
}

// decodeMessage decodes a message value. The payload is copied: v belongs to
// an iterator.
func decodeMessage(seq uint64, v []byte) (store.Message, int64, error) {
	bad := func() (store.Message, int64, error) {
		return store.Message{}, 0, fmt.Errorf("%w: message %d", ErrCorrupt, seq)
	}
	if len(v) < 1 || v[0] != msgVersion {
		return bad()
	}
	v = v[1:]
	t, w := binary.Varint(v)
	if w <= 0 {
		return bad()
	}
	v = v[w:]
	exp, w := binary.Varint(v)
	if w <= 0 {
		return bad()
	}
	v = v[w:]
	n, w := binary.Uvarint(v)
	if w <= 0 || uint64(len(v)-w) < n {
		return bad()
	}
	v = v[w:]
	m := store.Message{
		Seq:     seq,
		ID:      string(v[:n]),
		Payload: append([]byte(nil), v[n:]...),
		Time:    fromUnixNano(t),
		Expires: fromUnixNano(exp),
	}
	return m, exp, nil
}
