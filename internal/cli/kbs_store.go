package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/kbs/store/postgres"
)

// storeURLFlags are --store and --store-url-file of the database verbs.
type storeURLFlags struct{ url, file string }

func (f *storeURLFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.url, "store", "", "postgres:// URL of the broker database")
	cmd.Flags().StringVar(&f.file, "store-url-file", "", "file holding the postgres:// URL, instead of --store")
}

func (f *storeURLFlags) get() (string, error) {
	u := f.url
	if f.file != "" {
		raw, err := os.ReadFile(f.file)
		if err != nil {
			return "", fmt.Errorf("reading store URL: %w", err)
		}
		u = strings.TrimSpace(string(raw))
	}
	if !postgres.IsURL(u) {
		return "", fmt.Errorf("--store postgres://… (or --store-url-file) is required: %w", ErrUsage)
	}
	return u, nil
}

// newKBSMigrateCmd is `coffer kbs migrate --store postgres://…`: create or
// upgrade the broker's database schema (idempotent, versioned).
func newKBSMigrateCmd() *cobra.Command {
	var db storeURLFlags
	cmd := &cobra.Command{
		Use:   "migrate --store postgres://user@host/db",
		Short: "Create or upgrade the PostgreSQL schema of a shared broker store (safe to repeat)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			storeURL, err := db.get()
			if err != nil {
				return err
			}
			r, err := postgres.Migrate(cmd.Context(), storeURL)
			if err != nil {
				return err
			}
			if r.From == r.To {
				cmd.Printf("schema already at version %d: nothing to do\n", r.To)
			} else {
				cmd.Printf("schema migrated from version %d to %d\n", r.From, r.To)
			}
			return nil
		},
	}
	db.add(cmd)
	return cmd
}

// newKBSRotateKEKCmd is `coffer kbs rotate-kek`: re-seal every resource
// under the new store KEK (postgres.RotateKEK).
func newKBSRotateKEKCmd() *cobra.Command {
	var db storeURLFlags
	var kekFile, prevFile string
	cmd := &cobra.Command{
		Use:   "rotate-kek --store URL --store-kek NEW --store-kek-previous OLD",
		Short: "Re-seal the shared store's resources under a new key-encryption key (run after every replica has NEW, with OLD as previous)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			storeURL, err := db.get()
			if err != nil {
				return err
			}
			if kekFile == "" || prevFile == "" {
				return fmt.Errorf("--store-kek (the new key) and --store-kek-previous (the old one) are required: %w", ErrUsage)
			}
			kek, err := postgres.LoadKEK(kekFile)
			if err != nil {
				return err
			}
			prev, err := postgres.LoadKEK(prevFile)
			if err != nil {
				return err
			}
			s, err := postgres.Open(cmd.Context(), storeURL, postgres.WithKEK(kek), postgres.WithPreviousKEK(prev), postgres.WithResourceCache(0))
			if err != nil {
				return err
			}
			defer s.Close()
			r, err := s.RotateKEK(cmd.Context())
			if err != nil {
				return err
			}
			cmd.Printf("resealed %d resources (%d already under the new key); dropped %d attested sessions\n", r.Resealed, r.Current, r.Sessions)
			return nil
		},
	}
	db.add(cmd)
	cmd.Flags().StringVar(&kekFile, "store-kek", "", "the new key-encryption key file")
	cmd.Flags().StringVar(&prevFile, "store-kek-previous", "", "the key-encryption key the resources are sealed under now")
	return cmd
}
