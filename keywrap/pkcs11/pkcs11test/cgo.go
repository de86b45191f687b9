//go:build cgo

package pkcs11test

const haveCgo = true
