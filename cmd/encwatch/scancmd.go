package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/cmd/daemon"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/inventory"
	"github.com/encwatch/encwatch/rules"
)

type scanOptions struct {
	config, format, failOn, regions string
	rate                            float64
	quiet                           bool
}

// scanCmd reads the current configuration of every bucket of the
// configured accounts and Regions and judges it (DESIGN 5a).
func scanCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o scanOptions
	fs := flag.NewFlagSet("scan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.config, "config", "", "configuration `FILE`: its policy, custom rules and sources.inventory (else sources.lookup) accounts and Regions")
	fs.StringVar(&o.format, "format", "text", "output format: text (one line per bucket), json (one alert v1 object per finding) or ocsf (one OCSF Detection Finding per finding)")
	fs.StringVar(&o.failOn, "fail-on", "none", "exit 1 when a finding reaches this `SEVERITY` (info, low, medium, high, critical; none never)")
	fs.StringVar(&o.regions, "regions", "", "comma-separated `REGIONS` to scan instead of the configuration's (default: AWS_REGION, else us-east-1)")
	fs.Float64Var(&o.rate, "rate", 0, "S3 and KMS calls per second per account, at most (default: sources.inventory.rate, else 20)")
	fs.BoolVar(&o.quiet, "quiet", false, "print no progress and no summary on stderr")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: encwatch scan [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		if err == nil {
			fs.Usage()
		}
		return exitUsage
	}
	failOn, ok := outputFlags("scan", o.format, o.failOn, stderr)
	if !ok {
		return exitUsage
	}
	cfg, err := loadConfig(o.config)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	regions, accounts, rate := scanTargets(cfg, o)
	engine, err := newEngine(cfg, rules.NewMemory())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	accts, err := daemon.InventoryAccounts(ctx, accounts)
	if err != nil {
		fmt.Fprintf(stderr, "encwatch scan: %v\n", err)
		return exitUsage
	}
	sc := inventory.New(inventory.Options{Accounts: accts, Regions: regions, Rate: rate})
	s := &scanner{engine: engine, failOn: failOn, bySev: map[rules.Severity]int{}, rows: map[string]*scanRow{}}
	if o.format != "text" {
		s.out = alertWriter(o.format, stdout)
	}
	engine.OnRuleError(func(re *rules.RuleError) {
		fmt.Fprintf(stderr, "encwatch scan: rule %s failed on %s: %v\n", re.Rule, re.Event.Bucket.ARN, re.Err)
	})
	stop := func() {}
	if !o.quiet {
		stop = scanProgress(stderr, sc)
	}
	start := time.Now()
	results := sc.Scan(ctx, s.judge)
	stop()
	if s.out != nil {
		if err := s.out.Flush(); err != nil && s.err == nil {
			s.err = fmt.Errorf("writing alerts: %w", err)
		}
	}
	if o.format == "text" {
		s.printRows(stdout)
	}
	incomplete := false
	for _, r := range results {
		if r.Err != nil {
			incomplete = true
			fmt.Fprintf(stderr, "encwatch scan: account %s, %s: %v\n", r.Account, r.Region, r.Err)
		}
	}
	if !o.quiet {
		s.summary(stderr, len(accts), len(regions), time.Since(start))
	}
	switch {
	case s.err != nil:
		fmt.Fprintf(stderr, "encwatch scan: %v\n", s.err)
		return exitUsage
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "encwatch scan: interrupted; the results above are incomplete")
		return exitUsage
	case incomplete:
		fmt.Fprintln(stderr, "encwatch scan: some listings failed (see above); the results are incomplete")
		return exitUsage
	case s.failed:
		return exitFindings
	}
	return exitOK
}

// scanTargets are the Regions, accounts and rate of a scan: the flags,
// else sources.inventory, else sources.lookup, else the own account in
// AWS_REGION.
func scanTargets(cfg config.Config, o scanOptions) ([]string, []config.Account, float64) {
	var regions []string
	var accounts []config.Account
	rate := float64(inventory.DefaultRate)
	switch {
	case cfg.Sources.Inventory != nil:
		regions, accounts, rate = cfg.Sources.Inventory.Regions, cfg.Sources.Inventory.Accounts, cfg.Sources.Inventory.Rate
	case cfg.Sources.Lookup != nil:
		regions, accounts = cfg.Sources.Lookup.Regions, cfg.Sources.Lookup.Accounts
	}
	if o.regions != "" {
		regions = nil
		for _, r := range strings.Split(o.regions, ",") {
			if r = strings.TrimSpace(r); r != "" {
				regions = append(regions, r)
			}
		}
	}
	if len(regions) == 0 {
		regions = []string{firstNonEmpty(os.Getenv("AWS_REGION"), os.Getenv("AWS_DEFAULT_REGION"), "us-east-1")}
	}
	if o.rate > 0 {
		rate = o.rate
	}
	return regions, accounts, rate
}

// scanRow is one bucket in the text output.
type scanRow struct {
	b          ingest.Bucket
	enc        ingest.Encryption
	key        ingest.KeyInfo
	readError  string
	rules      []string
	compliance string
}

