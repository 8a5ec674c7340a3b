package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/fixtures/awsemu"
)

// binary is the encwatch binary the daemon tests run as a subprocess.
var binary struct {
	once sync.Once
	path string
	err  error
}

func encwatchBinary(t testing.TB) string {
	t.Helper()
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "encwatch-bin-")
		if err != nil {
			binary.err = err
			return
		}
		binary.path = filepath.Join(dir, "encwatch")
		out, err := exec.Command("go", "build", "-o", binary.path, ".").CombinedOutput()
		if err != nil {
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// daemonProc is a running `encwatch run` with its output collected.
type daemonProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	alerts []alert.Alert
	logs   []string
	exited chan struct{} // closed when the process has exited
	err    error         // its exit error, once exited
}

// wait waits for the process to exit and returns its exit error.
func (d *daemonProc) wait() error {
	<-d.exited
	return d.err
}

func startDaemon(t testing.TB, cfgPath, endpoint string, extraEnv ...string) *daemonProc {
	t.Helper()
	cmd := exec.Command(encwatchBinary(t), "run", "--config", cfgPath)
	home := t.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}
	for k, v := range testkit.AWSEnviron(endpoint) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, extraEnv...)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemonProc{cmd: cmd, exited: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var a alert.Alert
			if err := json.Unmarshal(sc.Bytes(), &a); err != nil || a.Schema != alert.Schema {
				t.Errorf("stdout holds something other than an alert: %q", sc.Text())
				continue
			}
			d.mu.Lock()
			d.alerts = append(d.alerts, a)
			d.mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.mu.Lock()
			d.logs = append(d.logs, sc.Text())
			d.mu.Unlock()
		}
	}()
	go func() { wg.Wait(); d.err = cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); d.wait() })
	return d
}

func (d *daemonProc) snapshot() ([]alert.Alert, []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]alert.Alert(nil), d.alerts...), append([]string(nil), d.logs...)
}

// waitAlerts waits until the daemon printed alerts for every id in want.
func (d *daemonProc) waitAlerts(t *testing.T, want map[string]bool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		got, _ := d.snapshot()
		seen := map[string]bool{}
		for _, a := range got {
			seen[a.ID] = true
		}
		missing := 0
		for id := range want {
			if !seen[id] {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, logs := d.snapshot()
	t.Fatalf("timed out waiting for alerts; daemon log:\n%s", strings.Join(logs, "\n"))
}

// finish waits for a daemon whose sources end by themselves (files
// without watch) to deliver everything and exit 0.
func (d *daemonProc) finish(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-d.exited:
		if err := d.err; err != nil {
			_, logs := d.snapshot()
			t.Fatalf("daemon: %v\n%s", err, strings.Join(logs, "\n"))
		}
	case <-time.After(timeout):
		t.Fatalf("the daemon did not finish delivering within %s", timeout)
	}
}

// stop sends SIGTERM and returns how long the daemon took to exit.
func (d *daemonProc) stop(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		if err := d.err; err != nil {
			_, logs := d.snapshot()
			t.Errorf("daemon exited with %v after SIGTERM; log:\n%s", err, strings.Join(logs, "\n"))
		}
	case <-time.After(25 * time.Second):
		t.Fatal("daemon did not exit within 25s of SIGTERM")
	}
	return time.Since(start)
}

