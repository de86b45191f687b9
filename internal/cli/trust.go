package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/attest"
)

// envCACert names the environment variable --cacert falls back to.
const envCACert = "COFFER_CACERT"

// clientTrust is the TLS trust of every client coffer runs for one command
// (brokers, the workload service, registries): the system roots plus the
// PEM certificates of --cacert / COFFER_CACERT. The root resolves it once
// and hands it down in the command's context.
type clientTrust struct {
	file  string
	roots *x509.CertPool // nil: the system roots only
}

type trustKey struct{}

// addTrustFlags defines --cacert on the root; every verb inherits it.
func addTrustFlags(root *cobra.Command) {
	root.PersistentFlags().String("cacert", "", "PEM file of CA certificates to trust, besides the system's, for brokers, the workload service and registries (env "+envCACert+")")
}

// withTrust loads --cacert (else COFFER_CACERT) into cmd's context.
func withTrust(cmd *cobra.Command) error {
	file, _ := cmd.Flags().GetString("cacert")
	if file == "" {
		file = os.Getenv(envCACert)
	}
	t := &clientTrust{file: file}
	if file != "" {
		pem, err := attest.ReadBounded(file, 4<<20)
		if err != nil {
			return fmt.Errorf("--cacert: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--cacert %s: no PEM certificate in it: %w", file, ErrUsage)
		}
		t.roots = pool
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	cmd.SetContext(context.WithValue(ctx, trustKey{}, t))
	return nil
}

// trustOf returns the command's trust (the system roots when none was set up).
func trustOf(ctx context.Context) *clientTrust {
	if t, ok := ctx.Value(trustKey{}).(*clientTrust); ok {
		return t
	}
	return &clientTrust{}
}

// roundTripper is nil without --cacert (each library keeps its default),
// else http.DefaultTransport's settings with the extra roots.
func (t *clientTrust) roundTripper() http.RoundTripper {
	if t.roots == nil {
		return nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: t.roots, MinVersion: tls.VersionTLS12}
	return tr
}

// httpClient is nil without --cacert, else a client using the extra roots
// with the given timeout (0: none).
func (t *clientTrust) httpClient(timeout time.Duration) *http.Client {
	rt := t.roundTripper()
	if rt == nil {
		return nil
	}
	return &http.Client{Transport: rt, Timeout: timeout}
}

// adminTrust are the adminclient options of the command's trust.
func adminTrust(ctx context.Context) []adminclient.Option {
	if hc := trustOf(ctx).httpClient(0); hc != nil {
		return []adminclient.Option{adminclient.WithHTTPClient(hc)}
	}
	return nil
}

// Explain adds the flag to use to an error a TLS client failed with for
// want of a trusted certificate.
func Explain(err error) error {
	var (
		ua  x509.UnknownAuthorityError
		ci  x509.CertificateInvalidError
		hn  x509.HostnameError
		cve *tls.CertificateVerificationError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ua), errors.As(err, &cve) && errors.As(cve.Err, &ua):
		return fmt.Errorf("%w (to trust a private CA, give its certificate with --cacert FILE or %s)", err, envCACert)
	case errors.As(err, &ci), errors.As(err, &hn):
		return fmt.Errorf("%w (check the server's certificate; a private CA goes in --cacert FILE or %s)", err, envCACert)
	}
	return err
}
