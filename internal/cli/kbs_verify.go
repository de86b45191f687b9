package cli

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
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
			raw, err := attest.ReadBounded(evidenceFile, attest.MaxEvidenceBytes)
			if err != nil {
				return err
			}
			var opts []attest.OfflineOption
			if certFile != "" {
				cert, err := attest.ReadBounded(certFile, 64<<10)
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
			return attest.WriteClaims(out, claims)
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
