package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/spec"
)

// newKBSCmd is `coffer kbs`: the key broker and its admin verbs. The
// persistent flags --url and --admin-key (env COFFER_KBS_URL,
// COFFER_KBS_ADMIN_KEY) are shared by every client and admin verb.
func newKBSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kbs",
		Short: "Run and administer a key broker (Confidential Containers KBS protocol 0.4.0)",
	}
	cmd.PersistentFlags().String("url", "", "broker URL (env COFFER_KBS_URL)")
	cmd.PersistentFlags().String("admin-key", "", "Ed25519 PKCS#8 PEM admin private key (env COFFER_KBS_ADMIN_KEY)")
	cmd.AddCommand(
		newKBSServeCmd(), newKBSKeygenAdminCmd(),
		newKBSSetResourceCmd(), newKBSDeleteResourceCmd(),
		newKBSSetResourcePolicyCmd(), newKBSGetResourcePolicyCmd(),
		newKBSSetAttestationPolicyCmd(), newKBSSetReferenceValueCmd(),
		newKBSVerifyEvidenceCmd(),
		// client verbs (attest, get-resource) register here:
	)
	return cmd
}

// kbsFlag returns a persistent kbs flag, falling back to its environment variable.
func kbsFlag(cmd *cobra.Command, name, env string) string {
	if v, _ := cmd.Flags().GetString(name); v != "" {
		return v
	}
	return os.Getenv(env)
}

// kbsAdmin builds an admin client from --url and --admin-key.
func kbsAdmin(cmd *cobra.Command) (*adminclient.Client, error) {
	url, keyFile := kbsFlag(cmd, "url", "COFFER_KBS_URL"), kbsFlag(cmd, "admin-key", "COFFER_KBS_ADMIN_KEY")
	if url == "" || keyFile == "" {
		return nil, fmt.Errorf("--url and --admin-key (or COFFER_KBS_URL, COFFER_KBS_ADMIN_KEY) are required: %w", ErrUsage)
	}
	key, err := adminclient.LoadKey(keyFile)
	if err != nil {
		return nil, err
	}
	return adminclient.New(url, key)
}

func newKBSServeCmd() *cobra.Command {
	var configFile string
	fc := server.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the key broker until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := server.DefaultConfig()
			if configFile != "" {
				var err error
				if cfg, err = server.LoadConfig(configFile); err != nil {
					return err
				}
			}
			set := map[string]func(){
				"listen": func() { cfg.Listen = fc.Listen }, "repository": func() { cfg.Repository = fc.Repository },
				"store": func() { cfg.Store = fc.Store }, "admin-public-key": func() { cfg.AdminPublicKeys = fc.AdminPublicKeys },
				"admin-role": func() { cfg.AdminRole = fc.AdminRole }, "insecure-admin": func() { cfg.InsecureAdmin = fc.InsecureAdmin },
				"tls-cert": func() { cfg.TLSCert = fc.TLSCert }, "tls-key": func() { cfg.TLSKey = fc.TLSKey },
				"token-key": func() { cfg.TokenKey = fc.TokenKey }, "token-ttl": func() { cfg.TokenTTL = fc.TokenTTL },
				"session-ttl": func() { cfg.SessionTTL = fc.SessionTTL }, "resource-policy-file": func() { cfg.ResourcePolicyFile = fc.ResourcePolicyFile },
				"attestation-policy-file": func() { cfg.AttestationPolicyFile = fc.AttestationPolicyFile },
				"max-body-bytes":          func() { cfg.MaxBodyBytes = fc.MaxBodyBytes }, "max-resource-bytes": func() { cfg.MaxResourceBytes = fc.MaxResourceBytes },
				"shutdown-timeout": func() { cfg.ShutdownTimeout = fc.ShutdownTimeout }, "state-dir": func() { cfg.StateDir = fc.StateDir },
				"gc-percent": func() { cfg.GCPercent = fc.GCPercent },
				"rate-limit": func() { cfg.RateLimit = fc.RateLimit }, "rate-burst": func() { cfg.RateBurst = fc.RateBurst },
				"max-challenges-per-address": func() { cfg.MaxChallengesPerAddr = fc.MaxChallengesPerAddr },
				"admin-token-max-ttl":        func() { cfg.AdminTokenMaxTTL = fc.AdminTokenMaxTTL },
				"allow-sample-tee":           func() { cfg.AllowSampleTee = fc.AllowSampleTee },
				"token-cert":                 func() { cfg.TokenCert = fc.TokenCert },
				"trusted-token-certs":        func() { cfg.TrustedTokenCerts = fc.TrustedTokenCerts },
				"collateral":                 func() { cfg.Collateral = fc.Collateral },
				"fetch-collateral":           func() { cfg.FetchCollateral = fc.FetchCollateral },
				"allow-debug-tee":            func() { cfg.AllowDebugTee = fc.AllowDebugTee },
			}
			cmd.Flags().Visit(func(f *pflag.Flag) {
				if apply, ok := set[f.Name]; ok {
					apply()
				}
			})
			if cfg.GCPercent != 0 {
				debug.SetGCPercent(cfg.GCPercent) // a process setting: the serving process is ours
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			return server.Serve(cmd.Context(), cfg, logger, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "TOML configuration file (flags override it)")
	f.StringVar(&fc.Listen, "listen", fc.Listen, "address to listen on")
	f.StringVar(&fc.Repository, "repository", fc.Repository, "resource repository directory (<dir>/<repo>/<type>/<tag>)")
	f.StringVar(&fc.Store, "store", fc.Store, "resource store: fs or memory")
	f.StringSliceVar(&fc.AdminPublicKeys, "admin-public-key", nil, "Ed25519 PKIX PEM admin public key (repeatable)")
	f.StringVar(&fc.AdminRole, "admin-role", "", "require this role claim in admin tokens")
	f.BoolVar(&fc.InsecureAdmin, "insecure-admin", false, "DEVELOPMENT ONLY: no admin authentication, admin over plain HTTP")
	f.StringVar(&fc.TLSCert, "tls-cert", "", "TLS certificate chain (PEM)")
	f.StringVar(&fc.TLSKey, "tls-key", "", "TLS private key (PEM)")
	f.StringVar(&fc.TokenKey, "token-key", "", "P-256 PEM key signing attestation tokens (default: generated at start)")
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
	f.DurationVar(&fc.AdminTokenMaxTTL, "admin-token-max-ttl", fc.AdminTokenMaxTTL, "longest admin token lifetime (exp - iat) accepted (kbs-client signs 2h)")
	f.BoolVar(&fc.AllowSampleTee, "allow-sample-tee", false, "DEVELOPMENT ONLY: accept the sample TEE, which has no hardware root of trust")
	f.StringVar(&fc.Collateral, "collateral", "", "directory of SNP/TDX collateral: AMD ARK/ASK/VCEK/VLEK certificates and CRLs, Intel TCB info, QE identity, PCK CRLs")
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

func newKBSSetResourceCmd() *cobra.Command {
	var path, file string
	cmd := &cobra.Command{
		Use:   "set-resource",
		Short: "Upload a resource (e.g. an image key) to the broker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" || file == "" {
				return fmt.Errorf("--path and --resource-file are required: %w", ErrUsage)
			}
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			var data []byte
			if file == "-" {
				data, err = io.ReadAll(cmd.InOrStdin())
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return fmt.Errorf("reading resource: %w", err)
			}
			return c.SetResource(cmd.Context(), path, data)
		},
	}
	cmd.Flags().StringVar(&path, "path", "", "resource path repo/type/tag")
	cmd.Flags().StringVar(&file, "resource-file", "", "file holding the resource (- for stdin)")
	return cmd
}

func newKBSDeleteResourceCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "delete-resource",
		Short: "Delete a resource from the broker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return fmt.Errorf("--path is required: %w", ErrUsage)
			}
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			return c.DeleteResource(cmd.Context(), path)
		},
	}
	cmd.Flags().StringVar(&path, "path", "", "resource path repo/type/tag")
	return cmd
}

