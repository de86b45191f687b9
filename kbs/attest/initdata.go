package attest

import (
	"crypto/sha256"
	"crypto/sha512"
	"fmt"

	"github.com/BurntSushi/toml"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// Bounds on an init-data document, checked before it is parsed. The TOML
// parser's cost grows faster than linearly with nesting (inline tables,
// arrays, dotted keys): 16 KiB nested a few thousand deep took seconds, so
// the shape is checked by a linear scan first. Real initdata (a few config
// files and a policy) is a few KiB deep by two or three levels.
const (
	MaxInitDataBytes = 128 << 10
	MaxInitDataDepth = 32 // brackets and braces open at once, or dots in one key
)

// InitDataDigest hashes an initdata document as the guest measures it: the
// raw TOML bytes with the document's own "algorithm" (sha256, sha384 or
// sha512; sha384 when absent). Only format "toml" is known. Documents over
// MaxInitDataBytes or nested deeper than MaxInitDataDepth are refused
// before parsing.
func InitDataDigest(d *protocol.InitData) ([]byte, error) {
	if d.Format != "toml" {
		return nil, fmt.Errorf("init-data format %q, want toml: %w", d.Format, spec.ErrUnsupported)
	}
	if len(d.Body) > MaxInitDataBytes {
		return nil, fmt.Errorf("init-data has %d bytes, more than the %d this broker accepts: %w", len(d.Body), MaxInitDataBytes, spec.ErrUnsupported)
	}
	if err := checkTOMLShape(d.Body, MaxInitDataDepth); err != nil {
		return nil, fmt.Errorf("init-data: %v: %w", err, spec.ErrUnsupported)
	}
	var doc struct {
		Version   string         `toml:"version"`
		Algorithm string         `toml:"algorithm"`
		Data      map[string]any `toml:"data"`
	}
	if _, err := toml.Decode(d.Body, &doc); err != nil {
		return nil, fmt.Errorf("init-data: %v: %w", err, spec.ErrUnsupported)
	}
	switch doc.Algorithm {
	case "sha256":
		s := sha256.Sum256([]byte(d.Body))
		return s[:], nil
	case "", "sha384":
		s := sha512.Sum384([]byte(d.Body))
		return s[:], nil
	case "sha512":
		s := sha512.Sum512([]byte(d.Body))
		return s[:], nil
	}
	return nil, fmt.Errorf("init-data algorithm %q: %w", doc.Algorithm, spec.ErrUnsupported)
}

// checkTOMLShape scans TOML text once, skipping strings and comments, and
// fails when brackets and braces nest deeper than max or when one dotted
// key (or value) has more than max dots. It accepts anything else: the
// parser still judges the syntax.
func checkTOMLShape(s string, max int) error {
	depth, dots := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
			dots = 0
		case '"', '\'':
			delim := s[i : i+1]
			if len(s)-i >= 3 && s[i+1] == c && s[i+2] == c {
				delim = s[i : i+3]
			}
			end := stringEnd(s, i+len(delim), delim, c == '"')
			if end < 0 {
				return fmt.Errorf("unterminated string")
			}
			i = end - 1
		case '[', '{':
			if depth++; depth > max {
				return fmt.Errorf("nested more than %d levels deep", max)
			}
			dots = 0
		case ']', '}':
			depth--
			dots = 0
		case '.':
			if dots++; dots > max {
				return fmt.Errorf("a key with more than %d dotted parts", max)
			}
		case '\n', '=', ',':
			dots = 0
		}
	}
	return nil
}

// stringEnd returns the index just past the closing delim of a string whose
// body starts at i, or -1. Basic strings honour backslash escapes.
func stringEnd(s string, i int, delim string, escapes bool) int {
	for ; i < len(s); i++ {
		if escapes && s[i] == '\\' {
			i++
			continue
		}
		if len(delim) == 1 && s[i] == '\n' {
			return -1
		}
		if s[i] == delim[0] && len(s)-i >= len(delim) && s[i:i+len(delim)] == delim {
			end := i + len(delim)
			// A multi-line string may end with up to two more quotes ("""a"""").
			for len(delim) == 3 && end < len(s) && s[end] == delim[0] && end-i < 5 {
				end++
			}
			return end
		}
	}
	return -1
}
