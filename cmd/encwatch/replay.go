package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/term"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/rules"
)

// maxErrorLines bounds the bad-input lines replay prints; the rest are
// counted in the summary.
const maxErrorLines = 50

// progressThreshold is the input size above which replay shows progress
// on a terminal.
const progressThreshold = 64 << 20

type replayOptions struct {
	config  string
	format  string
	failOn  string
	workers int
	quiet   bool
}

func replayCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var o replayOptions
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.config, "config", "", "configuration `FILE` whose policy and custom rules apply (default: the built-in policy)")
	fs.StringVar(&o.format, "format", "text", "output format: text (one line per finding), json (one alert v1 object per line) or ocsf (one OCSF Detection Finding per line)")
	fs.StringVar(&o.failOn, "fail-on", "none", "exit 1 when a finding reaches this `SEVERITY` (info, low, medium, high, critical; none never)")
	fs.IntVar(&o.workers, "workers", 0, "files decoded at once (default: the number of CPUs)")
	fs.BoolVar(&o.quiet, "quiet", false, "print no summary and no bad-input lines on stderr")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: encwatch replay [flags] PATH...  (files, folders, .gz or plain, - for stdin)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	failOn, ok := outputFlags("replay", o.format, o.failOn, stderr)
	if !ok {
		return exitUsage
	}
	cfg, err := loadConfig(o.config)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	state := rules.NewMemory()
	engine, err := newEngine(cfg, state)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	inputs, err := ingest.Expand(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "encwatch replay: %v\n", err)
		return exitUsage
	}
	for i := range inputs {
		if inputs[i].Path == ingest.Stdin && stdin != nil {
			inputs[i].Reader = stdin
		}
	}
	w := alertWriter(o.format, stdout)
	r := &replayer{engine: engine, state: state, out: w, stderr: stderr, quiet: o.quiet, failOn: failOn, bySev: map[rules.Severity]int{},
		ruleErrors: map[string]int{}}
	engine.OnRuleError(r.ruleFailed)
	engine.OnSuppressed(func(string, string) { r.suppressed++ })
	return r.run(ctx, inputs, o.workers, cfg.IngestLimits())
}

type replayer struct {
	engine   *rules.Engine
	state    rules.State
	out      *alert.Writer
	stderr   io.Writer
	quiet    bool
	failOn   rules.Severity
	findings int
	bySev    map[rules.Severity]int
	failed   bool
	errLines int
	progress progress
	// ruleErrors counts, by rule, the events a rule failed on.
	ruleErrors map[string]int
	// suppressed counts findings policy.repeats kept back.
	suppressed int
}

