package protocol

import (
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf8"
)

// EncodingVersion is the first byte of every binary frame body.
const EncodingVersion = 1

// PrefixSize is the size of the big-endian length that precedes every binary
// frame on a TCP stream and inside a binary WebSocket message.
const PrefixSize = 4

// Field numbers of the binary encoding. A field is a uvarint tag
// (number<<1 | wire type) followed by a uvarint (wire type 0) or a
// uvarint length and that many bytes (wire type 1). Decoders skip fields they
// do not know, so later versions can add fields.
const (
	fieldID        = 1
	fieldVersion   = 2
	fieldToken     = 3
	fieldDevice    = 4
	fieldClient    = 5
	fieldResume    = 6
	fieldSession   = 7
	fieldNode      = 8
	fieldHeartbeat = 9
	fieldStream    = 10
	fieldTopic     = 11
	fieldEpoch     = 12
	fieldSeq       = 13
	fieldMsgID     = 14
	fieldPayload   = 15
	fieldTime      = 16
	fieldCode      = 17
	fieldReason    = 18
	fieldReconnect = 19
	fieldAlt       = 20
	fieldRecovered = 21
)

const (
	wireVarint = 0
	wireBytes  = 1
)

// AppendBinary appends the binary encoding of f (without length prefix) to dst.
func AppendBinary(dst []byte, f *Frame) []byte {
	dst = append(dst, EncodingVersion, byte(f.Type))
	dst = appendUint(dst, fieldID, uint64(f.ID))
	dst = appendUint(dst, fieldVersion, uint64(f.Version))
	dst = appendString(dst, fieldToken, f.Token)
	dst = appendString(dst, fieldDevice, f.Device)
	dst = appendString(dst, fieldClient, f.Client)
	for i := range f.Resume {
		p := &f.Resume[i]
		var inner [64]byte
		b := appendString(inner[:0], fieldStream, p.Stream)
		b = appendString(b, fieldEpoch, p.Epoch)
		b = appendUint(b, fieldSeq, p.Seq)
		dst = appendBytes(dst, fieldResume, b, true)
	}
	dst = appendString(dst, fieldSession, f.Session)
	dst = appendString(dst, fieldNode, f.Node)
	if f.Heartbeat > 0 {
		dst = appendUint(dst, fieldHeartbeat, uint64(f.Heartbeat/time.Millisecond))
	}
	dst = appendString(dst, fieldStream, f.Stream)
	dst = appendString(dst, fieldTopic, f.Topic)
	dst = appendString(dst, fieldEpoch, f.Epoch)
	dst = appendUint(dst, fieldSeq, f.Seq)
	dst = appendString(dst, fieldMsgID, f.MsgID)
	dst = appendBytes(dst, fieldPayload, f.Payload, false)
	if f.Time != 0 {
		// zigzag, so a negative clock does not cost ten bytes
		dst = appendUint(dst, fieldTime, uint64(f.Time<<1)^uint64(f.Time>>63))
	}
	dst = appendUint(dst, fieldCode, uint64(f.Code))
	dst = appendString(dst, fieldReason, f.Reason)
	if f.Reconnect {
		dst = appendUint(dst, fieldReconnect, 1)
	}
	dst = appendString(dst, fieldAlt, f.Alt)
	if f.Recovered {
		dst = appendUint(dst, fieldRecovered, 1)
	}
	return dst
}

// AppendFramed appends f's binary encoding preceded by its 4-byte big-endian
// length: the unit of a TCP stream and of a binary WebSocket message.
func AppendFramed(dst []byte, f *Frame) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = AppendBinary(dst, f)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-PrefixSize))
	return dst
}