func newKBSSetResourcePolicyCmd() *cobra.Command {
	var file string
	var allowAll, denyAll, affirming bool
	cmd := &cobra.Command{
		Use:   "set-resource-policy",
		Short: "Set the resource policy (--policy-file | --allow-all | --deny-all | --affirming)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var src []byte
			var err error
			switch {
			case allowAll:
				src = []byte(policy.ResourceAllowAll)
			case denyAll:
				src = []byte(policy.ResourceDenyAll)
			case affirming:
				src = []byte(policy.ResourceAffirming)
			case file != "":
				if src, err = os.ReadFile(file); err != nil {
					return fmt.Errorf("reading policy: %w", err)
				}
			default:
				return fmt.Errorf("one of --policy-file, --allow-all, --deny-all, --affirming is required: %w", ErrUsage)
			}
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			return c.SetResourcePolicy(cmd.Context(), src)
		},
	}
	cmd.Flags().StringVar(&file, "policy-file", "", "Rego policy (package policy, boolean allow)")
	cmd.Flags().BoolVar(&allowAll, "allow-all", false, "release every resource to any valid attestation token")
	cmd.Flags().BoolVar(&denyAll, "deny-all", false, "release nothing")
	cmd.Flags().BoolVar(&affirming, "affirming", false, "release only to tokens with EAR status affirming (the default)")
	cmd.MarkFlagsMutuallyExclusive("policy-file", "allow-all", "deny-all", "affirming")
	return cmd
}

func newKBSGetResourcePolicyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get-resource-policy",
		Short: "Print the broker's resource policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			src, err := c.GetResourcePolicy(cmd.Context())
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(src)
			return err
		},
	}
}

func newKBSSetAttestationPolicyCmd() *cobra.Command {
	var file, id string
	cmd := &cobra.Command{
		Use:   "set-attestation-policy",
		Short: "Set the attestation policy (Rego producing the EAR trust vector)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("--policy-file is required: %w", ErrUsage)
			}
			src, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("reading policy: %w", err)
			}
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			return c.SetAttestationPolicy(cmd.Context(), id, src)
		},
	}
	cmd.Flags().StringVar(&file, "policy-file", "", "Rego attestation policy")
	cmd.Flags().StringVar(&id, "id", token.DefaultAppraisalPolicy, "policy id")
	return cmd
}

func newKBSSetReferenceValueCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "set-reference-value NAME VALUE...",
		Short: "Set the reference values called NAME (sample RVPS format)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			return c.SetReferenceValue(cmd.Context(), args[0], args[1:])
		},
	}
}
