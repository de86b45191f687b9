package ttrpc_test

import (
	"testing"
	"time"

	cofferttrpc "github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/transport"
)

// FuzzRegistryDocuments: the docker config.json and registry configuration
// come from the broker or the guest's files; neither may panic, and a
// parsed configuration resolves a reference without panicking.
func FuzzRegistryDocuments(f *testing.F) {
	f.Add([]byte(`{"auths":{"reg.example:5000":{"auth":"dTpw"}}}`))
	f.Add([]byte("[[registry]]\nprefix = \"reg.example/app\"\nlocation = \"mirror.example/app\"\n[[registry]]\nprefix = \"bad.example\"\nblocked = true\n"))
	f.Add([]byte("unqualified-search-registries = [\"docker.io\"]\n"))
	ref, _ := transport.Parse("docker://reg.example/app/x:v1")
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		cofferttrpc.ParseDockerConfig(data)
		if rc, err := cofferttrpc.ParseRegistryConfig(data); err == nil {
			rc.Resolve(ref)
		}
		if time.Since(start) > time.Second {
			t.Fatalf("one input took %v", time.Since(start))
		}
	})
}
