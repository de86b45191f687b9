package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
)

// FuzzApplyLayer feeds arbitrary bytes as a layer and asserts that nothing
// is ever created, changed or linked outside the rootfs, that a failed
// Apply leaves nothing behind, and that no input keeps unpack busy for
// long: with the size limits below (which bound the zeros of sparse holes
// to read), every input should take well under fuzzbound.Default.
func FuzzApplyLayer(f *testing.F) {
	seeds := [][]ent{
		{{name: "a/b", body: "x"}, {name: "a/.wh.b"}, {name: "a/.wh..wh..opq"}},
		{{name: "../escape", body: "x"}},
		{{name: "/abs/file", body: "x"}},
		{{name: "l", typ: tar.TypeSymlink, link: "/"}, {name: "l/x", body: "x"}},
		{{name: "l", typ: tar.TypeSymlink, link: "../outside"}, {name: "l/secret", body: "pwned"}},
		{{name: "l", typ: tar.TypeSymlink, link: "../.."}, {name: "h", typ: tar.TypeLink, link: "l/outside/secret"}},
		{{name: "h", typ: tar.TypeLink, link: "../outside/secret"}},
		{{name: "a", typ: tar.TypeSymlink, link: "b"}, {name: "b", typ: tar.TypeSymlink, link: "a"}, {name: "a/x", body: "x"}},
		{{name: "d/", typ: tar.TypeDir, mode: 0o555}, {name: "d/f", body: "x", mode: 0o4755}},
		{{name: "dev/null", typ: tar.TypeChar, major: 1, minor: 3}, {name: "p", typ: tar.TypeFifo}},
		{{name: "l", typ: tar.TypeSymlink, link: "../outside"}, {name: ".wh.l"}, {name: "l/.wh.secret"}},
		{{name: "x", body: "1"}, {name: "x/", typ: tar.TypeDir}, {name: "x", typ: tar.TypeSymlink, link: "/../outside"}},
	}
	for _, s := range seeds {
		f.Add(mkTar(f, s...))
	}
	f.Add([]byte{})
	f.Add(gzipped(f, mkTar(f, seeds[4]...)))
	for _, form := range sparseForms {
		f.Add(form.mk("bomb", eib, eib-4, "boom")) // refused from its header
		f.Add(form.mk("ok", 64<<20, 32<<20, "x"))  // within the limits
	}
	opts := []Option{withPrivileged(false), WithMaxFileSize(1 << 30), WithMaxRootfsSize(2 << 30)}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		ctx := context.Background()
		s := newSandbox(t)
		if err := os.Mkdir(s.rootfs, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = ApplyLayer(ctx, s.rootfs, bytes.NewReader(data), opts...)
		s.checkOutside(t)
		if err := removeAll(s.rootfs); err != nil {
			t.Fatal(err)
		}
		err := Apply(ctx, s.rootfs, []Layer{layerOf("", data, diffID(data))}, opts...)
		if err != nil {
			s.noRootfs(t)
		} else {
			s.checkOutside(t)
		}
	})
}
