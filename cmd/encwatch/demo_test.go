package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"
)

// TestDemo runs `encwatch demo` for a few seconds: alerts are printed one
// per line starting with severity and rule, the webhook receiver verified
// signed deliveries, and /metrics and /buckets answer.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo for seconds")
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	var out, errb testkit.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { done <- run(ctx, []string{"demo", "--listen", addr, "--every", "500ms"}, nil, &out, &errb) }()
	// The ransomware story's management events come through LookupEvents
	// with the history: each of its rules on the story's bucket.
	story := []string{"sse-c-unblocked", "kms-key-foreign-account", "kms-key-unusable"}
	testkit.Eventually(t, 30*time.Second, func() bool {
		o := out.String()
		for _, r := range story {
			found := false
			for _, line := range strings.Split(o, "\n") {
				found = found || strings.Contains(line, " "+r+" ") && strings.Contains(line, "bucket "+storyBucket)
			}
			if !found {
				return false
			}
		}
		return strings.Count(o, "\n") >= 20
	}, "the demo did not print the story's alerts:\n%s", out.String())
	// The inventory of the member account's estate: its non-compliant
	// buckets are alerted at start.
	estate := map[string]string{"estate-legacy-uploads": "sse-c-unblocked", "estate-reports": "kms-aws-managed-key",
		"estate-partner-drop": "kms-key-foreign-account", "estate-fast--usw2-az1--x-s3": "kms-key-unusable"}
	testkit.Eventually(t, 30*time.Second, func() bool {
		lines := strings.Split(out.String(), "\n")
		for b, r := range estate {
			if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, " "+r+" ") && strings.Contains(l, "bucket "+b+" ") }) {
				return false
			}
		}
		return true
	}, "the demo did not alert the estate's non-compliant buckets:\n%s", out.String())
	// Remediation in dry run answers the SSE-C finding with what it would
	// write, and writes nothing.
	testkit.Eventually(t, 30*time.Second, func() bool {
		return slices.ContainsFunc(strings.Split(out.String(), "\n"), func(l string) bool {
			return strings.Contains(l, " remediation-applied ") && strings.Contains(l, "dry run: would write") && strings.Contains(l, "estate-legacy-uploads")
		})
	}, "no dry-run remediation of estate-legacy-uploads:\n%s", out.String())
	type page struct {
		Buckets []struct{ Key, Name, Type string }
		Next    string
	}
	get := func(q string) page {
		resp, err := http.Get("http://" + addr + "/buckets?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p page
		json.NewDecoder(resp.Body).Decode(&p)
		return p
	}
	p1 := get("limit=2")
	if len(p1.Buckets) != 2 || p1.Next != p1.Buckets[1].Key {
		t.Fatalf("/buckets first page: %+v", p1)
	}
	p2 := get("limit=2&after=" + p1.Next)
	if len(p2.Buckets) == 0 || p2.Buckets[0].Key <= p1.Buckets[1].Key {
		t.Errorf("/buckets second page overlaps the first: %+v then %+v", p1, p2)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"encwatch_alerts_sent_total{sink=\"kafka\"}", "encwatch_alerts_sent_total{sink=\"webhook:demo-receiver\"}", "encwatch_lookup_calls_total{region=\"us-west-2\"}"} {
		if !strings.Contains(string(metrics), m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("demo exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 || !strings.Contains("INFO LOW MEDIUM HIGH CRITICAL", f[0]) || !strings.Contains(f[1], "-") {
			t.Errorf("not an alert line: %q", l)
		}
	}
	if !strings.Contains(errb.String(), "signed webhook deliveries verified") || strings.Contains(errb.String(), " 0 signed webhook") {
		t.Errorf("summary: %s", errb.String())
	}
}
