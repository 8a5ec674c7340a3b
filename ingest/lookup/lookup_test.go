package lookup_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rs/zerolog"

	"github.com/encwatch/encwatch/fixtures/awsemu"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/lookup"
)

// emulator starts the CloudTrail and STS emulator and points the SDK at it.
func emulator(t *testing.T) *awsemu.CloudTrail {
	t.Helper()
	emu := awsemu.NewCloudTrail()
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	testkit.AWSEnv(t, srv.URL)
	return emu
}

func rec(id, name, bucket string, at time.Time) []byte {
	return testkit.Record{ID: id, Name: name, Bucket: bucket, Time: at}.Build()
}

// collector is a Handler that records what it was handed.
type collector struct {
	mu     sync.Mutex
	events map[string]int
	cps    map[string][]byte
}

func (c *collector) handle(_ context.Context, b ingest.Batch) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range b.Events {
		c.events[e.ID]++
	}
	for k, v := range b.Checkpoints {
		c.cps[k] = v
	}
	return nil
}

func (c *collector) Checkpoint(key string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cps[key], nil
}

func (c *collector) count() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	total := 0
	for k, v := range c.events {
		out[k] = v
		total += v
	}
	return out, total
}

// TestLateEventsOnceAcrossRestart releases events late and out of eventTime
// order, throws throttling and 5xx answers in, restarts the source from its
// checkpoint, and requires every event exactly once and the rate kept.
func TestLateEventsOnceAcrossRestart(t *testing.T) {
	emu := emulator(t)
	now := time.Now()
	want := map[string]bool{}
	add := func(id, name string, age, visibleIn time.Duration) {
		if err := emu.AddRecord("111122223333", "us-east-1", rec(id, name, "b-"+id, now.Add(-age)), now.Add(visibleIn)); err != nil {
			t.Fatal(err)
		}
		want[id] = true
	}
	for i := range 120 { // more than two pages
		add(fmt.Sprintf("early-%03d", i), ingest.GetBucketEncryption, time.Duration(i)*time.Second, 0)
	}
	add("late-old", ingest.PutBucketEncryption, 12*time.Minute, 3*time.Second)          // visible late, eventTime long ago
	add("late-new", ingest.DeleteBucketEncryption, time.Minute, 2*time.Second)          // out of order with late-old
	add("after-restart", ingest.DeleteBucketEncryption, 10*time.Minute, 11*time.Second) // visible once the first run ended
	emu.FailNext(2, 503)

	c := &collector{events: map[string]int{}, cps: map[string][]byte{}}
	run := func(d time.Duration) {
		tg, err := lookup.NewTarget(context.Background(), "us-east-1", "", "")
		if err != nil {
			t.Fatal(err)
		}
		src, err := lookup.New(lookup.Options{Targets: []lookup.Target{tg}, Interval: 300 * time.Millisecond, Overlap: 20 * time.Minute, Reads: true,
			MinBackoff: 50 * time.Millisecond, Checkpoints: c, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		if err := src.Run(ctx, c.handle); err != nil {
			t.Fatal(err)
		}
	}
	run(10 * time.Second) // a poll of the changes is five lookups, each at least one call at 1.8 a second
	got, _ := c.count()
	if got["late-old"] != 1 || got["late-new"] != 1 || got["after-restart"] != 0 {
		t.Fatalf("before restart: late-old %d late-new %d after-restart %d", got["late-old"], got["late-new"], got["after-restart"])
	}
	run(10 * time.Second) // a restart from the stored checkpoint
	got, total := c.count()
	for id := range want {
		if got[id] != 1 {
			t.Errorf("event %s handed on %d times, want 1", id, got[id])
		}
	}
	if total != len(want) {
		t.Errorf("%d events handed on, want %d", total, len(want))
	}
	if m := emu.MaxCallsPerSecond("111122223333", "us-east-1"); m > 2 {
		t.Errorf("%d calls within one second; the limit is 2", m)
	}
	if served, _ := emu.Stats(); served < 6 {
		t.Errorf("only %d calls served", served)
	}
}

// TestRegionsAndAssumedRoles polls two Regions of the own account and two
// member accounts through assumed roles at once.
func TestRegionsAndAssumedRoles(t *testing.T) {
	emu := emulator(t)
	now := time.Now()
	type target struct{ account, role, region string }
	targets := []target{
		{"111122223333", "", "us-east-1"}, {"111122223333", "", "eu-west-1"},
		{"444455556666", "arn:aws:iam::444455556666:role/encwatch-reader", "us-east-1"},
		{"777788889999", "arn:aws:iam::777788889999:role/encwatch-reader", "us-west-2"},
	}
	var tgs []lookup.Target
	for _, tg := range targets {
		id := tg.account + "-" + tg.region
		if err := emu.AddRecord(tg.account, tg.region, rec(id, ingest.DeleteBucketEncryption, "b", now.Add(-time.Minute)), time.Time{}); err != nil {
			t.Fatal(err)
		}
		x, err := lookup.NewTarget(context.Background(), tg.region, tg.role, "")
		if err != nil {
			t.Fatal(err)
		}
		tgs = append(tgs, x)
	}
	c := &collector{events: map[string]int{}, cps: map[string][]byte{}}
	src, err := lookup.New(lookup.Options{Targets: tgs, Interval: time.Second, Checkpoints: c, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := src.Run(ctx, c.handle); err != nil {
		t.Fatal(err)
	}
	got, total := c.count()
	for _, tg := range targets {
		if got[tg.account+"-"+tg.region] != 1 {
			t.Errorf("%s %s: event seen %d times", tg.account, tg.region, got[tg.account+"-"+tg.region])
		}
		calls := emu.Calls(tg.account, tg.region)
		if len(calls) == 0 || calls[0].Sub(start) > time.Second {
			t.Errorf("%s %s: not polled at once (%d calls)", tg.account, tg.region, len(calls))
		}
	}
	if total != len(targets) {
		t.Errorf("%d events, want %d (no event may reach another account)", total, len(targets))
	}
	if roles := emu.AssumeRoles(); len(roles) != 2 {
		t.Errorf("assumed roles: %v", roles)
	}
}

// TestThrottlingSurvived lets the tailer call faster than the API allows,
// as when another client shares the account's quota: it is throttled, backs
// off, and still hands on every event.
func TestThrottlingSurvived(t *testing.T) {
	emu := emulator(t)
	now := time.Now()
	for i := range 160 {
		if err := emu.AddRecord("111122223333", "us-east-1", rec(fmt.Sprint(i), ingest.GetBucketEncryption, fmt.Sprint("b", i), now.Add(-time.Duration(i)*time.Second)), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	tg, err := lookup.NewTarget(context.Background(), "us-east-1", "", "")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{events: map[string]int{}, cps: map[string][]byte{}}
	src, _ := lookup.New(lookup.Options{Targets: []lookup.Target{tg}, Interval: time.Hour, Rate: 20, Reads: true, MinBackoff: 100 * time.Millisecond, Checkpoints: c, Logger: zerolog.Nop()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if _, total := c.count(); total == 160 {
				time.Sleep(200 * time.Millisecond)
				cancel()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	if err := src.Run(ctx, c.handle); err != nil {
		t.Fatal(err)
	}
	if _, total := c.count(); total != 160 {
		t.Errorf("%d events, want 160", total)
	}
	if _, throttled := emu.Stats(); throttled == 0 {
		t.Error("the emulator throttled nothing: the test did not test throttling")
	}
}

// TestCloudTrailEventWithinLimits: each CloudTrailEvent goes through the
// same limits as a record of a trail file. One too large and one nested
// too deep are reported under their reasons and not handed on; the good
// one is, and every one is marked seen so it is not fetched again.
func TestCloudTrailEventWithinLimits(t *testing.T) {
	emu := emulator(t)
	now := time.Now()
	big := rec("too-big", ingest.PutBucketEncryption, "b-"+strings.Repeat("x", 5000), now.Add(-time.Minute))
	deep := testkit.Record{ID: "too-deep", Bucket: "b-deep", Time: now.Add(-time.Minute),
		Extra: map[string]string{"n": strings.Repeat("[", 100) + strings.Repeat("]", 100)}}.Build()
	for _, r := range [][]byte{big, deep, rec("good", ingest.DeleteBucketEncryption, "b-good", now.Add(-time.Minute))} {
		if err := emu.AddRecord("111122223333", "us-east-1", r, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	reasons := map[string]string{}
	c := &collector{events: map[string]int{}, cps: map[string][]byte{}}
	tg, err := lookup.NewTarget(context.Background(), "us-east-1", "", "")
	if err != nil {
		t.Fatal(err)
	}
	src, err := lookup.New(lookup.Options{Targets: []lookup.Target{tg}, Interval: 200 * time.Millisecond, Checkpoints: c, Logger: zerolog.Nop(),
		Limits: ingest.Limits{MaxRecordBytes: 4096, MaxNesting: 32},
		OnError: func(pos ingest.Position, err error) {
			mu.Lock()
			defer mu.Unlock()
			reasons[pos.Source[strings.LastIndex(pos.Source, "/")+1:]] = ingest.ErrorReason(err)
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := src.Run(ctx, c.handle); err != nil {
		t.Fatal(err)
	}
	got, _ := c.count()
	if got["good"] != 1 || got["too-big"] != 0 || got["too-deep"] != 0 {
		t.Errorf("handed on %v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if reasons["too-big"] != "too_large" || reasons["too-deep"] != "too_deep" || len(reasons) != 2 {
		t.Errorf("reported %v, want too-big too_large and too-deep too_deep, once each", reasons)
	}
}

// TestPermissionTakenAway: one Region's LookupEvents answers AccessDenied
// (the role lost cloudtrail:LookupEvents). Its polls back off instead of
// retrying every interval, the failure is counted by reason and logged a
// few times, not per poll; the other Region goes on; once allowed again
// the Region catches up and the failing gauge returns to 0.
func TestPermissionTakenAway(t *testing.T) {
	emu := emulator(t)
	now := time.Now()
	for _, region := range []string{"us-east-1", "eu-west-1"} {
		if err := emu.AddRecord("111122223333", region, rec("del-"+region, ingest.DeleteBucketEncryption, "b-"+region, now.Add(-time.Minute)), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	emu.Deny("111122223333", "eu-west-1", true)
	var tgs []lookup.Target
	for _, region := range []string{"us-east-1", "eu-west-1"} {
		tg, err := lookup.NewTarget(context.Background(), region, "", "")
		if err != nil {
			t.Fatal(err)
		}
		tgs = append(tgs, tg)
	}
	var logs testkit.Buffer
	reg := prometheus.NewRegistry()
	c := &collector{events: map[string]int{}, cps: map[string][]byte{}}
	src, err := lookup.New(lookup.Options{Targets: tgs, Interval: 200 * time.Millisecond, Checkpoints: c,
		Logger: zerolog.New(&logs), Metrics: lookup.NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, c.handle) }()
	testkit.Eventually(t, 20*time.Second, func() bool { got, _ := c.count(); return got["del-us-east-1"] == 1 }, "the allowed Region was not read")
	time.Sleep(6 * time.Second)
	denied := len(emu.Calls("111122223333", "eu-west-1"))
	if denied > 7 {
		t.Errorf("%d calls to the denied Region in about 7 s: no backoff (one poll every 200 ms would be 35)", denied)
	}
	if n := strings.Count(logs.String(), "lookup poll failed"); n < 1 || n > 6 {
		t.Errorf("the failure was logged %d times", n)
	}
	if v := testkit.MetricValue(t, reg, "encwatch_lookup_poll_failures_total", "reason", "AccessDeniedException"); v < 1 {
		t.Errorf("poll failures by reason AccessDeniedException: %v", v)
	}
	if v := testkit.MetricValue(t, reg, "encwatch_lookup_target_failing", "region", "eu-west-1"); v != 1 {
		t.Errorf("failing gauge for eu-west-1: %v", v)
	}
	if f := src.Failing(); len(f) != 1 || !strings.Contains(f[0], "/eu-west-1: AccessDeniedException since ") {
		t.Errorf("Failing() = %v", f)
	}
	emu.Deny("111122223333", "eu-west-1", false)
	testkit.Eventually(t, 30*time.Second, func() bool { got, _ := c.count(); return got["del-eu-west-1"] == 1 }, "the Region did not catch up once allowed")
	testkit.Eventually(t, 5*time.Second, func() bool {
		return testkit.MetricValue(t, reg, "encwatch_lookup_target_failing", "region", "eu-west-1") == 0
	}, "the failing gauge stayed up")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f := src.Failing(); len(f) != 0 {
		t.Errorf("after recovery Failing() = %v", f)
	}
	if !strings.Contains(logs.String(), "lookup polls work again") {
		t.Error("the recovery is not logged")
	}
	t.Logf("%d calls to the denied Region while denied", denied)
}

// TestPutsDoNotWaitForGets: with 10,000 GetBucketEncryption events in the
// window (paging them takes about 110 s at the API's rate), a Put that
// becomes visible after the start is handed on within a few intervals,
// while the Gets are still being paged; and with reads off, no Get is
// looked up at all.
func TestPutsDoNotWaitForGets(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 15 s")
	}
	emu := emulator(t)
	emu.Delay = 0
	now := time.Now()
	for i := range 10000 {
		raw := rec(fmt.Sprintf("get-%05d", i), ingest.GetBucketEncryption, fmt.Sprint("b", i%500), now.Add(-time.Duration(i%900)*time.Second))
		if err := emu.AddRecord("111122223333", "us-east-1", raw, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	visible := now.Add(4 * time.Second)
	if err := emu.AddRecord("111122223333", "us-east-1", rec("the-put", ingest.PutBucketEncryption, "shop", now.Add(-time.Minute)), visible); err != nil {
		t.Fatal(err)
	}
	tg, err := lookup.NewTarget(context.Background(), "us-east-1", "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, reads := range []bool{true, false} {
		c := &collector{events: map[string]int{}, cps: map[string][]byte{}}
		src, _ := lookup.New(lookup.Options{Targets: []lookup.Target{tg}, Interval: time.Second, Overlap: 20 * time.Minute, StartFrom: time.Hour, Reads: reads,
			Checkpoints: c, Logger: zerolog.Nop()})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		runStart := time.Now()
		go func() { done <- src.Run(ctx, c.handle) }()
		var at time.Time
		testkit.Eventually(t, 30*time.Second, func() bool {
			ev, _ := c.count()
			if ev["the-put"] > 0 && at.IsZero() {
				at = time.Now()
			}
			return !at.IsZero()
		}, "the Put was not handed on")
		ev, total := c.count()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		delay := at.Sub(visible)
		if runStart.After(visible) {
			delay = at.Sub(runStart) // visible before this run began
		}
		if reads && (total-1 >= 10000 || total < 2) {
			t.Errorf("reads on: %d Gets handed on by the time of the Put; want some, not all (they are still paging)", total-1)
		}
		if !reads && total != 1 {
			t.Errorf("reads off: %d events, want the Put alone", total)
		}
		if delay > 5*time.Second {
			t.Errorf("reads %v: the Put came %v after it became visible; the interval is 1s", reads, delay)
		}
		if m := emu.MaxCallsPerSecond("111122223333", "us-east-1"); m > 2 {
			t.Errorf("%d calls within a second", m)
		}
		t.Logf("reads %v: Put handed on %v after it became visible (or the source started), with %d of 10,000 Gets handed on by then", reads, delay.Round(10*time.Millisecond), total-ev["the-put"])
	}
}

// TestClockJumps: the process clock jumping back behind the checkpoint
// makes polls wait (no failure, nothing handed on twice); jumping forward
// two hours, the poll reads from the checkpoint's overlap to the new now,
// so the events in between are not skipped.
func TestClockJumps(t *testing.T) {
	emu := emulator(t)
	emu.Delay = 0
	real := time.Now()
	var mu sync.Mutex
	clock := real
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	set := func(t time.Time) { mu.Lock(); clock = t; mu.Unlock() }
	add := func(id string, at time.Time) {
		if err := emu.AddRecord("111122223333", "us-east-1", rec(id, ingest.DeleteBucketEncryption, "b-"+id, at), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	add("before", real.Add(-time.Minute))
	tg, err := lookup.NewTarget(context.Background(), "us-east-1", "", "")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{events: map[string]int{}, cps: map[string][]byte{}}
	src, _ := lookup.New(lookup.Options{Targets: []lookup.Target{tg}, Interval: 200 * time.Millisecond, Overlap: 20 * time.Minute, StartFrom: time.Hour,
		Checkpoints: c, Logger: zerolog.Nop(), Now: now, Rate: 20})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, c.handle) }()
	testkit.Eventually(t, 10*time.Second, func() bool { ev, _ := c.count(); return ev["before"] == 1 }, "the first event")
	set(real.Add(-time.Hour)) // back behind the checkpoint
	add("while-behind", real.Add(-30*time.Second))
	time.Sleep(time.Second)
	if f := src.Failing(); len(f) != 0 {
		t.Errorf("a clock behind the checkpoint made polls fail: %v", f)
	}
	set(real.Add(2 * time.Hour)) // forward past everything
	add("in-the-gap", real.Add(time.Hour))
	testkit.Eventually(t, 10*time.Second, func() bool {
		ev, _ := c.count()
		return ev["while-behind"] == 1 && ev["in-the-gap"] == 1
	}, "events after the jumps were skipped")
	time.Sleep(500 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ev, total := c.count()
	if total != 3 {
		t.Errorf("%d events handed on (%v), want each of 3 once", total, ev)
	}
}

// TestRoleDeniedThenRevoked: a member account's role can no longer be
// assumed (its trust policy changed): that target fails with STS's
// reason and backs off while the own account is read; once allowed it
// catches up. Then the role's sessions are revoked: the next poll is
// refused as expired, the cached credentials are dropped, the role is
// assumed again and the target reads on within a poll or two, instead of
// failing until the cached credentials expire an hour later.
func TestRoleDeniedThenRevoked(t *testing.T) {
	emu := emulator(t)
	now := time.Now()
	const member, role = "444455556666", "arn:aws:iam::444455556666:role/encwatch-reader"
	add := func(account, id string) {
		if err := emu.AddRecord(account, "us-east-1", rec(id, ingest.DeleteBucketEncryption, "b-"+id, now.Add(-time.Minute)), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	add(emu.DefaultAccount, "own")
	add(member, "member-1")
	emu.DenyAssume(role, true)
	own, err := lookup.NewTarget(context.Background(), "us-east-1", "", "")
	if err != nil {
		t.Fatal(err)
	}
	mem, err := lookup.NewTarget(context.Background(), "us-east-1", role, "")
	if err != nil {
		t.Fatal(err)
	}
	var logs testkit.Buffer
	reg := prometheus.NewRegistry()
	c := &collector{events: map[string]int{}, cps: map[string][]byte{}}
	src, err := lookup.New(lookup.Options{Targets: []lookup.Target{own, mem}, Interval: 200 * time.Millisecond, Checkpoints: c,
		Logger: zerolog.New(&logs), Metrics: lookup.NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, c.handle) }()
	testkit.Eventually(t, 20*time.Second, func() bool { got, _ := c.count(); return got["own"] == 1 }, "the own account was not read")
	testkit.Eventually(t, 10*time.Second, func() bool {
		f := src.Failing()
		return len(f) == 1 && strings.HasPrefix(f[0], member+"/us-east-1: AccessDenied since ")
	}, "Failing() does not name the member whose role is refused: %v", src.Failing())
	if v := testkit.MetricValue(t, reg, "encwatch_lookup_poll_failures_total", "reason", "AccessDenied"); v < 1 {
		t.Errorf("poll failures by reason AccessDenied: %v", v)
	}
	emu.DenyAssume(role, false)
	testkit.Eventually(t, 30*time.Second, func() bool { got, _ := c.count(); return got["member-1"] == 1 }, "the member did not catch up once its role could be assumed")
	assumed := emu.AssumeRoles()[role]

	emu.RevokeSessions(member)
	add(member, "member-2")
	testkit.Eventually(t, 15*time.Second, func() bool { got, _ := c.count(); return got["member-2"] == 1 },
		"the member was not read after its sessions were revoked")
	if emu.AssumeRoles()[role] <= assumed {
		t.Error("the role was not assumed again after its session was revoked")
	}
	if !strings.Contains(logs.String(), "assuming the role again") {
		t.Error("the revoked session is not logged")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
