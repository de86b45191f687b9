// Package keywrap defines how the symmetric layer options are wrapped for
// recipients and unwrapped with private keys. Each scheme lives in its own
// subpackage (jwe, pkcs7, pgp, keyprovider, aa).
package keywrap

import "context"

// Wrapper wraps the private layer options (privopts JSON) for one scheme and
// a fixed set of recipients of that scheme. One Wrap call produces one
// annotation entry (raw bytes; the caller base64-encodes it and appends it to
// the comma-separated list of org.opencontainers.image.enc.keys.<Scheme()>).
type Wrapper interface {
	// Scheme is the annotation suffix: "jwe", "pkcs7", "pgp" or "provider.NAME".
	Scheme() string
	Wrap(ctx context.Context, privopts []byte) ([]byte, error)
}

// Unwrapper recovers privopts from one annotation entry of its scheme.
// It returns an error wrapping spec.ErrNoKey when it holds no key for the
// entry, so callers can try the next unwrapper.
type Unwrapper interface {
	Scheme() string
	Unwrap(ctx context.Context, entry []byte) ([]byte, error)
}
