package eventlog_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/kbs/attest/eventlog"
	"github.com/coffer-dev/coffer/spec"
)

// recorded is the evidence of a real guest boot (coffer vm measure under
// QEMU TCG, SeaBIOS, swtpm, Debian's 6.1 kernel), recorded by
// COFFER_VM_RECORD=… go test ./vm -run TestGuest.
type recorded struct {
	Quote struct {
		PCRs []string `json:"pcrs"`
	} `json:"tpm_quote"`
	EventLog string               `json:"event_log"`
	IMALog   string               `json:"ima_log"`
	InitLog  []eventlog.InitEvent `json:"init_log"`
}

func load(t testing.TB) (fw, ima []byte, init []eventlog.InitEvent, pcrs [][]byte) {
	b, err := os.ReadFile("../testdata/vm_evidence.json")
	if err != nil {
		t.Fatal(err)
	}
	var r recorded
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	for _, p := range r.Quote.PCRs {
		v, _ := hex.DecodeString(p)
		pcrs = append(pcrs, v)
	}
	fw, _ = base64.StdEncoding.DecodeString(r.EventLog)
	ima, _ = base64.StdEncoding.DecodeString(r.IMALog)
	return fw, ima, r.InitLog, pcrs
}

func TestFirmwareReplays(t *testing.T) {
	fw, _, _, pcrs := load(t)
	events, err := eventlog.Firmware(fw, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	var sep, rom int
	for _, e := range events {
		if e.Type == "EV_SEPARATOR" || strings.Contains(e.Type, "Separator") {
			sep++
		}
		if e.PCR == 2 {
			rom++
		}
	}
	if sep != 8 || rom == 0 {
		t.Fatalf("got %d separators and %d PCR 2 events, want 8 and some (SeaBIOS): %+v", sep, rom, events)
	}
	// Any changed PCR no longer replays, and the error names it.
	for i := range 8 {
		bad := make([][]byte, len(pcrs))
		copy(bad, pcrs)
		bad[i] = bytes.Repeat([]byte{1}, 32)
		_, err := eventlog.Firmware(fw, bad)
		if !errors.Is(err, eventlog.ErrReplay) || !strings.Contains(err.Error(), "PCR ") {
			t.Errorf("PCR %d changed: %v, want ErrReplay naming it", i, err)
		}
	}
	// A flipped byte anywhere in the log: refused (replay or parse), never accepted.
	for i := 0; i < len(fw); i += 7 {
		bad := bytes.Clone(fw)
		bad[i] ^= 0x80
		if _, err := eventlog.Firmware(bad, pcrs); err == nil && !sameDigests(t, bad, fw, pcrs) {
			t.Errorf("byte %d flipped: accepted", i)
		}
	}
}

// sameDigests reports whether a flipped log still carries the events'
// digests unchanged (a flip in event data that is not hashed, or in the
// SHA-1 digests): then replaying is right to pass.
func sameDigests(t *testing.T, a, b []byte, pcrs [][]byte) bool {
	ea, err1 := eventlog.Firmware(a, pcrs)
	eb, err2 := eventlog.Firmware(b, pcrs)
	if err1 != nil || err2 != nil || len(ea) != len(eb) {
		return false
	}
	for i := range ea {
		if ea[i].Digest != eb[i].Digest || ea[i].PCR != eb[i].PCR {
			return false
		}
	}
	return true
}

func TestIMAReplays(t *testing.T) {
	_, ima, _, pcrs := load(t)
	entries, err := eventlog.IMA(ima, pcrs[eventlog.IMAPCR])
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 2 || entries[0].Name != "boot_aggregate" {
		t.Fatalf("entries %+v, want boot_aggregate first", entries)
	}
	var init bool
	for _, e := range entries {
		init = init || (e.Name == "/init" && e.Algo == "sha256" && len(e.Digest) == 64)
	}
	if !init {
		t.Fatalf("no sha256 measurement of /init among %+v", entries)
	}
	if _, err := eventlog.IMA(ima, bytes.Repeat([]byte{2}, 32)); !errors.Is(err, eventlog.ErrReplay) || !strings.Contains(err.Error(), "PCR 10") {
		t.Fatalf("another PCR 10: %v, want ErrReplay naming PCR 10", err)
	}
	if _, err := eventlog.IMA(nil, pcrs[eventlog.IMAPCR]); !errors.Is(err, eventlog.ErrReplay) {
		t.Fatalf("an empty log for a non-zero PCR 10: %v", err)
	}
	if e, err := eventlog.IMA(nil, make([]byte, 32)); err != nil || e != nil {
		t.Fatalf("no IMA, zero PCR: %v %v", e, err)
	}
}

// imaEntry encodes an ima-ng entry as the kernel does (independently of
// the parser).
func imaEntry(name string, digest []byte) ([]byte, []byte) {
	field := func(b []byte) []byte { return append(binary.LittleEndian.AppendUint32(nil, uint32(len(b))), b...) }
	data := append(field(append([]byte("sha256:\x00"), digest...)), field(append([]byte(name), 0))...)
	e := binary.LittleEndian.AppendUint32(nil, 10)
	e = append(e, bytes.Repeat([]byte{9}, 20)...)
	e = append(binary.LittleEndian.AppendUint32(e, 6), "ima-ng"...)
	e = append(binary.LittleEndian.AppendUint32(e, uint32(len(data))), data...)
	return e, data
}

func TestIMAPrefix(t *testing.T) {
	d := sha256.Sum256([]byte("x"))
	e1, t1 := imaEntry("/a", d[:])
	e2, _ := imaEntry("/b", d[:])
	h := sha256.Sum256(t1)
	pcr := sha256.Sum256(append(make([]byte, 32), h[:]...))
	got, err := eventlog.IMA(append(e1, e2...), pcr[:]) // /b came after the quote
	if err != nil || len(got) != 1 || got[0].Name != "/a" || got[0].Digest != hex.EncodeToString(d[:]) {
		t.Fatalf("got %+v, %v; want only /a", got, err)
	}
	if _, err := eventlog.IMA(e1[:len(e1)-3], pcr[:]); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("truncated entry: %v", err)
	}
}

