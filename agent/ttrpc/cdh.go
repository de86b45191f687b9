package ttrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	cttrpc "github.com/containerd/ttrpc"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/agent/ttrpc/gen/aa"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	kwaa "github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/pull"
	"github.com/coffer-dev/coffer/transport"
)

// Bounds on CDH request fields, checked before anything is parsed (ttrpc
// itself bounds a whole message to 4 MiB).
const (
	maxURI        = 4096 // a resource URI or image reference
	maxBundlePath = 4096
)

type cdhService struct{ s *Server }

// GetResource implements api.GetResourceService: ResourcePath is a
// kbs:///repo/type/tag URI (a host part is ignored, as in guest-components).
func (c *cdhService) GetResource(ctx context.Context, req *cdh.GetResourceRequest) (*cdh.GetResourceResponse, error) {
	data, err := c.s.GetResource(ctx, req.GetResourcePath())
	if err != nil {
		return nil, rpcError(c.s.o.log, "CDH", "get resource", err)
	}
	return &cdh.GetResourceResponse{Resource: data}, nil
}

// GetResource returns the broker's resource named by the kbs:/// URI uri,
// attesting first when the client holds no valid token.
func (s *Server) GetResource(ctx context.Context, uri string) ([]byte, error) {
	if len(uri) > maxURI {
		return nil, badInput("resource URI of %d bytes (at most %d)", len(uri), maxURI)
	}
	p, err := protocol.ParseKID(uri)
	if err != nil {
		return nil, badInput("%v", err)
	}
	data, err := s.c.GetResource(ctx, p.Repo, p.Type, p.Tag)
	if err != nil {
		return nil, err
	}
	s.o.log.Info("cdh: resource released", "resource", p.String(), "bytes", len(data))
	return data, nil
}

// fetch reads a configuration source: kbs:///… from the broker, file:///…
// or an absolute path from the guest's file system. Sizes are bounded.
func (s *Server) fetch(ctx context.Context, src string, max int64) ([]byte, error) {
	if strings.HasPrefix(src, "kbs:") || strings.HasPrefix(src, "kbs+") {
		data, err := s.GetResource(ctx, src)
		if err != nil {
			return nil, err
		}
		if int64(len(data)) > max {
			return nil, fmt.Errorf("%s: %d bytes, more than %d", src, len(data), max)
		}
		return data, nil
	}
	path := strings.TrimPrefix(src, "file://")
	if !filepath.IsAbs(path) {
		return nil, badInput("%q: want kbs:///repo/type/tag, file:///path or an absolute path", src)
	}
	return readBounded(path, max)
}

// readBounded reads at most max bytes of a regular file.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > max {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", path, max)
	}
	buf := make([]byte, fi.Size())
	n, err := f.ReadAt(buf, 0)
	if err != nil && n != len(buf) {
		return nil, err
	}
	return buf, nil
}

// PullImage implements api.ImagePullService.
func (c *cdhService) PullImage(ctx context.Context, req *cdh.ImagePullRequest) (*cdh.ImagePullResponse, error) {
	d, err := c.s.PullImage(ctx, req.GetImageUrl(), req.GetBundlePath())
	if err != nil {
		return nil, rpcError(c.s.o.log, "CDH", "pull image", err)
	}
	return &cdh.ImagePullResponse{ManifestDigest: d}, nil
}

