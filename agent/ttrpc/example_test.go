package ttrpc_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"

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
