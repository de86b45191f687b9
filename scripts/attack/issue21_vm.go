package main

// Issue 21, the measured guest: a real guest's recorded evidence
// (kbs/attest/testdata/vm_evidence.json, coffer vm measure under QEMU,
// SeaBIOS, swtpm, Debian 6.1), tampered the ways a host that controls the
// guest's inputs would, given to `coffer kbs verify-evidence --tee tpm`.
// The untampered evidence must verify (the control), each tampered one
// must be refused naming the PCR.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func init() {
	register(vmAttack("VM1", "firmware event log edited (one digest)", "PCR ", func(m map[string]any) {
		raw, _ := base64.StdEncoding.DecodeString(m["event_log"].(string))
		raw[len(raw)-40] ^= 1
		m["event_log"] = base64.StdEncoding.EncodeToString(raw)
	}),
		vmAttack("VM2", "IMA log claims the reference /init (its digest edited)", "PCR 10", func(m map[string]any) {
			raw, _ := base64.StdEncoding.DecodeString(m["ima_log"].(string))
			raw[bytes.Index(raw, []byte("/init\x00"))-5] ^= 1
			m["ima_log"] = base64.StdEncoding.EncodeToString(raw)
		}),
		vmAttack("VM3", "init log shows the measured command line for another one", "PCR 9", func(m map[string]any) {
			ev := m["init_log"].([]any)
			c := ev[len(ev)-1].(map[string]any)
			c["data"] = c["data"].(string) + " init=/bin/sh"
		}),
		vmAttack("VM4", "IMA log withheld (PCR 10 quoted non-zero)", "PCR 10", func(m map[string]any) {
			delete(m, "ima_log")
		}))
}

func vmAttack(id, name, want string, tamper func(map[string]any)) func(*env) result {
	return func(e *env) result {
		r := result{id: id, name: "vm guest evidence: " + name}
		raw, err := os.ReadFile("kbs/attest/testdata/vm_evidence.json")
		if err != nil {
			r.observed = "recorded evidence missing: " + err.Error()
			return r
		}
		verify := func(b []byte) (string, error) {
			f := filepath.Join(e.dir, id+".json")
			os.WriteFile(f, b, 0o600)
			out, err := exec.Command(e.coffer, "kbs", "verify-evidence", "--tee", "tpm", "--evidence", f).CombinedOutput()
			return strings.TrimSpace(string(out)), err
		}
		if out, err := verify(raw); err != nil {
			r.observed = "control: the untampered evidence failed: " + out
			return r
		}
		var m map[string]any
		json.Unmarshal(raw, &m)
		tamper(m)
		b, _ := json.Marshal(m)
		out, err := verify(b)
		r.ok = err != nil && strings.Contains(out, want)
		if i := strings.LastIndex(out, "\n"); i >= 0 {
			out = out[i+1:]
		}
		r.observed = fmt.Sprintf("exit %v: %s", err, out)
		return r
	}
}