// PullImage pulls imageURL (a registry reference such as
// registry.example/app:v1, as kata-agent passes it; docker:// is
// optional), decrypts its layers with keys from the broker, verifies it
// against the image security policy and the broker's digest pins, and
// unpacks it into bundlePath/rootfs (its config beside it, as
// rootfs.config.json), as image-rs does for kata-agent. bundlePath must be
// an absolute path to an existing directory; rootfs must be absent or an
// empty directory. It returns the manifest digest and records the pull as
// a runtime measurement when the event log is enabled.
func (s *Server) PullImage(ctx context.Context, imageURL, bundlePath string) (string, error) {
	if imageURL == "" || len(imageURL) > maxURI {
		return "", badInput("image_url must be 1 to %d bytes", maxURI)
	}
	if len(bundlePath) > maxBundlePath || !filepath.IsAbs(bundlePath) || filepath.Clean(bundlePath) != bundlePath {
		return "", badInput("bundle_path %q must be a clean absolute path of at most %d bytes", bundlePath, maxBundlePath)
	}
	if fi, err := os.Stat(bundlePath); err != nil || !fi.IsDir() {
		return "", badInput("bundle_path %s is not a directory", bundlePath)
	}
	for _, local := range []string{"oci:", "oci-archive:", "docker-archive:", "dir:", "containers-storage:"} {
		if strings.HasPrefix(imageURL, local) {
			return "", badInput("image_url %q: only registry references are pulled", imageURL)
		}
	}
	refStr := imageURL
	if !strings.HasPrefix(refStr, "docker://") {
		refStr = "docker://" + refStr
	}
	ref, err := transport.Parse(refStr)
	if err != nil {
		return "", badInput("image_url %q: %v", imageURL, err)
	}
	if ref.Transport() != "docker" {
		return "", badInput("image_url %q: only registry references are pulled", imageURL)
	}
	s.pullMu.Lock()
	defer s.pullMu.Unlock()

	sources, err := s.registrySources(ctx, ref)
	if err != nil {
		return "", err
	}
	topts := append([]transport.Option(nil), s.o.transport...)
	auth, err := s.registryAuth(ctx)
	if err != nil {
		return "", err
	}
	if auth != nil {
		topts = append(topts, transport.WithKeychain(auth))
	}
	chk, err := s.imageChecker(ctx, topts)
	if err != nil {
		return "", err
	}
	rootfs := filepath.Join(bundlePath, "rootfs")
	if err := os.Remove(rootfs); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", badInput("%s exists and is not an empty directory", rootfs)
	}
	var digest v1.Hash
	capture := func(ctx context.Context, r transport.Reference, a transport.Artifact, img v1.Image) error {
		d, err := img.Digest()
		digest = d
		return err
	}
	// The image security policy and the broker's pins judge the image by
	// the name asked for, whichever source serves it (as containers/image
	// evaluates policy against the user's reference, not a mirror's).
	verify := func(ctx context.Context, _ transport.Reference, a transport.Artifact, img v1.Image) error {
		return chk.Verify(ctx, ref, a, img)
	}
	opts := []pull.Option{pull.WithKeys(kwaa.NewUnwrapper(s.c.KeyResolver())), pull.WithTransport(topts...),
		pull.WithVerify(verify), pull.WithVerify(capture), pull.WithLogger(s.o.log)}
	opts = append(opts, s.o.pull...)
	var errs []error
	for i, src := range sources {
		err = pull.Pull(ctx, src, rootfs, opts...)
		if err == nil {
			if src.String() != ref.String() {
				s.o.log.Info("cdh: image pulled from a configured source", "image", imageURL, "source", src.String())
			}
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", src, err))
		if i == len(sources)-1 || !nextSourceAfter(ctx, err) {
			break
		}
		s.o.log.Warn("cdh: source failed; trying the next", "image", imageURL, "source", src.String(), "error", err)
		os.RemoveAll(rootfs)
	}
	if err != nil {
		if len(errs) == 1 {
			return "", err
		}
		// One line: the last source's error is the one wrapped (its class
		// decides the status code); the others are named before it.
		msgs := make([]string, len(errs)-1)
		for i, e := range errs[:len(errs)-1] {
			msgs[i] = e.Error()
		}
		return "", fmt.Errorf("every source of %s failed (%s); last: %w", imageURL, strings.Join(msgs, "; "), errs[len(errs)-1])
	}
	s.o.log.Info("cdh: image pulled", "image", imageURL, "digest", digest.String(), "rootfs", rootfs)
	// Byte for byte guest-components' event (hub.rs), space included: a
	// broker's policy matches it. imageURL parsed as a reference, so it
	// holds no quote or backslash.
	content := fmt.Sprintf(`{"image":"%s", "digest":"%s"}`, imageURL, digest)
	if err := s.recordPull(ctx, content); err != nil {
		// The image is in place but unrecorded: a broker that requires the
		// record would be misled, so the pull fails and the rootfs goes.
		os.RemoveAll(rootfs)
		os.Remove(rootfs + ".config.json")
		return "", fmt.Errorf("recording the pull in the runtime measurement: %w", err)
	}
	return digest.String(), nil
}

