package daemon

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/inventory"
	"github.com/encwatch/encwatch/rules"
)

//go:embed page.html
var pageHTML string

//go:embed page.css
var pageCSS string

var pageTemplate = template.Must(template.New("page").Parse(pageHTML))

// pageCSP allows the page's one inline style block (by its hash) and
// nothing else: no script, no image, no frame, no other origin. The page
// needs no network but the daemon.
var pageCSP = "default-src 'none'; style-src 'sha256-" + cssHash() + "'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

func cssHash() string {
	h := sha256.Sum256([]byte(pageCSS))
	return base64.StdEncoding.EncodeToString(h[:])
}

// maxRows bounds the buckets the page lists; the counts cover every bucket.
const maxRows = 500

// maxOptions bounds each filter's choices (accounts and Regions come from
// records, which anyone who can write to a source controls).
const maxOptions = 200

type option struct {
	Value    string
	Selected bool
}

type count struct {
	Name, Class string
	N           int
}

type bucketRow struct {
	Class, Compliance, ReadError, Type, Account, Region, Name, Algorithm, Key, BucketKey, Blocked, Open, SeenBy, LastChange string
}

type alertRow struct{ Detected, Severity, Rule, Bucket, Summary, Basis string }

type sourceRow struct{ Name, Newest, Lag, CheckpointAge string }

type inventoryRow struct{ Account, Region, When, Age string }

type sinkRow struct {
	Name          string
	Pending, Dead int
}

// maxFailingShown bounds the failing targets the page lists.
const maxFailingShown = 50

type pageView struct {
	CSS                                          template.CSS
	Version, Now, NotReady                       string
	Failing                                      []string
	Counts                                       []count
	Types, Compliances, Accounts, Regions, Rules []option
	Shown, Matching, Total                       int
	Buckets                                      []bucketRow
	Alerts                                       []alertRow
	Sources                                      []sourceRow
	Inventory                                    []inventoryRow
	Sinks                                        []sinkRow
}

