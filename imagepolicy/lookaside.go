package imagepolicy

import (
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

func readLookaside(ctx context.Context, base string, ref transport.Reference, digest v1.Hash) ([]Signature, error) {
	return nil, fmt.Errorf("lookaside signatures are not read yet: %w", spec.ErrUnsupported)
}
