package ttrpc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/tpm/tpmtest"
)

// A crash at each point of an extension is repaired at the next start:
// the register extended exactly once, the entry in the log once, no
// write-ahead record left; a record matching neither state is refused.
func TestEventLogRecoversFromACrash(t *testing.T) {
	ext := func(cur, d []byte) []byte { s := sha256.Sum256(append(append([]byte(nil), cur...), d...)); return s[:] }
	first, d1 := AAELEntry(23, "d first c")
	second, d2 := AAELEntry(23, "d second c")
	pcr1 := ext(make([]byte, 32), d1)
	pcr2 := ext(pcr1, d2)
	for _, crash := range []string{"before extending", "after extending with a torn entry", "mismatch"} {
		t.Run(crash, func(t *testing.T) {
			sw := tpmtest.StartSwtpm(t)
			regs := TPMRegisters{Addr: sw.Addr}
			ctx := context.Background()
			dir := t.TempDir()
			path := filepath.Join(dir, "eventlog")
			l, err := openEventLog(ctx, path, regs)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.extend(ctx, 23, "d first c"); err != nil {
				t.Fatal(err)
			}
			l.close()
			record := wal{offset: int64(len(first)), pcr: 23, expected: pcr2, event: "d second c"}
			switch crash {
			case "after extending with a torn entry":
				if err := regs.Extend(ctx, 23, d2); err != nil {
					t.Fatal(err)
				}
				f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
				f.Write(second[:7])
				f.Close()
			case "mismatch":
				record.expected = make([]byte, 32)
			}
			if err := atomicfile.Write(filepath.Join(dir, walName), record.marshal()); err != nil {
				t.Fatal(err)
			}
			l, err = openEventLog(ctx, path, regs)
			if crash == "mismatch" {
				if err == nil || !strings.Contains(err.Error(), "neither before nor after") {
					t.Errorf("mismatched record: %v, want a refusal", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l.close()
			if got, _ := os.ReadFile(path); !bytes.Equal(got, append(append([]byte(nil), first...), second...)) {
				t.Errorf("log %x, want both entries once", got)
			}
			if cur, _ := regs.Read(ctx, 23); !bytes.Equal(cur, pcr2) {
				t.Errorf("PCR 23 = %x, want %x (extended once per event)", cur, pcr2)
			}
			if _, err := os.Lstat(filepath.Join(dir, walName)); !os.IsNotExist(err) {
				t.Errorf("write-ahead record left: %v", err)
			}
		})
	}
}
