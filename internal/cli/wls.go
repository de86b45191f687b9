package cli

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/secl/wls"
	"github.com/coffer-dev/coffer/secl/wlsclient"
)

func newWLSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wls",
		Short: "Workload service (Intel SecL's WLS): image flavors, images, key transfer to hosts",
	}
	var c wls.Config
	serve := &cobra.Command{
		Use:   "serve --flavor-signer-cert CERT --admin-public-key PUB --db DIR",
		Short: "Run the workload service until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return wls.Serve(cmd.Context(), c, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)), nil)
		},
	}
	f := serve.Flags()
	f.StringVar(&c.Listen, "listen", "127.0.0.1:5080", "address to listen on (5080: the README's registry has 5000)")
	f.StringVar(&c.DB, "db", "", "store directory (flavors/, images/)")
	f.StringSliceVar(&c.SignerCerts, "flavor-signer-cert", nil, "PEM certificate of a trusted flavor signer (repeatable; required)")
	f.StringSliceVar(&c.AdminPublicKeys, "admin-public-key", nil, "Ed25519 PKIX PEM admin public key (repeatable)")
	f.BoolVar(&c.InsecureAdmin, "insecure-admin", false, "DEVELOPMENT ONLY: no admin authentication")
	f.StringVar(&c.TLSCert, "tls-cert", "", "TLS certificate chain (PEM)")
	f.StringVar(&c.TLSKey, "tls-key", "", "TLS private key (PEM)")
	f.Float64Var(&c.RateLimit, "rate-limit", 5, "host key requests per second per client address (0 = off; behind a proxy, limit there)")
	f.IntVar(&c.RateBurst, "rate-burst", 20, "burst allowed above --rate-limit")
	f.IntVar(&c.MaxPending, "max-pending-per-address", wls.DefaultMaxPendingPerCaller, "unanswered broker challenges one client address may hold")
	f.IntVar(&c.MaxPerBroker, "max-pending-per-broker", wls.DefaultMaxPendingPerBroker, "unanswered broker challenges all clients together may hold at one broker (keep it under the broker's --max-challenges-per-address)")
	f.Float64Var(&c.BrokerRate, "broker-rate", wls.DefaultBrokerRate, "calls per second to each broker, shared fairly among clients (keep it under the broker's --rate-limit; -1 = off, when the broker runs with --trusted-proxy for this service)")
	f.IntVar(&c.BrokerBurst, "broker-burst", wls.DefaultBrokerBurst, "burst allowed above --broker-rate")
	f.StringSliceVar(&c.AllowedBrokers, "allowed-broker", nil, "broker URL hosts may ask keys of by key URL, besides those stored flavors name (repeatable)")

	var url, adminKey, imageID, flavorID string
	client := func(cmd *cobra.Command) (*wlsclient.Client, error) {
		if url == "" || adminKey == "" {
			return nil, fmt.Errorf("--url and --admin-key are required: %w", ErrUsage)
		}
		k, err := adminclient.LoadKey(adminKey)
		if err != nil {
			return nil, err
		}
		return wlsclient.NewClient(url, k, trustOf(cmd.Context()).httpClient(2*time.Minute)), nil
	}
	addFlavor := &cobra.Command{
		Use:   "add-flavor --url URL --admin-key KEY FLAVOR.json",
		Short: "Upload a signed flavor; prints its id",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			doc, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if len(doc) > flavor.MaxSignedFlavor {
				return fmt.Errorf("%s: over %d bytes: %w", args[0], flavor.MaxSignedFlavor, ErrUsage)
			}
			id, err := c.AddFlavor(cmd.Context(), doc)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), id)
			return nil
		},
	}
	replaceFlavor := &cobra.Command{
		Use:   "replace-flavor --url URL --admin-key KEY FLAVOR.json",
		Short: "Replace a stored flavor with a newly signed one of the same id (audited; add-flavor is create-only)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			doc, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			_, f, err := flavor.Parse(doc)
			if err != nil {
				return err
			}
			if err := c.ReplaceFlavor(cmd.Context(), f.Meta.ID, doc); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), f.Meta.ID)
			return nil
		},
	}
	addImage := &cobra.Command{
		Use:   "add-image --url URL --admin-key KEY --image-id ID --flavor-id FID",
		Short: "Associate an image with a flavor",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !flavor.ValidID(imageID) || !flavor.ValidID(flavorID) {
				return fmt.Errorf("--image-id and --flavor-id must be UUIDs: %w", ErrUsage)
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			return c.AddImage(cmd.Context(), imageID, flavorID)
		},
	}
	for _, sub := range []*cobra.Command{addFlavor, replaceFlavor, addImage} {
		sub.Flags().StringVar(&url, "url", "", "workload service URL")
		sub.Flags().StringVar(&adminKey, "admin-key", "", "Ed25519 PKCS#8 PEM admin key")
	}
	addImage.Flags().StringVar(&imageID, "image-id", "", "image id (UUID)")
	addImage.Flags().StringVar(&flavorID, "flavor-id", "", "flavor id (UUID)")
	cmd.AddCommand(serve, addFlavor, replaceFlavor, addImage)
	return cmd
}
