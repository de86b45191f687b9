package demo

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/kbs/server"
)

// GuestKernelDir is where coffer vm's kernel package is looked for: env
// (COFFER_VM_KERNEL_DIR, passed in by the CLI) or the user cache dir
// where .ci/run extracts it.
func GuestKernelDir(env string) string {
	if env != "" {
		return env
	}
	cache, _ := os.UserCacheDir()
	return filepath.Join(cache, "coffer-tools", "linux-image")
}

// GuestMissing says what the vm chapter lacks on this machine ("" when
// nothing): QEMU, swtpm, the kernel package, a static coffer as the
// running binary (it becomes the guest's init), busybox-static.
func GuestMissing(kernelDir string) string {
	for _, t := range []string{"qemu-system-x86_64", "swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(t); err != nil {
			return t + " is not installed (apt-get install qemu-system-x86 swtpm swtpm-tools)"
		}
	}
	if imgs, _ := filepath.Glob(filepath.Join(kernelDir, "boot", "vmlinuz-*")); len(imgs) != 1 {
		return "no kernel package at " + kernelDir + " (apt-get download linux-image-6.1.0-N-amd64; dpkg -x it there, or set COFFER_VM_KERNEL_DIR)"
	}
	exe, err := os.Executable()
	if err != nil || strings.HasSuffix(exe, ".test") {
		return "the running program is not the coffer binary (the guest's init is coffer itself)"
	}
	f, err := elf.Open(exe)
	if err != nil {
		return "cannot read the coffer binary: " + err.Error()
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "this coffer is dynamically linked: the guest needs a static build (make build)"
		}
	}
	if _, err := os.Stat(BusyboxPath); err != nil {
		return "busybox-static is not installed (the guest's image runs " + BusyboxPath + ")"
	}
	return ""
}

// BusyboxPath is Debian busybox-static's binary.
const BusyboxPath = "/bin/busybox"

// StartRegistry serves go-containerregistry's in-memory registry on a
// loopback port until ctx ends and returns its host:port.
func StartRegistry(ctx context.Context) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	context.AfterFunc(ctx, func() { srv.Close() })
	return l.Addr().String(), nil
}

// ErrNoGuest marks a skipped vm chapter.
var ErrNoGuest = errors.New("vm chapter skipped")

// WriteGuestImage writes a busybox image holding /secret to the layout dir.
func WriteGuestImage(dir, tag string) error {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoGuest, err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, files := range []map[string]string{{"bin/busybox": string(bb)}, {"secret": Secret + "\n"}} {
		l, err := gzipLayer(files)
		if err != nil {
			return err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return err
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Cmd = []string{"/bin/busybox", "cat", "/secret"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag}))
}

// StartTPMBroker starts a broker like StartBroker that trusts TPMs whose
// EK chains to ekCA (kbs serve --tpm-ek-ca) and refuses the sample TEE.
func StartTPMBroker(ctx context.Context, dir, adminPub, ekCA string) (*Broker, error) {
	return startBroker(ctx, dir, adminPub, func(c *server.Config) {
		c.AllowSampleTee = false
		c.TPMEKCA = []string{ekCA}
	})
}
