package protocol

import (
	"encoding/hex"
	"encoding/json"
	"testing"
)

func TestByteList(t *testing.T) {
	for in, want := range map[string]string{`[]`: "", `[0]`: "00", ` [ 1 , 255 ] `: "01ff", "[\n7,\t8]": "0708"} {
		var b ByteList
		if err := json.Unmarshal([]byte(in), &b); err != nil || hex.EncodeToString(b) != want {
			t.Errorf("%q: got %x, %v, want %s", in, []byte(b), err, want)
		}
	}
	for _, in := range []string{`[256]`, `[01]`, `[1,]`, `[,1]`, `[1.0]`, `[1e2]`, `"AQ=="`, `null`, `[true]`, `{}`} {
		var b ByteList
		if err := json.Unmarshal([]byte(in), &b); err == nil {
			t.Errorf("%q: accepted as %x", in, []byte(b))
		}
	}
	out, _ := json.Marshal(ByteList{0, 1, 255})
	if string(out) != `[0,1,255]` {
		t.Errorf("marshal: got %s", out)
	}
}
