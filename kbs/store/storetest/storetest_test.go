package storetest_test

import (
	"path/filepath"
	"testing"

	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/kbs/store/storetest"
)

func TestMemory(t *testing.T) {
	t.Parallel()
	storetest.Run(t, store.NewMemory())
}

func TestFS(t *testing.T) {
	t.Parallel()
	fs, err := store.NewFS(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	storetest.Run(t, fs)
}
