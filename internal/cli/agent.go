package cli

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/agent"
	"github.com/coffer-dev/coffer/agent/evidence"
	agentttrpc "github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/keywrap/aa"
)

// addrString is a listener's address as --listen takes it (unix:PATH for sockets).
func addrString(a net.Addr) string {
	if a.Network() == "unix" {
		return "unix:" + a.String()
	}
	return a.String()
}

func newAgentCmd() *cobra.Command {
	var (
		kbs              kbsClientFlags
		listen, kpGRPC   string
		wrapKEK, wrapKID string
		allowedHosts     []string
		cdhSock, aaSock  string
		initData         string
		idToml, idDigest string
		aaConf, cdhConf  string
		secretKeys       string
		additionalTees   []string
	)
	cmd := &cobra.Command{
		Use:   "agent [--kbs URL] [--listen 127.0.0.1:8006|unix:PATH] [--keyprovider-grpc 127.0.0.1:50000|unix:PATH] [--allowed-host NAME]… [--cdh-socket PATH] [--aa-socket PATH] [--initdata FILE | --aa-config FILE --cdh-config FILE]",
		Short: "Guest agent: CDH/AA REST API and the ocicrypt keyprovider gRPC service, backed by the broker",
		Long: `Serve, until interrupted, the Confidential Containers guest APIs backed by coffer's
RCAR client: GET /cdh/resource/<repo>/<type>/<tag>, /aa/token?token_type=kbs and
/aa/evidence?runtime_data=… on --listen, and (with --keyprovider-grpc) the ocicrypt
keyprovider service whose UnWrapKey fetches attestation-agent KEKs from the broker,
so containerd, CRI-O or skopeo decrypt images through it unchanged. WrapKey only
works with a configured --wrap-kek/--wrap-kid: a remote caller never names host files.

The REST API answers only requests whose Host is loopback (localhost, 127.0.0.0/8,
[::1]) or named by --allowed-host, and refuses cross-origin browser requests, so a
web page cannot reach it through DNS rebinding. Either listener may be a unix socket,
unix:/run/coffer/agent.sock (created 0600, removed on exit), as CoCo's CDH uses.

Besides, guest-components' ttrpc APIs, as kata-agent calls them, are served on
--cdh-socket (CDH: GetResource, PullImage, UnsealSecret, SecureMount, and the
keyprovider over ttrpc) and --aa-socket (AA: GetEvidence, GetToken,
ExtendRuntimeMeasurement, …); an empty value serves neither. --initdata FILE (the
cc_init_data annotation's value, or the init-data TOML), or --aa-config and
--cdh-config (the files kata-agent writes from it), configure them: the broker
(when --kbs is not given), image security policy, registry credentials and
configuration, event log. See docs/kata.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (wrapKEK == "") != (wrapKID == "") {
				return fmt.Errorf("--wrap-kek and --wrap-kid go together: %w", ErrUsage)
			}
			var topts []agentttrpc.Option
			digest, err := initDataBinding(&initData, idToml, idDigest)
			if err != nil {
				return err
			}
			what := "--initdata " + initData
			if initData == "" {
				what = "--aa-config/--cdh-config"
			}
			id, err := agentttrpc.LoadConfig(initData, aaConf, cdhConf)
			if err == nil && id != nil && id.InitData != nil && digest != nil && idToml == "" && !bytes.Equal(digest, id.InitData.Digest) {
				return fmt.Errorf("--initdata-digest is not the digest of --initdata %s: %w", initData, ErrUsage)
			}
			if err == nil && id != nil && id.InitData != nil && idToml != "" {
				digest = id.InitData.Digest
			}
			if err != nil {
				return fmt.Errorf("%s: %w: %w", what, err, ErrUsage)
			}
			if id != nil {
				if kbs.url == "" {
					kbs.url = id.KBSURL
				}
				if kbs.opts, err = id.ClientOptions(); err != nil {
					return fmt.Errorf("%s: %w: %w", what, err, ErrUsage)
				}
				topts = id.Options
			}
			if secretKeys != "" {
				topts = append(topts, agentttrpc.WithSealedSecretKeys(secretKeys))
			}
			for _, tee := range additionalTees {
				a, err := evidence.ForTee(tee, evidence.WithTPM(kbs.tpm))
				if err != nil {
					return fmt.Errorf("--additional-tee %s: %w", tee, err)
				}
				topts = append(topts, agentttrpc.WithAdditionalAttesters(a))
			}
			c, err := kbs.client(cmd.Context())
			if err != nil {
				return err
			}
			if c == nil {
				return fmt.Errorf("--kbs (or COFFER_KBS_URL) is required: %w", ErrUsage)
			}
			att, err := kbs.attester()
			if err != nil {
				return err
			}
			cfg := agent.Config{Client: c, Attester: att, Listen: listen, Keyprovider: kpGRPC,
				AllowedHosts: allowedHosts, WrapKID: wrapKID, Logger: slog.Default(),
				CDHSocket: cdhSock, AASocket: aaSock, TTRPC: topts, InitDataDigest: digest}
			if wrapKEK != "" {
				if cfg.WrapKEK, err = aa.ReadKEK(wrapKEK); err != nil {
					return err
				}
				defer clear(cfg.WrapKEK)
			}
			errOut := cmd.ErrOrStderr()
			err = agent.Serve(cmd.Context(), cfg, func(rest, kp net.Addr) {
				line := fmt.Sprintf("coffer agent: CDH API on %s", addrString(rest))
				if kp != nil {
					line += fmt.Sprintf(", keyprovider gRPC on %s", addrString(kp))
				}
				fmt.Fprintf(errOut, "%s (tee %s, broker %s)\n", line, att.Tee(), kbs.url)
			})
			if errors.Is(err, agent.ErrConfig) {
				return fmt.Errorf("%w: %w", err, ErrUsage)
			}
			return err
		},
	}
	kbs.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8006", "address of the CDH/AA REST API: host:port or unix:PATH")
	cmd.Flags().StringVar(&kpGRPC, "keyprovider-grpc", "", "address of the ocicrypt keyprovider gRPC service (e.g. 127.0.0.1:50000 or unix:PATH)")
	cmd.Flags().StringArrayVar(&allowedHosts, "allowed-host", nil, "host name or address (no port) the REST API accepts in Host/Origin besides loopback; repeatable")
	cmd.Flags().StringVar(&wrapKEK, "wrap-kek", "", "32-byte KEK file WrapKey uses (with --wrap-kid)")
	cmd.Flags().StringVar(&wrapKID, "wrap-kid", "", "kbs:///repo/type/tag naming --wrap-kek in the broker")
	cmd.Flags().StringVar(&cdhSock, "cdh-socket", agentttrpc.DefaultCDHSocket, "unix socket of the ttrpc CDH API kata-agent calls (\"\" serves none)")
	cmd.Flags().StringVar(&aaSock, "aa-socket", agentttrpc.DefaultAASocket, "unix socket of the ttrpc attestation-agent API (\"\" serves none)")
	cmd.Flags().StringArrayVar(&additionalTees, "additional-tee", nil, "an attester besides --tee for the AA's GetAdditionalEvidence (e.g. tpm, using --tpm); repeatable")
	cmd.Flags().StringVar(&secretKeys, "sealed-secret-keys", "", "directory of local sealed-secret verification keys (JWK files named by kid; CDH's /run/confidential-containers/cdh/sealed-secret)")
	cmd.Flags().StringVar(&aaConf, "aa-config", "", "aa.toml as kata-agent writes it from init-data (/run/aa.toml); instead of --initdata")
	cmd.Flags().StringVar(&cdhConf, "cdh-config", "", "cdh.toml as kata-agent writes it from init-data (/run/cdh.toml); instead of --initdata")
	cmd.Flags().StringVar(&idDigest, "initdata-digest", "", "bind this init-data digest (standard base64) to the TEE before serving (PCR 8 on a TPM), as kata-agent asks guest-components' AA; a failure stops the agent")
	cmd.Flags().StringVar(&idToml, "initdata-toml", "", "init-data TOML FILE: configure from it (as --initdata) and bind its digest (as --initdata-digest)")
	cmd.Flags().StringVar(&idDigest, "initdata_digest", "", "guest-components' spelling of --initdata-digest")
	cmd.Flags().StringVar(&idToml, "initdata_toml", "", "guest-components' spelling of --initdata-toml")
	cmd.Flags().MarkHidden("initdata_digest")
	cmd.Flags().MarkHidden("initdata_toml")
	cmd.Flags().StringVar(&initData, "initdata", "", "init-data FILE: the cc_init_data annotation value (base64 gzip) or the TOML; configures the ttrpc APIs")
	return cmd
}

// initDataBinding reads the AA's start-up binding flags (guest-components'
// --initdata_toml and --initdata_digest): the TOML also configures, as
// --initdata does, and wins over the digest, as in the AA. It returns the
// digest to bind (nil for none; the TOML's is filled in once parsed).
func initDataBinding(initData *string, toml, digest string) ([]byte, error) {
	if toml != "" {
		if *initData != "" && *initData != toml {
			return nil, fmt.Errorf("--initdata-toml and --initdata name different files: %w", ErrUsage)
		}
		*initData = toml
		return nil, nil
	}
	if digest == "" {
		return nil, nil
	}
	d, err := base64.StdEncoding.DecodeString(digest)
	if err != nil || len(d) == 0 || len(d) > 64 {
		return nil, fmt.Errorf("--initdata-digest: want the standard base64 of a 1 to 64 byte digest: %w", ErrUsage)
	}
	return d, nil
}
