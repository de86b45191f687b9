package agent

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"testing"
)

func TestWarnIfExposed(t *testing.T) {
	for _, tc := range []struct {
		addr string
		warn bool
	}{{"127.0.0.1:8006", false}, {"[::1]:8006", false}, {"0.0.0.0:8006", true}, {"10.0.0.5:8006", true}} {
		var buf bytes.Buffer
		a, err := net.ResolveTCPAddr("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		WarnIfExposed(slog.New(slog.NewTextHandler(&buf, nil)), a, "--listen")
		if got := strings.Contains(buf.String(), "non-loopback"); got != tc.warn {
			t.Errorf("%s: warned %v, want %v (%q)", tc.addr, got, tc.warn, buf.String())
		}
	}
}
