// Package awserr sorts the errors of AWS SDK calls the way every caller of
// encwatch needs: the AWS error code, a bounded reason for a metric label,
// and whether trying again later can help.
package awserr

import (
	"context"
	"errors"
	"net"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Code returns the AWS error code of err, or "".
func Code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// Reason names a failure for a metric label: the AWS error code (at most
// 64 bytes), else server (5xx), network or other.
func Reason(err error) string {
	if c := Code(err); c != "" && len(c) <= 64 {
		return c
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return "server"
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return "network"
	}
	return "other"
}

// Retryable reports SlowDown, throttling, 429, 5xx, timeouts and network
// errors: a call that may succeed when tried again after a backoff.
func Retryable(err error) bool {
	switch Code(err) {
	case "SlowDown", "Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded",
		"ServiceUnavailable", "InternalError", "KMSInternalException", "RequestTimeout":
		return true
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && (re.HTTPStatusCode() >= 500 || re.HTTPStatusCode() == 429) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded)
}

// SessionExpired reports whether a call was refused because the
// credentials' session expired or was revoked: signing again with newly
// assumed credentials can fix it, retrying with the cached ones cannot.
func SessionExpired(err error) bool { return sessionCode(Code(err)) }

func sessionCode(code string) bool {
	switch code {
	case "ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException", "InvalidToken", "TokenRefreshRequired":
		return true
	}
	return false
}

// PermissionCode reports whether an AWS error code says the caller may not
// do what it asked (a policy, or a session gone): retrying cannot fix it,
// a change of the caller's permissions can.
func PermissionCode(code string) bool {
	switch code {
	case "AccessDenied", "AccessDeniedException", "AllAccessDisabled", "UnauthorizedOperation", "AuthorizationError":
		return true
	}
	return sessionCode(code)
}
