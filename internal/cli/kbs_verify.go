package cli

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/kbs/attest"
)

// newKBSVerifyEvidenceCmd is `coffer kbs verify-evidence`: verify SNP, TDX or
// TPM evidence offline (attest.VerifyFile) and print its claims.
func newKBSVerifyEvidenceCmd() *cobra.Command {
	var (
		tee, evidenceFile, certFile, reportData, collateral, at string
		asJSON, allowDebug                                      bool
	)
	cmd := &cobra.Command{
		Use:   "verify-evidence --tee snp|tdx|tpm --evidence FILE [--cert FILE] [--report-data HEX] [--collateral DIR] [--at RFC3339] [--json] [--allow-debug]",
		Short: "Verify TEE evidence offline (trustee JSON, a raw SNP report or TDX quote) and print its claims",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tee == "" || evidenceFile == "" {
				return fmt.Errorf("--tee and --evidence are required: %w", ErrUsage)
			}
			raw, err := readBoundedFile(evidenceFile, attest.MaxEvidenceBytes)
			if err != nil {
				return err
			}
			var opts []attest.OfflineOption
			if certFile != "" {
				cert, err := readBoundedFile(certFile, 64<<10)
				if err != nil {
					return err
				}
				opts = append(opts, attest.WithCert(cert))
			}
			if reportData != "" {
				rd, err := hex.DecodeString(reportData)
				if err != nil || len(rd) == 0 || len(rd) > 64 {
					return fmt.Errorf("--report-data: want 1 to 64 bytes in hex: %w", ErrUsage)
				}
				opts = append(opts, attest.WithReportData(rd))
			}
			if collateral != "" {
				opts = append(opts, attest.WithCollateral(collateral))
			}
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return fmt.Errorf("--at: want an RFC 3339 time such as 2025-07-01T00:00:00Z: %w", ErrUsage)
				}
				opts = append(opts, attest.WithTime(t))
			}
			if allowDebug {
				opts = append(opts, attest.WithAllowDebug())
			}
			claims, err := attest.VerifyFile(cmd.Context(), tee, raw, opts...)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				b, err := json.MarshalIndent(claims, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(out, "%s\n", b)
				return err
			}
			return printClaims(out, claims)
		},
	}
	f := cmd.Flags()
	f.StringVar(&tee, "tee", "", "TEE of the evidence: snp, tdx or tpm")
	f.StringVar(&evidenceFile, "evidence", "", "evidence file: trustee's tee-evidence.primary_evidence JSON, a raw 1184-byte SNP report, or a raw TDX quote")
	f.StringVar(&certFile, "cert", "", "VCEK or VLEK (DER or PEM) of a raw SNP report")
	f.StringVar(&reportData, "report-data", "", "report data the evidence must carry, in hex (48-byte digest or 64-byte field; default: not checked)")
	f.StringVar(&collateral, "collateral", "", "collateral directory: <dir>/snp/vcek/<hwid>/vcek.der, <dir>/tdx/tcbinfo-<fmspc>.json, qe-identity.json, …")
	f.StringVar(&at, "at", "", "judge certificates and collateral at this RFC 3339 time (default: now)")
	f.BoolVar(&asJSON, "json", false, "print the claims as JSON")
	f.BoolVar(&allowDebug, "allow-debug", false, "accept guests whose debug bit is set")
	return cmd
}

func readBoundedFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: more than %d bytes: %w", path, max, ErrUsage)
	}
	return b, nil
}

// printClaims prints "key = value" lines, nested objects flattened with
// dots, the launch measurement first (SNP measurement, TDX quote.body.mr_td),
// the rest sorted.
func printClaims(w io.Writer, claims attest.Claims) error {
	flat := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				walk(prefix+k+".", e)
			}
		case string:
			flat[prefix[:len(prefix)-1]] = v
		default:
			b, _ := json.Marshal(v)
			flat[prefix[:len(prefix)-1]] = string(b)
		}
	}
	walk("", map[string]any(claims))
	keys := make([]string, 0, len(flat))
	for k := range flat {
		keys = append(keys, k)
	}
	rank := func(k string) int {
		switch k {
		case "measurement", "quote.body.mr_td":
			return 0
		}
		return 1
	}
	sort.Slice(keys, func(i, j int) bool {
		if ri, rj := rank(keys[i]), rank(keys[j]); ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		if _, err := fmt.Fprintf(w, "%s = %s\n", k, flat[k]); err != nil {
			return err
		}
	}
	return nil
}