// ruleFailed reports a rule that failed on an event: the first few with
// where the event came from (and the stack of a panic), all in the summary.
func (r *replayer) ruleFailed(re *rules.RuleError) {
	r.ruleErrors[re.Rule]++
	r.errLines++
	if r.quiet || r.errLines > maxErrorLines {
		return
	}
	where := "closing a window"
	if re.Event != nil {
		where = "event " + firstNonEmpty(re.Event.ID, "(no eventID)") + " at " + re.Event.Origin.String()
	}
	fmt.Fprintf(r.stderr, "encwatch: rule %s failed on %s: %v\n", re.Rule, where, re.Err)
	if re.Stack != nil {
		fmt.Fprintf(r.stderr, "%s\n", re.Stack)
	}
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

type progress struct {
	files, bytes, records, events atomic.Int64
}

func (r *replayer) run(ctx context.Context, inputs []ingest.Input, workers int, limits ingest.Limits) int {
	start := time.Now()
	var total int64
	for _, in := range inputs {
		total += in.Size
	}
	stopProgress := r.startProgress(len(inputs), total)
	opts := ingest.ReadOptions{
		Workers:    workers,
		Limits:     limits,
		DataEvents: r.engine.DataRulesOn(),
		OnError: func(pos ingest.Position, err error) {
			r.errLines++
			if !r.quiet && r.errLines <= maxErrorLines {
				fmt.Fprintf(r.stderr, "encwatch: bad input: %s: %v\n", pos, err)
			}
		},
		OnInputDone: func(in ingest.Input, st ingest.Stats, err error) {
			r.progress.files.Add(1)
			r.progress.bytes.Add(in.Size)
			r.progress.records.Add(st.Records)
		},
	}
	st, err := ingest.ReadAll(ctx, inputs, opts, r.judge)
	if err == nil {
		// The windows of grouped rules still open at the end of the data.
		var fs []rules.Finding
		if fs, err = r.engine.Flush(r.state); err == nil {
			err = r.write(fs, time.Now())
		}
	}
	stopProgress()
	if ferr := r.out.Flush(); ferr != nil && err == nil {
		err = ferr
	}
	if !r.quiet {
		r.summary(len(inputs), st, time.Since(start))
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(r.stderr, "encwatch replay: %v\n", err)
		return exitUsage
	}
	if r.failed {
		return exitFindings
	}
	return exitOK
}

// judge evaluates a batch of events and writes their alerts.
func (r *replayer) judge(evs []*ingest.Event) error {
	now := time.Now()
	for _, ev := range evs {
		r.progress.events.Add(1)
		fs, err := r.engine.Evaluate(ev)
		if err != nil {
			return err
		}
		if err := r.write(fs, now); err != nil {
			return err
		}
	}
	return nil
}

func (r *replayer) write(fs []rules.Finding, now time.Time) error {
	for _, f := range fs {
		r.findings++
		r.bySev[f.Severity]++
		if r.failOn != 0 && f.Severity >= r.failOn {
			r.failed = true
		}
		if err := r.out.Write(alert.New(f, now)); err != nil {
			return fmt.Errorf("writing alerts: %w", err)
		}
	}
	return nil
}

func (r *replayer) summary(files int, st ingest.Stats, d time.Duration) {
	var sev []string
	for s := rules.Critical; s >= rules.Info; s-- {
		if n := r.bySev[s]; n > 0 {
			sev = append(sev, fmt.Sprintf("%s %d", s, n))
		}
	}
	sevs := ""
	if len(sev) > 0 {
		sevs = " (" + strings.Join(sev, ", ") + ")"
	}
	mb := float64(st.Bytes) / 1e6
	fmt.Fprintf(r.stderr, "encwatch replay: %d files, %.1f MB decompressed, %d records, %d encryption events, %d findings%s, %d unreadable in %.2fs (%.0f MB/s)\n",
		files, mb, st.Records, st.Events, r.findings, sevs, st.Errors, d.Seconds(), mb/max(d.Seconds(), 1e-9))
	if r.suppressed > 0 {
		fmt.Fprintf(r.stderr, "encwatch replay: %d findings not raised: unchanged configurations re-applied within policy.repeats.window\n", r.suppressed)
	}
	if len(r.ruleErrors) > 0 {
		var parts []string
		for _, id := range slices.Sorted(maps.Keys(r.ruleErrors)) {
			parts = append(parts, fmt.Sprintf("%s %d", id, r.ruleErrors[id]))
		}
		fmt.Fprintf(r.stderr, "encwatch replay: rule errors (rule skipped for those events, the others ran): %s\n", strings.Join(parts, ", "))
	}
	if r.errLines > maxErrorLines {
		fmt.Fprintf(r.stderr, "encwatch replay: %d more bad-input lines not shown\n", r.errLines-maxErrorLines)
	}
}

// startProgress prints a progress line on stderr about once a second when
// stderr is a terminal and the input is large; it returns the stop func.
func (r *replayer) startProgress(files int, total int64) func() {
	f, ok := r.stderr.(*os.File)
	if r.quiet || !ok || !term.IsTerminal(int(f.Fd())) || (total < progressThreshold && files < 1000) {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(f, "\r\033[K")
				return
			case <-t.C:
				p := &r.progress
				pct := 0.0
				if total > 0 {
					pct = 100 * float64(p.bytes.Load()) / float64(total)
				}
				fmt.Fprintf(f, "\r\033[Kreplay: %d/%d files (%.0f%%), %d records, %d encryption events",
					p.files.Load(), files, pct, p.records.Load(), p.events.Load())
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// newEngine builds the rules engine for a configuration.
func newEngine(cfg configT, st rules.State) (*rules.Engine, error) {
	return rules.New(cfg.Policy, st, cfg.Compiled...)
}

// alertWriter writes alerts in a command's --format.
func alertWriter(format string, w io.Writer) *alert.Writer {
	switch format {
	case "json":
		return alert.NewJSONWriter(w)
	case "ocsf":
		v, _, _ := buildInfo()
		return alert.NewOCSFWriter(w, v)
	}
	return alert.NewTextWriter(w)
}

// outputFlags checks a command's --format and --fail-on: the severity
// that fails the run (0: none), or false after saying what is wrong.
func outputFlags(cmd, format, failOn string, stderr io.Writer) (rules.Severity, bool) {
	if format != "text" && format != "json" && format != "ocsf" {
		fmt.Fprintf(stderr, "encwatch %s: --format must be text, json or ocsf, got %q\n", cmd, format)
		return 0, false
	}
	if failOn == "none" {
		return 0, true
	}
	s, err := rules.ParseSeverity(failOn)
	if err != nil {
		fmt.Fprintf(stderr, "encwatch %s: --fail-on: %v\n", cmd, err)
		return 0, false
	}
	return s, true
}
