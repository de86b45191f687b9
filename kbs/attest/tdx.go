package attest

import (
	"context"
	"fmt"

	"github.com/coffer-dev/coffer/spec"
)

// NewTDX returns the tdx verifier. (Placeholder: being written.)
func NewTDX(cfg Config) Verifier { return unimplementedTDX{} }

type unimplementedTDX struct{}

func (unimplementedTDX) Verify(context.Context, Evidence) (Claims, error) {
	return nil, fmt.Errorf("tdx evidence: verifier not written yet: %w", spec.ErrUnsupported)
}