// pageHandler serves GET /: a read-only page for an operator without
// Grafana, rendered on the server with html/template (every value is
// escaped as text), with no script and no external asset.
func (a *app) pageHandler(ready func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := a.pageView(r, ready)
		if err != nil {
			http.Error(w, "reading the state: "+err.Error(), http.StatusInternalServerError)
			return
		}
		var buf bytes.Buffer
		if err := pageTemplate.Execute(&buf, v); err != nil {
			http.Error(w, "rendering the page: "+err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		w.Write(buf.Bytes())
	})
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func options(set map[string]bool, selected string) []option {
	var out []option
	for _, v := range slices.Sorted(func(yield func(string) bool) {
		for k := range set {
			if !yield(k) {
				return
			}
		}
	}) {
		if len(out) == maxOptions {
			break
		}
		out = append(out, option{Value: v, Selected: v == selected})
	}
	return out
}

var complianceOrder = map[string]int{rules.NonCompliant: 0, rules.Unknown: 1, rules.Compliant: 2}

func (a *app) pageView(r *http.Request, ready func() error) (pageView, error) {
	q := r.URL.Query()
	f := map[string]string{}
	for _, k := range []string{"type", "compliance", "account", "region", "rule"} {
		f[k] = q.Get(k)
	}
	now := time.Now()
	v := pageView{CSS: template.CSS(pageCSS), Version: "encwatch " + a.o.Version, Now: stamp(now)}
	if err := ready(); err != nil {
		v.NotReady = err.Error()
	}
	if v.Failing = a.failing(); len(v.Failing) > 0 {
		v.NotReady = "targets failing (the others go on)"
		if len(v.Failing) > maxFailingShown {
			v.Failing = append(v.Failing[:maxFailingShown], fmt.Sprintf("and %d more (see /readyz)", len(v.Failing)-maxFailingShown))
		}
	}
	sets := map[string]map[string]bool{"type": {}, "compliance": {}, "account": {}, "region": {}, "rule": {}}
	counts := map[string]int{}
	var rows []bucketRow
	err := a.db.View(func(tx *bolt.Tx) error {
		return rules.ForEachBucket(tx, func(_ string, st rules.BucketState) error {
			c := st.Compliance()
			v.Total++
			counts[c]++
			b := st.Bucket
			for k, val := range map[string]string{"type": b.Type, "compliance": c, "account": b.Account, "region": b.Region} {
				if len(sets[k]) < maxOptions {
					sets[k][val] = true
				}
			}
			for _, rl := range st.Open {
				if len(sets["rule"]) < maxOptions {
					sets["rule"][rl] = true
				}
			}
			if (f["type"] != "" && b.Type != f["type"]) || (f["compliance"] != "" && c != f["compliance"]) || (f["account"] != "" && b.Account != f["account"]) ||
				(f["region"] != "" && b.Region != f["region"]) || (f["rule"] != "" && !slices.Contains(st.Open, f["rule"])) {
				return nil
			}
			v.Matching++
			rows = append(rows, bucketRowOf(st, c))
			if len(rows) > 4*maxRows { // keep the worst, bounded
				rows = worst(rows, maxRows)
			}
			return nil
		})
	})
	if err != nil {
		return v, err
	}
	v.Buckets = worst(rows, maxRows)
	v.Shown = len(v.Buckets)
	for _, c := range []string{rules.NonCompliant, rules.Unknown, rules.Compliant} {
		v.Counts = append(v.Counts, count{Name: c, Class: c, N: counts[c]})
	}
	v.Types, v.Compliances, v.Accounts = options(sets["type"], f["type"]), options(sets["compliance"], f["compliance"]), options(sets["account"], f["account"])
	v.Regions, v.Rules = options(sets["region"], f["region"]), options(sets["rule"], f["rule"])
	for _, al := range a.pipe.recent.latest() {
		v.Alerts = append(v.Alerts, alertRow{Detected: stamp(al.DetectedAt), Severity: al.Severity, Rule: al.Rule, Bucket: al.Bucket.Name,
			Summary: al.Summary, Basis: al.Basis})
	}
	newest, cps := a.pipe.state.sourceTimes()
	for _, s := range a.sources {
		v.Sources = append(v.Sources, sourceRow{Name: s.name, Newest: stamp(newest[s.name]), Lag: ago(now, newest[s.name]), CheckpointAge: ago(now, cps[s.name])})
	}
	v.Inventory, err = inventoryRows(a.db, now)
	if err != nil {
		return v, err
	}
	for _, qu := range a.queues {
		name := qu.Sink.Name()
		dead, err := outbox.DeadLetterCount(a.db, name)
		if err != nil {
			return v, err
		}
		v.Sinks = append(v.Sinks, sinkRow{Name: name, Pending: a.outbox.Depth(name), Dead: dead})
	}
	return v, nil
}

// worst keeps at most n rows, non-compliant first, then unknown, then by
// name.
func worst(rows []bucketRow, n int) []bucketRow {
	slices.SortStableFunc(rows, func(x, y bucketRow) int {
		if d := complianceOrder[x.Compliance] - complianceOrder[y.Compliance]; d != 0 {
			return d
		}
		return strings.Compare(x.Account+x.Name, y.Account+y.Name)
	})
	if len(rows) > n {
		rows = rows[:n]
	}
	return rows
}

func bucketRowOf(st rules.BucketState, c string) bucketRow {
	row := bucketRow{Class: c, Compliance: c, ReadError: st.ReadError, Type: st.Bucket.Type, Account: st.Bucket.Account, Region: st.Bucket.Region,
		Name: st.Bucket.Name, Algorithm: orDash(st.Algorithm), Key: orDash(st.KMSKeyID), BucketKey: "off", Blocked: "not stated",
		Open: orDash(strings.Join(st.Open, ", ")), SeenBy: st.SeenBy(), LastChange: stamp(st.LastChange)}
	if st.KeyARN != "" && st.KeyARN != st.KMSKeyID {
		row.Key += " (" + st.KeyARN + ")"
	}
	if st.KeyState != "" && st.KeyState != "Enabled" {
		row.Key += " " + st.KeyState
	}
	if st.BucketKeyEnabled || st.Bucket.Type == ingest.BucketDirectory {
		row.BucketKey = "on"
	}
	switch {
	case st.Bucket.Type == ingest.BucketDirectory:
		row.Blocked = "n/a"
	case slices.Contains(st.BlockedEncryptionTypes, "SSE-C"):
		row.Blocked = "yes"
	case st.BlockedEncryptionTypes != nil:
		row.Blocked = "no"
	}
	return row
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// inventoryRows reads each account's and Region's last complete scan from
// the inventory's checkpoints.
func inventoryRows(db *bolt.DB, now time.Time) ([]inventoryRow, error) {
	var out []inventoryRow
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(ingest.CheckpointTable)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		prefix := []byte(inventory.CheckpointKey("", ""))[:len("inventory/")]
		for k, val := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, val = c.Next() {
			parts := strings.SplitN(strings.TrimPrefix(string(k), string(prefix)), "/", 2)
			var cp struct {
				LastComplete time.Time `json:"lastComplete"`
			}
			_ = json.Unmarshal(val, &cp)
			row := inventoryRow{Account: parts[0], When: stamp(cp.LastComplete), Age: ago(now, cp.LastComplete)}
			if len(parts) == 2 {
				row.Region = parts[1]
			}
			out = append(out, row)
		}
		return nil
	})
	return out, err
}
