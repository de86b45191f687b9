// Package console is the framing coffer's guest and host share on the
// guest's serial console. The guest (coffer as PID 1) writes frames; the
// kernel may write its own lines in between, which the host sets aside.
// A frame is one line:
//
//	\x1bCF1 KIND B64\n
//
// where KIND is one of the Kind constants and B64 the std base64 of the
// payload (empty payload: "-"). Base64 keeps payloads clear of the tty's
// newline translation and of anything the kernel prints.
package console

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"sync"
)

// Kind names what a frame carries.
type Kind string

// Frame kinds.
const (
	Stdout   Kind = "out"   // a chunk of the container's stdout
	Stderr   Kind = "err"   // a chunk of the container's stderr
	Exit     Kind = "exit"  // the container's exit status, decimal
	Denied   Kind = "deny"  // the broker refused: its reason
	Failed   Kind = "fail"  // the guest failed: "CLASS message" (class: a spec sentinel name)
	Log      Kind = "log"   // a progress line of the guest
	Mark     Kind = "mark"  // a timing mark: "NAME" (guest monotonic time is the host's to take)
	Evidence Kind = "evid"  // measure mode: the guest's evidence JSON
	Hello    Kind = "hello" // the guest's init started
	Stat     Kind = "stat"  // a figure of the guest: "NAME VALUE" (maxrss_kib: coffer's peak RSS in the guest)
	// Stop is the one frame the host writes to the guest (on the
	// console's input, agent mode): power off.
	Stop Kind = "stop"
)

// Marks of agent mode (Mark frames).
const (
	// MarkServing: the guest agent serves on its virtio-serial port.
	MarkServing = "serving"
	// MarkDisconnected: the guest agent saw its host connection end and
	// will accept the next one.
	MarkDisconnected = "disconnected"
)

// AgentPort is the name of the virtio-serial port the guest agent serves
// ttrpc on (agent mode).
const AgentPort = "coffer.agent"

const prefix = "\x1bCF1 "

// MaxLine bounds one console line the host reads (a frame's base64 or a
// kernel line); longer lines are cut.
const MaxLine = 256 << 10

// ChunkSize is the largest payload a Stdout/Stderr frame carries.
const ChunkSize = 3 << 10

// Writer writes frames; safe for concurrent use.
type Writer struct {
	mu sync.Mutex
	w  io.Writer
}

// NewWriter returns a Writer on w (the guest's /dev/console).
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Send writes one frame.
func (w *Writer) Send(k Kind, payload []byte) error {
	enc := "-"
	if len(payload) > 0 {
		enc = base64.StdEncoding.EncodeToString(payload)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := io.WriteString(w.w, prefix+string(k)+" "+enc+"\n")
	return err
}

// Stream returns an io.Writer whose writes become frames of kind k (in
// chunks of at most ChunkSize).
func (w *Writer) Stream(k Kind) io.Writer { return streamWriter{w, k} }

type streamWriter struct {
	w *Writer
	k Kind
}

func (s streamWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += ChunkSize {
		end := min(off+ChunkSize, len(p))
		if err := s.w.Send(s.k, p[off:end]); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

// Frame is one decoded frame.
type Frame struct {
	Kind    Kind
	Payload []byte
}

// Reader splits a console stream into frames and other lines.
type Reader struct {
	s *bufio.Scanner
}

// NewReader reads the console stream r.
func NewReader(r io.Reader) *Reader {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 64<<10), MaxLine)
	return &Reader{s: s}
}

// Next returns the next frame, or (nil, line) for a line that is not one
// (kernel output, a garbled frame), or io.EOF at the end. A line longer
// than MaxLine ends the stream with an error.
func (r *Reader) Next() (*Frame, []byte, error) {
	if !r.s.Scan() {
		if err := r.s.Err(); err != nil {
			return nil, nil, fmt.Errorf("console: %w", err)
		}
		return nil, nil, io.EOF
	}
	line := bytes.TrimRight(r.s.Bytes(), "\r")
	i := bytes.Index(line, []byte(prefix))
	if i < 0 {
		return nil, line, nil
	}
	rest := line[i+len(prefix):]
	kind, enc, ok := bytes.Cut(rest, []byte(" "))
	if !ok || len(kind) == 0 || len(kind) > 8 {
		return nil, line, nil
	}
	f := &Frame{Kind: Kind(kind)}
	if string(enc) != "-" {
		p, err := base64.StdEncoding.DecodeString(string(enc))
		if err != nil {
			return nil, line, nil
		}
		f.Payload = p
	}
	return f, nil, nil
}

// ExitPayload encodes an exit status.
func ExitPayload(code int) []byte { return []byte(strconv.Itoa(code)) }

// ParseExit decodes an Exit frame's status (0-255).
func ParseExit(p []byte) (int, error) {
	n, err := strconv.Atoi(string(p))
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("console: exit status %q is not 0-255", p)
	}
	return n, nil
}

// GuestConfig is what the host hands the guest through fw_cfg
// (GuestConfigName). It is not measured: it names what to run, and the
// broker decides from the measurements whether the guest gets keys.
type GuestConfig struct {
	// Mode is "run" (attest, pull, run), "measure" (quote with a zero
	// nonce and send the evidence back, then power off) or "agent"
	// (attest, then serve the CDH, AA and container ttrpc services on the
	// virtio-serial port AgentPort until the host sends Stop).
	Mode string `json:"mode"`
	// KBS and Image are written as the host sees them; the guest reaches
	// the host's loopback ports in Forward at its own 127.0.0.1.
	KBS     string   `json:"kbs,omitempty"`
	Image   string   `json:"image,omitempty"`
	Cmd     []string `json:"cmd,omitempty"`
	Forward []int    `json:"forward,omitempty"`
	Verbose bool     `json:"verbose,omitempty"`
	// Scratch, when set, names the guest's LUKS2 scratch disk: the image
	// is unpacked there instead of in memory.
	Scratch *Scratch `json:"scratch,omitempty"`
}

// Scratch describes the guest's scratch disk: the virtio-blk device
// whose serial is Serial, opened with the broker resource KeyID
// (kbs:///repo/type/tag).
type Scratch struct {
	KeyID  string `json:"key_id"`
	Serial string `json:"serial"`
	// Integrity formats the disk with dm-integrity sector tags
	// (hmac-sha256) under LUKS2; an existing disk keeps its own.
	Integrity bool `json:"integrity,omitempty"`
}

// ScratchSerial is the virtio-blk serial of the scratch disk.
const ScratchSerial = "coffer-scratch"

// fw_cfg names of the guest's inputs (under /sys/firmware/qemu_fw_cfg/by_name/).
const (
	GuestConfigName = "opt/coffer/config"
	InitDataName    = "opt/coffer/init-data"
)

// MaxGuestConfig bounds the guest config a guest reads.
const MaxGuestConfig = 64 << 10
