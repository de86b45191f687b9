package spec

import "errors"

// Sentinel errors shared by every coffer package. Wrap them with %w and
// lowercase context; the CLI maps them to exit codes.
var (
	// ErrNoKey: no supplied key or recipient can unwrap this layer.
	ErrNoKey = errors.New("no matching decryption key")
	// ErrIntegrity: a MAC, digest, size or signature check failed.
	ErrIntegrity = errors.New("integrity check failed")
	// ErrPolicyDenied: a broker policy refused the request.
	ErrPolicyDenied = errors.New("denied by policy")
	// ErrNotFound: the named image, blob, key or resource does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUnsupported: an unknown scheme, media type or algorithm.
	ErrUnsupported = errors.New("unsupported")
	// ErrExists: a create-only write found something already there.
	ErrExists = errors.New("already exists")
	// ErrUnauthorized: credentials were refused: a registry's (HTTP 401/403) or a PKCS#11 token's PIN.
	ErrUnauthorized = errors.New("unauthorized")
)
