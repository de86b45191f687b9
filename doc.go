// Package coffer is the root of the coffer module: a toolchain for
// confidential container images. See docs/ARCHITECTURE.md.
package coffer
