package main

// 22g: a registry mirror serves a substitute. The owner's registry
// configuration (from the broker) lists a mirror before the primary; the
// mirror (hostile, or a poisoned cache) serves its own image under the
// name. The owner pinned the name in the broker. Before the fix the pin
// and image policy were checked against the mirror's name, for which no
// pin exists, and the substitute ran.

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/transport"
)

func init() { register(e22mirrorSubstitute) }

func e22mirrorSubstitute(e *env) result {
	r := result{id: "22g", name: "mirror substitute under pinned name"}
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.observed = err.Error()
		return r
	}
	primary := l.Addr().String()
	l.Close() // the owner's registry is down: the mirror answers
	mirror := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer mirror.Close()
	mhost := strings.TrimPrefix(mirror.URL, "http://")
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "evil", Mode: 0o644, Size: 4, Typeflag: tar.TypeReg})
	tw.Write([]byte("evil"))
	tw.Close()
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), static.NewLayer(tb.Bytes(), types.OCIUncompressedLayer))
	if err != nil {
		r.observed = err.Error()
		return r
	}
	dst, _ := transport.Parse("docker://" + mhost + "/team/app:v1")
	if err := transport.Write(ctx, dst, transport.Artifact{Image: img}); err != nil {
		r.observed = "push: " + err.Error()
		return r
	}
	id := "docker://" + primary + "/team/app:v1"
	pin, _ := imagepolicy.Pin{Version: 1, Reference: id, MediaType: string(types.OCIManifestSchema1),
		Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}}.Marshal()
	files := map[string][]byte{
		"pin":    pin,
		"regcfg": []byte("[[registry]]\nprefix = \"" + primary + "/team\"\n[[registry.mirror]]\nlocation = \"" + mhost + "/team\"\n"),
	}
	paths := map[string]string{"pin": imagepolicy.PinPath("default", id).String(), "regcfg": "default/registry-configuration/mirrors"}
	for k, data := range files {
		f := filepath.Join(e.dir, "22g-"+k)
		os.WriteFile(f, data, 0o600)
		if out, err := e.cmd(10*time.Second, "kbs", "set-resource", "--path", paths[k], "--resource-file", f, "--url", e.kbs, "--admin-key", e.adminKey); err != nil {
			r.observed = fmt.Sprintf("set-resource %s: %v: %s", k, err, out)
			return r
		}
	}
	doc := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"" + e.kbs +
		"\"\n[image]\nregistry_configuration_uri = \"kbs:///default/registry-configuration/mirrors\"\n'''\n"
	idFile := filepath.Join(e.dir, "22g-initdata.toml")
	os.WriteFile(idFile, []byte(doc), 0o600)
	cdhSock, _, stop, err := e.ttrpcAgent("--initdata", idFile)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	defer stop()
	c, err := ttrpcDial(cdhSock)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	defer c.Close()
	bundle, _ := os.MkdirTemp(e.dir, "22g-bundle-")
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err = cdh.NewImagePullServiceClient(c).PullImage(pctx, &cdh.ImagePullRequest{ImageUrl: primary + "/team/app:v1", BundlePath: bundle})
	_, statErr := os.Stat(filepath.Join(bundle, "rootfs", "evil"))
	r.ok = err != nil && strings.Contains(err.Error(), "changed since it was pinned") && os.IsNotExist(statErr)
	r.observed = fmt.Sprintf("PullImage %s via mirror %s: %.160s; rootfs/evil present: %v", primary, mhost, oneLineErr(err), statErr == nil)
	return r
}
