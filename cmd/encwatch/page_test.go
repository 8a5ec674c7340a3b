package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/awsemu"
	"github.com/encwatch/encwatch/fixtures/testkit"
)

func daemonAddr(t *testing.T, d *daemonProc) string {
	t.Helper()
	var addr string
	testkit.Eventually(t, 20*time.Second, func() bool {
		_, logs := d.snapshot()
		for _, l := range logs {
			var m struct{ Listen, Message string }
			if json.Unmarshal([]byte(l), &m) == nil && m.Message == "encwatch running" {
				addr = m.Listen
			}
		}
		return addr != ""
	}, "the daemon did not start")
	return addr
}

// TestWebPage: GET / shows buckets, alerts, sources, the inventory and the
// sinks; HTML and script in a bucket name, a user agent and a summary (a
// files source is a trust boundary) render as text, in the server's HTML
// and in a real browser (Debian's chromium, headless), which applies the
// strict Content-Security-Policy without refusing the page's own style.
func TestWebPage(t *testing.T) {
	chromium := testkit.Need(t, "chromium", "chromium")
	w := awsemu.NewWorld()
	srv := httptest.NewServer(w)
	t.Cleanup(srv.Close)
	hostile := `x<script>alert(1)</script><img src=x onerror=alert(2)>`
	w.S3.AddBucket(awsemu.Bucket{Name: "estate-plain", Account: "111122223333", Region: "us-east-1", Rules: []awsemu.Rule{{Algorithm: "AES256"}}})
	dir := t.TempDir()
	trail := filepath.Join(dir, "trail")
	os.MkdirAll(trail, 0o755)
	rec := testkit.Record{ID: "hostile-1", Name: "DeleteBucketEncryption", Bucket: hostile, Time: time.Now().Add(-time.Minute),
		Extra: map[string]string{"userAgent": `"<script>document.title='owned'</script>"`}}.Build()
	os.WriteFile(filepath.Join(trail, "hostile.json"), rec, 0o644)
	cfg := filepath.Join(dir, "encwatch.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
log: {level: info}
sources:
  files: {paths: [%q], watch: true, interval: 1s}
  inventory: {regions: [us-east-1], interval: 1h, rate: 50}
sinks:
  stdout: {}
`, filepath.Join(dir, "state"), trail)), 0o600)
	d := startDaemon(t, cfg, srv.URL)
	t.Cleanup(func() { d.stop(t) })
	addr := daemonAddr(t, d)
	var body string
	var resp *http.Response
	testkit.Eventually(t, 20*time.Second, func() bool {
		r, err := http.Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		body, resp = string(b), r
		return strings.Contains(body, "estate-plain") && strings.Contains(body, "encryption-deleted") && strings.Contains(body, "111122223333</td><td>us-east-1</td><td>")
	}, "the page does not show the bucket, the alert and the inventory")
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.HasPrefix(csp, "default-src 'none'; style-src 'sha256-") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("headers %v", resp.Header)
	}
	if strings.Contains(body, "<script") || strings.Contains(body, "<img") || !strings.Contains(body, "x&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;") {
		t.Errorf("hostile text is not escaped:\n%s", body)
	}
	for _, want := range []string{"non-compliant", "files", "inventory", "stdout", "Latest alerts"} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	// Filters.
	r, err := http.Get("http://" + addr + "/?type=general-purpose&compliance=compliant")
	if err != nil {
		t.Fatal(err)
	}
	fb, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if strings.Contains(string(fb), `<tr class="c-non-compliant">`) || !strings.Contains(string(fb), "No bucket matches.") {
		t.Errorf("the compliant filter shows a non-compliant bucket:\n%s", fb)
	}

	// The browser.
	shot := filepath.Join(dir, "page.png")
	start := time.Now()
	cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
		"--window-size=1400,1000", "--dump-dom", "http://"+addr+"/")
	cmd.Env = append(os.Environ(), "HOME="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	dom, err := cmd.Output()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	if strings.Contains(string(dom), "<script") || !strings.Contains(string(dom), "x&lt;script&gt;alert(1)") || strings.Contains(string(dom), "owned") {
		t.Errorf("the browser's DOM holds markup from the input:\n%s", dom)
	}
	if strings.Contains(stderr.String(), "Content Security Policy") {
		t.Errorf("the browser refused part of the page:\n%s", stderr.String())
	}
	sc := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1000",
		"--screenshot="+shot, "http://"+addr+"/")
	sc.Env = cmd.Env
	if out, err := sc.CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	png, _ := os.ReadFile(shot)
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		t.Fatalf("no screenshot")
	}
	if out := os.Getenv("ENCWATCH_PAGE_SCREENSHOT"); out != "" {
		os.WriteFile(out, png, 0o644)
	}
	t.Logf("page: %d bytes of HTML; chromium loaded and dumped it in %v; screenshot %d bytes", len(body), took.Round(time.Millisecond), len(png))
}
