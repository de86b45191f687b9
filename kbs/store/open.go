package store

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// Driver opens one kind of store. Each kind registers itself under its
// URL scheme (Register), as database/sql drivers do; the broker opens
// whatever its configuration names through Open and imports no driver.
// Adding a store is one file that registers it plus one import line in
// the program (for coffer: internal/cli/stores.go).
type Driver struct {
	// Open opens the store named by u (its scheme is the driver's).
	Open func(ctx context.Context, u string, p Params) (Store, error)
	// Check, if set, refuses Params the store cannot open with, before
	// anything is read or dialled (Open also calls it).
	Check func(p Params) error
	// Shared: the store keeps what every replica must see (it implements
	// SessionStore and SettingsStore), so the broker keeps none of it in
	// its own memory or state directory.
	Shared bool
}

// Params are what a store may need beyond its URL; each driver uses the
// fields it knows and ignores the others.
type Params struct {
	Repository      string       // fs: the directory when the URL names none ("fs")
	KEKFile         string       // sealing stores (postgres): key-encryption key file
	PreviousKEKFile string       // sealing stores: the earlier KEK, during a rotation
	MaxConns        int          // pooled stores: connection bound; 0 = the driver's default
	Logger          *slog.Logger // nil = slog.Default()
}

var (
	driversMu sync.RWMutex
	drivers   = map[string]Driver{}
)

// Register makes a driver available under scheme. It panics when scheme
// is taken or d has no Open (a programming error, as in database/sql).
func Register(scheme string, d Driver) {
	driversMu.Lock()
	defer driversMu.Unlock()
	if d.Open == nil {
		panic("store: Register " + scheme + " without Open")
	}
	if _, dup := drivers[scheme]; dup {
		panic("store: Register called twice for " + scheme)
	}
	drivers[scheme] = d
}

// Schemes lists the registered schemes, sorted.
func Schemes() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	out := make([]string, 0, len(drivers))
	for s := range drivers {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Scheme is u's store kind: what precedes "://" or ":", else u itself
// ("fs", "memory"); "" is "fs", the default.
func Scheme(u string) string {
	if u == "" {
		return "fs"
	}
	if i := strings.Index(u, ":"); i > 0 {
		return u[:i]
	}
	return u
}

// Lookup returns the driver u's scheme names.
func Lookup(u string) (Driver, bool) {
	driversMu.RLock()
	defer driversMu.RUnlock()
	d, ok := drivers[Scheme(u)]
	return d, ok
}

// Open opens the store u names ("fs", "fs:///DIR", "memory",
// "postgres://…" when that driver is linked in). A store that holds
// resources open (fs, postgres) implements io.Closer.
func Open(ctx context.Context, u string, p Params) (Store, error) {
	d, ok := Lookup(u)
	if !ok {
		return nil, fmt.Errorf("kbs config: store %q: want one of %s", Redact(u), strings.Join(Schemes(), ", "))
	}
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	if d.Check != nil {
		if err := d.Check(p); err != nil {
			return nil, err
		}
	}
	return d.Open(ctx, u, p)
}

// Redact returns u without a password, for logs and errors.
func Redact(u string) string {
	if !strings.Contains(u, "://") {
		return u
	}
	pu, err := url.Parse(u)
	if err != nil {
		return Scheme(u) + "://(unparsable URL)"
	}
	return pu.Redacted()
}

func init() {
	Register("fs", Driver{Open: func(_ context.Context, u string, p Params) (Store, error) {
		dir := p.Repository
		if u != "fs" && u != "" {
			pu, err := url.Parse(u)
			if err != nil || pu.Host != "" || pu.Path == "" || pu.RawQuery != "" {
				return nil, fmt.Errorf("kbs config: store %q: want fs or fs:///ABSOLUTE/DIR", u)
			}
			dir = pu.Path
		}
		if dir == "" {
			dir = DefaultRepositoryDir
		}
		return NewFS(dir)
	}})
	Register("memory", Driver{Open: func(context.Context, string, Params) (Store, error) { return NewMemory(), nil }})
}
