package ttrpc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/coffer-dev/coffer/internal/atomicfile"

	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/tpm"
)

// Registers are a TEE's runtime measurement registers (guest-components'
// "rtmr extender"): a TPM's PCRs, a TDX guest's RTMRs.
type Registers interface {
	// Extend extends register index with digest (of the bank's size).
	Extend(ctx context.Context, index uint64, digest []byte) error
	// Read returns register index's value.
	Read(ctx context.Context, index uint64) ([]byte, error)
}

// RegistersFor returns the runtime registers of an attester: a TPM's SHA-256
// PCRs for the tpm attester, nil (runtime measurement not supported) for
// the others, the sample TEE included.
func RegistersFor(att evidence.Attester) Registers {
	if t, ok := att.(*evidence.TPM); ok {
		return TPMRegisters{Addr: t.Addr()}
	}
	return nil
}

// TPMRegisters extends the SHA-256 PCRs of the TPM at Addr (a device path
// or tcp://host:port), opening it for each extension.
type TPMRegisters struct{ Addr string }

// Extend implements Registers.
func (r TPMRegisters) Extend(ctx context.Context, index uint64, digest []byte) error {
	if index >= tpm.NumPCRs {
		return badInput("PCR %d out of range 0-%d", index, tpm.NumPCRs-1)
	}
	t, err := tpm.Open(ctx, r.Addr)
	if err != nil {
		return err
	}
	defer t.Close()
	return t.ExtendPCR(ctx, int(index), digest)
}

// Read implements Registers.
func (r TPMRegisters) Read(ctx context.Context, index uint64) ([]byte, error) {
	if index >= tpm.NumPCRs {
		return nil, badInput("PCR %d out of range 0-%d", index, tpm.NumPCRs-1)
	}
	t, err := tpm.Open(ctx, r.Addr)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	pcrs, err := t.ReadPCRs(ctx)
	if err != nil {
		return nil, err
	}
	return pcrs[index], nil
}

// The CoCo AAEL event in a TCG2 crypto-agile log entry, as
// guest-components' eventlog/tcg2.rs writes it and trustee replays it.
const (
	evEventTag   = 0x6        // EV_EVENT_TAG
	aaelTaggedID = 0x4141454c // "AAEL"
	tcgAlgSHA256 = 0x000B
)

// AAELEntry returns the TCG2 event-log entry recording event ("domain
// operation content") against register pcr, and the SHA-256 digest the
// register is extended with (the digest of the tagged event data).
func AAELEntry(pcr uint32, event string) (entry, digest []byte) {
	tagged := binary.LittleEndian.AppendUint32(nil, aaelTaggedID)
	tagged = binary.LittleEndian.AppendUint32(tagged, uint32(len(event)))
	tagged = append(tagged, event...)
	d := sha256.Sum256(tagged)
	e := binary.LittleEndian.AppendUint32(nil, pcr)
	e = binary.LittleEndian.AppendUint32(e, evEventTag)
	e = binary.LittleEndian.AppendUint32(e, 1) // digest count
	e = binary.LittleEndian.AppendUint16(e, tcgAlgSHA256)
	e = append(e, d[:]...)
	e = binary.LittleEndian.AppendUint32(e, uint32(len(tagged)))
	e = append(e, tagged...)
	return e, d[:]
}

// eventLog appends AAEL entries to a file and extends registers. Like
// guest-components' AA it keeps a write-ahead record (walName beside the
// log) while an extension is in flight, so that a crash between extending
// the register and writing the entry is repaired at the next start: the
// entry is written, and the register extended only if it was not yet.
type eventLog struct {
	f    *os.File
	wal  string
	regs Registers // nil: enabled but not supported by the TEE
}

// walName is the write-ahead record's name in the log's directory.
const walName = ".wal_event_entry"

// maxWAL bounds the write-ahead record read at start-up.
const maxWAL = 8 + 4 + sha256.Size + 3*maxEventField + 2

