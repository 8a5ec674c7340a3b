// Package daemon is `encwatch run`: every configured source, the rules
// engine and every sink, with durable state, an HTTP server for metrics and
// health, and an orderly shutdown.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/repartition"
	"github.com/encwatch/encwatch/rules"
)

// DrainTimeout bounds how long a stopping daemon keeps delivering what
// waits in the outbox; with the rest of the shutdown it stays well within
// ECS's 30 s stop timeout.
const DrainTimeout = 10 * time.Second

// Options configures a daemon.
type Options struct {
	Config config.Config
	// Stdout receives the stdout sink's alerts; Stderr the logs.
	Stdout, Stderr io.Writer
	// Registry receives the metrics (nil: a new one).
	Registry *prometheus.Registry
	// Version, Revision and GoVersion label the build-info metric.
	Version, Revision, GoVersion string
	// Sinks are added to the configured ones (the demo's receivers).
	Sinks []outbox.Queue
	// OnReady is called with the HTTP address once the daemon runs.
	OnReady func(addr string)
	// ConfigPath is the file the policy and custom rules are reloaded from.
	ConfigPath string
	// Reload asks for a reload (the command sends SIGHUP here).
	Reload <-chan struct{}
}

// source is a configured source with the name its metrics and logs use.
type source struct {
	name string
	ingest.Source
	// judges marks the repartition's consumer: its batches go to the
	// pipeline; every other source's go to the repartition topic when
	// one is configured.
	judges bool
}

// app is one daemon: the parts Run builds from the options, in order, and
// the stop function of each, run in reverse order of start-up.
type app struct {
	o       Options
	cfg     config.Config
	log     zerolog.Logger
	reg     *prometheus.Registry
	db      *bolt.DB
	metrics *pipelineMetrics
	queues  []outbox.Queue
	outbox  *outbox.Outbox
	pipe    *pipeline
	sources []source
	// publish hands the sources' events to the repartition topic (nil:
	// judged here).
	publish *repartition.Publisher
	srv     *server
	faults  *stateFault
	stops   []func()
}

// Run runs the daemon until ctx ends, then stops reading, finishes the
// batch in flight, drains the outbox for up to DrainTimeout and closes the
// state. When every source ends by itself (files without watch), it
// delivers what waits in the outbox and returns. It returns nil after a
// clean stop.
func Run(ctx context.Context, o Options) error {
	a := &app{o: o, cfg: o.Config}
	defer a.teardown()
	if err := a.build(ctx); err != nil {
		return err
	}
	return a.run(ctx)
}

// onStop registers a part's stop function as the part is built.
func (a *app) onStop(fn func()) { a.stops = append(a.stops, fn) }

func (a *app) teardown() {
	for i := len(a.stops) - 1; i >= 0; i-- {
		a.stops[i]()
	}
}

