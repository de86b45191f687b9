package server_test

import (
	"testing"

	"github.com/coffer-dev/coffer/internal/kbsfiles"
	"github.com/coffer-dev/coffer/kbs/server"
)

// files reads the files c names, as coffer kbs serve does before it hands
// their contents to server.Serve.
func files(t *testing.T, c server.Config) server.Files {
	t.Helper()
	f, err := kbsfiles.Read(c)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
