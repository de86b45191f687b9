package cli

// How the demo shows each verb: run in-process, echoed like a shell session.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// stepOutput runs one verb like step and also returns its stdout.
func stepOutput(ctx context.Context, w io.Writer, dir string, args ...string) (string, error) {
	var buf bytes.Buffer
	err := step(ctx, io.MultiWriter(w, &buf), dir, args...)
	out := strings.TrimSpace(buf.String())
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	return strings.TrimSpace(out), err
}

// step runs one coffer verb in-process, echoing it like a shell session.
func step(ctx context.Context, w io.Writer, dir string, args ...string) error {
	shown := make([]string, len(args))
	for i, a := range args {
		shown[i] = strings.ReplaceAll(a, dir+string(filepath.Separator), "")
	}
	fmt.Fprintf(w, "\n$ coffer %s\n", strings.Join(shown, " "))
	root := NewRoot()
	out := newIndent(w)
	root.SetOut(out)
	root.SetErr(out)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// indent prefixes each output line of a step, buffering partial lines
// (tabwriter writes cell by cell).
type indent struct {
	w   io.Writer
	buf *[]byte
}

func newIndent(w io.Writer) indent { return indent{w, new([]byte)} }

func (i indent) Write(p []byte) (int, error) {
	*i.buf = append(*i.buf, p...)
	for {
		n := bytes.IndexByte(*i.buf, '\n')
		if n < 0 {
			return len(p), nil
		}
		if _, err := fmt.Fprintf(i.w, "  %s\n", (*i.buf)[:n]); err != nil {
			return 0, err
		}
		*i.buf = (*i.buf)[n+1:]
	}
}
