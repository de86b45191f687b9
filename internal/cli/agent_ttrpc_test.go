package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cttrpc "github.com/containerd/ttrpc"

	agentttrpc "github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/aa"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
	"github.com/coffer-dev/coffer/tpm"
	"github.com/coffer-dev/coffer/tpm/tpmtest"
)

func dialTTRPC(t *testing.T, path string) *cttrpc.Client {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			c := cttrpc.NewClient(conn)
			t.Cleanup(func() { c.Close() })
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ttrpc socket at %s: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// `coffer agent --initdata FILE` (no --kbs: the broker comes from the
// init-data's cdh.toml) serves the ttrpc CDH and AA APIs on the sockets
// given, 0600, and removes them on exit.
func TestAgentServesTTRPCFromInitData(t *testing.T) {
	b, _ := brokerWithKEK(t, "default/image_key/app")
	b.SetResource(t, "default/config/db", []byte("postgres://10.0.0.7"))
	doc := "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"" + b.URL + "\"\n'''\n"
	ann, err := agentttrpc.EncodeAnnotation([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "cf-cli-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	idFile := filepath.Join(dir, "initdata")
	if err := os.WriteFile(idFile, []byte(ann+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cdhSock, aaSock := filepath.Join(dir, "cc", "cdh.sock"), filepath.Join(dir, "cc", "aa", "aa.sock")
	_, _, stop := startAgent(t, "--tee", "sample", "--initdata", idFile, "--cdh-socket", cdhSock, "--aa-socket", aaSock)
	ctx := context.Background()
	res, err := cdh.NewGetResourceServiceClient(dialTTRPC(t, cdhSock)).GetResource(ctx, &cdh.GetResourceRequest{ResourcePath: "kbs:///default/config/db"})
	if err != nil || string(res.GetResource()) != "postgres://10.0.0.7" {
		t.Fatalf("GetResource = %q, %v", res.GetResource(), err)
	}
	tee, err := aa.NewAttestationAgentServiceClient(dialTTRPC(t, aaSock)).GetTeeType(ctx, &aa.GetTeeTypeRequest{})
	if err != nil || tee.GetTee() != "sample" {
		t.Errorf("GetTeeType = %q, %v", tee.GetTee(), err)
	}
	for _, p := range []string{cdhSock, aaSock} {
		if fi, err := os.Lstat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want 0600", p, fi.Mode(), err)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{cdhSock, aaSock} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after exit: %v", p, err)
		}
	}
}

func TestAgentBadInitData(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "initdata")
	os.WriteFile(bad, []byte("H4sINOTGZIP"), 0o600)
	_, _, err := runCofferSplit(t, nil, "agent", "--tee", "sample", "--initdata", bad, "--cdh-socket=", "--aa-socket=")
	if err == nil || !strings.Contains(err.Error(), "--initdata") || !errors.Is(err, ErrUsage) {
		t.Errorf("bad init-data: %v, want a usage error naming --initdata", err)
	}
}

// kata-agent writes init-data's cdh.toml to /run/cdh.toml and starts CDH
// with -c; --cdh-config reads the same file.
func TestAgentCDHConfigFile(t *testing.T) {
	b, _ := brokerWithKEK(t, "default/image_key/app")
	b.SetResource(t, "default/config/db", []byte("from cdh.toml's broker"))
	dir := shortDir(t)
	conf := filepath.Join(dir, "cdh.toml")
	os.WriteFile(conf, []byte("socket = 'unix:///run/confidential-containers/cdh.sock'\n[kbc]\nname = \"cc_kbc\"\nurl = \""+b.URL+"\"\n"), 0o600)
	sock := filepath.Join(dir, "cdh.sock")
	startAgent(t, "--tee", "sample", "--cdh-config", conf, "--cdh-socket", sock)
	res, err := cdh.NewGetResourceServiceClient(dialTTRPC(t, sock)).GetResource(context.Background(), &cdh.GetResourceRequest{ResourcePath: "kbs:///default/config/db"})
	if err != nil || string(res.GetResource()) != "from cdh.toml's broker" {
		t.Errorf("GetResource = %q, %v", res.GetResource(), err)
	}
	if _, _, err := runCofferSplit(t, nil, "agent", "--tee", "sample", "--initdata", conf, "--cdh-config", conf); !errors.Is(err, ErrUsage) {
		t.Errorf("--initdata with --cdh-config: %v, want a usage error", err)
	}
}

// kata-agent starts guest-components' AA with --initdata_digest (or
// --initdata_toml): the digest is bound to the TEE before anything is
// served, on a TPM by extending PCR 8. A malformed digest, or one that is
// not the --initdata document's, stops the agent with a usage error.
func TestAgentBindsInitDataAtStart(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	b, _ := brokerWithKEK(t, "default/image_key/app")
	ctx := context.Background()
	pcr8 := func() []byte {
		tp, err := tpm.Open(ctx, sw.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer tp.Close()
		p, err := tp.ReadPCRs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return p[8]
	}
	before := pcr8()
	d := sha256.Sum256([]byte("the init-data document"))
	_, _, stop := startAgent(t, "--kbs", b.URL, "--tee", "tpm", "--tpm", sw.Addr, "--initdata_digest", base64.StdEncoding.EncodeToString(d[:]))
	want := sha256.Sum256(append(append([]byte{}, before...), d[:]...))
	if got := pcr8(); !bytes.Equal(got, want[:]) {
		t.Errorf("PCR 8 = %x, want extend(%x, digest) = %x", got, before, want)
	}
	stop()

	// --initdata-toml configures and binds the document's own digest.
	dir := shortDir(t)
	doc := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"" + b.URL + "\"\n'''\n"
	tomlFile := filepath.Join(dir, "initdata.toml")
	os.WriteFile(tomlFile, []byte(doc), 0o600)
	before = pcr8()
	_, _, stop = startAgent(t, "--tee", "tpm", "--tpm", sw.Addr, "--initdata-toml", tomlFile)
	dd := sha256.Sum256([]byte(doc))
	want = sha256.Sum256(append(append([]byte{}, before...), dd[:]...))
	if got := pcr8(); !bytes.Equal(got, want[:]) {
		t.Errorf("PCR 8 after --initdata-toml = %x, want %x", got, want)
	}
	stop()

	for name, args := range map[string][]string{
		"not base64": {"--initdata-digest", "%%%"},
		"mismatch":   {"--initdata", tomlFile, "--initdata-digest", base64.StdEncoding.EncodeToString(d[:])},
	} {
		_, _, err := runCofferSplit(t, nil, append([]string{"agent", "--kbs", b.URL, "--tee", "tpm", "--tpm", sw.Addr, "--cdh-socket=", "--aa-socket="}, args...)...)
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--initdata-digest") {
			t.Errorf("%s: %v, want a usage error naming --initdata-digest", name, err)
		}
	}
}