type scanner struct {
	engine *rules.Engine
	out    *alert.Writer
	failOn rules.Severity

	mu       sync.Mutex
	rows     map[string]*scanRow
	bySev    map[rules.Severity]int
	findings int
	failed   bool
	err      error
}

// judge evaluates one read; the scan calls it from a goroutine per
// account and Region.
func (s *scanner) judge(ev *ingest.Event) error {
	fs, err := s.engine.Evaluate(ev)
	if err != nil {
		return err
	}
	if ev.Inventory.Complete {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	row := &scanRow{b: ev.Bucket, enc: ev.Encryption, key: ev.Inventory.Key, readError: ev.Inventory.ErrorCode, compliance: rules.Compliant}
	now := time.Now()
	for _, f := range fs {
		s.findings++
		s.bySev[f.Severity]++
		if s.failOn != 0 && f.Severity >= s.failOn {
			s.failed = true
		}
		row.rules = append(row.rules, f.Rule)
		if s.out != nil {
			if err := s.out.Write(alert.New(f, now)); err != nil && s.err == nil {
				s.err = fmt.Errorf("writing alerts: %w", err)
			}
		}
	}
	switch {
	case row.readError != "":
		row.compliance = rules.Unknown
	case len(row.rules) > 0:
		row.compliance = rules.NonCompliant
	}
	s.rows[rules.StateKey(ev.Bucket)] = row
	return nil
}

func (s *scanner) printRows(out io.Writer) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	keys := make([]string, 0, len(s.rows))
	for k := range s.rows {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fmt.Fprintln(w, "COMPLIANCE\tTYPE\tACCOUNT\tREGION\tBUCKET\tALGORITHM\tKEY\tBUCKET-KEY\tSSE-C-BLOCKED\tFINDINGS")
	for _, k := range keys {
		r := s.rows[k]
		if r.readError != "" {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\tunreadable: %s\n", r.compliance, r.b.Type, r.b.Account, r.b.Region, safe(r.b.Name), safe(r.readError))
			continue
		}
		var alg, key, bk string = "-", "-", "off"
		if len(r.enc.Rules) > 0 {
			rr := r.enc.Rules[0]
			alg, key = firstNonEmpty(rr.Algorithm, "-"), firstNonEmpty(rr.KMSKeyID, "-")
			if rr.BucketKeyEnabled || r.b.Type == ingest.BucketDirectory {
				bk = "on"
			}
			if r.key.ARN != "" && r.key.ARN != rr.KMSKeyID {
				key += " (" + r.key.ARN + ", " + firstNonEmpty(r.key.State, "?") + ")"
			} else if r.key.State != "" && r.key.State != "Enabled" {
				key += " (" + r.key.State + ")"
			}
		}
		blocked := "no"
		if r.enc.BlocksSSEC() {
			blocked = "yes"
		}
		if r.b.Type == ingest.BucketDirectory {
			blocked = "n/a" // directory buckets never take SSE-C
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.compliance, r.b.Type, r.b.Account, r.b.Region, safe(r.b.Name), safe(alg), safe(key), bk, blocked,
			firstNonEmpty(strings.Join(r.rules, ","), "-"))
	}
}

// safe keeps a terminal from interpreting what an AWS answer holds.
func safe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

func (s *scanner) summary(w io.Writer, accounts, regions int, d time.Duration) {
	counts := map[string]int{}
	types := map[string]int{}
	for _, r := range s.rows {
		counts[r.compliance]++
		types[r.b.Type]++
	}
	var sev []string
	for v := rules.Critical; v >= rules.Info; v-- {
		if n := s.bySev[v]; n > 0 {
			sev = append(sev, fmt.Sprintf("%s %d", v, n))
		}
	}
	sevs := ""
	if len(sev) > 0 {
		sevs = " (" + strings.Join(sev, ", ") + ")"
	}
	fmt.Fprintf(w, "encwatch scan: %d accounts x %d Regions: %d buckets (%d general purpose, %d directory): %d compliant, %d non-compliant, %d unknown; %d findings%s in %.1fs\n",
		accounts, regions, len(s.rows), types[ingest.BucketGeneralPurpose], types[ingest.BucketDirectory],
		counts[rules.Compliant], counts[rules.NonCompliant], counts[rules.Unknown], s.findings, sevs, d.Seconds())
}

// scanProgress prints, per account, the buckets read of those listed: on
// a terminal every second in place, elsewhere a line every 10 s.
func scanProgress(stderr io.Writer, sc *inventory.Scanner) func() {
	every, tty := 10*time.Second, false
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		every, tty = time.Second, true
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				if tty {
					fmt.Fprint(stderr, "\r\033[K")
				}
				return
			case <-t.C:
				var parts []string
				for _, a := range sc.Accounts() {
					p := sc.Progress(a.ID)
					parts = append(parts, fmt.Sprintf("%s %d/%d read, %d unreadable", a.ID, p.Read.Load(), p.Listed.Load(), p.Failed.Load()))
				}
				line := "scan: " + strings.Join(parts, "; ")
				if tty {
					fmt.Fprint(stderr, "\r\033[K"+line)
				} else {
					fmt.Fprintln(stderr, line)
				}
			}
		}
	}()
	return func() { close(done); <-stopped }
}
