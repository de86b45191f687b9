package keyprovider

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/spec"
)

// SchemePrefix prefixes a provider name to form its annotation scheme.
const SchemePrefix = "provider."

// Wrapper returns a keywrap.Wrapper that asks provider name to wrap the
// layer options, sending params as its only encryption parameter (see the
// package comment for the exact request). Scheme() is "provider."+name.
func (c *Config) Wrapper(name, params string) (keywrap.Wrapper, error) {
	p, err := c.lookup(name)
	if err != nil {
		return nil, err
	}
	return &wrapper{client: client{name: name, p: p, timeout: c.timeout()}, params: params}, nil
}

// Unwrapper returns a keywrap.Unwrapper that asks provider name to unwrap
// annotation entries of scheme "provider."+name. Its errors wrap
// spec.ErrNoKey (plus the sentinel a coffer server reported, if any), except
// when the context ended.
func (c *Config) Unwrapper(name string) (keywrap.Unwrapper, error) {
	p, err := c.lookup(name)
	if err != nil {
		return nil, err
	}
	return &unwrapper{client{name: name, p: p, timeout: c.timeout()}}, nil
}

type client struct {
	name    string
	p       Provider
	timeout time.Duration
}

func (c *client) Scheme() string { return SchemePrefix + c.name }

type wrapper struct {
	client
	params string
}

func (w *wrapper) Wrap(ctx context.Context, privopts []byte) ([]byte, error) {
	in, err := encodeWrapInput(w.name, []byte(w.params), privopts)
	if err != nil {
		return nil, fmt.Errorf("keyprovider %s: encoding request: %w", w.name, err)
	}
	out, err := w.call(ctx, opKeyWrap, in)
	if err != nil {
		return nil, fmt.Errorf("keyprovider %s: wrapping layer key: %w", w.name, err)
	}
	ann, err := decodeWrapOutput(out)
	if err != nil {
		return nil, fmt.Errorf("keyprovider %s: %w", w.name, err)
	}
	return ann, nil
}

type unwrapper struct{ client }

func (u *unwrapper) Unwrap(ctx context.Context, entry []byte) ([]byte, error) {
	in, err := encodeUnwrapInput(u.name, entry)
	if err != nil {
		return nil, fmt.Errorf("keyprovider %s: encoding request: %w", u.name, err)
	}
	out, err := u.call(ctx, opKeyUnwrap, in)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("keyprovider %s: unwrapping layer key: %w", u.name, err)
		}
		return nil, fmt.Errorf("keyprovider %s: unwrapping layer key: %w: %w", u.name, spec.ErrNoKey, err)
	}
	opts, err := decodeUnwrapOutput(out)
	if err != nil {
		return nil, fmt.Errorf("keyprovider %s: %w: %w", u.name, spec.ErrNoKey, err)
	}
	return opts, nil
}

// call runs one protocol exchange over the configured transport.
func (c *client) call(ctx context.Context, op string, in []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	switch {
	case c.p.Command != nil:
		return runCommand(ctx, c.p.Command, in)
	case c.p.GRPC != "":
		return callGRPC(ctx, c.p.GRPC, c.p.GRPCTLS, op, in)
	default:
		return nil, fmt.Errorf("no transport configured: %w", spec.ErrUnsupported)
	}
}

// maxStderr bounds how much of a provider's stderr is kept for an error.
const maxStderr = 512

// runCommand runs a cmd provider: request on stdin, response on stdout.
func runCommand(ctx context.Context, cmd *Command, in []byte) ([]byte, error) {
	c := exec.CommandContext(ctx, cmd.Path, cmd.Args...)
	c.Stdin = bytes.NewReader(in)
	var stdout limitedBuffer
	stdout.limit = maxMessage
	var stderr limitedBuffer
	stderr.limit = 8 << 10
	c.Stdout = &stdout
	c.Stderr = &stderr
	c.WaitDelay = 5 * time.Second
	err := c.Run()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("running %s: %w", cmd.Path, ctx.Err())
		}
		msg := trimStderr(stderr.Bytes())
		if msg != "" {
			return nil, fmt.Errorf("running %s: %w: %s", cmd.Path, err, msg)
		}
		return nil, fmt.Errorf("running %s: %w", cmd.Path, err)
	}
	if stdout.overflow {
		return nil, fmt.Errorf("running %s: response exceeds %d bytes", cmd.Path, maxMessage)
	}
	return stdout.Bytes(), nil
}

// trimStderr keeps the last non-empty lines of a provider's stderr, at most
// maxStderr bytes of valid UTF-8 on one line. coffer never writes key
// material there; the provider's own output is shown as it came.
func trimStderr(b []byte) string {
	s := strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
	if s == "" {
		return ""
	}
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	s = strings.Join(lines, "; ")
	if len(s) > maxStderr {
		s = s[len(s)-maxStderr:]
		for len(s) > 0 && !utf8.RuneStart(s[0]) {
			s = s[1:]
		}
		s = "…" + s
	}
	return s
}

// limitedBuffer keeps the first limit bytes written and records overflow
// without failing the writer (so the child is not killed by EPIPE).
type limitedBuffer struct {
	bytes.Buffer
	limit    int
	overflow bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	room := b.limit - b.Len()
	if room <= 0 {
		b.overflow = b.overflow || len(p) > 0
		return len(p), nil
	}
	if len(p) > room {
		b.Buffer.Write(p[:room])
		b.overflow = true
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

var _ io.Writer = (*limitedBuffer)(nil)
