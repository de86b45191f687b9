// Package hostile builds the malformed and oversized inputs that coffer's
// regression tests and `make attack` throw at it: tar entries archive/tar
// cannot write, and OCI layouts whose manifests lie. Standard library only.
package hostile

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// MTime is the modification time of every entry built here.
var MTime = time.Date(2020, 2, 3, 4, 5, 6, 0, time.UTC)

// numeric encodes v into a 12-byte tar numeric field: octal when it fits,
// GNU base-256 otherwise (as GNU tar does for huge sizes).
func numeric(field []byte, v int64) {
	if v < 1<<33 {
		copy(field, fmt.Sprintf("%011o\x00", v))
		return
	}
	clear(field)
	field[0] = 0x80
	for i := len(field) - 1; i > 0 && v > 0; i-- {
		field[i] = byte(v)
		v >>= 8
	}
}

func checksum(h []byte) {
	copy(h[148:], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
}

// RawHeader is a ustar header block for name with typeflag typ and size bytes of data.
func RawHeader(name string, typ byte, size int) []byte {
	h := make([]byte, 512)
	copy(h[0:], name)
	copy(h[100:], "0000644\x00")
	copy(h[108:], "0000000\x00")
	copy(h[116:], "0000000\x00")
	numeric(h[124:136], int64(size))
	numeric(h[136:148], MTime.Unix())
	h[156] = typ
	copy(h[257:], "ustar\x0000")
	checksum(h)
	return h
}

// Pad512 pads b with zeros to a multiple of the tar block size.
func Pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// GNUSparseTar is a tar stream holding one old-GNU sparse entry (typeflag
// 'S', which archive/tar reads but cannot write) of apparent size realSize,
// with data at offset off and holes elsewhere, then the end-of-archive
// marker. GNUSparseTar("bomb", 1<<60, 1<<60-4, "boom") is a 2 KiB layer
// declaring a 1 EiB file.
func GNUSparseTar(name string, realSize, off int64, data string) []byte {
	h := make([]byte, 512)
	copy(h[0:], name)
	copy(h[100:], "0000644\x00")
	copy(h[108:], "0000000\x00")
	copy(h[116:], "0000000\x00")
	numeric(h[124:136], int64(len(data)))
	numeric(h[136:148], MTime.Unix())
	h[156] = 'S'
	copy(h[257:], "ustar  \x00")
	numeric(h[386:398], off)              // sparse[0].offset
	numeric(h[398:410], int64(len(data))) // sparse[0].numbytes
	numeric(h[483:495], realSize)         // realsize
	checksum(h)
	b := append(h, Pad512([]byte(data))...)
	return append(b, make([]byte, 1024)...)
}

// paxRecord encodes one PAX record, whose leading length counts itself.
func paxRecord(k, v string) string {
	rec := " " + k + "=" + v + "\n"
	n := len(rec)
	for n != len(rec)+len(strconv.Itoa(n)) {
		n = len(rec) + len(strconv.Itoa(n))
	}
	return strconv.Itoa(n) + rec
}

// PAXSparseTar is GNUSparseTar's entry in the PAX GNU sparse 1.0 form,
// the one GNU tar writes today.
func PAXSparseTar(name string, realSize, off int64, data string) []byte {
	recs := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", name) + paxRecord("GNU.sparse.realsize", strconv.FormatInt(realSize, 10))
	payload := append(Pad512(fmt.Appendf(nil, "1\n%d\n%d\n", off, len(data))), data...)
	var b []byte
	b = append(b, RawHeader("PaxHeaders/"+name, 'x', len(recs))...)
	b = append(b, Pad512([]byte(recs))...)
	b = append(b, RawHeader("GNUSparseFile.0/"+name, '0', len(payload))...)
	b = append(b, Pad512(payload)...)
	return append(b, make([]byte, 1024)...)
}

// DeclareLayerSize rewrites the first manifest of the OCI layout at dir so
// that its first layer claims size bytes, as a hostile registry would; the
// index is updated to the new manifest digest.
func DeclareLayerSize(dir string, size int64) error {
	blob := func(d string) string {
		return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
	}
	var idx map[string]json.RawMessage
	if err := readJSON(filepath.Join(dir, "index.json"), &idx); err != nil {
		return err
	}
	var descs []map[string]any
	if err := json.Unmarshal(idx["manifests"], &descs); err != nil || len(descs) == 0 {
		return fmt.Errorf("index.json of %s: no manifests (%v)", dir, err)
	}
	var man map[string]json.RawMessage
	if err := readJSON(blob(descs[0]["digest"].(string)), &man); err != nil {
		return err
	}
	var layers []map[string]any
	if err := json.Unmarshal(man["layers"], &layers); err != nil || len(layers) == 0 {
		return fmt.Errorf("manifest of %s: no layers (%v)", dir, err)
	}
	layers[0]["size"] = size
	man["layers"], _ = json.Marshal(layers)
	raw, _ := json.Marshal(man)
	d := fmt.Sprintf("sha256:%x", sha256.Sum256(raw))
	if err := os.WriteFile(blob(d), raw, 0o644); err != nil {
		return err
	}
	descs[0]["digest"], descs[0]["size"] = d, len(raw)
	idx["manifests"], _ = json.Marshal(descs)
	raw, _ = json.Marshal(idx)
	return os.WriteFile(filepath.Join(dir, "index.json"), raw, 0o644)
}

func readJSON(p string, v any) error {
	raw, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}
