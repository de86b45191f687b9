package cli

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/spec"
)

// Usage errors of coffer vm exit 2 before anything boots; an image off
// the host's loopback is refused (the guest reaches nothing else).
func TestVMUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want error
		msg  string
	}{
		{[]string{"vm", "run", "--state", "s", "--kbs", "http://127.0.0.1:1", "docker://127.0.0.1:2/a:b"}, ErrUsage, "--kernel-dir and --state are required"},
		{[]string{"vm", "run", "--kernel-dir", "k", "--state", "s", "docker://127.0.0.1:2/a:b"}, ErrUsage, "--kbs is required"},
		{[]string{"vm", "measure", "--kernel-dir", "k"}, ErrUsage, "--kernel-dir and --state are required"},
		{[]string{"vm", "run", "--kernel-dir", "k", "--state", "s", "--kbs", "http://10.1.2.3:8080", "docker://127.0.0.1:2/a:b"}, spec.ErrUnsupported, "loopback"},
		{[]string{"vm", "run", "--kernel-dir", "k", "--state", "s", "--kbs", "http://127.0.0.1:8080", "docker://registry.example/a:b"}, spec.ErrUnsupported, "loopback"},
		{[]string{"vm", "start", "--kernel-dir", "k", "--state", "s"}, ErrUsage, "--kbs is required"},
		{[]string{"vm", "start", "--state", "s", "--kbs", "http://127.0.0.1:1"}, ErrUsage, "--kernel-dir and --state are required"},
		{[]string{"vm", "start", "--kernel-dir", "k", "--state", "s", "--kbs", "http://127.0.0.1:1", "--forward", "registry.example:5000"}, spec.ErrUnsupported, "loopback"},
		{[]string{"vm", "start", "--kernel-dir", "k", "--state", "s", "--kbs", "http://10.1.2.3:1"}, spec.ErrUnsupported, "loopback"},
	} {
		root := NewRoot()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs(c.args)
		err := root.Execute()
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%v: %v, want %v mentioning %q", c.args, err, c.want, c.msg)
		}
	}
}
