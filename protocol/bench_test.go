package protocol

import (
	"bytes"
	"fmt"
	"testing"
)

// benchPush is a PUSH like the server sends: a topic message with a JSON
// payload of size bytes (or arbitrary bytes when binary is set).
func benchPush(size int, binaryPayload bool) *Frame {
	var p []byte
	if binaryPayload {
		p = make([]byte, size)
		for i := range p {
			p[i] = byte(i * 7)
		}
	} else {
		p = append([]byte(`{"v":"`), bytes.Repeat([]byte("x"), size-8)...)
		p = append(p, `"}`...)
	}
	return &Frame{Type: TypePush, Stream: "t:prices.eurusd", Epoch: "1700000000", Seq: 123456,
		MsgID: "01HF8Z7Q3K9V2M4N6P8R0T2W4Y", Payload: p, Time: 1700000000123}
}

func benchConnect() *Frame {
	return &Frame{Type: TypeConnect, Version: Version,
		Token:  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhcHAiOiJkZW1vIiwic3ViIjoiYWxpY2UiLCJleHAiOjE3MDAwMDM2MDB9.RoOy1-dfAtx8Vgn_3IbTBk4Xs_blLxn-2S-c1N2cQbc",
		Device: "3f1c9a2e-7b4d-4e8a-9c61-0d2f5b7e8a90", Client: "herald-js/1.2.0",
		Resume: []Position{{Stream: "u:alice", Epoch: "1700000000", Seq: 812}, {Stream: "t:news", Epoch: "1700000000", Seq: 77}}}
}

func BenchmarkEncodeBinaryPush(b *testing.B) {
	f := benchPush(100, true)
	buf := AppendFramed(nil, f)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendFramed(buf[:0], f)
	}
}

func BenchmarkDecodeBinaryPush(b *testing.B) {
	lim := DefaultLimits()
	body := AppendBinary(nil, benchPush(100, true))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var f Frame
	for b.Loop() {
		if err := DecodeBinary(body, &f, lim); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeJSONPush(b *testing.B) {
	for _, bin := range []bool{false, true} {
		name := map[bool]string{false: "data", true: "b64"}[bin]
		b.Run(name, func(b *testing.B) {
			f := benchPush(100, bin)
			buf := AppendJSON(nil, f)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendJSON(buf[:0], f)
			}
		})
	}
}

func BenchmarkDecodeJSONPush(b *testing.B) {
	lim := DefaultLimits()
	for _, bin := range []bool{false, true} {
		name := map[bool]string{false: "data", true: "b64"}[bin]
		b.Run(name, func(b *testing.B) {
			msg := AppendJSON(nil, benchPush(100, bin))
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			var f Frame
			for b.Loop() {
				if err := DecodeJSON(msg, &f, lim); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeConnect(b *testing.B) {
	lim := DefaultLimits()
	b.Run("binary", func(b *testing.B) {
		body := AppendBinary(nil, benchConnect())
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		var f Frame
		for b.Loop() {
			if err := DecodeBinary(body, &f, lim); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		msg := AppendJSON(nil, benchConnect())
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		var f Frame
		for b.Loop() {
			if err := DecodeJSON(msg, &f, lim); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEncodedFramed fans one PUSH out to 1000 connections, copying it
// into each connection's write buffer: "shared" encodes it once with
// Encoded, "per-conn" encodes it for every connection.
func BenchmarkEncodedFramed(b *testing.B) {
	const conns = 1000
	for _, size := range []int{16, 100, 1024} {
		f := benchPush(size, true)
		wbufs := make([][]byte, conns)
		for i := range wbufs {
			wbufs[i] = make([]byte, 0, 2048)
		}
		n := int64(len(AppendFramed(nil, f)))
		b.Run(fmt.Sprintf("%dB/shared", size), func(b *testing.B) {
			b.SetBytes(n * conns)
			b.ReportAllocs()
			for b.Loop() {
				e := Encode(f)
				for i := range wbufs {
					wbufs[i] = append(wbufs[i][:0], e.Framed()...)
				}
			}
		})
		b.Run(fmt.Sprintf("%dB/per-conn", size), func(b *testing.B) {
			b.SetBytes(n * conns)
			b.ReportAllocs()
			for b.Loop() {
				for i := range wbufs {
					wbufs[i] = AppendFramed(wbufs[i][:0], f)
				}
			}
		})
	}
}

// BenchmarkEncodedFramedParallel has every goroutine read the same Encoded,
// as connection writers do.
func BenchmarkEncodedFramedParallel(b *testing.B) {
	for _, size := range []int{16, 100, 1024} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			e := Encode(benchPush(size, true))
			b.SetBytes(int64(len(e.Framed())))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := make([]byte, 0, 2048)
				for pb.Next() {
					w = append(w[:0], e.Framed()...)
				}
			})
		})
	}
}