func openEventLog(ctx context.Context, path string, regs Registers) (*eventLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	l := &eventLog{f: f, wal: filepath.Join(filepath.Dir(path), walName), regs: regs}
	if err := l.recover(ctx); err != nil {
		f.Close()
		return nil, fmt.Errorf("event log %s: %w", path, err)
	}
	return l, nil
}

// wal is the write-ahead record: where the entry goes, its register, the
// register's value once extended, and the event.
type wal struct {
	offset   int64
	pcr      uint32
	expected []byte
	event    string
}

func (w wal) marshal() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(w.offset))
	b = binary.BigEndian.AppendUint32(b, w.pcr)
	b = append(b, w.expected...)
	return append(b, w.event...)
}

func parseWAL(b []byte) (wal, error) {
	if len(b) < 12+sha256.Size || len(b) > maxWAL {
		return wal{}, fmt.Errorf("write-ahead record of %d bytes is malformed", len(b))
	}
	w := wal{offset: int64(binary.BigEndian.Uint64(b)), pcr: binary.BigEndian.Uint32(b[8:]), expected: b[12 : 12+sha256.Size], event: string(b[12+sha256.Size:])}
	if w.offset < 0 {
		return wal{}, fmt.Errorf("write-ahead record offset %d", w.offset)
	}
	return w, nil
}

// recover completes an extension a crash interrupted.
func (l *eventLog) recover(ctx context.Context) error {
	b, err := readBounded(l.wal, maxWAL)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the write-ahead record %s: %w", l.wal, err)
	}
	w, err := parseWAL(b)
	if err != nil {
		return fmt.Errorf("%s: %w (remove it only after checking the register by hand)", l.wal, err)
	}
	entry, digest := AAELEntry(w.pcr, w.event)
	cur, err := l.regs.Read(ctx, uint64(w.pcr))
	if err != nil {
		return err
	}
	if !bytes.Equal(cur, w.expected) {
		next := sha256.Sum256(append(append([]byte(nil), cur...), digest...))
		if !bytes.Equal(next[:], w.expected) {
			return fmt.Errorf("register %d is neither before nor after the interrupted event: another process extended it, or the log is corrupt", w.pcr)
		}
		if err := l.regs.Extend(ctx, uint64(w.pcr), digest); err != nil {
			return err
		}
	}
	if err := l.writeAt(w.offset, entry); err != nil {
		return err
	}
	return os.Remove(l.wal)
}

// writeAt writes entry at offset (the log's end when the extension began),
// dropping whatever a crash left after it, and syncs.
func (l *eventLog) writeAt(offset int64, entry []byte) error {
	if err := l.f.Truncate(offset); err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	if _, err := l.f.WriteAt(entry, offset); err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	return nil
}

// extend records event against register pcr: write-ahead record (synced),
// register extension, log entry (synced), record removed.
func (l *eventLog) extend(ctx context.Context, pcr uint64, event string) error {
	if pcr > 0xffffffff {
		return badInput("register %d out of range", pcr)
	}
	entry, digest := AAELEntry(uint32(pcr), event)
	cur, err := l.regs.Read(ctx, pcr)
	if err != nil {
		return err
	}
	expected := sha256.Sum256(append(append([]byte(nil), cur...), digest...))
	end, err := l.f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	if err := atomicfile.Write(l.wal, wal{offset: end, pcr: uint32(pcr), expected: expected[:], event: event}.marshal()); err != nil {
		return fmt.Errorf("event log write-ahead record: %w", err)
	}
	if err := l.regs.Extend(ctx, pcr, digest); err != nil {
		os.Remove(l.wal) // nothing happened
		return err
	}
	if err := l.writeAt(end, entry); err != nil {
		return err // the record stays: the next start completes the entry
	}
	return os.Remove(l.wal)
}

func (l *eventLog) close() error {
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}
