//go:build cgo

package tpm_test

import (
	"context"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"log"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/coffer-dev/coffer/tpm"
)

// Quote the PCRs for a broker's report data. A real TPM is opened with
// tpm.Open(ctx, "/dev/tpmrm0") or tpm.Open(ctx, "tcp://127.0.0.1:2321")
// (swtpm); here it is go-tpm-tools' simulator.
func Example() {
	ctx := context.Background()
	sim, err := simulator.GetWithFixedSeedInsecure(1)
	if err != nil {
		log.Fatal(err)
	}
	t, err := tpm.New(sim)
	if err != nil {
		log.Fatal(err)
	}
	defer t.Close()

	reportData := sha512.Sum384([]byte("nonce and tee key"))
	ev, err := t.Quote(ctx, reportData[:])
	if err != nil {
		log.Fatal(err)
	}
	ak, _ := base64.StdEncoding.DecodeString(ev.AKPublic)
	fmt.Println("AK:", len(ak), "bytes of PKIX DER")
	fmt.Println("PCRs:", len(ev.Quote.PCRs))
	fmt.Println("PCR8:", ev.Quote.PCRs[tpm.InitDataPCR])
	// Output:
	// AK: 294 bytes of PKIX DER
	// PCRs: 24
	// PCR8: 0000000000000000000000000000000000000000000000000000000000000000
}
