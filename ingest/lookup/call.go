package lookup

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/aws/aws-sdk-go-v2/service/cloudtrail"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/encwatch/encwatch/ingest/backoff"
)

// reasonOf names a failed poll for a metric label: the AWS error code,
// else server or network.
func reasonOf(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() != "" && len(ae.ErrorCode()) <= 64 {
		return ae.ErrorCode()
	}
	return classify(err)
}

// call makes one LookupEvents call through the rate limiter, retrying
// throttling, server errors and network errors with backoff and jitter.
func (p *poller) call(ctx context.Context, in *cloudtrail.LookupEventsInput) (*cloudtrail.LookupEventsOutput, error) {
	wait := backoff.Backoff{Min: p.o.MinBackoff, Max: p.o.MaxBackoff}
	for {
		if err := p.limiter.Wait(ctx, p.low); err != nil {
			return nil, err
		}
		p.o.Metrics.calls.WithLabelValues(p.t.Region).Inc()
		out, err := p.t.Client.LookupEvents(ctx, in)
		if err == nil {
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		kind := classify(err)
		switch kind {
		case "throttled":
			p.o.Metrics.throttles.WithLabelValues(p.t.Region).Inc()
		default:
			p.o.Metrics.errors.WithLabelValues(p.t.Region, kind).Inc()
		}
		if kind == "permanent" {
			return nil, fmt.Errorf("LookupEvents: %w", err)
		}
		d := wait.Next()
		p.log.Warn().Err(err).Str("kind", kind).Dur("retry_in", d).Msg("LookupEvents failed; backing off")
		if !backoff.Sleep(ctx, d) {
			return nil, ctx.Err()
		}
	}
}

// classify sorts an error into throttled, server (5xx), network or
// permanent.
func classify(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded":
			return "throttled"
		}
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return "server"
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return "network"
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return "network"
	}
	return "permanent"
}
