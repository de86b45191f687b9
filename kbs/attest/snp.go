package attest

import (
	"context"
	"fmt"

	"github.com/coffer-dev/coffer/spec"
)

// NewSNP returns the snp verifier. (Placeholder: being written.)
func NewSNP(cfg Config) Verifier { return unimplementedSNP{} }

type unimplementedSNP struct{}

func (unimplementedSNP) Verify(context.Context, Evidence) (Claims, error) {
	return nil, fmt.Errorf("snp evidence: verifier not written yet: %w", spec.ErrUnsupported)
}
