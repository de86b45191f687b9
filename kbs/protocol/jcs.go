package protocol

import (
	"bytes"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/coffer-dev/coffer/spec"
)

// Canonicalize returns the RFC 8785 (JCS) canonical form of the JSON text
// in: object members sorted by their UTF-16 code units, no insignificant
// whitespace, numbers in ECMAScript shortest form, minimal string escapes.
// Duplicate object members are rejected.
func Canonicalize(in []byte) ([]byte, error) {
	if !json.Valid(in) {
		return nil, fmt.Errorf("jcs: invalid json: %w", spec.ErrUnsupported)
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("jcs: %w", err)
	}
	if err := checkDuplicates(in); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := writeJCS(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// CanonicalizeValue marshals v with encoding/json and canonicalizes it.
func CanonicalizeValue(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("jcs: %w", err)
	}
	return Canonicalize(raw)
}

// checkDuplicates walks the token stream and fails on a repeated member name.
func checkDuplicates(in []byte) error {
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	type frame struct {
		obj  bool
		seen map[string]bool
		key  bool // next token in an object is a key
	}
	var stack []*frame
	for {
		t, err := dec.Token()
		if err != nil {
			return nil // io.EOF; syntax errors were caught by Decode
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := t.(json.Delim); ok {
			switch d {
			case '{':
				if top != nil && top.obj {
					top.key = true
				}
				stack = append(stack, &frame{obj: true, seen: map[string]bool{}, key: true})
			case '[':
				if top != nil && top.obj {
					top.key = true
				}
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if top != nil && top.obj {
			if top.key {
				k := t.(string)
				if top.seen[k] {
					return fmt.Errorf("jcs: duplicate member %q: %w", k, spec.ErrUnsupported)
				}
				top.seen[k] = true
				top.key = false
			} else {
				top.key = true
			}
		}
	}
}

func writeJCS(b *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		if x {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case json.Number:
		s, err := es6Number(string(x))
		if err != nil {
			return err
		}
		b.WriteString(s)
	case string:
		writeJCSString(b, x)
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeJCS(b, e); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareUTF16)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJCSString(b, k)
			b.WriteByte(':')
			if err := writeJCS(b, x[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	default:
		return fmt.Errorf("jcs: unexpected %T: %w", v, spec.ErrUnsupported)
	}
	return nil
}

// compareUTF16 orders strings by their UTF-16 code units, as RFC 8785 §3.2.3 requires.
func compareUTF16(a, b string) int {
	if isASCII(a) && isASCII(b) {
		return strings.Compare(a, b)
	}
	ua, ub := utf16.Encode([]rune(a)), utf16.Encode([]rune(b))
	return slices.Compare(ua, ub)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func writeJCSString(b *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hex[r>>4])
			b.WriteByte(hex[r&0xf])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

// es6Number formats a JSON number as ECMAScript's Number.prototype.toString.
func es6Number(lit string) (string, error) {
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return "", fmt.Errorf("jcs: number %q out of range: %w", lit, spec.ErrUnsupported)
	}
	if f == 0 {
		return "0", nil
	}
	abs := math.Abs(f)
	if abs >= 1e-6 && abs < 1e21 {
		return strconv.FormatFloat(f, 'f', -1, 64), nil
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // like 1e+21, 1.5e-07
	mant, exp, _ := strings.Cut(s, "e")
	sign := exp[0]
	exp = strings.TrimLeft(exp[1:], "0")
	return mant + "e" + string(sign) + exp, nil
}

// ReportDataDigest returns the SHA-384 digest a TEE must carry in its
// report data: SHA-384 of the JCS canonical JSON of
// {"tee-pubkey": pub, "nonce": nonce, "additional-evidence": additional}.
// (The canonical text is written directly; reportDataJSON documents it.)
func ReportDataDigest(nonce string, pub TeePubKey, additionalEvidence string) ([]byte, error) {
	sum := sha512.Sum384(reportDataJSON(nonce, pub, additionalEvidence))
	return sum[:], nil
}

// reportDataJSON writes the canonical form of the report-data object: its
// members and those of the tee-pubkey in sorted order, empty optional JWK
// members left out as encoding/json's omitempty does. A test checks it
// against Canonicalize.
func reportDataJSON(nonce string, pub TeePubKey, additional string) []byte {
	var b bytes.Buffer
	b.Grow(256 + len(additional))
	b.WriteString(`{"additional-evidence":`)
	writeJCSString(&b, additional)
	b.WriteString(`,"nonce":`)
	writeJCSString(&b, nonce)
	b.WriteString(`,"tee-pubkey":{`)
	first := true
	member := func(name, v string, always bool) {
		if v == "" && !always {
			return
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteByte('"')
		b.WriteString(name)
		b.WriteString(`":`)
		writeJCSString(&b, v)
	}
	member("alg", pub.Alg, false)
	member("crv", pub.Crv, false)
	member("e", pub.E, false)
	member("kty", pub.Kty, true)
	member("n", pub.N, false)
	member("pub", pub.Pub, false)
	member("x", pub.X, false)
	member("y", pub.Y, false)
	b.WriteString("}}")
	return b.Bytes()
}

// ReportData fits a digest into a report-data field of size bytes
// (64 for TDX and SNP): zero-padded when shorter, truncated when longer.
func ReportData(digest []byte, size int) []byte {
	out := make([]byte, size)
	copy(out, digest)
	return out
}