// recordPull extends the runtime measurement with a PullImage event: in
// this process's event log when it keeps one, else through the AA at the
// configured socket (as guest-components' CDH does; skipped when that
// socket does not exist). NOT_SUPPORTED and NOT_ENABLED are not errors.
func (s *Server) recordPull(ctx context.Context, content string) error {
	var res aa.RuntimeMeasurementResult
	switch {
	case s.evlog != nil || s.o.aaSocket == "":
		r, err := s.ExtendRuntimeMeasurement(ctx, EventDomain, "PullImage", content, nil)
		if err != nil {
			return err
		}
		res = r
	default:
		if _, err := os.Stat(s.o.aaSocket); err != nil {
			s.o.log.Warn("cdh: attestation agent socket not found; the pull is not recorded as a runtime measurement", "socket", s.o.aaSocket)
			return nil
		}
		var d net.Dialer
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		conn, err := d.DialContext(actx, "unix", s.o.aaSocket)
		if err != nil {
			return err
		}
		c := cttrpc.NewClient(conn)
		defer c.Close()
		r, err := aa.NewAttestationAgentServiceClient(c).ExtendRuntimeMeasurement(actx, &aa.ExtendRuntimeMeasurementRequest{
			Domain: EventDomain, Operation: "PullImage", Content: content})
		if err != nil {
			return err
		}
		res = r.GetResult()
	}
	if res != aa.RuntimeMeasurementResult_OK {
		s.o.log.Info("cdh: pull not recorded as a runtime measurement", "result", res.String())
	}
	return nil
}

// maxPolicy bounds an image security policy document.
const maxPolicy = 1 << 20

// imageChecker builds the image checker once: the policy (from the broker
// on first use, or inline) and the broker's digest pins.
func (s *Server) imageChecker(ctx context.Context, topts []transport.Option) (*imagepolicy.Checker, error) {
	fetch := imagepolicy.ResourceFetcher(s.c.Get)
	var pol *imagepolicy.Policy
	var err error
	switch {
	case s.o.policySrc != "":
		pol, err = imagepolicy.LoadPolicy(ctx, s.o.policySrc, fetch)
	case s.o.policyDoc != nil:
		if pol, err = imagepolicy.ParsePolicy(s.o.policyDoc); err == nil {
			err = pol.LoadKeys(ctx, fetch)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("image security policy: %w", err)
	}
	opts := []imagepolicy.Option{imagepolicy.WithLogger(s.o.log), imagepolicy.WithTransport(topts...),
		imagepolicy.WithRequireSignature(s.o.requireSig), imagepolicy.WithPins(fetch)}
	if pol != nil {
		opts = append(opts, imagepolicy.WithPolicy(pol))
	}
	return imagepolicy.New(opts...)
}

// UnsealSecret implements api.SealedSecretService.
func (c *cdhService) UnsealSecret(ctx context.Context, req *cdh.UnsealSecretInput) (*cdh.UnsealSecretOutput, error) {
	pt, err := c.s.UnsealSecret(ctx, req.GetSecret())
	if err != nil {
		return nil, rpcError(c.s.o.log, "CDH", "unseal secret", err)
	}
	return &cdh.UnsealSecretOutput{Plaintext: pt}, nil
}

// SecureMount implements api.SecureMountService: coffer mounts nothing
// yet, so every request is refused with Unimplemented after its shape is
// checked.
func (c *cdhService) SecureMount(ctx context.Context, req *cdh.SecureMountRequest) (*cdh.SecureMountResponse, error) {
	err := secureMount(req)
	return nil, rpcError(c.s.o.log, "CDH", "secure mount", err)
}

func secureMount(req *cdh.SecureMountRequest) error {
	switch vt := req.GetVolumeType(); vt {
	case "":
		return badInput("volume_type is empty")
	case "block-device":
		return fmt.Errorf("volume type %q (LUKS2 block device) is not supported by coffer yet: %w", vt, errUnimplemented)
	case "alibaba-cloud-oss":
		return fmt.Errorf("volume type %q (Alibaba Cloud OSS) is not supported by coffer: %w", vt, errUnimplemented)
	default:
		if len(vt) > 64 {
			vt = vt[:64] + "…"
		}
		return badInput("unknown volume type %q", vt)
	}
}
