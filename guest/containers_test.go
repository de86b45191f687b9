package guest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coffer-dev/coffer/agent/ttrpc/gen/kata"
	"github.com/coffer-dev/coffer/internal/testutil"
)

// TestMain lets the test binary be the container's first process too, as
// coffer is in the guest (startInit re-executes os.Executable).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == ExecArg {
		os.Exit(Exec(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestContainers runs the container service on the host (as root: new
// namespaces and chroot) on a busybox rootfs: a container's output and
// status, an exec'd process in its PID namespace and root, signals,
// removal, and the refusals of bad requests.
func TestContainers(t *testing.T) {
	testutil.RequireExternal(t, os.Geteuid() == 0, "the container service needs root (namespaces, chroot)")
	bb, err := os.ReadFile(testutil.BusyboxPath)
	testutil.RequireExternal(t, err == nil, "busybox-static is not installed ("+testutil.BusyboxPath+"): apt-get install busybox-static")
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755)
	os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), bb, 0o755)
	os.WriteFile(filepath.Join(rootfs, "secret"), []byte("42\n"), 0o644)

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := newContainers(ctx)
	defer s.stopAll(5 * time.Second)
	create := func(id string, args ...string) error {
		_, err := s.CreateContainer(ctx, &kata.CreateContainerRequest{ContainerId: id, OCI: &kata.Spec{
			Root: &kata.Root{Path: rootfs}, Process: &kata.Process{Args: args, Env: []string{"PATH=/bin"}}}})
		return err
	}
	if err := create("c1", "/bin/busybox", "sh", "-c", "cat /secret; echo err >&2; sleep 2; exit 4"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartContainer(ctx, &kata.StartContainerRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ExecProcess(ctx, &kata.ExecProcessRequest{ContainerId: "c1", ExecId: "e1",
		Process: &kata.Process{Args: []string{"busybox", "sh", "-c", "cat /secret; echo $$; exit 3"}}}); err != nil {
		t.Fatal(err)
	}
	read := func(eid string, stderr bool) string {
		var b strings.Builder
		for {
			req := &kata.ReadStreamRequest{ContainerId: "c1", ExecId: eid, Len: 3}
			var r *kata.ReadStreamResponse
			var err error
			if stderr {
				r, err = s.ReadStderr(ctx, req)
			} else {
				r, err = s.ReadStdout(ctx, req)
			}
			if err != nil {
				t.Fatalf("read %s: %v", eid, err)
			}
			if len(r.Data) == 0 {
				return b.String()
			}
			b.Write(r.Data)
		}
	}
	// The exec'd shell is in the container's PID namespace: not PID 1
	// (the init is), and a small number.
	if out := read("e1", false); !strings.HasPrefix(out, "42\n") || strings.TrimSpace(strings.TrimPrefix(out, "42\n")) == "1" || len(out) > 8 {
		t.Errorf("exec'd process printed %q, want the secret and a PID of the container's namespace", out)
	}
	if st, err := s.WaitProcess(ctx, &kata.WaitProcessRequest{ContainerId: "c1", ExecId: "e1"}); err != nil || st.Status != 3 {
		t.Errorf("exec status %v %v, want 3", st, err)
	}
	if out, errs := read("", false), read("", true); out != "42\n" || errs != "err\n" {
		t.Errorf("container printed %q and %q", out, errs)
	}
	if st, err := s.WaitProcess(ctx, &kata.WaitProcessRequest{ContainerId: "c1"}); err != nil || st.Status != 4 {
		t.Errorf("container status %v %v, want 4", st, err)
	}

	// A signal: SIGKILL to a sleeping container is 128+9.
	if err := create("c2", "/bin/busybox", "sleep", "60"); err != nil {
		t.Fatal(err)
	}
	s.StartContainer(ctx, &kata.StartContainerRequest{ContainerId: "c2"})
	if _, err := s.SignalProcess(ctx, &kata.SignalProcessRequest{ContainerId: "c2", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if st, err := s.WaitProcess(ctx, &kata.WaitProcessRequest{ContainerId: "c2"}); err != nil || st.Status != 137 {
		t.Errorf("killed container status %v %v, want 137", st, err)
	}
	if _, err := s.RemoveContainer(ctx, &kata.RemoveContainerRequest{ContainerId: "c2", Timeout: 5}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		err  error
		code codes.Code
	}{
		{"bad id", create("../x", "/bin/busybox"), codes.InvalidArgument},
		{"exists", create("c1", "/bin/busybox"), codes.AlreadyExists},
		{"removed", func() error { _, err := s.WaitProcess(ctx, &kata.WaitProcessRequest{ContainerId: "c2"}); return err }(), codes.NotFound},
		{"exec in an ended container", func() error {
			_, err := s.ExecProcess(ctx, &kata.ExecProcessRequest{ContainerId: "c1", ExecId: "e2", Process: &kata.Process{Args: []string{"true"}}})
			return err
		}(), codes.FailedPrecondition},
		{"no rootfs", func() error {
			_, err := s.CreateContainer(ctx, &kata.CreateContainerRequest{ContainerId: "c3", OCI: &kata.Spec{Process: &kata.Process{Args: []string{"x"}}}})
			return err
		}(), codes.NotFound},
		{"signal 0", func() error {
			_, err := s.SignalProcess(ctx, &kata.SignalProcessRequest{ContainerId: "c1", Signal: 0})
			return err
		}(), codes.InvalidArgument},
		{"terminal", func() error {
			_, err := s.CreateContainer(ctx, &kata.CreateContainerRequest{ContainerId: "c4", OCI: &kata.Spec{Root: &kata.Root{Path: rootfs}, Process: &kata.Process{Terminal: true, Args: []string{"x"}}}})
			return err
		}(), codes.Unimplemented},
	} {
		if status.Code(c.err) != c.code {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.code)
		}
	}
}

// FuzzCheckProcess: whatever a host sends as a process spec, what is
// accepted stays within the bounds.
func FuzzCheckProcess(f *testing.F) {
	f.Add("/bin/sh\n-c\necho hi", "PATH=/bin", "/")
	f.Add("", "", "")
	f.Add("x", "NOEQUALS", "relative")
	f.Add(strings.Repeat("a\n", 2000), "A=B\nC=\x00", "/../..")
	f.Fuzz(func(t *testing.T, args, env, cwd string) {
		p := &kata.Process{Args: strings.Split(args, "\n"), Env: strings.Split(env, "\n"), Cwd: cwd}
		if env == "" {
			p.Env = nil
		}
		ps, err := checkProcess(p)
		if err != nil {
			return
		}
		n := len(ps.cwd)
		for _, s := range append(append([]string{}, ps.argv...), ps.env...) {
			n += len(s)
			if strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("accepted a NUL byte: %q", s)
			}
		}
		if len(ps.argv) > maxArgs || len(ps.env) > maxArgs || n > maxArgBytes+len("/") || !strings.HasPrefix(ps.cwd, "/") {
			t.Fatalf("accepted out of bounds: %d args, %d env, %d bytes, cwd %q", len(ps.argv), len(ps.env), n, ps.cwd)
		}
	})
}
