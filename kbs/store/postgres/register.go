package postgres

import (
	"context"
	"errors"

	"github.com/coffer-dev/coffer/kbs/store"
)

// The postgres store opens through store.Open for postgres:// and
// postgresql:// URLs once this package is linked in (a blank import).
func init() {
	d := store.Driver{Open: openDriver, Check: checkParams, Shared: true}
	store.Register("postgres", d)
	store.Register("postgresql", d)
}

func checkParams(p store.Params) error {
	if p.KEKFile == "" {
		return errors.New("kbs config: the postgres store needs store_kek (--store-kek FILE): resources are encrypted in the database under it")
	}
	return nil
}

func openDriver(ctx context.Context, u string, p store.Params) (store.Store, error) {
	kek, err := LoadKEK(p.KEKFile)
	if err != nil {
		return nil, err
	}
	defer clear(kek)
	opts := []Option{WithKEK(kek), WithLogger(p.Logger)}
	if p.PreviousKEKFile != "" {
		prev, err := LoadKEK(p.PreviousKEKFile)
		if err != nil {
			return nil, err
		}
		defer clear(prev)
		opts = append(opts, WithPreviousKEK(prev))
	}
	if p.MaxConns > 0 {
		opts = append(opts, WithMaxConns(p.MaxConns))
	}
	return Open(ctx, u, opts...)
}
