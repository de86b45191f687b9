package cli

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/internal/kbsfiles"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/spec"
)

func newKBSServeCmd() *cobra.Command {
	var configFile string
	fc := server.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the key broker until interrupted",
		Long: `Serve the KBS protocol (RCAR attestation, resources, EAR tokens; trustee
0.4.0 compatible) and its admin API on --listen until interrupted. Settings
come from flags, or from --config: coffer's own flat TOML or trustee's
kbs-config.toml layout, unchanged; flags given override the file. Admin
calls need a token signed by an --admin-public-key; the sample TEE is
refused unless --allow-sample-tee (development only). /healthz answers
ready or not ready; /metrics is for admins.`,
		Example: `  coffer kbs serve --admin-public-key admin.key.pub --repository ./repo
  coffer kbs serve --config /etc/kbs/kbs-config.toml
  coffer kbs serve --allow-sample-tee --admin-public-key admin.key.pub   # development only`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := server.DefaultConfig()
			if configFile != "" {
				var err error
				if cfg, err = kbsfiles.LoadConfig(configFile); err != nil {
					return err
				}
				for _, n := range cfg.Notes { // trustee keys accepted but not acted on
					slog.Warn("kbs config: "+n, "file", configFile)
				}
			}
			// Flags given on the command line override the file: flag
			// "rate-limit" is config key "rate_limit".
			var keys []string
			cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
				switch {
				case !f.Changed, f.Name == "config", f.Name == "pkcs11-module-dir": // the last: module policy, not broker config
				case f.Name == "admin-public-key":
					keys = append(keys, "admin_public_keys")
				case f.Name == "trusted-proxy":
					keys = append(keys, "trusted_proxies")
				default:
					keys = append(keys, strings.ReplaceAll(f.Name, "-", "_"))
				}
			})
			if err := cfg.Override(fc, keys...); err != nil {
				return err
			}
			if cfg.GCPercent != 0 {
				debug.SetGCPercent(cfg.GCPercent) // a process setting: the serving process is ours
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			// A --token-key in a PKCS#11 token loads its module only as
			// ocicrypt's config and --pkcs11-module-dir allow.
			p11, err := pkcs11Config(cmd.Flags())
			if err != nil && cfg.TokenKey != "" {
				return err
			}
			files, err := kbsfiles.Read(cfg, kbsfiles.WithPKCS11(p11)) // keys and policies are read here and handed over as values
			if err != nil {
				return err
			}
			return server.Serve(cmd.Context(), cfg, files, logger, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "TOML configuration file: coffer's keys or trustee's kbs-config.toml layout (flags override it)")
	f.StringVar(&fc.Listen, "listen", fc.Listen, "address to listen on")
	f.StringVar(&fc.Repository, "repository", fc.Repository, "resource repository directory (<dir>/<repo>/<type>/<tag>)")
	f.StringVar(&fc.Store, "store", fc.Store, "store: fs, memory, or a postgres:// URL such as postgres://kbs@db/kbs?sslmode=verify-full (shared by replicas; run coffer kbs migrate first)")
	f.StringVar(&fc.StoreURLFile, "store-url-file", "", "file holding the postgres:// store URL (e.g. a mounted secret), instead of --store")
	f.StringVar(&fc.StoreKEK, "store-kek", "", "postgres store: key-encryption key file (32 bytes raw, 64 hex digits or base64); the same on every replica")
	f.StringVar(&fc.StoreKEKPrevious, "store-kek-previous", "", "postgres store: the earlier key-encryption key file, still opened while coffer kbs rotate-kek moves resources to --store-kek")
	f.IntVar(&fc.StoreMaxConns, "store-max-conns", 0, "postgres store: connection pool size (default: the URL's pool_max_conns, else 16)")
	f.StringSliceVar(&fc.AdminACL, "admin-acl", nil, "role=pattern[,pattern]: admin tokens of role may only touch matching resource paths, e.g. tenant-a=tenant-a/*/* (repeatable)")
	f.StringSliceVar(&fc.AdminPublicKeys, "admin-public-key", nil, "Ed25519 PKIX PEM admin public key (repeatable)")
	f.StringVar(&fc.AdminRole, "admin-role", "", "require this role claim in admin tokens")
	f.BoolVar(&fc.InsecureAdmin, "insecure-admin", false, "DEVELOPMENT ONLY: no admin authentication, admin over plain HTTP")
	f.StringVar(&fc.TLSCert, "tls-cert", "", "TLS certificate chain (PEM)")
	f.StringVar(&fc.TLSKey, "tls-key", "", "TLS private key (PEM)")
	f.StringVar(&fc.TokenKey, "token-key", "", "P-256 key signing attestation tokens: a PEM file, or a key in a PKCS#11 token: a pkcs11: URI or a pkcs11 key file (default: generated at start)")
	addPKCS11DirFlag(f)
	f.DurationVar(&fc.TokenTTL, "token-ttl", fc.TokenTTL, "attestation token lifetime")
	f.StringVar(&fc.TokenCert, "token-cert", "", "PEM certificate chain (leaf first) of --token-key: tokens carry it (jwk x5c) for brokers that trust its root")
	f.StringSliceVar(&fc.TrustedTokenCerts, "trusted-token-certs", nil, "PEM root certificates: also accept tokens of other attestation services whose x5c chain verifies to them (repeatable)")
	f.DurationVar(&fc.SessionTTL, "session-ttl", fc.SessionTTL, "RCAR session lifetime")
	f.StringVar(&fc.ResourcePolicyFile, "resource-policy-file", "", "initial resource policy (Rego; default: affirming only)")
	f.StringVar(&fc.AttestationPolicyFile, "attestation-policy-file", "", "initial attestation policy (Rego)")
	f.Int64Var(&fc.MaxBodyBytes, "max-body-bytes", fc.MaxBodyBytes, "largest JSON request body")
	f.Int64Var(&fc.MaxResourceBytes, "max-resource-bytes", fc.MaxResourceBytes, "largest uploaded resource")
	f.DurationVar(&fc.ShutdownTimeout, "shutdown-timeout", fc.ShutdownTimeout, "grace period for in-flight requests on shutdown")
	f.IntVar(&fc.GCPercent, "gc-percent", 0, "Go GC target percentage (e.g. 400 trades memory for ~30% less CPU per handshake; 0 = Go default)")
	f.Float64Var(&fc.RateLimit, "rate-limit", fc.RateLimit, "/auth and /attest calls per second per client address (0 = off; behind a proxy, limit there)")
	f.IntVar(&fc.RateBurst, "rate-burst", fc.RateBurst, "burst allowed above --rate-limit")
	f.IntVar(&fc.MaxChallengesPerAddr, "max-challenges-per-address", fc.MaxChallengesPerAddr, "unattested sessions one client address may hold")
	f.StringSliceVar(&fc.TrustedProxies, "trusted-proxy", fc.TrustedProxies, "address or CIDR (e.g. the workload service's) whose X-Forwarded-For names the client calls count against (repeatable)")
	f.DurationVar(&fc.AdminTokenMaxTTL, "admin-token-max-ttl", fc.AdminTokenMaxTTL, "longest admin token lifetime (exp - iat) accepted (kbs-client signs 2h)")
	f.BoolVar(&fc.AllowSampleTee, "allow-sample-tee", false, "DEVELOPMENT ONLY: accept the sample TEE, which has no hardware root of trust")
	f.StringVar(&fc.Collateral, "collateral", "", "directory of SNP/TDX collateral: AMD ARK/ASK/VCEK/VLEK certificates and CRLs, Intel TCB info, QE identity, PCK CRLs")
	f.StringArrayVar(&fc.TPMEKCA, "tpm-ek-ca", nil, "PEM file of a TPM EK certificate authority (repeatable): a TPM whose EK chains to one and whose AK passes credential activation needs no AK pin (coffer vm: STATE/ek-ca.pem)")
	f.BoolVar(&fc.FetchCollateral, "fetch-collateral", false, "fetch collateral missing from --collateral from AMD KDS / Intel PCS")
	f.BoolVar(&fc.AllowDebugTee, "allow-debug-tee", false, "accept SNP/TDX guests whose debug policy bit is set")
	f.StringVar(&fc.StateDir, "state-dir", "", "keep admin-set policies and reference values here across restarts (default: memory only)")
	return cmd
}

func newKBSKeygenAdminCmd() *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen-admin",
		Short: "Generate an Ed25519 admin key pair (OUT: PKCS#8 private, OUT.pub: PKIX public)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out is required: %w", ErrUsage)
			}
			priv, pub, err := token.GenerateAdminKey()
			if err != nil {
				return err
			}
			// Both files are committed atomically (the private one 0600 whatever
			// an overwritten file's mode was); without --force neither may exist.
			var keep []atomicfile.Option
			if !force {
				keep = append(keep, atomicfile.NoReplace())
				for _, f := range []string{out, out + ".pub"} {
					if _, err := os.Lstat(f); err == nil {
						return fmt.Errorf("%s exists (use --force to replace it): %w", f, spec.ErrExists)
					}
				}
			}
			if err := atomicfile.Write(out+".pub", pub, append(keep, atomicfile.Mode(0o644))...); err != nil {
				return fmt.Errorf("writing admin key: %w", err)
			}
			if err := atomicfile.Write(out, priv, append(keep, atomicfile.Mode(0o600))...); err != nil {
				return fmt.Errorf("writing admin key: %w", err)
			}
			cmd.Printf("wrote %s (private) and %s.pub (public)\n", out, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "private key file to write")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing files")
	return cmd
}
