package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"

	"github.com/klauspost/compress/gzip"

	"github.com/encwatch/encwatch/cmd/config"
)

func putRecord(id, bucket, extra, rules string) string {
	return fmt.Sprintf(`{"eventVersion":"1.11","eventTime":"2026-03-01T00:00:00Z","eventSource":"s3.amazonaws.com","eventName":"PutBucketEncryption","awsRegion":"us-east-1",%s"requestParameters":{"bucketName":%q,"ServerSideEncryptionConfiguration":{"Rule":%s}},"eventID":%q,"recipientAccountId":"111122223333"}`,
		extra, bucket, rules, id)
}

// TestHostileInput feeds every kind of hostile input through the daemon's
// files source: each is refused or bounded, counted under its reason, and
// the rest of the input still goes through. The gzip bomb (2 GiB from 2 MB)
// is cut off at the limit with the heap under 100 MB.
func TestHostileInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		old := time.Now().Add(-time.Minute) // settled: not still being written
		os.Chtimes(p, old, old)
	}
	// A gzip bomb: {"Records":[ and 2 GiB of spaces.
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestSpeed)
	zw.Write([]byte(`{"Records":[`))
	spaces := bytes.Repeat([]byte(" "), 1<<20)
	for range 2048 {
		zw.Write(spaces)
	}
	zw.Close()
	write("bomb.json.gz", bomb.Bytes())
	aes := `{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}`
	write("big.json", []byte(putRecord("big", "b1", `"pad":"`+strings.Repeat("x", 200<<10)+`",`, aes)))
	write("deep.json", []byte(putRecord("deep", "b2", `"x":`+strings.Repeat("[", 70)+strings.Repeat("]", 70)+`,`, aes)))
	many := "[" + strings.TrimSuffix(strings.Repeat(aes+",", 500), ",") + "]"
	write("many.json", []byte(putRecord("many", "b3", "", many)))
	write("utf8.json", []byte(putRecord("utf8", "b4", "\"userAgent\":\"bad \xff\xfe bytes\",", aes)))
	write("notobject.json", []byte(`["PutBucketEncryption", 1, 2]`))
	write("good.json", []byte(putRecord("good", "b5", "", aes)))

	cfg, err := config.Parse("test", []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
limits: {maxRecordBytes: 65536, maxDecompressedBytes: 67108864, maxNesting: 32, maxRulesPerRequest: 10}
sources: {files: {paths: [%q], watch: true, interval: 1h}}
sinks: {stdout: {}}
`, t.TempDir(), dir)), nil)
	if err != nil {
		t.Fatal(err)
	}
	reasons := []string{"input_too_large", "too_large", "too_deep", "too_many_rules", "invalid_utf8", "not_object"}
	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	var out, logs testkit.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- Run(ctx, Options{Config: cfg, Stdout: &out, Stderr: &logs, OnReady: func(a string) { addr <- a }})
	}()
	a := <-addr
	var metrics string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://" + a + "/metrics")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics = string(b)
		all := strings.Count(out.String(), "\n") >= 3
		for _, reason := range reasons {
			all = all && strings.Contains(metrics, fmt.Sprintf(`reason=%q,source="files"`, reason))
		}
		if all {
			break
		}
	}
	took := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(stopSampling)
	for _, reason := range reasons {
		if !regexp.MustCompile(fmt.Sprintf(`encwatch_decode_errors_total\{reason=%q,source="files"\} [1-9]`, reason)).MatchString(metrics) {
			t.Errorf("no decode error counted for %s", reason)
		}
	}
	alerts := out.String()
	for _, id := range []string{`"id":"good"`, `"id":"utf8"`, `"id":"many"`} {
		if !strings.Contains(alerts, id) {
			t.Errorf("no alert for event %s: the rest of the input must go on", id)
		}
	}
	if strings.Contains(alerts, `"id":"big"`) || strings.Contains(alerts, `"id":"deep"`) {
		t.Error("an over-limit record was judged")
	}
	if p := peak.Load(); p > 100<<20 {
		t.Errorf("heap peaked at %d MB with a gzip bomb; the bound is 100 MB", p>>20)
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", logs.String())
	}
	t.Logf("hostile inputs handled in %s; heap peak %d MB", took.Round(time.Millisecond), peak.Load()>>20)
}
