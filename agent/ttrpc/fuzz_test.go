package ttrpc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	cofferttrpc "github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/transport"
)

// FuzzParseSealed: a sealed secret comes from the pod spec (the host).
// Oracle: only what the key signed parses (a forgery never yields another
// secret), no panic, within a second.
func FuzzParseSealed(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, _ := cofferttrpc.Seal(cofferttrpc.Secret{Type: "vault", Provider: "kbs", Name: "kbs:///default/app/password"}, key, "kbs:///default/k/1")
	f.Add(good)
	f.Add("sealed.fakejwsheader.eyJ2ZXJzaW9uIjoiMC4xLjAifQ.fakesignature")
	f.Add("sealed....")
	f.Add("")
	verify := func(context.Context, string) (*ecdsa.PublicKey, error) { return &key.PublicKey, nil }
	f.Fuzz(func(t *testing.T, in string) {
		start := time.Now()
		sec, err := cofferttrpc.ParseSealed(context.Background(), []byte(in), verify)
		if err == nil && in != good {
			// Only possible for a re-encoding the signature still covers:
			// the payload then decodes to the same secret.
			if sec.Name != "kbs:///default/app/password" {
				t.Fatalf("forged secret accepted: %+v", sec)
			}
		}
		if time.Since(start) > time.Second {
			t.Fatalf("one input took %v", time.Since(start))
		}
	})
}

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
