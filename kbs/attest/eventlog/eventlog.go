// Package eventlog replays a measured boot's logs against quoted PCRs and
// turns what replays into claims: the firmware's TCG PC Client event log
// (PCRs 0-7, parsed and replayed with github.com/google/go-eventlog), the
// kernel's IMA log (PCR 10, ima-ng and ima-sig templates) and the
// measurements coffer's guest init made itself (PCRs 8 and 9). A log that
// does not replay to the quoted value is refused, naming the PCR; a log
// that replays is only as good as the quote, which the caller checked.
//
// Every input is hostile: sizes and counts are bounded before anything is
// allocated from them.
package eventlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"

	"github.com/coffer-dev/coffer/spec"
)

// Bounds on the logs.
const (
	MaxLogBytes  = 1 << 20 // one log
	MaxEvents    = 4096    // events in one log
	MaxEventData = 64      // bytes of event data a claim keeps
	MaxIMAName   = 4096    // an IMA file name
	MaxIMAData   = 64 << 10
)

// The PCRs each log covers.
const (
	FirmwarePCRs = 8  // PCRs 0-7: the firmware (SeaBIOS, OVMF)
	InitDataPCR  = 8  // coffer's init: init-data (CoCo's convention)
	CmdlinePCR   = 9  // coffer's init: the kernel command line
	IMAPCR       = 10 // the kernel's IMA
)

// ErrReplay marks a log that does not replay to its quoted PCR. It
// wraps spec.ErrIntegrity.
var ErrReplay = fmt.Errorf("event log does not replay: %w", spec.ErrIntegrity)

// Event is one replayed measurement.
type Event struct {
	PCR    int    `json:"pcr"`
	Type   string `json:"type"`
	Digest string `json:"digest"`         // hex SHA-256 extended into the PCR
	Data   string `json:"data,omitempty"` // printable event data, or hex of its first MaxEventData bytes
}

// Firmware parses the TCG PC Client (crypto-agile) event log raw and
// replays its SHA-256 digests against pcrs (the quoted SHA-256 PCRs,
// indexed by number). Every event must be for PCRs 0-7, every such PCR
// that is not zero must have events, and each must replay to its quoted
// value.
func Firmware(raw []byte, pcrs [][]byte) ([]Event, error) {
	if len(raw) > MaxLogBytes {
		return nil, fmt.Errorf("firmware event log of %d bytes, at most %d: %w", len(raw), MaxLogBytes, spec.ErrUnsupported)
	}
	if len(pcrs) < FirmwarePCRs {
		return nil, fmt.Errorf("firmware event log: %d PCRs given, want %d: %w", len(pcrs), FirmwarePCRs, spec.ErrUnsupported)
	}
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{})
	if err != nil {
		return nil, fmt.Errorf("firmware event log: %v: %w", err, spec.ErrUnsupported)
	}
	all := el.Events(register.HashSHA256)
	if len(all) > MaxEvents {
		return nil, fmt.Errorf("firmware event log: %d events, at most %d: %w", len(all), MaxEvents, spec.ErrUnsupported)
	}
	seen := make([]bool, FirmwarePCRs)
	for _, e := range all {
		if e.Index < 0 || e.Index >= FirmwarePCRs {
			return nil, fmt.Errorf("PCR %d: the firmware event log measures into a PCR outside 0-7: %w", e.Index, ErrReplay)
		}
		seen[e.Index] = true
	}
	var mrs []register.MR
	for i := range FirmwarePCRs {
		if !seen[i] && !bytes.Equal(pcrs[i], make([]byte, sha256.Size)) {
			return nil, fmt.Errorf("PCR %d: the firmware event log has no events for it, yet it is not zero: %w", i, ErrReplay)
		}
		mrs = append(mrs, register.PCR{Index: i, Digest: pcrs[i], DigestAlg: register.HashSHA256.CryptoHash()})
	}
	events, err := el.Verify(mrs)
	if err != nil {
		var re tcg.ReplayError
		if errors.As(err, &re) && len(re.InvalidMRs) > 0 {
			return nil, fmt.Errorf("PCR %d: the firmware event log replays to another value than the quoted PCR: %w", re.InvalidMRs[0], ErrReplay)
		}
		return nil, fmt.Errorf("firmware event log: %v: %w", err, ErrReplay)
	}
	out := make([]Event, 0, len(events))
	for _, e := range events {
		out = append(out, Event{PCR: e.Index, Type: e.Type.String(), Digest: hex.EncodeToString(e.Digest), Data: printable(e.Data)})
	}
	return out, nil
}

