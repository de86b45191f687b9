package shim_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/runtime/shim"
)

// timingRE matches the shim's per-container timing log line (guest.go).
var timingRE = regexp.MustCompile(`coffer runtime: container (\S+): boot ([0-9.]+)s, pull ([0-9.]+)s, start ([0-9.]+)s`)

// BenchmarkGuestPullStart (go test ./runtime/shim -run XXX -bench
// GuestPullStart -benchtime 1x; COFFER_SHIM_BENCH_PAIRS, default 5) measures, through the shim, the time from
// `ctr run` to the container's first output line, for the encrypted image
// and for the same image plain, alternating, on the same guest settings
// (each run boots its own guest, attests, guest-pulls and starts). It
// reports the medians, their ratio (target ≤ 1.15) and the split the shim
// logs: guest boot + attestation, PullImage, create + start.
func BenchmarkGuestPullStart(b *testing.B) {
	n := newNode(b, false)
	ctx := context.Background()
	rt := []string{"--runtime", shim.RuntimeName, "--runtime-config-path", n.cfg, "--snapshotter", shim.SnapshotterName}
	for _, img := range []string{n.image, n.plain} {
		if out, err := exec.Command(n.bin, "runtime", "pull", "--address", n.ctd.Address, "--plain-http", img).CombinedOutput(); err != nil {
			b.Fatalf("coffer runtime pull %s: %v\n%s", img, err, out)
		}
	}
	first := map[string][]float64{}
	split := map[string][]float64{}
	run := func(kind, img string, i int) {
		id := fmt.Sprintf("bench-%s-%d", kind, i)
		cmd := exec.CommandContext(ctx, "ctr", append(append([]string{"-a", n.ctd.Address, "-n", "default", "run", "--rm"}, rt...),
			img, id, "/bin/busybox", "sh", "-c", "echo first-output; /bin/busybox cat /secret")...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		var firstAt time.Duration
		for sc.Scan() {
			if firstAt == 0 && strings.Contains(sc.Text(), "first-output") {
				firstAt = time.Since(start)
			}
		}
		if err := cmd.Wait(); err != nil || firstAt == 0 {
			b.Fatalf("ctr run %s: %v (first output at %v)\n%s", kind, err, firstAt, tail(n.ctd.Log(), 20))
		}
		first[kind] = append(first[kind], firstAt.Seconds())
		for _, m := range timingRE.FindAllStringSubmatch(n.ctd.Log(), -1) {
			if m[1] != id {
				continue
			}
			for j, part := range []string{"boot", "pull", "start"} {
				v, _ := strconv.ParseFloat(m[2+j], 64)
				split[kind+"-"+part] = append(split[kind+"-"+part], v)
			}
		}
	}
	// Pairs per b.N (setting a node up costs a minute, so run it with
	// -benchtime 1x): plain and encrypted alternate, in turn first.
	pairs := 5
	if v, err := strconv.Atoi(os.Getenv("COFFER_SHIM_BENCH_PAIRS")); err == nil && v > 0 {
		pairs = v
	}
	b.ResetTimer()
	for i := 0; i < b.N*pairs; i++ {
		if i%2 == 0 {
			run("plain", n.plain, i)
			run("enc", n.image, i)
		} else {
			run("enc", n.image, i)
			run("plain", n.plain, i)
		}
	}
	b.StopTimer()
	med := func(v []float64) float64 {
		if len(v) == 0 {
			return 0
		}
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	b.ReportMetric(med(first["enc"]), "enc-first-output-s")
	b.ReportMetric(med(first["plain"]), "plain-first-output-s")
	b.ReportMetric(med(first["enc"])/med(first["plain"]), "enc/plain")
	for _, k := range []string{"enc-boot", "enc-pull", "enc-start", "plain-boot", "plain-pull", "plain-start"} {
		b.ReportMetric(med(split[k]), k+"-s")
	}
	b.Logf("first output (s): enc %v, plain %v", first["enc"], first["plain"])
}
