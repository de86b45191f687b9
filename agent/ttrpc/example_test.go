package ttrpc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	cttrpc "github.com/containerd/ttrpc"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	cofferttrpc "github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/aa"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/server"
)

// A broker, the CDH and AA services on unix sockets, and kata-agent's
// side of the wire: a ttrpc client asking CDH for a resource and AA for
// its TEE type. The sample TEE stands in for hardware.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, _ := os.MkdirTemp("", "coffer-ttrpc-")
	defer os.RemoveAll(dir)

	adminPub, adminKey, _ := ed25519.GenerateKey(rand.Reader)
	srv, _ := server.New(ctx, server.WithAdminKeys(adminPub), server.WithLogger(slog.New(slog.DiscardHandler)),
		server.WithVerifiers(attest.New(attest.Config{AllowSample: true})))
	hs := httptest.NewServer(srv)
	defer hs.Close()
	admin, _ := adminclient.New(hs.URL, adminKey)
	_ = admin.SetResourcePolicy(ctx, []byte(policy.ResourceAllowAll))
	_ = admin.SetReferenceValue(ctx, "launch_digest", []string{"abcde"})
	_ = admin.SetReferenceValue(ctx, "svn", []string{"1"})
	_ = admin.SetResource(ctx, "default/config/app", []byte("db=10.0.0.7"))

	c, _ := client.New(hs.URL, client.WithAttester(evidence.Sample{}))
	agent, err := cofferttrpc.New(ctx, c, evidence.Sample{})
	if err != nil {
		panic(err)
	}
	cdhSock, aaSock := filepath.Join(dir, "cdh.sock"), filepath.Join(dir, "aa", "aa.sock")
	ready := make(chan struct{})
	go agent.ListenAndServe(ctx, cdhSock, aaSock, func(_, _ net.Addr) { close(ready) })
	<-ready

	conn, _ := net.Dial("unix", cdhSock)
	tc := cttrpc.NewClient(conn)
	defer tc.Close()
	res, err := cdh.NewGetResourceServiceClient(tc).GetResource(ctx, &cdh.GetResourceRequest{ResourcePath: "kbs:///default/config/app"})
	fmt.Printf("%q %v\n", res.GetResource(), err)

	conn, _ = net.Dial("unix", aaSock)
	ta := cttrpc.NewClient(conn)
	defer ta.Close()
	tee, err := aa.NewAttestationAgentServiceClient(ta).GetTeeType(ctx, &aa.GetTeeTypeRequest{})
	fmt.Println(tee.GetTee(), err)
	// Output:
	// "db=10.0.0.7" <nil>
	// sample <nil>
}

// A sealed secret names a broker resource and is signed by its owner; the
// guest checks the signature with the key the kid names before it asks
// the broker for the resource.
func ExampleSeal() {
	ctx := context.Background()
	priv, pub, _ := cofferttrpc.GenerateSigningKey()
	key, _ := cofferttrpc.ParseSigningKey(priv)
	sealed, _ := cofferttrpc.Seal(cofferttrpc.Secret{Type: "vault", Provider: "kbs", Name: "kbs:///default/app/password"}, key, "kbs:///default/sealed-secret/key1")
	verify := func(context.Context, string) (*ecdsa.PublicKey, error) { return cofferttrpc.ParseVerificationKey(pub) }
	sec, err := cofferttrpc.ParseSealed(ctx, []byte(sealed), verify)
	fmt.Println(strings.Count(sealed, "."), sec.Type, sec.Name, err)
	tampered := strings.Replace(sealed, "sealed.e", "sealed.f", 1)
	_, err = cofferttrpc.ParseSealed(ctx, []byte(tampered), verify)
	fmt.Println(err != nil)
	// Output:
	// 3 vault kbs:///default/app/password <nil>
	// true
}