// printable returns data as text when it is printable ASCII, else hex of
// its first MaxEventData bytes.
func printable(b []byte) string {
	s := strings.TrimRight(string(b), "\x00")
	ok := len(s) <= MaxEventData
	for _, r := range s {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	if len(b) > MaxEventData {
		b = b[:MaxEventData]
	}
	return hex.EncodeToString(b)
}

// IMAEntry is one replayed IMA measurement.
type IMAEntry struct {
	Template string `json:"template"`
	Name     string `json:"name"`
	Algo     string `json:"algo"`   // the file digest's algorithm (sha256)
	Digest   string `json:"digest"` // hex file digest
}

// IMA parses the kernel's binary IMA log (binary_runtime_measurements,
// little-endian, templates ima-ng and ima-sig) and replays it into PCR
// 10's SHA-256 bank: each entry extends SHA-256 of its template data
// (all 0xff for a violation). The log is read after the quote, so it may
// hold entries the quote does not cover: the shortest prefix that
// replays to pcr10 is what is returned. An empty log replays to zero.
func IMA(raw, pcr10 []byte) ([]IMAEntry, error) {
	if len(raw) > MaxLogBytes {
		return nil, fmt.Errorf("IMA log of %d bytes, at most %d: %w", len(raw), MaxLogBytes, spec.ErrUnsupported)
	}
	cur := make([]byte, sha256.Size)
	if bytes.Equal(cur, pcr10) {
		return nil, nil
	}
	var out []IMAEntry
	r := raw
	for len(r) > 0 {
		if len(out) >= MaxEvents {
			break
		}
		e, data, rest, err := imaEntry(r)
		if err != nil {
			return nil, fmt.Errorf("IMA log entry %d: %v: %w", len(out), err, spec.ErrUnsupported)
		}
		r = rest
		var h [sha256.Size]byte
		if e.Template == "violation" {
			h = [sha256.Size]byte(bytes.Repeat([]byte{0xff}, sha256.Size))
		} else {
			h = sha256.Sum256(data)
		}
		next := sha256.Sum256(append(cur, h[:]...))
		cur = next[:]
		out = append(out, e)
		if bytes.Equal(cur, pcr10) {
			return out, nil
		}
	}
	return nil, fmt.Errorf("PCR %d: the IMA log (%d entries) never replays to the quoted PCR: %w", IMAPCR, len(out), ErrReplay)
}

// imaEntry parses one entry: pcr u32, SHA-1 template digest, template
// name, template data (fields, each u32 length + bytes).
func imaEntry(b []byte) (IMAEntry, []byte, []byte, error) {
	var e IMAEntry
	if len(b) < 4+20+4 {
		return e, nil, nil, errors.New("truncated")
	}
	pcr := binary.LittleEndian.Uint32(b)
	if pcr != IMAPCR {
		return e, nil, nil, fmt.Errorf("PCR %d, want %d", pcr, IMAPCR)
	}
	zero := bytes.Equal(b[4:24], make([]byte, 20))
	n := binary.LittleEndian.Uint32(b[24:])
	b = b[28:]
	if n == 0 || n > 255 || int(n) > len(b) {
		return e, nil, nil, errors.New("bad template name length")
	}
	e.Template = string(b[:n])
	b = b[n:]
	if e.Template != "ima-ng" && e.Template != "ima-sig" {
		return e, nil, nil, fmt.Errorf("template %q, want ima-ng or ima-sig", e.Template)
	}
	if len(b) < 4 {
		return e, nil, nil, errors.New("truncated")
	}
	dl := binary.LittleEndian.Uint32(b)
	b = b[4:]
	if dl > MaxIMAData || int(dl) > len(b) {
		return e, nil, nil, errors.New("bad template data length")
	}
	data, rest := b[:dl], b[dl:]
	fields, err := imaFields(data)
	if err != nil {
		return e, nil, nil, err
	}
	if len(fields) < 2 {
		return e, nil, nil, errors.New("fewer than two template fields")
	}
	algo, digest, ok := bytes.Cut(fields[0], []byte{0})
	if !ok || !bytes.HasSuffix(algo, []byte(":")) {
		return e, nil, nil, errors.New("d-ng field without an algorithm")
	}
	e.Algo, e.Digest = strings.TrimSuffix(string(algo), ":"), hex.EncodeToString(digest)
	name := bytes.TrimRight(fields[1], "\x00")
	if len(name) > MaxIMAName {
		return e, nil, nil, errors.New("file name too long")
	}
	e.Name = string(name)
	if zero {
		e.Template = "violation"
	}
	return e, data, rest, nil
}

func imaFields(d []byte) ([][]byte, error) {
	var out [][]byte
	for len(d) > 0 {
		if len(d) < 4 || len(out) >= 8 {
			return nil, errors.New("malformed template data")
		}
		n := binary.LittleEndian.Uint32(d)
		if int(n) > len(d)-4 {
			return nil, errors.New("template field overruns its data")
		}
		out = append(out, d[4:4+n])
		d = d[4+n:]
	}
	return out, nil
}

// InitEvent is one measurement of coffer's guest init, as the evidence
// carries it (tpm.InitEvent).
type InitEvent struct {
	PCR    int    `json:"pcr"`
	Event  string `json:"event"`
	Digest string `json:"digest"`
	Data   string `json:"data,omitempty"`
}

// Init replays coffer's init measurements against PCRs 8 and 9 (each
// from zero, in order). Each of those PCRs must replay exactly; events
// for other PCRs are refused. A cmdline event's digest must be SHA-256
// of its data.
func Init(events []InitEvent, pcrs [][]byte) error {
	if len(events) > 16 {
		return fmt.Errorf("init log: %d events, at most 16: %w", len(events), spec.ErrUnsupported)
	}
	if len(pcrs) <= CmdlinePCR {
		return fmt.Errorf("init log: %d PCRs given: %w", len(pcrs), spec.ErrUnsupported)
	}
	cur := map[int][]byte{InitDataPCR: make([]byte, sha256.Size), CmdlinePCR: make([]byte, sha256.Size)}
	for i, e := range events {
		v, ok := cur[e.PCR]
		if !ok {
			return fmt.Errorf("PCR %d: init log event %d (%s) is for a PCR coffer's init does not use: %w", e.PCR, i, e.Event, ErrReplay)
		}
		d, err := hex.DecodeString(e.Digest)
		if err != nil || len(d) != sha256.Size {
			return fmt.Errorf("init log event %d: digest is not hex SHA-256: %w", i, spec.ErrUnsupported)
		}
		if e.Event == "cmdline" {
			if s := sha256.Sum256([]byte(e.Data)); !bytes.Equal(s[:], d) {
				return fmt.Errorf("PCR %d: the cmdline event's digest is not SHA-256 of its text: %w", e.PCR, ErrReplay)
			}
		}
		n := sha256.Sum256(append(v, d...))
		cur[e.PCR] = n[:]
	}
	for _, p := range []int{InitDataPCR, CmdlinePCR} {
		if !bytes.Equal(cur[p], pcrs[p]) {
			return fmt.Errorf("PCR %d: coffer's init log replays to another value than the quoted PCR: %w", p, ErrReplay)
		}
	}
	return nil
}