// build makes every part: logger and metrics, state, engine, sinks, outbox,
// pipeline (which first recovers from the last stop), sources, HTTP server.
func (a *app) build(ctx context.Context) error {
	cfg, o := a.cfg, a.o
	a.log = newLogger(o.Stderr, cfg.Log.Level)
	a.reg = o.Registry
	if a.reg == nil {
		a.reg = prometheus.NewRegistry()
		a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "encwatch_build_info", Help: "Build of the running daemon; always 1."},
		[]string{"version", "revision", "goversion"})
	a.reg.MustRegister(buildInfo)
	buildInfo.WithLabelValues(o.Version, o.Revision, o.GoVersion).Set(1)

	db, err := openState(cfg.State.Dir)
	if err != nil {
		return err
	}
	a.db = db
	a.onStop(func() {
		if err := db.Close(); err != nil {
			a.log.Error().Err(err).Msg("closing state")
		}
	})
	a.metrics = newPipelineMetrics(a.reg)
	a.metrics.reloads.WithLabelValues("success")
	a.metrics.reloads.WithLabelValues("failure")
	engine, err := newEngine(cfg, a.metrics, a.log)
	if err != nil {
		return err
	}
	if a.queues, err = sinks(ctx, cfg, o); err != nil {
		return err
	}
	if r := cfg.Sinks.Remediate; r != nil {
		q, err := a.remediateQueue(ctx, r, db)
		if err != nil {
			return err
		}
		a.queues = append(a.queues, q)
	}
	if len(a.queues) == 0 {
		return errors.New("no sink configured: set sinks.stdout, sinks.kafka, sinks.webhooks or sinks.remediate")
	}
	a.onStop(a.closeSinks)
	a.outbox, err = outbox.New(outbox.Options{DB: db, Queues: a.queues, Logger: a.log.With().Str("component", "outbox").Logger(), Metrics: outbox.NewMetrics(a.reg)})
	if err != nil {
		return err
	}
	sc := newStateCollector(db)
	a.reg.MustRegister(sc)
	plog := a.log.With().Str("component", "pipeline").Logger()
	a.faults = newStateFault(cfg.State.Dir, plog, a.reg)
	a.pipe = &pipeline{db: db, outbox: a.outbox, now: time.Now, metrics: a.metrics, state: sc, faults: a.faults, log: plog, recent: newRecentAlerts(100)}
	a.pipe.engine.Store(engine)
	if err := a.pipe.recover(ctx); err != nil {
		return err
	}
	if a.sources, err = buildSources(ctx, cfg, db, a.log, a.reg, a.metrics, engine.DataRulesOn()); err != nil {
		return err
	}
	if r := cfg.Pipeline.Repartition; r != nil {
		pub, src, err := buildRepartition(ctx, r.Kafka, sourceEnv{cfg: cfg, cps: ingest.BoltCheckpoints{DB: db}, log: a.log, reg: a.reg, pm: a.metrics})
		if err != nil {
			return err
		}
		a.publish = pub
		a.onStop(func() { _ = pub.Close() })
		a.metrics.init(repartition.SourceName)
		a.sources = append(a.sources, source{name: repartition.SourceName, Source: src, judges: true})
	}
	if len(a.sources) == 0 {
		return errors.New("no source configured: set sources.lookup, sources.files, sources.sqs, sources.kafka or sources.inventory")
	}
	token, err := readSecret(cfg.HTTP.TokenFile, "")
	if err != nil {
		return fmt.Errorf("http.tokenFile: %w", err)
	}
	so := serverOptions{addr: cfg.HTTP.Listen, token: token, cert: cfg.HTTP.TLS.CertFile, keyFile: cfg.HTTP.TLS.KeyFile, pprof: cfg.HTTP.Pprof}
	readyFn := func() error {
		if err := a.faults.current(); err != nil {
			return fmt.Errorf("state %s cannot be written (sources are waiting): %w", cfg.State.Dir, err)
		}
		if failing := a.failing(); len(failing) > 0 {
			return fmt.Errorf("targets failing (the others go on): %s", strings.Join(failing, "; "))
		}
		return ready(db, a.queues)
	}
	a.srv, err = newServer(so, a.reg, readyFn, map[string]http.Handler{"/buckets": bucketsHandler(db), "GET /{$}": a.pageHandler(readyFn)})
	if err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	return nil
}

// failing lists, for /readyz and the web page, every source's targets
// that fail (an account and Region whose polls are denied, a queue, a
// trail bucket the role cannot read), each with its source's name.
func (a *app) failing() []string {
	var out []string
	for _, s := range a.sources {
		if f, ok := s.Source.(interface{ Failing() []string }); ok {
			for _, t := range f.Failing() {
				out = append(out, s.name+" "+t)
			}
		}
	}
	if a.publish != nil {
		for _, t := range a.publish.Failing() {
			out = append(out, "repartition "+t+" (the sources wait)")
		}
	}
	return out
}

func (a *app) closeSinks() {
	for _, q := range a.queues {
		if c, ok := q.Sink.(io.Closer); ok {
			if err := c.Close(); err != nil {
				a.log.Warn().Err(err).Str("sink", q.Sink.Name()).Msg("closing sink")
			}
		}
	}
}

