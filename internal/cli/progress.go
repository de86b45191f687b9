package cli

import (
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/term"

	"github.com/coffer-dev/coffer/imagecrypt"
)

// progress prints a one-line layer counter, only when w is a terminal.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	on    bool
	n     int
	bytes int64
}

func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, on: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *progress) layerDone(u imagecrypt.Progress) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	p.bytes += u.Bytes
	fmt.Fprintf(p.w, "\r%d layer(s), %.1f MiB processed", p.n, float64(p.bytes)/(1<<20))
}

func (p *progress) finish() {
	if p.on && p.n > 0 {
		fmt.Fprintln(p.w)
	}
}
