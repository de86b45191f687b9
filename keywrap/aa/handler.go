package aa

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/resource"
)

// Handler is the attestation-agent provider's side of the ocicrypt
// keyprovider protocol: it satisfies keyprovider.Handler, for `coffer
// keyprovider` (cmd) and `coffer agent` (gRPC), without this package
// importing keyprovider (and with it gRPC).
type Handler struct{ unwrap keywrap.Unwrapper }

// NewHandler returns the attestation-agent provider's Handler:
//
//   - WrapKey takes the single params["attestation-agent"] value, parses it
//     with ParseParams, reads the 32-byte KEK from keypath and wraps.
//     keypath is read on the serving host: serve WrapKey only to callers
//     trusted to name files there.
//   - UnwrapKey ignores dcParams and unwraps the annotation, fetching the
//     KEK its kid names through keys (nil: every unwrap fails with
//     spec.ErrNoKey).
func NewHandler(keys resource.Getter) *Handler {
	return &Handler{unwrap: NewUnwrapper(keys)}
}

// WrapKey wraps optsData with the KEK its parameters name.
func (h *Handler) WrapKey(ctx context.Context, params map[string][][]byte, optsData []byte) ([]byte, error) {
	vals := params[ProviderName]
	switch len(vals) {
	case 0:
		return nil, fmt.Errorf("attestation-agent: request carries no %q parameters", ProviderName)
	case 1:
	default:
		return nil, fmt.Errorf("attestation-agent: request carries %d parameter sets; one annotation names one kid", len(vals))
	}
	p, err := ParseParams(string(vals[0]))
	if err != nil {
		return nil, err
	}
	if p.KeyPath == "" {
		return nil, errors.New("attestation-agent: keypath=<32-byte KEK file> is required to wrap")
	}
	kek, err := ReadKEK(p.KeyPath)
	if err != nil {
		return nil, err
	}
	defer clear(kek)
	w, err := NewWrapper(kek, p.KeyID)
	if err != nil {
		return nil, err
	}
	return w.Wrap(ctx, optsData)
}

// UnwrapKey unwraps an annotation entry through the broker.
func (h *Handler) UnwrapKey(ctx context.Context, _ map[string][][]byte, annotation []byte) ([]byte, error) {
	return h.unwrap.Unwrap(ctx, annotation)
}

// ReadKEK reads a KEK file: a regular file of exactly 32 bytes.
func ReadKEK(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("attestation-agent: reading KEK: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("attestation-agent: reading KEK: %w", err)
	}
	if !st.Mode().IsRegular() || st.Size() != KEKSize {
		return nil, fmt.Errorf("attestation-agent: KEK file %s must be a regular file of %d bytes", path, KEKSize)
	}
	kek := make([]byte, KEKSize)
	if _, err := io.ReadFull(f, kek); err != nil {
		return nil, fmt.Errorf("attestation-agent: reading KEK %s: %w", path, err)
	}
	return kek, nil
}
