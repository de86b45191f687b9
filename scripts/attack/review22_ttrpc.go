package main

// Attacks on the ttrpc CDH/AA APIs of issue 22 (coffer agent --cdh-socket,
// --aa-socket, --initdata): each starts its own agent against the broker
// e.start made, which holds default/key/secret = "the-secret".

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	cttrpc "github.com/containerd/ttrpc"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/transport"
)

func init() {
	register(e22ttrpcSockets, e22ttrpcURIs, e22ttrpcSealed, e22ttrpcInitDataBomb, e22ttrpcHugeMessage, e22ttrpcBigPull)
}

// ttrpcAgent starts `coffer agent` serving ttrpc on sockets in a fresh
// directory; it returns the CDH socket, the AA socket and a stop function.
func (e *env) ttrpcAgent(extra ...string) (string, string, func(), error) {
	cdhSock, aaSock, _, stop, err := e.ttrpcAgentProc(extra...)
	return cdhSock, aaSock, stop, err
}

// ttrpcAgentProc is ttrpcAgent that also returns the agent's process.
func (e *env) ttrpcAgentProc(extra ...string) (string, string, *os.Process, func(), error) {
	dir, err := os.MkdirTemp(e.dir, "tt-")
	if err != nil {
		return "", "", nil, func() {}, err
	}
	cdhSock, aaSock := filepath.Join(dir, "cc", "cdh.sock"), filepath.Join(dir, "cc", "aa", "aa.sock")
	args := append([]string{"agent", "--kbs", e.kbs, "--tee", "sample", "--listen", "unix:" + filepath.Join(dir, "rest.sock"),
		"--cdh-socket", cdhSock, "--aa-socket", aaSock}, extra...)
	c := exec.Command(e.coffer, args...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		return "", "", nil, func() {}, err
	}
	stop := func() { _ = c.Process.Signal(syscall.SIGTERM); _ = c.Wait() }
	for range 400 {
		if conn, err := net.Dial("unix", aaSock); err == nil {
			conn.Close()
			return cdhSock, aaSock, c.Process, stop, nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	stop()
	return "", "", nil, func() {}, fmt.Errorf("agent did not serve ttrpc: %s", out.String())
}

func ttrpcDial(path string) (*cttrpc.Client, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	return cttrpc.NewClient(conn), nil
}

// 22a: the sockets are the only way in; anyone who can connect gets secrets.
func e22ttrpcSockets(e *env) result {
	r := result{id: "22a", name: "ttrpc sockets open to others"}
	cdhSock, aaSock, stop, err := e.ttrpcAgent()
	if err != nil {
		r.observed = err.Error()
		return r
	}
	defer stop()
	var modes []string
	ok := true
	for _, p := range []string{cdhSock, aaSock, filepath.Dir(cdhSock)} {
		fi, err := os.Lstat(p)
		if err != nil {
			ok = false
			modes = append(modes, err.Error())
			continue
		}
		modes = append(modes, fmt.Sprintf("%s %v", filepath.Base(p), fi.Mode().Perm()))
		if fi.Mode().Perm()&0o077 != 0 {
			ok = false
		}
	}
	r.ok, r.observed = ok, strings.Join(modes, ", ")+" (peer uid checked by SO_PEERCRED)"
	return r
}

// 22b: resource URIs that try to escape kbs:///repo/type/tag.
func e22ttrpcURIs(e *env) result {
	r := result{id: "22b", name: "ttrpc GetResource URI tricks"}
	cdhSock, _, stop, err := e.ttrpcAgent()
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
	rc := cdh.NewGetResourceServiceClient(c)
	ctx := context.Background()
	leaked, refused := false, 0
	tricks := []string{"kbs:///default/key/../key/secret", "kbs:///default/key/secret/..", "kbs:///default%2Fkey/secret/x",
		"kbs+resource:///default/key/secret", "kbs:///default/key/secret?x=1", "kbs:///default/key/secret#frag", "kbs://user@h/default/key/secret"}
	for _, u := range tricks {
		res, err := rc.GetResource(ctx, &cdh.GetResourceRequest{ResourcePath: u})
		if err == nil && bytes.Contains(res.GetResource(), []byte("the-secret")) {
			leaked = true
		} else if err != nil && strings.Contains(err.Error(), "InvalidArgument") {
			refused++
		}
	}
	ctl, err := rc.GetResource(ctx, &cdh.GetResourceRequest{ResourcePath: "kbs:///default/key/secret"})
	r.ok = !leaked && refused == len(tricks) && err == nil && string(ctl.GetResource()) == "the-secret"
	r.observed = fmt.Sprintf("%d/%d tricks refused InvalidArgument; control kbs:///default/key/secret → %q %v", refused, len(tricks), ctl.GetResource(), err)
	return r
}

// 22c: the owner sealed a secret naming a harmless resource; the attacker
// wants default/key/secret: signs their own with another key, swaps their
// payload into the owner's envelope, or sends it unsigned.
func e22ttrpcSealed(e *env) result {
	r := result{id: "22c", name: "ttrpc UnsealSecret forgeries"}
	priv, pub := filepath.Join(e.dir, "seal.jwk"), filepath.Join(e.dir, "seal.pub.jwk")
	evil, evilPub := filepath.Join(e.dir, "evil.jwk"), filepath.Join(e.dir, "evil.pub.jwk")
	for _, args := range [][]string{
		{"secret", "keygen", priv, pub},
		{"secret", "keygen", evil, evilPub},
		{"kbs", "set-resource", "--path", "default/sealed-secret/key1", "--resource-file", pub, "--url", e.kbs, "--admin-key", e.adminKey},
		{"kbs", "set-resource", "--path", "default/key/public", "--resource-file", pub, "--url", e.kbs, "--admin-key", e.adminKey},
	} {
		if out, err := e.cmd(10*time.Second, args...); err != nil {
			r.observed = fmt.Sprintf("%s: %v: %s", args[1], err, out)
			return r
		}
	}
	good, err := e.cmd(10*time.Second, "secret", "seal", "--signing-key", priv, "--kid", "kbs:///default/sealed-secret/key1", "kbs:///default/key/public")
	forged, err2 := e.cmd(10*time.Second, "secret", "seal", "--signing-key", evil, "--kid", "kbs:///default/sealed-secret/key1", "kbs:///default/key/secret")
	if err != nil || err2 != nil {
		r.observed = fmt.Sprintf("seal: %v %v", err, err2)
		return r
	}
	good, forged = strings.TrimSpace(good), strings.TrimSpace(forged)
	// Swap the forged payload into the good envelope (header and signature kept).
	gp, fp := strings.Split(good, "."), strings.Split(forged, ".")
	swapped := strings.Join([]string{gp[0], gp[1], fp[2], gp[3]}, ".")
	unsigned := "sealed.fakejwsheader." + fp[2] + ".fakesignature"
	cdhSock, _, stop, err := e.ttrpcAgent()
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
	sc := cdh.NewSealedSecretServiceClient(c)
	ctx := context.Background()
	var got []string
	leaked := false
	for _, s := range []string{forged, swapped, unsigned} {
		res, err := sc.UnsealSecret(ctx, &cdh.UnsealSecretInput{Secret: []byte(s)})
		if err == nil {
			leaked = leaked || bytes.Contains(res.GetPlaintext(), []byte("the-secret"))
			got = append(got, fmt.Sprintf("unsealed %.20q", res.GetPlaintext()))
		} else {
			got = append(got, "refused")
		}
	}
	ctl, err := sc.UnsealSecret(ctx, &cdh.UnsealSecretInput{Secret: []byte(good)})
	pubJWK, _ := os.ReadFile(pub)
	r.ok = !leaked && !strings.Contains(strings.Join(got, ""), "unsealed") && err == nil && bytes.Equal(ctl.GetPlaintext(), pubJWK)
	r.observed = fmt.Sprintf("wrong key / swapped payload / unsigned → %s; owner's control → %d bytes (the harmless resource) %v", strings.Join(got, ", "), len(ctl.GetPlaintext()), err)
	return r
}

// 22d: a gzip bomb as the cc_init_data annotation.
func e22ttrpcInitDataBomb(e *env) result {
	r := result{id: "22d", name: "init-data gzip bomb"}
	// 64 MiB of zeros gzip to ~64 KiB: under the annotation's size bound, so
	// only the bound on what it inflates to can stop it.
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(make([]byte, 64<<20))
	zw.Close()
	ann := base64.StdEncoding.EncodeToString(buf.Bytes())
	f := filepath.Join(e.dir, "bomb.initdata")
	if err := os.WriteFile(f, []byte(ann), 0o600); err != nil {
		r.observed = err.Error()
		return r
	}
	start := time.Now()
	out, err := e.cmd(20*time.Second, "agent", "--kbs", e.kbs, "--tee", "sample", "--initdata", f, "--listen", "127.0.0.1:0", "--cdh-socket=", "--aa-socket=")
	el := time.Since(start)
	code := -1
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	r.ok = code == 2 && strings.Contains(out, "decompresses to more than") && el < 5*time.Second
	r.observed = fmt.Sprintf("%d-byte annotation (64 MiB inflated) → exit %d after %v: %s", len(ann), code, el.Round(time.Millisecond), strings.TrimSpace(lastLine(out)))
	return r
}

// 22e: a ttrpc request far larger than any field allows.
func e22ttrpcHugeMessage(e *env) result {
	r := result{id: "22e", name: "ttrpc oversized request"}
	cdhSock, _, stop, err := e.ttrpcAgent()
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, bigErr := cdh.NewSealedSecretServiceClient(c).UnsealSecret(ctx, &cdh.UnsealSecretInput{Secret: bytes.Repeat([]byte("A"), 8<<20)})
	_, midErr := cdh.NewSealedSecretServiceClient(c).UnsealSecret(ctx, &cdh.UnsealSecretInput{Secret: bytes.Repeat([]byte("A"), 1<<20)})
	c.Close()
	// The agent still serves.
	c2, err := ttrpcDial(cdhSock)
	if err != nil {
		r.observed = "agent gone: " + err.Error()
		return r
	}
	defer c2.Close()
	ctl, err := cdh.NewGetResourceServiceClient(c2).GetResource(context.Background(), &cdh.GetResourceRequest{ResourcePath: "kbs:///default/key/secret"})
	r.ok = bigErr != nil && midErr != nil && strings.Contains(midErr.Error(), "at most") && err == nil && string(ctl.GetResource()) == "the-secret"
	r.observed = fmt.Sprintf("8 MiB → %v; 1 MiB → %v; agent then serves %q", oneLineErr(bigErr), oneLineErr(midErr), ctl.GetResource())
	return r
}

func oneLineErr(err error) string {
	if err == nil {
		return "accepted"
	}
	s := err.Error()
	if len(s) > 90 {
		s = s[:90] + "…"
	}
	return s
}

// 22f: a 512 MiB encrypted layer pulled through PullImage must not need
// guest memory of its size: the agent streams download, decryption and
// unpacking (the bound: peak RSS ≤ 64 MiB).
func e22ttrpcBigPull(e *env) result {
	r := result{id: "22f", name: "PullImage of a 512 MiB layer (RSS)"}
	const size = 512 << 20
	ctx := context.Background()
	dir, err := os.MkdirTemp(e.dir, "big-")
	if err != nil {
		r.observed = err.Error()
		return r
	}
	defer os.RemoveAll(dir)
	kek := make([]byte, 32)
	rand.Read(kek)
	kekFile := filepath.Join(dir, "kek")
	os.WriteFile(kekFile, kek, 0o600)
	if out, err := e.cmd(10*time.Second, "kbs", "set-resource", "--path", "default/image_key/big", "--resource-file", kekFile, "--url", e.kbs, "--admin-key", e.adminKey); err != nil {
		r.observed = fmt.Sprintf("set-resource: %v: %s", err, out)
		return r
	}
	// One uncompressible 512 MiB file in one uncompressed layer.
	raw, err := randomTar("model.bin", size)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	layer := static.NewLayer(raw, types.OCIUncompressedLayer)
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), layer)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	w, err := aa.NewWrapper(kek, "kbs:///default/image_key/big")
	if err != nil {
		r.observed = err.Error()
		return r
	}
	res, err := imagecrypt.Encrypt(ctx, imagecrypt.Artifact{Image: img}, []keywrap.Wrapper{w}, imagecrypt.WithTempDir(dir))
	if err != nil {
		r.observed = "encrypt: " + err.Error()
		return r
	}
	defer res.Close()
	blobs := filepath.Join(dir, "registry")
	os.Mkdir(blobs, 0o700)
	rs := httptest.NewServer(registry.New(registry.WithBlobHandler(registry.NewDiskBlobHandler(blobs)), registry.Logger(log.New(io.Discard, "", 0))))
	defer rs.Close()
	host := strings.TrimPrefix(rs.URL, "http://")
	dst, _ := transport.Parse("docker://" + host + "/big:enc")
	if err := transport.Write(ctx, dst, transport.Artifact(res.Artifact)); err != nil {
		r.observed = "push: " + err.Error()
		return r
	}
	raw, layer, img = nil, nil, nil
	cdhSock, _, proc, stop, err := e.ttrpcAgentProc()
	if err != nil {
		r.observed = err.Error()
		return r
	}
	defer stop()
	base := peakRSS(proc)
	c, err := ttrpcDial(cdhSock)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	defer c.Close()
	bundle := filepath.Join(dir, "bundle")
	os.Mkdir(bundle, 0o700)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	_, err = cdh.NewImagePullServiceClient(c).PullImage(pctx, &cdh.ImagePullRequest{ImageUrl: host + "/big:enc", BundlePath: bundle})
	took := time.Since(start)
	rss := peakRSS(proc)
	fi, ferr := os.Stat(filepath.Join(bundle, "rootfs", "model.bin"))
	r.ok = err == nil && ferr == nil && fi.Size() == size && rss > 0 && rss <= 64
	r.observed = fmt.Sprintf("pull: %v, %v (%.0f MiB/s), rootfs/model.bin %v bytes; agent peak RSS %d MiB (%d MiB before the pull)",
		oneLineErr(err), took.Round(time.Millisecond), float64(size>>20)/took.Seconds(), sizeOf(fi), rss, base)
	return r
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}

// randomTar returns a tar holding one file of n random bytes.
func randomTar(name string, n int64) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(int(n) + 4096)
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: n, Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := io.CopyN(tw, rand.Reader, n); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
