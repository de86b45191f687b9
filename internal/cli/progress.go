package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/coffer-dev/coffer/imagecrypt"
)

// progressMode is --progress: auto (a terminal only), always, never.
type progressMode string

func (m *progressMode) String() string { return string(*m) }
func (m *progressMode) Type() string   { return "auto|always|never" }
func (m *progressMode) Set(s string) error {
	switch s {
	case "auto", "always", "never":
		*m = progressMode(s)
		return nil
	}
	return fmt.Errorf("want auto, always or never")
}

// addProgressFlag adds --progress to a verb that copies blobs.
func addProgressFlag(fs *pflag.FlagSet, m *progressMode) {
	*m = "auto"
	fs.Var(m, "progress", "per-blob progress on stderr: auto (only on a terminal), always, never")
}

// progress shows, per blob, bytes done of total and the rate ("Copying
// blob sha256:… 12.0 MiB / 100.0 MiB  45.1 MiB/s", as skopeo does), and
// the bytes written to a registry. On a terminal the lines are redrawn in
// place every tick; elsewhere (--progress always into a file or pipe) a
// line is printed per blob when it completes and, while it runs, at most
// every plainEvery.
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	on     bool
	tty    bool
	blobs  []*blobState
	byHash map[v1.Hash]*blobState
	drawn  int // lines on screen (tty)
	stop   chan struct{}
	done   chan struct{}
	now    func() time.Time
}

type blobState struct {
	label       string // "Copying blob sha256:…" or "Writing to …"
	done, total int64
	start, last time.Time // last: the last plain line printed
	finished    bool
	reported    bool // the finished line printed (plain)
}

const (
	progressTick = 200 * time.Millisecond
	plainEvery   = 2 * time.Second
)

func newProgress(w io.Writer, mode progressMode) *progress {
	f, ok := w.(*os.File)
	tty := ok && term.IsTerminal(int(f.Fd()))
	p := &progress{w: w, tty: tty, on: mode == "always" || (mode != "never" && tty), byHash: map[v1.Hash]*blobState{}, now: time.Now}
	if p.on {
		p.stop, p.done = make(chan struct{}), make(chan struct{})
		go p.loop()
	}
	return p
}

func (p *progress) loop() {
	defer close(p.done)
	t := time.NewTicker(progressTick)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.render(false)
		case <-p.stop:
			p.render(true)
			return
		}
	}
}

// blob records a blob's progress (imagecrypt.WithBlobProgress).
func (p *progress) blob(u imagecrypt.BlobProgress) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.byHash[u.Digest]
	if b == nil {
		b = &blobState{label: "Copying blob " + shortDigest(u.Digest.String()), start: p.now()}
		b.last = b.start
		p.byHash[u.Digest] = b
		p.blobs = append(p.blobs, b)
	}
	b.done, b.total = u.Done, u.Total
	if u.Total > 0 && u.Done >= u.Total {
		b.finished = true
	}
}

// pushing consumes a registry write's updates until they end or stop.
func (p *progress) pushing(dst string) chan<- v1.Update {
	if !p.on {
		return nil
	}
	ch := make(chan v1.Update, 16)
	b := &blobState{label: "Writing to " + dst, start: p.now()}
	b.last = b.start
	p.mu.Lock()
	p.blobs = append(p.blobs, b)
	p.mu.Unlock()
	go func() {
		for {
			select {
			case u, ok := <-ch:
				p.mu.Lock()
				if !ok || u.Error != nil { // closed when the write ends; an error is not "done"
					b.finished = !ok && b.total > 0 && b.done >= b.total
					p.mu.Unlock()
					return
				}
				b.done, b.total = u.Complete, u.Total
				b.finished = u.Total > 0 && u.Complete >= u.Total
				p.mu.Unlock()
			case <-p.stop:
				return
			}
		}
	}()
	return ch
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func (p *progress) line(b *blobState, now time.Time) string {
	el := now.Sub(b.start).Seconds()
	rate := ""
	if el > 0 {
		rate = fmt.Sprintf("  %s/s", mib(int64(float64(b.done)/el)))
	}
	state := ""
	if b.finished {
		state = fmt.Sprintf("  done in %.1fs", el)
	}
	return fmt.Sprintf("%s  %s / %s%s%s", b.label, mib(b.done), mib(b.total), rate, state)
}

func (p *progress) render(final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.tty {
		var sb strings.Builder
		if p.drawn > 0 {
			fmt.Fprintf(&sb, "\x1b[%dA", p.drawn)
		}
		for _, b := range p.blobs {
			sb.WriteString("\r\x1b[2K" + p.line(b, now) + "\n")
		}
		p.drawn = len(p.blobs)
		io.WriteString(p.w, sb.String())
		return
	}
	for _, b := range p.blobs {
		switch {
		case b.reported:
		case b.finished || final:
			b.reported = true
			fmt.Fprintln(p.w, p.line(b, now))
		case now.Sub(b.last) >= plainEvery:
			b.last = now
			fmt.Fprintln(p.w, p.line(b, now))
		}
	}
}

// finish draws the last state and stops.
func (p *progress) finish() {
	if !p.on {
		return
	}
	close(p.stop)
	<-p.done
}