// NextFramed finds the first length-prefixed frame in buf. It returns the
// frame body and the number of bytes it used up. When buf does not yet hold
// a whole frame it returns n == 0 and no error. A declared length over
// lim.MaxFrame, or of zero, is an error: the stream cannot be resynchronised.
func NextFramed(buf []byte, lim Limits) (body []byte, n int, err error) {
	if len(buf) < PrefixSize {
		return nil, 0, nil
	}
	size := binary.BigEndian.Uint32(buf)
	if size == 0 {
		return nil, 0, fmt.Errorf("%w: zero-length frame", ErrMalformed)
	}
	if int64(size) > int64(lim.MaxFrame) {
		return nil, 0, fmt.Errorf("%w: frame of %d bytes exceeds %d", ErrTooLarge, size, lim.MaxFrame)
	}
	end := PrefixSize + int(size)
	if len(buf) < end {
		return nil, 0, nil
	}
	return buf[PrefixSize:end], end, nil
}

// DecodeBinary decodes one binary frame body (without length prefix) into f,
// which it resets first, and validates it against lim. Strings and payload
// are copied: f does not alias body.
func DecodeBinary(body []byte, f *Frame, lim Limits) error {
	*f = Frame{}
	if len(body) > lim.MaxFrame {
		return fmt.Errorf("%w: frame of %d bytes exceeds %d", ErrTooLarge, len(body), lim.MaxFrame)
	}
	if len(body) < 2 {
		return fmt.Errorf("%w: %d bytes is too short", ErrMalformed, len(body))
	}
	if body[0] != EncodingVersion {
		return fmt.Errorf("%w: %d", ErrBadVersion, body[0])
	}
	f.Type = Type(body[1])
	if !f.Type.Valid() {
		return fmt.Errorf("%w: %d", ErrUnknownType, body[1])
	}
	d := decoder{buf: body[2:], lim: lim}
	for len(d.buf) > 0 {
		num, wt, err := d.tag()
		if err != nil {
			return err
		}
		if wt == wireVarint {
			v, err := d.uvarint()
			if err != nil {
				return err
			}
			if err := f.setUint(num, v); err != nil {
				return err
			}
			continue
		}
		b, err := d.bytes()
		if err != nil {
			return err
		}
		if err := f.setBytes(num, b, lim); err != nil {
			return err
		}
	}
	return f.Validate(lim)
}

func (f *Frame) setUint(num uint64, v uint64) error {
	switch num {
	case fieldID:
		if v > 1<<32-1 {
			return fmt.Errorf("%w: id out of range", ErrMalformed)
		}
		f.ID = uint32(v)
	case fieldVersion:
		if v > 1<<32-1 {
			return fmt.Errorf("%w: version out of range", ErrMalformed)
		}
		f.Version = uint32(v)
	case fieldHeartbeat:
		if v > uint64(1<<62/time.Millisecond) {
			return fmt.Errorf("%w: heartbeat out of range", ErrMalformed)
		}
		f.Heartbeat = time.Duration(v) * time.Millisecond
	case fieldSeq:
		f.Seq = v
	case fieldTime:
		f.Time = int64(v>>1) ^ -int64(v&1)
	case fieldCode:
		if v > 1<<32-1 {
			return fmt.Errorf("%w: code out of range", ErrMalformed)
		}
		f.Code = uint32(v)
	case fieldReconnect:
		f.Reconnect = v != 0
	case fieldRecovered:
		f.Recovered = v != 0
	default:
		if num <= fieldRecovered {
			return fmt.Errorf("%w: field %d has the wrong wire type", ErrMalformed, num)
		}
	}
	return nil
}

