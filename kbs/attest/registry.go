package attest

import (
	"context"
	"strings"

	"github.com/coffer-dev/coffer/kbs/protocol"
)

// TEE is one row of the verifier table: a TEE type, how to make its
// broker verifier, and how coffer kbs verify checks a file of its evidence
// offline. Adding a TEE is its verifier's file plus one Register line in
// builtins.
type TEE struct {
	Name protocol.Tee
	// New makes the broker's verifier from the configuration.
	New func(Config) Verifier
	// Development: served only with Config.AllowSample (no hardware root
	// of trust).
	Development bool
	// Offline verifies raw evidence of this TEE read from a file (ev
	// carries the tee, raw and the expected report data); nil: the TEE has
	// no offline verification.
	Offline func(ctx context.Context, raw []byte, o offlineOptions, ev Evidence) (Claims, error)
	// TakesCert: Offline uses a certificate given with WithCert.
	TakesCert bool
}

var table []TEE

// Register adds t to the verifier table.
func Register(t TEE) {
	for _, e := range table {
		if e.Name == t.Name {
			panic("attest: TEE " + string(t.Name) + " registered twice")
		}
	}
	table = append(table, t)
}

func builtins() {
	Register(TEE{Name: protocol.TeeSNP, New: NewSNP, Offline: verifySNPFile, TakesCert: true})
	Register(TEE{Name: protocol.TeeTDX, New: NewTDX, Offline: verifyTDXFile})
	Register(TEE{Name: protocol.TeeTPM, New: NewTPM, Offline: verifyTPMFile})
	Register(TEE{Name: protocol.TeeSample, New: func(Config) Verifier { return Sample{} }, Development: true})
}

func init() { builtins() }

func lookupTEE(tee protocol.Tee) (TEE, bool) {
	for _, t := range table {
		if t.Name == tee {
			return t, true
		}
	}
	return TEE{}, false
}

// offlineNames lists the TEEs with offline verification ("snp, tdx and tpm").
func offlineNames() string {
	var n []string
	for _, t := range table {
		if t.Offline != nil {
			n = append(n, string(t.Name))
		}
	}
	if len(n) > 1 {
		return strings.Join(n[:len(n)-1], ", ") + " and " + n[len(n)-1]
	}
	return strings.Join(n, "")
}
