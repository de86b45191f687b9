// Package ctxio stops long copies and hash passes when their context ends.
package ctxio

import (
	"context"
	"io"
)

// Reader returns r, which fails with ctx's error once ctx has ended
// (checked before each Read, so a copy stops within one buffer).
func Reader(ctx context.Context, r io.Reader) io.Reader { return reader{ctx, r} }

type reader struct {
	ctx context.Context
	r   io.Reader
}

func (c reader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