func TestInitReplays(t *testing.T) {
	_, _, init, pcrs := load(t)
	if err := eventlog.Init(init, pcrs); err != nil {
		t.Fatal(err)
	}
	if len(init) != 2 || init[0].PCR != 8 || init[1].Event != "cmdline" {
		t.Fatalf("init log %+v, want init-data then cmdline", init)
	}
	bad := append([]eventlog.InitEvent(nil), init...)
	bad[1].Data += " quiet" // another command line than measured
	if err := eventlog.Init(bad, pcrs); !errors.Is(err, eventlog.ErrReplay) || !strings.Contains(err.Error(), "PCR 9") {
		t.Fatalf("changed cmdline text: %v", err)
	}
	if err := eventlog.Init(init[1:], pcrs); !errors.Is(err, eventlog.ErrReplay) || !strings.Contains(err.Error(), "PCR 8") {
		t.Fatalf("init-data event dropped: %v", err)
	}
}

// FuzzLogs feeds arbitrary bytes to the three parsers with the recorded
// PCRs: no panic, bounded time, and anything accepted replays (a second
// parse agrees).
func FuzzLogs(f *testing.F) {
	fw, ima, init, pcrs := load(f)
	ij, _ := json.Marshal(init)
	f.Add(fw, ima, ij)
	f.Add(fw[:len(fw)/2], ima[:len(ima)/3], []byte(`[]`))
	f.Fuzz(func(t *testing.T, fwIn, imaIn, initIn []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		if e, err := eventlog.Firmware(fwIn, pcrs); err == nil {
			if e2, err := eventlog.Firmware(fwIn, pcrs); err != nil || len(e2) != len(e) {
				t.Fatalf("firmware: accepted once, then %v", err)
			}
		}
		if e, err := eventlog.IMA(imaIn, pcrs[eventlog.IMAPCR]); err == nil && len(e) == 0 {
			t.Fatal("IMA: a non-zero PCR 10 replayed from no entries")
		}
		var ev []eventlog.InitEvent
		if json.Unmarshal(initIn, &ev) == nil {
			eventlog.Init(ev, pcrs)
		}
	})
}
