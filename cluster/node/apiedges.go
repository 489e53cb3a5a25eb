package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/troupe-dev/troupe/actors/codes"
)

// unknownOutcome spells out what a command's deadline error means for the
// client, in the error message every transport shows: the command may have
// been applied after the deadline (its outcome is unknown), and the safe
// retry is the same command with the same idempotency key. Other errors
// pass unchanged.
func unknownOutcome(err error) error {
	var pf *pluginFailure
	if err == nil || codes.Of(err) != codes.DeadlineExceeded || errors.As(err, &pf) {
		return err // a plugin that timed out: the command was not applied
	}
	return &codes.Error{Code: codes.DeadlineExceeded, Message: err.Error() +
		" (unknown outcome: the command may or may not have been applied; send it again with the same idempotency key, which applies it at most once)"}
}

// apiEncodings are the request body encodings the API decodes (Connect's
// defaults: identity and gzip).
var apiEncodings = []string{"identity", "gzip"}

// refuseUnsupportedEncoding wraps the API so that a request body in an
// encoding it cannot decode (Content-Encoding, or Connect-Content-Encoding
// on streams) is a client error: 415 with the Connect JSON error body
// (code invalid_argument) and an Accept-Encoding header naming what works,
// rather than the 501 Unimplemented that Connect answers, which reads as a
// server fault and is not what a client should retry or alert on. gRPC
// requests (grpc-encoding) keep gRPC's own status.
func refuseUnsupportedEncoding(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, h := range []string{"Content-Encoding", "Connect-Content-Encoding"} {
			if enc := r.Header.Get(h); enc != "" && !supportedEncoding(enc) {
				body, _ := json.Marshal(map[string]string{
					"code": "invalid_argument",
					"message": fmt.Sprintf("%s %q is not supported: send the body uncompressed or with %s: gzip",
						strings.ToLower(h), enc, h),
				})
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Accept-Encoding", strings.Join(apiEncodings, ", "))
				w.WriteHeader(http.StatusUnsupportedMediaType)
				_, _ = w.Write(body)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func supportedEncoding(enc string) bool {
	for _, e := range apiEncodings {
		if enc == e {
			return true
		}
	}
	return false
}
