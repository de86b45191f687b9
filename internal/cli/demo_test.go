package cli

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// The demo is the README's first command: it must run the whole flow.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := runDemo(t.Context(), &out, t.TempDir()); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"rootfs/secret: the model weights are 42",
		"kid kbs:///default/image_key/demo",
		"alg=RSA-OAEP",
		"PolicyDeny",
		"no rootfs2 was created",
		"== 6. A VM image the Intel SecL way",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	want := "skipped: swtpm is not installed"
	if _, err := exec.LookPath("swtpm"); err == nil {
		want = "disk.img is byte-identical to disk.qcow2"
	}
	if !strings.Contains(out.String(), want) {
		t.Errorf("demo output lacks %q:\n%s", want, out.String())
	}
}
