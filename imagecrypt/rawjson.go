package imagecrypt

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// spliceTopLevel returns raw (a JSON object) with the value of its top-level
// member key replaced by val, every other byte untouched. Editing manifests
// this way keeps fields coffer does not know and keeps the original bytes of
// unchanged descriptors, so decrypting an encrypted image reproduces the
// original manifest digest.
func spliceTopLevel(raw []byte, key string, val []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("manifest is not a JSON object")
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("parsing manifest: %w", err)
		}
		afterKey := dec.InputOffset()
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("parsing manifest: %w", err)
		}
		if t != key {
			continue
		}
		end := int(dec.InputOffset())
		start := int(afterKey) + bytes.IndexByte(raw[afterKey:end], ':') + 1
		for start < end && isSpace(raw[start]) {
			start++
		}
		out := make([]byte, 0, len(raw)-(end-start)+len(val))
		out = append(out, raw[:start]...)
		out = append(out, val...)
		return append(out, raw[end:]...), nil
	}
	return nil, fmt.Errorf("manifest has no %q member", key)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// rawArray decodes the top-level member key of raw as an array of raw values.
func rawArray(raw []byte, key string) ([]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("parsing manifest: %w", err)
	}
	var arr []json.RawMessage
	if v, ok := m[key]; ok {
		if err := json.Unmarshal(v, &arr); err != nil {
			return nil, fmt.Errorf("parsing manifest %s: %w", key, err)
		}
	}
	return arr, nil
}

// joinArray serializes raw values as a compact JSON array.
func joinArray(items []json.RawMessage) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(it)
	}
	b.WriteByte(']')
	return b.Bytes()
}
