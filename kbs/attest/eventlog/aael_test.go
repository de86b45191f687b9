package eventlog

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/spec"
)

// aaelEntryFor builds an entry as guest-components' AA writes it (and
// coffer's agent/ttrpc.AAELEntry, which this package must not import).
func aaelEntryFor(pcr uint32, event string) (entry, digest []byte) {
	tagged := binary.LittleEndian.AppendUint32(nil, aaelTaggedEventID)
	tagged = binary.LittleEndian.AppendUint32(tagged, uint32(len(event)))
	tagged = append(tagged, event...)
	d := sha256.Sum256(tagged)
	e := binary.LittleEndian.AppendUint32(nil, pcr)
	e = binary.LittleEndian.AppendUint32(e, evEventTag)
	e = binary.LittleEndian.AppendUint32(e, 1)
	e = binary.LittleEndian.AppendUint16(e, tcgAlgSHA256)
	e = append(e, d[:]...)
	e = binary.LittleEndian.AppendUint32(e, uint32(len(tagged)))
	return append(e, tagged...), d[:]
}

func extend(pcr, d []byte) []byte {
	n := sha256.Sum256(append(append([]byte{}, pcr...), d...))
	return n[:]
}

func zeroPCRs() [][]byte {
	p := make([][]byte, 24)
	for i := range p {
		p[i] = make([]byte, 32)
	}
	return p
}

func TestAAEL(t *testing.T) {
	e1, d1 := aaelEntryFor(23, `github.com/confidential-containers PullImage {"image":"a", "digest":"sha256:01"}`)
	e2, d2 := aaelEntryFor(16, "coco.com op plain text content")
	e3, _ := aaelEntryFor(23, `github.com/confidential-containers PullImage {"image":"b", "digest":"sha256:02"}`)
	pcrs := zeroPCRs()
	pcrs[23] = extend(pcrs[23], d1)
	pcrs[16] = extend(pcrs[16], d2)
	log := append(append(append([]byte{}, e1...), e2...), e3...)
	// e3 came after the quote: dropped, the rest replays.
	evs, err := AAEL(log, pcrs)
	if err != nil || len(evs) != 2 {
		t.Fatalf("AAEL = %+v, %v", evs, err)
	}
	if c, ok := evs[0].Content.(map[string]any); !ok || c["image"] != "a" || evs[0].Operation != "PullImage" || evs[0].PCR != 23 {
		t.Errorf("event 0 = %+v", evs[0])
	}
	if evs[1].Content != "plain text content" || evs[1].Domain != "coco.com" {
		t.Errorf("event 1 = %+v", evs[1])
	}
	// The quote covers a register the log cannot reach: refused.
	pcrs[23] = extend(pcrs[23], []byte("something else"))
	if _, err := AAEL(log, pcrs); !errors.Is(err, ErrReplay) || !strings.Contains(err.Error(), "PCR 23") {
		t.Errorf("unreachable PCR 23: %v", err)
	}
	// An entry for a boot PCR, a digest that is not the data's, another
	// event type: refused before any replay.
	low, _ := aaelEntryFor(8, "d o c")
	bad := append([]byte{}, e1...)
	bad[len(bad)-1] ^= 1
	other := append([]byte{}, e1...)
	binary.LittleEndian.PutUint32(other[4:], 0x80000001)
	for name, in := range map[string][]byte{"boot PCR": low, "digest": bad, "type": other, "truncated": e1[:len(e1)-3]} {
		if _, err := AAEL(in, zeroPCRs()); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%s: %v, want ErrUnsupported", name, err)
		}
	}
	if evs, err := AAEL(nil, zeroPCRs()); err != nil || len(evs) != 0 {
		t.Errorf("empty log: %v, %v", evs, err)
	}
}

// FuzzAAEL: the log comes from the guest. No panic, bounded time, and
// whatever is accepted replays (the oracle recomputes the registers).
func FuzzAAEL(f *testing.F) {
	e1, d1 := aaelEntryFor(23, `d PullImage {"image":"a"}`)
	pcrs := zeroPCRs()
	pcrs[23] = extend(pcrs[23], d1)
	f.Add(e1)
	f.Add(append(append([]byte{}, e1...), e1...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		start := time.Now()
		evs, err := AAEL(in, pcrs)
		if err == nil && len(evs) > 0 && evs[len(evs)-1].PCR != 23 {
			t.Fatalf("accepted an event for PCR %d", evs[len(evs)-1].PCR)
		}
		if time.Since(start) > time.Second {
			t.Fatalf("one input took %v", time.Since(start))
		}
	})
}
