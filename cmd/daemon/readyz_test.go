package daemon

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/fixtures/awsemu"
	"github.com/encwatch/encwatch/fixtures/testkit"
)

// TestReadyzNamesFailingTarget: when one Region's LookupEvents is denied,
// /readyz answers 503 naming that account and Region and the reason, and
// 200 again once the permission is back.
func TestReadyzNamesFailingTarget(t *testing.T) {
	emu := awsemu.NewCloudTrail()
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	testkit.AWSEnv(t, srv.URL)
	emu.Deny(emu.DefaultAccount, "eu-west-1", true)
	cfg, err := config.Parse("test", []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
sources: {lookup: {regions: [us-east-1, eu-west-1], interval: 1s, startFrom: 1h}}
sinks: {stdout: {}}
`, t.TempDir())), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Stdout: &testkit.Buffer{}, Stderr: &testkit.Buffer{}, OnReady: func(a string) { addrc <- a }})
	}()
	addr := <-addrc
	var body string
	testkit.Eventually(t, 20*time.Second, func() bool {
		var code int
		code, body = get(t, "http://"+addr+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "/eu-west-1: AccessDeniedException")
	}, "/readyz does not name the denied Region: %q", body)
	if strings.Contains(body, "us-east-1") {
		t.Errorf("/readyz names the working Region too: %q", body)
	}
	if code, page := get(t, "http://"+addr+"/"); code != http.StatusOK || !strings.Contains(page, "<li>lookup default/eu-west-1: AccessDeniedException since ") {
		t.Errorf("the web page (%d) does not list the failing target", code)
	}
	emu.Deny(emu.DefaultAccount, "eu-west-1", false)
	testkit.Eventually(t, 30*time.Second, func() bool { code, _ := get(t, "http://"+addr+"/readyz"); return code == http.StatusOK },
		"/readyz did not recover once LookupEvents was allowed again")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
