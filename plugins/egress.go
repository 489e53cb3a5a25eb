package plugins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// newTransport returns the HTTP transport of a Host, shared by its
// plugins; every request carries its own deadline.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // never through an environment proxy: the allow-list names the real peer
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       60 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}
}

type egressKey struct{}

// doHTTP performs one http_call for v and returns the encoded HttpResponse.
// Every failure becomes HttpResponse.error; only a malformed request is an
// ABI violation.
func (v *version) doHTTP(ctx context.Context, raw []byte) []byte {
	var req troupev1.HttpRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		violate("http_call: request is not an HttpRequest: %v", err)
	}
	resp := v.performHTTP(ctx, &req)
	if resp.Error != "" {
		v.log.Warn("http_call failed", "method", req.GetMethod(), "url", redactURL(req.GetUrl()), "err", resp.Error)
	}
	out, err := proto.Marshal(resp)
	if err != nil {
		out, _ = proto.Marshal(&troupev1.HttpResponse{Error: "encode response: " + err.Error()})
	}
	return out
}

func (v *version) performHTTP(ctx context.Context, req *troupev1.HttpRequest) *troupev1.HttpResponse {
	failf := func(format string, args ...any) *troupev1.HttpResponse {
		return &troupev1.HttpResponse{Error: fmt.Sprintf(format, args...)}
	}
	u, err := url.Parse(req.GetUrl())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return failf("bad url %q: want an absolute http(s) URL without credentials", redactURL(req.GetUrl()))
	}
	if err := v.allowed(u); err != nil {
		return failf("%v", err)
	}
	method := req.GetMethod()
	if method == "" {
		method = http.MethodGet
	}
	if req.GetTimeoutMs() > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.GetTimeoutMs())*time.Millisecond)
		defer cancel()
	}
	ctx = context.WithValue(ctx, egressKey{}, v)
	hreq, err := http.NewRequestWithContext(ctx, method, u.String(), bytesReader(req.GetBody()))
	if err != nil {
		return failf("bad request: %v", err)
	}
	for k, val := range req.GetHeaders() {
		hreq.Header.Set(k, val)
	}
	injectTrace(ctx, hreq.Header)
	// Redirects are followed only to allowed hosts.
	client := &http.Client{Transport: v.host.transport, CheckRedirect: checkRedirect}
	hresp, err := client.Do(hreq)
	if err != nil {
		if errors.Is(err, ErrEgressDenied) {
			return failf("redirect: %v", unwrapURLError(err))
		}
		return failf("%v", unwrapURLError(err))
	}
	defer hresp.Body.Close()
	limit := int64(v.man.Limits.MaxResponse)
	body, err := io.ReadAll(io.LimitReader(hresp.Body, limit+1))
	if err != nil {
		return failf("read response: %v", err)
	}
	if int64(len(body)) > limit {
		return failf("response body larger than %d bytes", limit)
	}
	out := &troupev1.HttpResponse{Status: int32(hresp.StatusCode), Body: body}
	if len(hresp.Header) > 0 {
		out.Headers = make(map[string]string, len(hresp.Header))
		for k, vals := range hresp.Header {
			if len(vals) > 0 {
				out.Headers[k] = vals[0]
			}
		}
	}
	return out
}

// allowed checks u's host against the egress allow-list.
func (v *version) allowed(u *url.URL) error {
	host, port := u.Hostname(), u.Port()
	if port == "" {
		if u.Scheme == "https" {
			port = "443"
		} else {
			port = "80"
		}
	}
	for _, r := range v.egress {
		if r.allows(host, port) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s:%s is not on the allow-list of plugin %s", ErrEgressDenied, host, port, v.name)
}

func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("too many redirects")
	}
	v, _ := req.Context().Value(egressKey{}).(*version)
	if v == nil {
		return ErrEgressDenied
	}
	return v.allowed(req.URL)
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, redactURL(ue.URL), ue.Err)
	}
	return err
}

// redactURL drops the query string, which may carry tokens.
func redactURL(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		return s[:i] + "?…"
	}
	return s
}

func bytesReader(b []byte) io.Reader {
	if len(b) == 0 {
		return nil
	}
	return strings.NewReader(string(b))
}
