package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/kbs/store"
)

// scaleOutTargets are the broker set-ups BenchmarkScaleOut compares: one
// process on the memory and fs stores, one and three replicas on PostgreSQL.
// It returns the replicas' URLs and, for PostgreSQL, the database's CPU time.
func scaleOutTarget(b *testing.B, name string) ([]string, func() time.Duration) {
	b.Helper()
	single := func(st store.Store) []string {
		_ = st.Set(context.Background(), protocol.ResourcePath{Repo: "default", Type: "image_key", Tag: "nginx"}, secret)
		s, err := server.New(context.Background(), server.WithStore(st), server.WithLogger(slog.New(slog.DiscardHandler)), withSample)
		if err != nil {
			b.Fatal(err)
		}
		_ = s.Policy().SetReferenceValue(context.Background(), "launch_digest", []any{"abcde"})
		_ = s.Policy().SetReferenceValue(context.Background(), "svn", []any{"1"})
		hs := httptest.NewServer(s)
		b.Cleanup(hs.Close)
		return []string{hs.URL}
	}
	switch name {
	case "memory-1":
		return single(store.NewMemory()), nil
	case "fs-1":
		fs, err := store.NewFS(filepath.Join(b.TempDir(), "repo"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { fs.Close() })
		return single(fs), nil
	case "postgres-1", "postgres-3":
		n := 1
		if name == "postgres-3" {
			n = 3
		}
		f := newFleet(b, n, pg.Need(b))
		f.ready()
		return f.urls, pg.Server(b).CPUTime
	}
	b.Fatalf("no target %s", name)
	return nil, nil
}

var scaleOutNames = []string{"memory-1", "fs-1", "postgres-1", "postgres-3"}

// BenchmarkScaleOut/handshake: concurrent guests each doing auth, attest
// and a cookie GET, every step on the next replica (auth on A, attest on
// B, GET on C: the worst case for shared sessions).
// BenchmarkScaleOut/GET: bearer-token GETs spread round-robin.
// Run: go test -run '^$' -bench ScaleOut -kbs.clients 100 ./kbs/server/
func BenchmarkScaleOut(b *testing.B) {
	for _, name := range scaleOutNames {
		b.Run("handshake/"+name, func(b *testing.B) {
			urls, dbCPU := scaleOutTarget(b, name)
			tr := &http.Transport{MaxIdleConns: 4 * *benchClients, MaxIdleConnsPerHost: 4 * *benchClients}
			b.Cleanup(tr.CloseIdleConnections)
			runConcurrentCPU(b, "handshakes", dbCPU, func(i int) error { return spreadFlow(urls, i, tr) })
		})
	}
	for _, name := range scaleOutNames {
		b.Run("GET/"+name, func(b *testing.B) {
			urls, dbCPU := scaleOutTarget(b, name)
			tr := &http.Transport{MaxIdleConns: 4 * *benchClients, MaxIdleConnsPerHost: 4 * *benchClients}
			b.Cleanup(tr.CloseIdleConnections)
			guests := make([][]*benchClient, *benchClients)
			toks := make([]string, *benchClients)
			openers := make([]*protocol.Opener, *benchClients)
			for i := range guests {
				tok, priv, err := attestOn(urls[i%len(urls)], tr)
				if err != nil {
					b.Fatal(err)
				}
				toks[i] = tok
				if openers[i], err = protocol.NewOpener(priv); err != nil {
					b.Fatal(err)
				}
				for _, u := range urls {
					guests[i] = append(guests[i], &benchClient{base: u, hc: &http.Client{Transport: tr}})
				}
			}
			calls := make([]int, *benchClients)
			runConcurrentCPU(b, "GETs", dbCPU, func(i int) error {
				calls[i]++
				r, err := guests[i][calls[i]%len(urls)].getResource(toks[i])
				if err != nil {
					return err
				}
				pt, err := openers[i].Open(r)
				if err != nil || !bytes.Equal(pt, secret) {
					return err
				}
				return nil
			})
		})
	}
}

// spreadFlow is fullFlow with each step on the next of urls.
func spreadFlow(urls []string, i int, tr *http.Transport) error {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Transport: tr, Jar: jar}
	at := func(step int) *benchClient { return &benchClient{base: urls[(i+step)%len(urls)], hc: hc} }
	priv, pub, err := protocol.GenerateTeeKey()
	if err != nil {
		return err
	}
	var ch protocol.Challenge
	if err := at(0).post(protocol.PathAuth, protocol.Request{Version: protocol.Version, Tee: protocol.TeeSample, ExtraParams: json.RawMessage(`""`)}, &ch); err != nil {
		return err
	}
	d, _ := protocol.ReportDataDigest(ch.Nonce, pub, "")
	var ar protocol.AttestResponse
	if err := at(1).post(protocol.PathAttest, protocol.Attestation{
		RuntimeData: protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: pub},
		TeeEvidence: protocol.CompositeEvidence{PrimaryEvidence: attest.SampleEvidence("1", d)},
	}, &ar); err != nil {
		return err
	}
	r, err := at(2).getResource("")
	if err != nil {
		return err
	}
	pt, err := protocol.Open(priv, r)
	if err != nil || !bytes.Equal(pt, secret) {
		return err
	}
	return nil
}

// attestOn runs auth + attest on one broker and returns the token and tee key.
func attestOn(u string, tr *http.Transport) (string, any, error) {
	jar, _ := cookiejar.New(nil)
	c := &benchClient{base: u, hc: &http.Client{Transport: tr, Jar: jar}}
	priv, pub, err := protocol.GenerateTeeKey()
	if err != nil {
		return "", nil, err
	}
	var ch protocol.Challenge
	if err := c.post(protocol.PathAuth, protocol.Request{Version: protocol.Version, Tee: protocol.TeeSample, ExtraParams: json.RawMessage(`""`)}, &ch); err != nil {
		return "", nil, err
	}
	d, _ := protocol.ReportDataDigest(ch.Nonce, pub, "")
	var ar protocol.AttestResponse
	err = c.post(protocol.PathAttest, protocol.Attestation{
		RuntimeData: protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: pub},
		TeeEvidence: protocol.CompositeEvidence{PrimaryEvidence: attest.SampleEvidence("1", d)},
	}, &ar)
	return ar.Token, priv, err
}