func writeConfig(t *testing.T, stateDir string, extra string) string {
	t.Helper()
	cfg := fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
log: {level: debug}
sources:
  lookup:
    regions: [us-east-1]
    interval: 1s
    overlap: 20m
    startFrom: 1h
sinks:
  stdout: {}
%s`, stateDir, extra)
	p := filepath.Join(t.TempDir(), "encwatch.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func lookupRecord(id, name string, at time.Time) []byte {
	return testkit.Record{ID: id, Name: name, Bucket: "bucket-" + id, Time: at}.Build()
}

// TestDaemonLateEventsAndGracefulRestart: events that become visible late
// and out of eventTime order are all alerted, exactly once, across a
// SIGTERM and a restart on the same state; SIGTERM exits within 20 s.
func TestDaemonLateEventsAndGracefulRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon for several seconds")
	}
	emu := awsemu.NewCloudTrail()
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	now := time.Now()
	want := map[string]bool{}
	add := func(id string, age, visibleIn time.Duration) {
		if err := emu.AddRecord("111122223333", "us-east-1", lookupRecord(id, "DeleteBucketEncryption", now.Add(-age)), now.Add(visibleIn)); err != nil {
			t.Fatal(err)
		}
		want[alert.ID("encryption-deleted", "111122223333", id)] = true
	}
	add("on-time-1", 2*time.Minute, 0)
	add("on-time-2", 30*time.Second, 0)
	add("late-old", 14*time.Minute, 3*time.Second) // appears late, eventTime far behind the checkpoint
	add("late-new", 10*time.Second, 2*time.Second)
	state := t.TempDir()
	cfg := writeConfig(t, state, "")

	d := startDaemon(t, cfg, srv.URL)
	d.waitAlerts(t, want, 20*time.Second)
	probeHealth(t, d)
	time.Sleep(1500 * time.Millisecond) // a few more polls: nothing may repeat
	took := d.stop(t)
	if took > 20*time.Second {
		t.Errorf("SIGTERM took %s; the limit is 20s", took)
	}
	first, _ := d.snapshot()

	add("after-restart", 16*time.Minute, 0) // arrived while encwatch was down
	d2 := startDaemon(t, cfg, srv.URL)
	d2.waitAlerts(t, map[string]bool{alert.ID("encryption-deleted", "111122223333", "after-restart"): true}, 20*time.Second)
	time.Sleep(1500 * time.Millisecond)
	d2.stop(t)
	second, _ := d2.snapshot()

	count := map[string]int{}
	for _, a := range append(first, second...) {
		count[a.ID]++
	}
	for id := range want {
		if count[id] != 1 {
			t.Errorf("alert %s delivered %d times, want exactly 1", id, count[id])
		}
	}
	if len(count) != len(want) {
		t.Errorf("%d distinct alerts, want %d", len(count), len(want))
	}
	if m := emu.MaxCallsPerSecond("111122223333", "us-east-1"); m > 2 {
		t.Errorf("%d LookupEvents calls within one second; the limit is 2", m)
	}
}

// TestDaemonSIGKILL kills the daemon mid-run and restarts it on the same
// state: every alert appears at least once, with the same ids.
func TestDaemonSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon for several seconds")
	}
	emu := awsemu.NewCloudTrail()
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	now := time.Now()
	want := map[string]bool{}
	for i := range 240 {
		id := fmt.Sprintf("evt-%03d", i)
		visible := now.Add(time.Duration(i%6) * 700 * time.Millisecond) // released over four seconds
		if err := emu.AddRecord("111122223333", "us-east-1", lookupRecord(id, "DeleteBucketEncryption", now.Add(-time.Duration(i)*time.Second)), visible); err != nil {
			t.Fatal(err)
		}
		want[alert.ID("encryption-deleted", "111122223333", id)] = true
	}
	state := t.TempDir()
	cfg := writeConfig(t, state, "")
	d := startDaemon(t, cfg, srv.URL)
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, _ := d.snapshot()
		if len(got) >= 30 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.cmd.Process.Kill() // SIGKILL, mid-run
	d.wait()
	before, _ := d.snapshot()
	if len(before) >= len(want) {
		t.Logf("the daemon finished before the kill (%d alerts); the restart must still not lose any", len(before))
	}
	d2 := startDaemon(t, cfg, srv.URL)
	remaining := map[string]bool{}
	seen := map[string]bool{}
	for _, a := range before {
		seen[a.ID] = true
	}
	for id := range want {
		if !seen[id] {
			remaining[id] = true
		}
	}
	d2.waitAlerts(t, remaining, 30*time.Second)
	d2.stop(t)
	after, _ := d2.snapshot()
	all := map[string]int{}
	for _, a := range append(before, after...) {
		if !want[a.ID] {
			t.Errorf("unexpected alert id %s (%s)", a.ID, a.Event.ID)
		}
		all[a.ID]++
	}
	if len(all) != len(want) {
		t.Errorf("%d distinct alerts after the restart, want %d", len(all), len(want))
	}
	t.Logf("%d alerts before the kill, %d after the restart, %d resent", len(before), len(after), len(before)+len(after)-len(want))
}

// TestDaemonBadConfig: a bad configuration fails at start, naming the key
// and the line, with exit code 2.
func TestDaemonBadConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(p, []byte("sources:\n  lookup:\n    interval: 30s\n    regoins: [us-east-1]\n"), 0o600)
	cmd := exec.Command(encwatchBinary(t), "run", "--config", p)
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2; output: %s", err, out)
	}
	for _, w := range []string{p + ":4: sources.lookup.regoins: unknown key", p + ":2: sources.lookup.regions: missing"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

// probeHealth runs `encwatch healthcheck` against the daemon's address,
// read from its start-up log line.
func probeHealth(t *testing.T, d *daemonProc) {
	t.Helper()
	_, logs := d.snapshot()
	var addr string
	for _, l := range logs {
		var m struct{ Listen, Message string }
		if json.Unmarshal([]byte(l), &m) == nil && m.Message == "encwatch running" {
			addr = m.Listen
		}
	}
	if addr == "" {
		t.Fatalf("no start-up line with the address in the log:\n%s", strings.Join(logs, "\n"))
	}
	out, err := exec.Command(encwatchBinary(t), "healthcheck", "--addr", addr).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("healthcheck: %v %s", err, out)
	}
	out, err = exec.Command(encwatchBinary(t), "healthcheck", "--addr", "127.0.0.1:1").CombinedOutput()
	if err == nil {
		t.Errorf("healthcheck of a closed port succeeded: %s", out)
	}
}
