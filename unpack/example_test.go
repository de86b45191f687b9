package unpack_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/coffer-dev/coffer/unpack"
)

func tarOf(files map[string]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range []string{"etc/motd", "etc/.wh.motd", "etc/issue"} {
		body, ok := files[name]
		if !ok {
			continue
		}
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		io.WriteString(tw, body)
	}
	tw.Close()
	return buf.Bytes()
}

func Example() {
	base, _ := os.MkdirTemp("", "unpack-example-")
	defer os.RemoveAll(base)
	lower := tarOf(map[string]string{"etc/motd": "hello\n", "etc/issue": "coffer\n"})
	upper := tarOf(map[string]string{"etc/.wh.motd": ""}) // deletes etc/motd
	open := func(b []byte) func() (io.ReadCloser, error) {
		return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	rootfs := filepath.Join(base, "rootfs")
	err := unpack.Apply(context.Background(), rootfs, []unpack.Layer{
		{MediaType: "application/vnd.oci.image.layer.v1.tar", Open: open(lower)},
		{MediaType: "application/vnd.oci.image.layer.v1.tar", Open: open(upper)},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	entries, _ := os.ReadDir(filepath.Join(rootfs, "etc"))
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(rootfs, "etc", e.Name()))
		fmt.Printf("%s: %s", e.Name(), b)
	}
	// Output:
	// issue: coffer
}
