package attest

import (
	"context"
	"fmt"

	"github.com/coffer-dev/coffer/spec"
)

// NewTPM returns the tpm verifier. (Placeholder: being written.)
func NewTPM(cfg Config) Verifier { return unimplementedTPM{} }

type unimplementedTPM struct{}

func (unimplementedTPM) Verify(context.Context, Evidence) (Claims, error) {
	return nil, fmt.Errorf("tpm evidence: verifier not written yet: %w", spec.ErrUnsupported)
}
