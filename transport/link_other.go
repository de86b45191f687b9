//go:build !linux

package transport

import "os"

// linkFollow hard-links src at dst.
func linkFollow(src, dst string) error { return os.Link(src, dst) }