func (f *Frame) setBytes(num uint64, b []byte, lim Limits) error {
	if num == fieldPayload {
		if len(b) > lim.MaxPayload {
			return fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrTooLarge, len(b), lim.MaxPayload)
		}
		f.Payload = append([]byte(nil), b...)
		return nil
	}
	if num == fieldResume {
		if len(f.Resume) >= lim.MaxResume {
			return fmt.Errorf("%w: more than %d resume positions", ErrTooLarge, lim.MaxResume)
		}
		p, err := decodePosition(b, lim)
		if err != nil {
			return err
		}
		f.Resume = append(f.Resume, p)
		return nil
	}
	var dst *string
	switch num {
	case fieldToken:
		dst = &f.Token
	case fieldDevice:
		dst = &f.Device
	case fieldClient:
		dst = &f.Client
	case fieldSession:
		dst = &f.Session
	case fieldNode:
		dst = &f.Node
	case fieldStream:
		dst = &f.Stream
	case fieldTopic:
		dst = &f.Topic
	case fieldEpoch:
		dst = &f.Epoch
	case fieldMsgID:
		dst = &f.MsgID
	case fieldReason:
		dst = &f.Reason
	case fieldAlt:
		dst = &f.Alt
	default:
		if num <= fieldRecovered {
			return fmt.Errorf("%w: field %d has the wrong wire type", ErrMalformed, num)
		}
		return nil // unknown field from a later version
	}
	s, err := checkString(b, lim)
	if err != nil {
		return fmt.Errorf("field %d: %w", num, err)
	}
	*dst = s
	return nil
}

func decodePosition(b []byte, lim Limits) (Position, error) {
	var p Position
	d := decoder{buf: b, lim: lim}
	for len(d.buf) > 0 {
		num, wt, err := d.tag()
		if err != nil {
			return p, err
		}
		switch {
		case num == fieldSeq && wt == wireVarint:
			if p.Seq, err = d.uvarint(); err != nil {
				return p, err
			}
		case num == fieldSeq || ((num == fieldStream || num == fieldEpoch) && wt == wireVarint):
			return p, fmt.Errorf("%w: resume field %d has the wrong wire type", ErrMalformed, num)
		case wt == wireVarint:
			if _, err := d.uvarint(); err != nil {
				return p, err
			}
		default:
			v, err := d.bytes()
			if err != nil {
				return p, err
			}
			switch num {
			case fieldStream:
				p.Stream, err = checkString(v, lim)
			case fieldEpoch:
				p.Epoch, err = checkString(v, lim)
			}
			if err != nil {
				return p, err
			}
		}
	}
	if p.Stream == "" {
		return p, fmt.Errorf("%w: resume position without stream", ErrMissingField)
	}
	return p, nil
}

func checkString(b []byte, lim Limits) (string, error) {
	if len(b) > lim.MaxString {
		return "", fmt.Errorf("%w: string of %d bytes exceeds %d", ErrTooLarge, len(b), lim.MaxString)
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%w: string is not UTF-8", ErrMalformed)
	}
	return string(b), nil
}

type decoder struct {
	buf []byte
	lim Limits
}

func (d *decoder) uvarint() (uint64, error) {
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		return 0, fmt.Errorf("%w: bad varint", ErrMalformed)
	}
	d.buf = d.buf[n:]
	return v, nil
}

func (d *decoder) tag() (num uint64, wt uint64, err error) {
	t, err := d.uvarint()
	if err != nil {
		return 0, 0, err
	}
	if t>>1 == 0 {
		return 0, 0, fmt.Errorf("%w: field number 0", ErrMalformed)
	}
	return t >> 1, t & 1, nil
}

func (d *decoder) bytes() ([]byte, error) {
	n, err := d.uvarint()
	if err != nil {
		return nil, err
	}
	if n > uint64(len(d.buf)) {
		return nil, fmt.Errorf("%w: field length %d past the end", ErrMalformed, n)
	}
	b := d.buf[:n]
	d.buf = d.buf[n:]
	return b, nil
}

func appendUint(dst []byte, num uint64, v uint64) []byte {
	if v == 0 {
		return dst
	}
	dst = binary.AppendUvarint(dst, num<<1|wireVarint)
	return binary.AppendUvarint(dst, v)
}

func appendString(dst []byte, num uint64, s string) []byte {
	if s == "" {
		return dst
	}
	dst = binary.AppendUvarint(dst, num<<1|wireBytes)
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendBytes appends a bytes field; empty values are skipped unless keep.
func appendBytes(dst []byte, num uint64, b []byte, keep bool) []byte {
	if len(b) == 0 && !keep {
		return dst
	}
	dst = binary.AppendUvarint(dst, num<<1|wireBytes)
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}
