package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/alert/webhook"
	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/cmd/daemon"
	"github.com/encwatch/encwatch/fixtures"
	"github.com/encwatch/encwatch/fixtures/awsemu"
)

const demoAccount = "111122223333"

var demoRegions = []string{"us-east-1", "us-west-2"}

// demoCmd runs the whole pipeline on one machine with no AWS account.
func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9108", "address for /metrics, /healthz, /readyz and /buckets")
	every := fs.Duration("every", 3*time.Second, "how often new encryption changes happen")
	logLevel := fs.String("log-level", "warn", "daemon log level (logs go to stderr)")
	stateDir := fs.String("state", "", "keep the daemon's state in this folder (default: a temporary one, removed at exit)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	d, err := newDemo(ctx, *every, *stateDir)
	if err != nil {
		fmt.Fprintf(stderr, "encwatch demo: %v\n", err)
		return 1
	}
	defer d.close()
	cfg, err := config.Parse("demo", []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: %q}
log: {level: %s}
sources:
  lookup: {regions: [%s], interval: 2s, overlap: 20m, startFrom: 1h}
  files: {paths: [%q], watch: true, interval: 1s}
  inventory: {regions: [%s], interval: 10m, rate: 20, accounts: [{roleArn: "arn:aws:iam::%s:role/encwatch-reader"}]}
policy: {dataEvents: {window: 1m}}
sinks:
  kafka: {brokers: [%q], topic: encwatch-alerts}
  webhooks:
    - {name: demo-receiver, url: %q, secretEnv: ENCWATCH_DEMO_HMAC}
  remediate: {dryRun: true, buckets: ["estate-*"], roleName: encwatch-remediate}
`, d.state, *listen, *logLevel, strings.Join(demoRegions, ", "), d.dataDir, strings.Join(demoRegions, ", "), estateAccount,
		d.kafka.ListenAddrs()[0], d.hook.URL+"/hook")), nil)
	if err != nil {
		fmt.Fprintf(stderr, "encwatch demo: %v\n", err)
		return 1
	}
	printer := &textSink{w: stdout}
	v, r, g := buildInfo()
	err = daemon.Run(ctx, daemon.Options{Config: cfg, Stdout: stdout, Stderr: stderr, Version: v, Revision: r, GoVersion: g,
		Sinks: []outbox.Queue{{Sink: printer}},
		OnReady: func(addr string) {
			fmt.Fprintf(stderr, `encwatch demo: the real daemon, with no AWS account:
  CloudTrail LookupEvents emulator  %s  (%s; new encryption changes every %s, some shown late)
  Kafka broker (kfake)              %s  topic encwatch-alerts
  signed webhook receiver           %s
  data events (S3 trail files)      %s
  S3 and KMS emulators (inventory)  account %s: %d buckets, scanned at start and every 10m;
                                    remediation in dry run on estate-* (says what it would write)
  web page for operators            http://%s/
  metrics and state                 http://%s/metrics  http://%s/buckets
The story of the README's "Detecting SSE-C and KMS ransomware" is played first.
Point Prometheus at it:   scrape_configs: [{job_name: encwatch, static_configs: [{targets: ["%s"]}]}]
and import deploy/grafana/encwatch.json into Grafana. Alerts follow, one per line; Ctrl-C stops.

`, d.emuURL, strings.Join(demoRegions, ", "), *every, d.kafka.ListenAddrs()[0], d.hook.URL, d.dataDir, estateAccount, len(demoEstate), addr, addr, addr, addr)
		}})
	fmt.Fprintf(stderr, "\nencwatch demo: %d alerts printed, %d signed webhook deliveries verified\n", printer.n.Load(), d.verified.Load())
	if err != nil {
		fmt.Fprintf(stderr, "encwatch demo: %v\n", err)
		return 1
	}
	return exitOK
}

// textSink prints each alert as one readable line.
type textSink struct {
	mu sync.Mutex
	w  io.Writer
	n  atomic.Int64
}

func (t *textSink) Name() string { return "demo-printer" }

func (t *textSink) Send(_ context.Context, d alert.Delivery) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n.Add(1)
	_, err := fmt.Fprintln(t.w, alert.Text(d.Alert))
	return err
}

// demo is the emulated world around the daemon.
type demo struct {
	emu       *awsemu.CloudTrail
	emuSrv    *httptest.Server
	emuURL    string
	kafka     *kfake.Cluster
	hook      *httptest.Server
	state     string
	keepState bool
	verified  atomic.Int64
	env       map[string]*string
	cancel    context.CancelFunc
	records   [][]byte
	dataDir   string // a folder of trail files the demo's files source reads
}

func newDemo(ctx context.Context, every time.Duration, stateDir string) (*demo, error) {
	world := awsemu.NewWorld()
	d := &demo{emu: world.CloudTrail, env: map[string]*string{}}
	d.emu.DefaultAccount = demoAccount
	plantEstate(world)
	d.emuSrv = httptest.NewServer(world)
	d.emuURL = d.emuSrv.URL
	var err error
	if d.kafka, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "encwatch-alerts")); err != nil {
		return nil, err
	}
	secret := fmt.Sprintf("demo-%x", rand.Uint64())
	d.hook = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if webhook.Verify([]byte(secret), r.Header.Get(webhook.HeaderTimestamp), body, r.Header.Get(webhook.HeaderSignature), time.Now(), 5*time.Minute) != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		d.verified.Add(1)
	}))
	if stateDir != "" {
		d.state, d.keepState = stateDir, true
	} else if d.state, err = os.MkdirTemp("", "encwatch-demo-"); err != nil {
		return nil, err
	}
	// The daemon reaches the emulator through the SDK's standard variables.
	for k, v := range map[string]string{"AWS_ENDPOINT_URL_CLOUDTRAIL": d.emuURL, "AWS_ENDPOINT_URL_STS": d.emuURL,
		"AWS_ENDPOINT_URL_S3": d.emuURL, "AWS_ENDPOINT_URL_KMS": d.emuURL,
		"AWS_ACCESS_KEY_ID": "AKIDDEMO", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_SESSION_TOKEN": "", "AWS_PROFILE": "", "AWS_CA_BUNDLE": "",
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"ENCWATCH_DEMO_HMAC": secret} {
		if old, ok := os.LookupEnv(k); ok {
			d.env[k] = &old
		} else {
			d.env[k] = nil
		}
		os.Setenv(k, v)
	}
	if err := d.loadRecords(); err != nil {
		return nil, err
	}
	// History: every fixture once, over the last half hour, then the
	// ransomware story.
	now := time.Now()
	for i, rec := range d.records {
		d.add(rec, now.Add(-time.Duration(len(d.records)-i)*20*time.Second), now)
	}
	if d.dataDir, err = os.MkdirTemp("", "encwatch-demo-data-"); err != nil {
		return nil, err
	}
	if err := d.story(now); err != nil {
		return nil, err
	}
	gctx, cancel := context.WithCancel(ctx)
	d.cancel = cancel
	go d.generate(gctx, every)
	return d, nil
}

// loadRecords reads the encryption events among the embedded fixtures.
func (d *demo) loadRecords() error {
	return fs.WalkDir(fixtures.Records, ".", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := fixtures.Records.ReadFile(path)
		if err != nil {
			return err
		}
		recs, err := awsemu.SplitRecords(b)
		if err != nil {
			return nil // envelopes the emulator does not split (LookupEvents output, EventBridge)
		}
		for _, r := range recs {
			var probe struct{ EventName, EventSource, EventTime string }
			if json.Unmarshal(r, &probe) == nil && strings.HasSuffix(probe.EventName, "BucketEncryption") && probe.EventTime != "" &&
				(probe.EventSource == "s3.amazonaws.com" || probe.EventSource == "s3express.amazonaws.com") {
				d.records = append(d.records, r)
			}
		}
		return nil
	})
}

// add stores a copy of a record with a new ID and time, visible at visible,
// in its own Region when the demo polls that one.
func (d *demo) add(rec []byte, at, visible time.Time) {
	var m map[string]any
	if json.Unmarshal(rec, &m) != nil {
		return
	}
	region, _ := m["awsRegion"].(string)
	if !slices.Contains(demoRegions, region) {
		region = demoRegions[rand.IntN(len(demoRegions))]
	}
	m["eventID"] = fmt.Sprintf("demo-%08x-%04x", rand.Uint32(), rand.IntN(1<<16))
	m["eventTime"] = at.UTC().Format(time.RFC3339)
	m["awsRegion"] = region
	m["recipientAccountId"] = demoAccount
	b, _ := json.Marshal(m)
	d.emu.AddRecord(demoAccount, region, b, visible)
}

// generate adds one to three encryption changes every interval; some show
// up late and out of eventTime order, as CloudTrail's do.
func (d *demo) generate(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for range 1 + rand.IntN(3) {
			rec := d.records[rand.IntN(len(d.records))]
			d.add(rec, now.Add(-time.Duration(rand.IntN(600))*time.Second), now.Add(time.Duration(rand.IntN(8))*time.Second))
		}
		d.emu.Prune(now.Add(-time.Hour)) // past the daemon's overlap window
	}
}

func (d *demo) close() {
	if d.cancel != nil {
		d.cancel()
	}
	d.hook.Close()
	d.kafka.Close()
	d.emuSrv.Close()
	if d.dataDir != "" {
		os.RemoveAll(d.dataDir)
	}
	if !d.keepState {
		os.RemoveAll(d.state)
	}
	for k, v := range d.env {
		if v == nil {
			os.Unsetenv(k)
		} else {
			os.Setenv(k, *v)
		}
	}
}
