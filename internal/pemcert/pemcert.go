// Package pemcert is the one place coffer reads x509 certificates out of
// PEM text: every CERTIFICATE block in order, other blocks skipped.
package pemcert

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// Parse returns the certificates of data's CERTIFICATE blocks, in order
// (none when there are none: the caller says whether that is an error).
// A malformed certificate is an error naming its position; max > 0
// bounds how many are parsed.
func Parse(data []byte, max int) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if max > 0 && len(out) == max {
			return nil, fmt.Errorf("more than %d certificates", max)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
}
