package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/fixtures/testkit"
)

// smallVolume mounts a tmpfs of size bytes at a new folder, as a state
// volume that fills; it skips (fails under CI=true) where mounting is not
// allowed.
func smallVolume(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("cannot mount a tmpfs as a small state volume (needs root): %v %s", err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// TestDiskFull fills the state volume while files are read: the daemon
// neither exits nor panics, /readyz fails and says why, the write errors
// are counted and logged a few times (not per retry), and once space
// returns it goes on by itself and every alert is delivered, once.
func TestDiskFull(t *testing.T) {
	state := smallVolume(t, 3<<20)
	filler := filepath.Join(state, "filler")
	if err := os.WriteFile(filler, make([]byte, 2800<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const n = 400
	for i := range n {
		rec := testkit.Record{ID: fmt.Sprintf("full-%03d", i), Name: "DeleteBucketEncryption", Bucket: fmt.Sprintf("bucket-%03d-%s", i, strings.Repeat("p", 40))}.Build()
		p := filepath.Join(dir, fmt.Sprintf("%03d.json", i))
		if err := os.WriteFile(p, rec, 0o644); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Minute)
		os.Chtimes(p, old, old)
	}
	cfg, err := config.Parse("test", []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
sources: {files: {paths: [%q], watch: true, interval: 200ms}}
sinks: {stdout: {}}
`, state, dir)), nil)
	if err != nil {
		t.Fatal(err)
	}
	var out, logs testkit.Buffer
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Stdout: &out, Stderr: &logs, Registry: reg, OnReady: func(a string) { addrc <- a }})
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("the daemon did not start: %v\n%s", err, logs.String())
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		return metricTotal(t, reg, "encwatch_state_write_errors_total") > 0
	}, "the volume never filled; log:\n%s", logs.String())
	code, body := get(t, "http://"+addr+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "cannot be written") {
		t.Errorf("/readyz while the disk is full: %d %q", code, body)
	}
	time.Sleep(2 * time.Second) // retries go on while full
	select {
	case err := <-done:
		t.Fatalf("the daemon exited while the disk was full: %v\n%s", err, logs.String())
	default:
	}
	logged := strings.Count(logs.String(), "the state cannot be written")
	if logged < 1 || logged > 3 {
		t.Errorf("the fault was logged %d times in its first seconds; want once, then once a minute", logged)
	}
	os.Remove(filler) // space returns
	testkit.Eventually(t, 60*time.Second, func() bool { return strings.Count(out.String(), "\n") >= n },
		"%d of %d alerts after space returned; log:\n%s", strings.Count(out.String(), "\n"), n, logs.String())
	if code, _ := get(t, "http://"+addr+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after space returned: %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	ids := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		i := strings.Index(line, `"id":"`)
		ids[line[i+6:i+38]]++
	}
	if len(ids) != n {
		t.Errorf("%d distinct alerts, want %d", len(ids), n)
	}
	if !strings.Contains(logs.String(), "the state is writable again") {
		t.Error("the recovery is not logged")
	}
	t.Logf("write errors counted: %v; fault logged %d times", metricTotal(t, reg, "encwatch_state_write_errors_total"), logged)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func metricTotal(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}
