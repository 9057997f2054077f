package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/herald-push/herald/internal/jsonstr"
)

// The JSON encoding carries one frame as an object, or several as an array
// of objects, in one WebSocket text message. A payload that is valid JSON is
// embedded as "data"; any other payload is base64 in "b64".
//
// A message must be valid UTF-8 without \u escapes of lone surrogates, in
// its strings and in "data" alike: encoding/json would decode such text to
// U+FFFD, so that different names sent by a client would become one. The
// decoders check the whole message once (jsonstr.Check) before they parse
// it, and refuse it as malformed.

type jsonPosition struct {
	Stream string `json:"stream"`
	Epoch  string `json:"epoch,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
}

type jsonFrame struct {
	Type      string          `json:"type"`
	ID        uint32          `json:"id,omitempty"`
	Version   uint32          `json:"version,omitempty"`
	Token     string          `json:"token,omitempty"`
	Device    string          `json:"device,omitempty"`
	Client    string          `json:"client,omitempty"`
	Resume    []jsonPosition  `json:"resume,omitempty"`
	Session   string          `json:"session,omitempty"`
	Node      string          `json:"node,omitempty"`
	Heartbeat int64           `json:"heartbeat,omitempty"` // milliseconds
	Stream    string          `json:"stream,omitempty"`
	Topic     string          `json:"topic,omitempty"`
	Epoch     string          `json:"epoch,omitempty"`
	Seq       uint64          `json:"seq,omitempty"`
	MsgID     string          `json:"msg_id,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	B64       string          `json:"b64,omitempty"`
	Time      int64           `json:"time,omitempty"`
	Code      uint32          `json:"code,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	Reconnect bool            `json:"reconnect,omitempty"`
	Alt       string          `json:"alt,omitempty"`
	Recovered bool            `json:"recovered,omitempty"`
}

// AppendJSON appends the JSON object for f to dst.
func AppendJSON(dst []byte, f *Frame) []byte {
	dst = append(dst, `{"type":`...)
	dst = appendJSONString(dst, f.Type.String())
	dst = jsonUint(dst, "id", uint64(f.ID))
	dst = jsonUint(dst, "version", uint64(f.Version))
	dst = jsonString(dst, "token", f.Token)
	dst = jsonString(dst, "device", f.Device)
	dst = jsonString(dst, "client", f.Client)
	if len(f.Resume) > 0 {
		dst = append(dst, `,"resume":[`...)
		for i, p := range f.Resume {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"stream":`...)
			dst = appendJSONString(dst, p.Stream)
			dst = jsonString(dst, "epoch", p.Epoch)
			dst = jsonUint(dst, "seq", p.Seq)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	dst = jsonString(dst, "session", f.Session)
	dst = jsonString(dst, "node", f.Node)
	if f.Heartbeat > 0 {
		dst = jsonUint(dst, "heartbeat", uint64(f.Heartbeat/time.Millisecond))
	}
	dst = jsonString(dst, "stream", f.Stream)
	dst = jsonString(dst, "topic", f.Topic)
	dst = jsonString(dst, "epoch", f.Epoch)
	dst = jsonUint(dst, "seq", f.Seq)
	dst = jsonString(dst, "msg_id", f.MsgID)
	if len(f.Payload) > 0 {
		if isJSONData(f.Payload) {
			dst = append(dst, `,"data":`...)
			dst = appendCompact(dst, f.Payload)
		} else {
			dst = append(dst, `,"b64":"`...)
			dst = base64.StdEncoding.AppendEncode(dst, f.Payload)
			dst = append(dst, '"')
		}
	}
	if f.Time != 0 {
		dst = append(dst, `,"time":`...)
		dst = strconv.AppendInt(dst, f.Time, 10)
	}
	dst = jsonUint(dst, "code", uint64(f.Code))
	dst = jsonString(dst, "reason", f.Reason)
	if f.Reconnect {
		dst = append(dst, `,"reconnect":true`...)
	}
	dst = jsonString(dst, "alt", f.Alt)
	if f.Recovered {
		dst = append(dst, `,"recovered":true`...)
	}
	return append(dst, '}')
}

// DecodeJSON decodes one JSON frame object into f, which it resets first,
// and validates it against lim.
func DecodeJSON(data []byte, f *Frame, lim Limits) error {
	*f = Frame{}
	if len(data) > lim.MaxFrame {
		return fmt.Errorf("%w: frame of %d bytes exceeds %d", ErrTooLarge, len(data), lim.MaxFrame)
	}
	if err := jsonstr.Check(data); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	var j jsonFrame
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return j.frame(f, lim)
}

// DecodeJSONBatch decodes a text message holding one JSON frame object or an
// array of them. It stops at the first bad frame.
func DecodeJSONBatch(data []byte, lim Limits) ([]Frame, error) {
	if len(data) > lim.MaxFrame {
		return nil, fmt.Errorf("%w: message of %d bytes exceeds %d", ErrTooLarge, len(data), lim.MaxFrame)
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '[' {
		var f Frame
		if err := DecodeJSON(data, &f, lim); err != nil {
			return nil, err
		}
		return []Frame{f}, nil
	}
	if err := jsonstr.Check(data); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	var js []jsonFrame
	if err := json.Unmarshal(data, &js); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	out := make([]Frame, len(js))
	for i := range js {
		if err := js[i].frame(&out[i], lim); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (j *jsonFrame) frame(f *Frame, lim Limits) error {
	t, ok := typeFromName(j.Type)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownType, j.Type)
	}
	if j.Heartbeat < 0 || j.Heartbeat > int64(1<<62/time.Millisecond) {
		return fmt.Errorf("%w: heartbeat out of range", ErrMalformed)
	}
	*f = Frame{
		Type: t, ID: j.ID, Version: j.Version, Token: j.Token, Device: j.Device, Client: j.Client,
		Session: j.Session, Node: j.Node, Heartbeat: time.Duration(j.Heartbeat) * time.Millisecond,
		Stream: j.Stream, Topic: j.Topic, Epoch: j.Epoch, Seq: j.Seq, MsgID: j.MsgID, Time: j.Time,
		Code: j.Code, Reason: j.Reason, Reconnect: j.Reconnect, Alt: j.Alt, Recovered: j.Recovered,
	}
	for _, s := range []string{j.Token, j.Device, j.Client, j.Session, j.Node, j.Stream, j.Topic, j.Epoch, j.MsgID, j.Reason, j.Alt} {
		if len(s) > lim.MaxString {
			return fmt.Errorf("%w: string of %d bytes exceeds %d", ErrTooLarge, len(s), lim.MaxString)
		}
	}
	if len(j.Resume) > lim.MaxResume {
		return fmt.Errorf("%w: more than %d resume positions", ErrTooLarge, lim.MaxResume)
	}
	for _, p := range j.Resume {
		if p.Stream == "" {
			return fmt.Errorf("%w: resume position without stream", ErrMissingField)
		}
		if len(p.Stream) > lim.MaxString || len(p.Epoch) > lim.MaxString {
			return fmt.Errorf("%w: resume position too long", ErrTooLarge)
		}
		f.Resume = append(f.Resume, Position(p))
	}
	switch {
	case len(j.Data) > 0 && j.B64 != "":
		return fmt.Errorf("%w: both data and b64", ErrMalformed)
	case len(j.Data) > 0:
		if string(j.Data) != "null" {
			// compacted, as AppendJSON sends it, so that a frame
			// decodes to the same payload however it was spaced
			f.Payload = appendCompact(nil, j.Data)
		}
	case j.B64 != "":
		p, err := base64.StdEncoding.DecodeString(j.B64)
		if err != nil {
			return fmt.Errorf("%w: b64: %v", ErrMalformed, err)
		}
		f.Payload = p
	}
	return f.Validate(lim)
}

func jsonUint(dst []byte, key string, v uint64) []byte {
	if v == 0 {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':')
	return strconv.AppendUint(dst, v, 10)
}

func jsonString(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':')
	return appendJSONString(dst, s)
}

// isJSONData reports whether payload can travel as "data": it is valid JSON,
// valid UTF-8 (as a WebSocket text message must be) without lone surrogate
// escapes (which DecodeJSON refuses) and not null (which DecodeJSON reads as
// "no payload").
func isJSONData(payload []byte) bool {
	return jsonstr.Check(payload) == nil && json.Valid(payload) &&
		string(bytes.Trim(payload, " \t\r\n")) != "null"
}

// appendCompact appends valid JSON with insignificant whitespace removed.
func appendCompact(dst, src []byte) []byte {
	if !bytes.ContainsAny(src, " \t\r\n") {
		return append(dst, src...)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, src); err != nil {
		return append(dst, src...) // unreachable: src is valid JSON
	}
	return append(dst, b.Bytes()...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
