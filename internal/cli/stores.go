package cli

// The broker stores `coffer kbs serve --store URL` can open, beyond the fs
// and memory stores of kbs/store: each registers itself for its URL
// scheme (store.Register), so adding one is its package plus one line here.
import (
	_ "github.com/coffer-dev/coffer/kbs/store/postgres" // postgres://, postgresql://
)
