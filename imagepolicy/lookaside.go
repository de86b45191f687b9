package imagepolicy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/internal/bounded"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// maxLookasideSig bounds one simple signing signature (an OpenPGP message
// around a payload of a few hundred bytes).
const maxLookasideSig = maxPayload + 16<<10

// readLookaside reads signature-1, signature-2, … of digest from a
// containers/image lookaside location: base (a directory, file:// or
// http(s):// URL, as registries.d's lookaside names it for the registry)
// + "/<repository path>@<algorithm>=<hex>/signature-<n>", until the first
// missing one.
func readLookaside(ctx context.Context, base string, ref transport.Reference, digest v1.Hash) ([]Signature, error) {
	n, ok := transport.DockerName(ref)
	if !ok {
		return nil, fmt.Errorf("lookaside signatures exist for registry images only, not %s: %w", ref, spec.ErrPolicyDenied)
	}
	rel := n.Context().RepositoryStr() + "@" + digest.Algorithm + "=" + digest.Hex
	var get func(i int) ([]byte, string, error)
	u, err := url.Parse(base)
	switch {
	case err == nil && (u.Scheme == "http" || u.Scheme == "https"):
		get = func(i int) ([]byte, string, error) {
			s := strings.TrimSuffix(base, "/") + "/" + rel + fmt.Sprintf("/signature-%d", i)
			b, err := httpGet(ctx, s)
			return b, s, err
		}
	default:
		dir := base
		if err == nil && u.Scheme == "file" {
			dir = u.Path
		} else if err == nil && u.Scheme != "" {
			return nil, fmt.Errorf("lookaside %q: want a directory, file://, http:// or https:// URL: %w", base, spec.ErrUnsupported)
		}
		get = func(i int) ([]byte, string, error) {
			p := filepath.Join(dir, filepath.FromSlash(rel), fmt.Sprintf("signature-%d", i))
			b, err := readSmallFile(p)
			return b, p, err
		}
	}
	var out []Signature
	for i := 1; i <= maxSignatures; i++ {
		b, where, err := get(i)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading signature %s: %w", where, err)
		}
		out = append(out, Signature{Payload: b, Source: where})
	}
	return out, nil
}

func readSmallFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readBounded(f)
}

func readBounded(r io.Reader) ([]byte, error) { return bounded.ReadAll(r, maxLookasideSig) }

func httpGet(ctx context.Context, s string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fs.ErrNotExist
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return readBounded(resp.Body)
}
