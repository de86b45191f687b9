package resource

import (
	"context"
	"sync"
)

// Getter fetches broker resources by path: the one shape every consumer
// of a resource takes (keywrap/aa's unwrapper and keyprovider handler,
// imagepolicy's policy, keys and pins, the agent). agent/client's Client
// implements it (after attestation), and so does a kbs/store Store (on the
// broker's side). A missing resource wraps spec.ErrNotFound, a refused one
// spec.ErrPolicyDenied.
type Getter interface {
	Get(ctx context.Context, p Path) ([]byte, error)
}

// GetterFunc is a func that is a Getter.
type GetterFunc func(ctx context.Context, p Path) ([]byte, error)

// Get calls f.
func (f GetterFunc) Get(ctx context.Context, p Path) ([]byte, error) { return f(ctx, p) }

// KIDFunc is a Getter from a func of a key id's string form, for callers
// that key resources by kid. Get calls it with p.KID(); keywrap/aa calls
// it with the kid exactly as the annotation wrote it.
type KIDFunc func(ctx context.Context, kid string) ([]byte, error)

// Get calls f with p's kid.
func (f KIDFunc) Get(ctx context.Context, p Path) ([]byte, error) { return f(ctx, p.KID()) }

// Once returns a Getter that asks g once per path (concurrent callers
// included) and then answers from memory, errors too. Only for
// short-lived commands (one decrypt or pull): a long-running agent must
// ask the broker every time, so that a policy change takes effect.
func Once(g Getter) Getter {
	type result struct {
		once sync.Once
		data []byte
		err  error
	}
	var mu sync.Mutex
	seen := map[Path]*result{}
	return GetterFunc(func(ctx context.Context, p Path) ([]byte, error) {
		mu.Lock()
		r, ok := seen[p]
		if !ok {
			r = &result{}
			seen[p] = r
		}
		mu.Unlock()
		r.once.Do(func() { r.data, r.err = g.Get(ctx, p) })
		return r.data, r.err
	})
}
