package eventlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/coffer-dev/coffer/spec"
)

// The CoCo runtime event log (AAEL, trustee's
// kbs/docs/confidential-containers-eventlog.md): TCG2 crypto-agile
// entries of type EV_EVENT_TAG whose tagged event id is "AAEL" and whose
// data is "DOMAIN OPERATION CONTENT"; each extends its register with the
// digest of the tagged event. guest-components' AA writes it for
// ExtendRuntimeMeasurement (CDH records every PullImage there).
const (
	evEventTag        = 0x6
	aaelTaggedEventID = 0x4141454c
	tcgAlgSHA256      = 0x000b
	// MinAAELPCR: PCRs below belong to the firmware, coffer's init and
	// IMA, whose logs replay them from their own start.
	MinAAELPCR    = 11
	maxAAELDigest = 8
	maxAAELEvent  = 64 << 10
)

// AAELEvent is one replayed runtime measurement. Content is the JSON the
// event carries when it parses as JSON (CDH's PullImage event:
// {"image":…, "digest":…}), else the text, as trustee's parser does.
type AAELEvent struct {
	PCR       int    `json:"pcr"`
	Domain    string `json:"domain"`
	Operation string `json:"operation"`
	Content   any    `json:"content"`
}

// AAEL parses the AAEL raw (entries only, as the AA's file holds them)
// and replays its SHA-256 digests against pcrs (the quoted SHA-256 PCRs).
// Every entry must be an AAEL tagged event for a PCR from MinAAELPCR up,
// its digest must be that of its data, and each PCR the log names must be
// reached from zero by a prefix of its entries (the log is read after the
// quote, so later entries the quote does not cover are dropped). It
// returns the covered events in log order.
func AAEL(raw []byte, pcrs [][]byte) ([]AAELEvent, error) {
	if len(raw) > MaxLogBytes {
		return nil, fmt.Errorf("AAEL of %d bytes, at most %d: %w", len(raw), MaxLogBytes, spec.ErrUnsupported)
	}
	type entry struct {
		ev     AAELEvent
		digest []byte
	}
	var all []entry
	for r := raw; len(r) > 0; {
		if len(all) >= MaxEvents {
			return nil, fmt.Errorf("AAEL of more than %d events: %w", MaxEvents, spec.ErrUnsupported)
		}
		pcr, digest, data, rest, err := aaelEntry(r)
		if err != nil {
			return nil, fmt.Errorf("AAEL entry %d: %v: %w", len(all), err, spec.ErrUnsupported)
		}
		r = rest
		if pcr < MinAAELPCR || pcr >= len(pcrs) {
			return nil, fmt.Errorf("AAEL entry %d extends PCR %d: runtime measurements go to PCRs %d-%d: %w", len(all), pcr, MinAAELPCR, len(pcrs)-1, spec.ErrUnsupported)
		}
		ev, err := parseAAELEvent(data)
		if err != nil {
			return nil, fmt.Errorf("AAEL entry %d: %v: %w", len(all), err, spec.ErrUnsupported)
		}
		ev.PCR = pcr
		all = append(all, entry{ev, digest})
	}
	// Replay each register from zero; keep the shortest covering prefix.
	covered := map[int]int{} // pcr -> number of its entries the quote covers
	cur := map[int][]byte{}
	for _, e := range all {
		if _, done := covered[e.ev.PCR]; done {
			continue
		}
		v := cur[e.ev.PCR]
		if v == nil {
			v = make([]byte, sha256.Size)
		}
		n := sha256.Sum256(append(v, e.digest...))
		cur[e.ev.PCR] = n[:]
		if bytes.Equal(n[:], pcrs[e.ev.PCR]) {
			covered[e.ev.PCR] = 0
		}
	}
	var bad []int
	for p := range cur {
		if _, ok := covered[p]; !ok {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		sort.Ints(bad)
		return nil, fmt.Errorf("PCR %d: the AAEL never replays to the quoted PCR: %w", bad[0], ErrReplay)
	}
	// Second pass: the events up to each register's covering point.
	var out []AAELEvent
	reached := map[int]bool{}
	cur = map[int][]byte{}
	for _, e := range all {
		if reached[e.ev.PCR] {
			continue
		}
		v := cur[e.ev.PCR]
		if v == nil {
			v = make([]byte, sha256.Size)
		}
		n := sha256.Sum256(append(v, e.digest...))
		cur[e.ev.PCR] = n[:]
		out = append(out, e.ev)
		if bytes.Equal(n[:], pcrs[e.ev.PCR]) {
			reached[e.ev.PCR] = true
		}
	}
	return out, nil
}

// aaelEntry parses one TCG2 crypto-agile entry: pcr u32, type u32,
// digest count u32, (alg u16, digest)…, data size u32, data. It returns
// the SHA-256 digest, checked against the tagged event data.
func aaelEntry(b []byte) (pcr int, digest, data, rest []byte, err error) {
	if len(b) < 12 {
		return 0, nil, nil, nil, fmt.Errorf("truncated header")
	}
	pcr = int(binary.LittleEndian.Uint32(b))
	typ := binary.LittleEndian.Uint32(b[4:])
	count := binary.LittleEndian.Uint32(b[8:])
	b = b[12:]
	if typ != evEventTag {
		return 0, nil, nil, nil, fmt.Errorf("event type %#x, want EV_EVENT_TAG", typ)
	}
	if count == 0 || count > maxAAELDigest {
		return 0, nil, nil, nil, fmt.Errorf("%d digests", count)
	}
	for i := uint32(0); i < count; i++ {
		if len(b) < 2 {
			return 0, nil, nil, nil, fmt.Errorf("truncated digest")
		}
		alg := binary.LittleEndian.Uint16(b)
		var n int
		switch alg {
		case tcgAlgSHA256, 0x0012: // SHA-256, SM3-256
			n = 32
		case 0x000c: // SHA-384
			n = 48
		case 0x000d: // SHA-512
			n = 64
		default:
			return 0, nil, nil, nil, fmt.Errorf("digest algorithm %#x", alg)
		}
		if len(b) < 2+n {
			return 0, nil, nil, nil, fmt.Errorf("truncated digest")
		}
		if alg == tcgAlgSHA256 {
			digest = b[2 : 2+n]
		}
		b = b[2+n:]
	}
	if digest == nil {
		return 0, nil, nil, nil, fmt.Errorf("no SHA-256 digest")
	}
	if len(b) < 4 {
		return 0, nil, nil, nil, fmt.Errorf("truncated event size")
	}
	size := binary.LittleEndian.Uint32(b)
	b = b[4:]
	if size > maxAAELEvent || uint64(size) > uint64(len(b)) {
		return 0, nil, nil, nil, fmt.Errorf("event of %d bytes (%d left)", size, len(b))
	}
	data, rest = b[:size], b[size:]
	if d := sha256.Sum256(data); !bytes.Equal(d[:], digest) {
		return 0, nil, nil, nil, fmt.Errorf("digest %s is not that of the event data", hex.EncodeToString(digest))
	}
	return pcr, digest, data, rest, nil
}

// parseAAELEvent reads a tagged event: id u32 ("AAEL"), size u32, then
// "DOMAIN OPERATION CONTENT" (UTF-8).
func parseAAELEvent(tagged []byte) (AAELEvent, error) {
	if len(tagged) < 8 {
		return AAELEvent{}, fmt.Errorf("truncated tagged event")
	}
	if id := binary.LittleEndian.Uint32(tagged); id != aaelTaggedEventID {
		return AAELEvent{}, fmt.Errorf("tagged event id %#x, want AAEL", id)
	}
	n := binary.LittleEndian.Uint32(tagged[4:])
	if uint64(n) != uint64(len(tagged)-8) {
		return AAELEvent{}, fmt.Errorf("tagged event size %d, %d bytes follow", n, len(tagged)-8)
	}
	s := string(tagged[8:])
	if !utf8.ValidString(s) {
		return AAELEvent{}, fmt.Errorf("event text is not UTF-8")
	}
	domain, rest, ok1 := strings.Cut(s, " ")
	op, content, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || domain == "" || op == "" {
		return AAELEvent{}, fmt.Errorf("event text is not \"DOMAIN OPERATION CONTENT\"")
	}
	ev := AAELEvent{Domain: domain, Operation: op, Content: content}
	var v any
	if json.Valid([]byte(content)) && json.Unmarshal([]byte(content), &v) == nil {
		ev.Content = v
	}
	return ev, nil
}
