package postgres_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/kbs/store"
	_ "github.com/coffer-dev/coffer/kbs/store/postgres"
)

// Linking the package registers postgres:// and postgresql:// with
// store.Open, as a shared store; it checks its KEK before dialling.
func TestRegistered(t *testing.T) {
	t.Parallel()
	for _, scheme := range []string{"postgres", "postgresql"} {
		if !slices.Contains(store.Schemes(), scheme) {
			t.Fatalf("%s not registered: %v", scheme, store.Schemes())
		}
		d, _ := store.Lookup(scheme + "://h/db")
		if !d.Shared {
			t.Errorf("%s: not marked shared", scheme)
		}
		_, err := store.Open(context.Background(), scheme+"://u:secret@127.0.0.1:1/db", store.Params{})
		if err == nil || !strings.Contains(err.Error(), "store_kek") || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s without a KEK: %v, want the store_kek error", scheme, err)
		}
	}
}
