package adminclient

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
)

// PendingKEK is a fresh key-encryption key generated for a key id but not
// yet stored in the broker: wrap layers with it, write the image, then
// Commit. A run that fails (or is killed) before Commit leaves nothing in
// the broker, so the same command can simply be run again.
type PendingKEK struct {
	c       *Client
	path    protocol.ResourcePath
	replace bool
	// Key is the 32-byte KEK; KID its attestation-agent key id (kbs:///repo/type/tag).
	Key []byte
	KID string
}

// PrepareKEK generates a KEK for keyID ("repo/type/tag" or
// "kbs:///repo/type/tag") without storing it. Unless replace, it first
// asks the broker whether a key already exists there and fails with
// spec.ErrExists if so, before any image is written under a key id in use.
// A broker that cannot list resources (trustee) skips that check; Commit
// is create-only either way.
func (c *Client) PrepareKEK(ctx context.Context, keyID string, replace bool) (*PendingKEK, error) {
	p, err := resource.ParseKeyID(keyID)
	if err != nil {
		return nil, err
	}
	return c.PrepareKEKAt(ctx, p, replace)
}

// PrepareKEKAt is PrepareKEK for a key id already parsed (resource.ParseKeyID).
func (c *Client) PrepareKEKAt(ctx context.Context, p resource.Path, replace bool) (*PendingKEK, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if !replace {
		l, err := c.ListResources(ctx)
		switch {
		case errors.Is(err, spec.ErrUnsupported), errors.Is(err, spec.ErrNotFound):
		case err != nil:
			return nil, err
		default:
			for _, r := range l {
				if r.Path == p.String() {
					return nil, fmt.Errorf("kbs admin: a key exists at kbs:///%s: %w", p, spec.ErrExists)
				}
			}
		}
	}
	kek := make([]byte, KEKSize)
	if _, err := rand.Read(kek); err != nil {
		return nil, err
	}
	return &PendingKEK{c: c, path: p, replace: replace, Key: kek, KID: "kbs:///" + p.String()}, nil
}

// Commit stores the key in the broker (create-only unless replace) and
// clears Key. A key created at the id since PrepareKEK fails with
// spec.ErrExists: what was encrypted under this one cannot be decrypted.
func (p *PendingKEK) Commit(ctx context.Context) error {
	defer p.Discard()
	store := p.c.CreateResource
	if p.replace {
		store = p.c.SetResource
	}
	return store(ctx, p.path.String(), p.Key)
}

// Discard clears the key without storing it.
func (p *PendingKEK) Discard() { clear(p.Key) }