// run runs every part in one errgroup, each under its own context, and
// stops them in order: the sources (ctx), then reloads and window expiry,
// then delivery (after draining for up to DrainTimeout), then HTTP.
func (a *app) run(ctx context.Context) error {
	a.log.Info().Str("listen", a.srv.Addr()).Str("state", a.cfg.State.Dir).Int("sources", len(a.sources)).Int("sinks", len(a.queues)).
		Str("version", a.o.Version).Msg("encwatch running")
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	deliverCtx, stopDelivery := context.WithCancel(context.Background())
	bgCtx, stopBG := context.WithCancel(ctx)
	defer stopHTTP()
	defer stopDelivery()
	defer stopBG()
	var parts errgroup.Group
	parts.Go(func() error { return a.srv.run(httpCtx) })
	parts.Go(func() error { return a.outbox.Run(deliverCtx, DrainTimeout) })
	parts.Go(func() error { a.pipe.reloads(bgCtx, a.o, a.cfg, a.log); return nil })
	parts.Go(func() error { a.pipe.expireLoop(bgCtx, time.Minute); return nil })
	srcErr := make(chan error, 1)
	parts.Go(func() error { err := a.runSources(ctx); srcErr <- err; return err })
	a.srv.ready.Store(true)
	if a.o.OnReady != nil {
		a.o.OnReady(a.srv.Addr())
	}
	err := <-srcErr
	if err != nil && ctx.Err() == nil {
		a.log.Error().Err(err).Msg("a source failed; stopping")
	}
	if err == nil && ctx.Err() == nil {
		// Every source finished by itself: deliver everything before
		// exiting, unless told to stop.
		a.log.Info().Msg("sources finished; delivering what waits in the outbox")
		for ctx.Err() == nil && pending(a.outbox, a.queues) > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	stopBG()
	a.log.Info().Msg("stopping: sources stopped, draining the outbox")
	a.srv.ready.Store(false)
	stopDelivery()
	stopHTTP()
	_ = parts.Wait() // the sources' error is err; the others stop cleanly
	a.log.Info().Msg("stopped")
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// runSources runs every source until ctx ends or one fails.
func (a *app) runSources(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range a.sources {
		g.Go(func() error {
			h := a.pipe.handle
			if a.publish != nil && !s.judges {
				h = a.publish.Handler(h)
			}
			if err := s.Run(gctx, h); err != nil {
				return fmt.Errorf("source %s: %w", s.name, err)
			}
			a.log.Debug().Str("source", s.name).Msg("source stopped")
			return nil
		})
	}
	return g.Wait()
}

func newLogger(w io.Writer, level string) zerolog.Logger {
	if w == nil {
		w = os.Stderr
	}
	l, err := zerolog.ParseLevel(level)
	if err != nil {
		l = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(l).With().Timestamp().Logger()
}

func pending(ob *outbox.Outbox, qs []outbox.Queue) int {
	n := 0
	for _, q := range qs {
		n += ob.Depth(q.Sink.Name())
	}
	return n
}

// ready checks that the state answers and every sink that can tell is
// reachable.
func ready(db *bolt.DB, qs []outbox.Queue) error {
	if err := db.View(func(*bolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, q := range qs {
		if c, ok := q.Sink.(alert.Checker); ok {
			if err := c.Check(ctx); err != nil {
				return fmt.Errorf("sink %s: %w", q.Sink.Name(), err)
			}
		}
	}
	return nil
}

// newEngine builds the rules engine of a configuration.
func newEngine(cfg config.Config, pm *pipelineMetrics, log zerolog.Logger) (*rules.Engine, error) {
	e, err := rules.New(cfg.Policy, nil, cfg.Compiled...)
	if err != nil {
		return nil, err
	}
	e.OnKMSCopy(func(t string) { pm.kmsCopies.WithLabelValues(t).Inc() })
	e.OnSuppressed(func(rule, reason string) { pm.suppressed.WithLabelValues(rule, reason).Inc() })
	for _, c := range cfg.Compiled {
		pm.customErrors.WithLabelValues(c.ID, "error")
		pm.customErrors.WithLabelValues(c.ID, "cost")
		pm.ruleErrors.WithLabelValues(c.ID)
	}
	e.OnRuleError(func(re *rules.RuleError) {
		pm.ruleErrors.WithLabelValues(re.Rule).Inc()
		if re.Custom {
			reason := "error"
			if errors.Is(re.Err, rules.ErrCostExceeded) {
				reason = "cost"
			}
			pm.customErrors.WithLabelValues(re.Rule, reason).Inc()
		}
		l := log.Warn().Str("rule", re.Rule).Str("error", re.Err.Error())
		if ev := re.Event; ev != nil {
			l = l.Str("event_id", ev.ID).Str("event_name", ev.Name).Str("origin", ev.Origin.String())
		}
		if re.Stack != nil {
			l = l.Bytes("stack", re.Stack)
		}
		l.Msg("rule failed on an event; skipped for it, the event's other rules ran")
	})
	return e, nil
}

// reloads replaces the policy and custom rules when asked (SIGHUP) or, with
// reload.watch, when the configuration file changes. A configuration that
// does not load or compile is logged and counted; the running one stays.
func (p *pipeline) reloads(ctx context.Context, o Options, cfg config.Config, log zerolog.Logger) {
	if o.ConfigPath == "" {
		return
	}
	var tick <-chan time.Time
	var lastMod time.Time
	if cfg.Reload.Watch {
		t := time.NewTicker(cfg.Reload.Interval.D())
		defer t.Stop()
		tick = t.C
		if st, err := os.Stat(o.ConfigPath); err == nil {
			lastMod = st.ModTime()
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.Reload:
		case <-tick:
			st, err := os.Stat(o.ConfigPath)
			if err != nil || st.ModTime().Equal(lastMod) {
				continue
			}
			lastMod = st.ModTime()
		}
		p.reload(o.ConfigPath, log)
	}
}

func (p *pipeline) reload(path string, log zerolog.Logger) {
	cfg, err := config.Load(path, os.Environ())
	var e *rules.Engine
	if err == nil {
		e, err = newEngine(cfg, p.metrics, log)
	}
	if err != nil {
		p.metrics.reloads.WithLabelValues("failure").Inc()
		log.Error().Str("config", path).Str("error", err.Error()).Msg("reload rejected; the running policy stays in force")
		return
	}
	p.engine.Store(e)
	p.metrics.reloads.WithLabelValues("success").Inc()
	log.Info().Str("config", path).Int("custom_rules", len(cfg.Compiled)).
		Msg("policy and custom rules reloaded (sources, sinks and state change only on restart)")
}
