package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/pkg/coffer"
	"github.com/coffer-dev/coffer/tpm"
)

// kbsClientFlags make a broker-backed attestation-agent unwrapper.
type kbsClientFlags struct {
	url, tee, teeKey string
	tpm              string          // the TPM of --tee tpm
	opts             []client.Option // extra client options (e.g. init-data's broker certificate)
}

func (f *kbsClientFlags) AddFlags(fs *pflag.FlagSet) {
	addBrokerURLFlag(fs, &f.url, "key broker URL for attestation-agent layer keys; URL,URL,… for replicas tried in turn when one fails (default $COFFER_KBS_URL)")
	addTEEFlags(fs, &f.tee, &f.teeKey, &f.tpm)
}

// addTPMFlag adds --tpm, the TPM the tpm attester and coffer tpm use.
func addTPMFlag(fs *pflag.FlagSet, addr *string) {
	fs.StringVar(addr, "tpm", tpm.DefaultAddr, "TPM for --tee tpm: a device or tcp://HOST:PORT (swtpm's server port)")
}

// client returns nil when no broker is configured.
func (f *kbsClientFlags) client(ctx context.Context) (*client.Client, error) {
	if f.url = orEnv(f.url, envKBSURL); f.url == "" {
		if f.tee != "" {
			return nil, fmt.Errorf("--tee needs --kbs: %w", ErrUsage)
		}
		return nil, nil
	}
	att, err := f.attester()
	if err != nil {
		return nil, err
	}
	// --kbs A,B,…: replicas of one broker; a failed step moves to the next.
	copts := append([]client.Option(nil), f.opts...)
	if hc := trustOf(ctx).httpClient(30 * time.Second); hc != nil {
		copts = append(copts, client.WithHTTPClient(hc)) // --cacert over init-data's certificate, as before
	}
	return coffer.BrokerClient(coffer.WithKBS(f.url), coffer.WithAttester(att), coffer.WithTeeKeyType(f.teeKey), coffer.WithClientOptions(copts...))
}

// attesterFunc returns the attester the flags select.
type attesterFunc func() (evidence.Attester, error)

func (f *kbsClientFlags) attester() (evidence.Attester, error) {
	f.tee = orEnv(f.tee, envTEE) // e.g. for keyprovider, which ocicrypt starts without flags
	return evidence.ForTee(f.tee, evidence.WithTPM(f.tpm))
}
