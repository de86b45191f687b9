//go:build tooldeps

// Package tooldeps pins the hardware-attestation modules while their users
// are written (removed once they import them directly).
package tooldeps

import (
	_ "github.com/google/go-sev-guest/abi"
	_ "github.com/google/go-sev-guest/client"
	_ "github.com/google/go-sev-guest/verify"
	_ "github.com/google/go-tdx-guest/abi"
	_ "github.com/google/go-tdx-guest/client"
	_ "github.com/google/go-tdx-guest/verify"
	_ "github.com/google/go-tpm-tools/client"
	_ "github.com/google/go-tpm-tools/server"
	_ "github.com/google/go-tpm/legacy/tpm2"
	_ "github.com/google/go-tpm/tpm2"
)
