// Package pgtest starts a throwaway PostgreSQL server (Debian's postgresql
// package: initdb + pg_ctl from /usr/lib/postgresql/*/bin) on a loopback
// port in a temporary directory, for tests. As root it runs the server as
// the "postgres" user (setpriv), since PostgreSQL refuses to run as root.
//
// One server is meant to be shared by a test binary (start it in
// TestMain); each test takes a database of its own (NewDatabase).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dev/coffer/internal/testutil"
)

// Server is a running test PostgreSQL.
type Server struct {
	Port       int
	dir        string
	bin        string
	asPG       bool // run the tools as the postgres user
	uid        int
	gid        int
	dbs        atomic.Int64
	SkipReason string
}

// traversable reports whether every directory on the way to dir lets
// other users through.
func traversable(dir string) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

// binGlob is where Debian installs the server binaries.
const binGlob = "/usr/lib/postgresql/*/bin"

// findBin returns the newest directory matching glob that holds initdb,
// or the directory of initdb in PATH.
func findBin(glob string) (string, error) {
	dirs, _ := filepath.Glob(glob)
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
}

// Start initialises and starts a server. Stop it with Close.
func Start(ctx context.Context) (*Server, error) {
	bin, err := findBin(binGlob)
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, uid: -1, gid: -1}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, errors.New("running as root and there is no postgres user to run PostgreSQL as")
		}
		s.uid, _ = strconv.Atoi(u.Uid)
		s.gid, _ = strconv.Atoi(u.Gid)
		s.asPG = true
	}
	base := os.TempDir()
	if s.asPG && !traversable(base) {
		base = "/tmp" // the postgres user must reach its data directory
	}
	if s.dir, err = os.MkdirTemp(base, "coffer-pgtest-"); err != nil {
		return nil, err
	}
	if s.asPG {
		if err := os.Chown(s.dir, s.uid, s.gid); err != nil {
			return nil, err
		}
	}
	if err := s.run(ctx, "initdb", "-D", s.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"); err != nil {
		s.Close()
		return nil, err
	}
	// A fixed port picked now; a collision fails Start, which callers report.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.Close()
		return nil, err
	}
	s.Port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nfsync = off\nfull_page_writes = off\n"+
		"max_connections = 200\nshared_buffers = 64MB\nlog_min_messages = warning\n", s.Port, s.dir)
	if err := os.WriteFile(filepath.Join(s.data(), "postgresql.auto.conf"), []byte(conf), 0o600); err != nil {
		s.Close()
		return nil, err
	}
	if s.asPG {
		_ = os.Chown(filepath.Join(s.data(), "postgresql.auto.conf"), s.uid, s.gid)
	}
	if err := s.Start(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) run(ctx context.Context, tool string, args ...string) error {
	name := filepath.Join(s.bin, tool)
	if s.asPG {
		args = append([]string{"--reuid", strconv.Itoa(s.uid), "--regid", strconv.Itoa(s.gid), "--clear-groups", name}, args...)
		name = "setpriv"
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = s.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", tool, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Start starts the (stopped) server and waits until it accepts connections.
func (s *Server) Start(ctx context.Context) error {
	return s.run(ctx, "pg_ctl", "-D", s.data(), "-l", filepath.Join(s.dir, "log"), "-w", "-t", "30", "start")
}

// Stop stops the server (fast shutdown: connections are closed).
func (s *Server) Stop(ctx context.Context) error {
	return s.run(ctx, "pg_ctl", "-D", s.data(), "-m", "fast", "-w", "stop")
}

// Close stops the server and removes its directory.
func (s *Server) Close() {
	if s == nil || s.dir == "" {
		return
	}
	if _, err := os.Stat(filepath.Join(s.data(), "postmaster.pid")); err == nil {
		_ = s.run(context.Background(), "pg_ctl", "-D", s.data(), "-m", "immediate", "-w", "stop")
	}
	_ = os.RemoveAll(s.dir)
}

// URL returns the URL of database db as the superuser.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// NewDatabase creates an empty database and returns its URL.
func (s *Server) NewDatabase(ctx context.Context) (string, error) {
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.dbs.Add(1))
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	return s.URL(name), nil
}

// Shared is one server for a whole test binary, started on first use.
type Shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Main runs a test binary's tests and stops the shared server (if a test
// started it) afterwards: `func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg)) }`.
func Main(m *testing.M, s *Shared) int {
	code := m.Run()
	if s.srv != nil {
		s.srv.Close()
	}
	return code
}

// Server returns the running shared server, starting it on first use; it
// skips the test (fails it under COFFER_REQUIRE_EXTERNAL=1) when PostgreSQL
// is not available.
func (s *Shared) Server(t testing.TB) *Server {
	t.Helper()
	s.once.Do(func() { s.srv, s.err = Start(context.Background()) })
	why := ""
	if s.err != nil {
		why = "PostgreSQL not available: " + s.err.Error()
	}
	testutil.RequireExternal(t, s.err == nil, why)
	return s.srv
}

// Need returns the URL of a fresh database on the shared server.
func (s *Shared) Need(t testing.TB) string {
	t.Helper()
	u, err := s.Server(t).NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// CPUTime is the CPU time the server's processes used so far: the
// postmaster with its reaped children, plus the live backends (Linux /proc).
// Benchmarks add it to their own to report the whole system's cost.
func (s *Server) CPUTime() time.Duration {
	raw, err := os.ReadFile(filepath.Join(s.data(), "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0]))
	if err != nil {
		return 0
	}
	const hz = 100 // USER_HZ on Linux
	ticks := func(p string) (ppid int, self, children int64, ok bool) {
		b, err := os.ReadFile(filepath.Join("/proc", p, "stat"))
		if err != nil {
			return 0, 0, 0, false
		}
		// Fields after the parenthesised command: state ppid … utime(14) stime(15) cutime(16) cstime(17).
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			return 0, 0, 0, false
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 15 {
			return 0, 0, 0, false
		}
		n := func(k int) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
		ppid, _ = strconv.Atoi(f[1])
		return ppid, n(11) + n(12), n(13) + n(14), true
	}
	_, self, children, ok := ticks(strconv.Itoa(pid))
	if !ok {
		return 0
	}
	total := self + children
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		if ppid, t, _, ok := ticks(e.Name()); ok && ppid == pid {
			total += t
		}
	}
	return time.Duration(total) * time.Second / hz
}
