package console

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	big := bytes.Repeat([]byte("x\n\r\x1b"), ChunkSize)
	w.Stream(Stdout).Write(big)
	buf.WriteString("[    1.0] a kernel line\r\n")
	w.Send(Exit, ExitPayload(7))
	// a tty's newline translation
	r := NewReader(strings.NewReader(strings.ReplaceAll(buf.String(), "\n", "\r\n")))
	var out []byte
	var lines, code int
	for {
		f, line, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case f == nil:
			lines++
			if !bytes.Contains(line, []byte("kernel line")) {
				t.Fatalf("other line %q", line)
			}
		case f.Kind == Stdout:
			out = append(out, f.Payload...)
		case f.Kind == Exit:
			code, _ = ParseExit(f.Payload)
		}
	}
	if !bytes.Equal(out, big) || lines != 1 || code != 7 {
		t.Fatalf("stdout %d bytes (want %d), %d other lines, exit %d", len(out), len(big), lines, code)
	}
	if _, err := ParseExit([]byte("300")); err == nil {
		t.Fatal("exit status 300 accepted")
	}
}

// FuzzReader: the console is the guest's, so the host's reader must take
// anything: no panic, every frame's payload re-encodes to its line.
func FuzzReader(f *testing.F) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Send(Stdout, []byte("hello"))
	w.Send(Exit, ExitPayload(0))
	f.Add(buf.Bytes())
	f.Add([]byte("\x1bCF1 out !!!\n\x1bCF1  -\n\x1bCF1 exit -\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		r := NewReader(bytes.NewReader(in))
		for {
			f, _, err := r.Next()
			if err != nil {
				return
			}
			if f != nil && len(f.Kind) == 0 {
				t.Fatal("frame without a kind")
			}
		}
	})
}
