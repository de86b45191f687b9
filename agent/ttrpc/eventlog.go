package ttrpc

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/tpm"
)

// Registers are a TEE's runtime measurement registers (guest-components'
// "rtmr extender"): a TPM's PCRs, a TDX guest's RTMRs.
type Registers interface {
	// Extend extends register index with digest (of the bank's size).
	Extend(ctx context.Context, index uint64, digest []byte) error
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

// eventLog appends AAEL entries to a file and extends registers.
type eventLog struct {
	f    *os.File
	regs Registers // nil: enabled but not supported by the TEE
}

func openEventLog(_ context.Context, path string, regs Registers) (*eventLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	return &eventLog{f: f, regs: regs}, nil
}

// extend extends the register first and then appends the entry (synced):
// a crash between the two leaves the register ahead of the log, which a
// replaying verifier refuses rather than accepts.
func (l *eventLog) extend(ctx context.Context, pcr uint64, event string) error {
	entry, digest := AAELEntry(uint32(pcr), event)
	if err := l.regs.Extend(ctx, pcr, digest); err != nil {
		return err
	}
	if _, err := l.f.Write(entry); err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	return nil
}

func (l *eventLog) close() error {
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}
