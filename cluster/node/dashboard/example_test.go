package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/troupe-dev/troupe/cluster/node/dashboard"
	"github.com/troupe-dev/troupe/journal"
)

// staticNode is the smallest Source: a node with one kind and no events.
type staticNode struct{}

func (staticNode) Overview(context.Context) (dashboard.Overview, error) {
	return dashboard.Overview{
		Node:  dashboard.NodeInfo{Name: "n1", Ready: true},
		Kinds: []dashboard.Kind{{Name: "account"}},
	}, nil
}

func (staticNode) Members(context.Context) ([]dashboard.Member, error) {
	return []dashboard.Member{{Name: "n1", State: "alive", Self: true, Shards: 256}}, nil
}

func (staticNode) Stream(_ context.Context, kind, _ string, _ uint64, _ int) ([]journal.Event, journal.StreamInfo, error) {
	if kind != "account" {
		return nil, journal.StreamInfo{}, dashboard.ErrUnknownKind
	}
	return nil, journal.StreamInfo{}, dashboard.ErrUnknownEntity
}

func (staticNode) State(context.Context, string, string) (json.RawMessage, uint64, error) {
	return nil, 0, dashboard.ErrUnknownEntity
}

func (staticNode) Tail(ctx context.Context, _ string, _ uint64, _ int, _ func(journal.Event) error) error {
	<-ctx.Done()
	return nil
}

func Example() {
	h, err := dashboard.New(dashboard.Config{Source: staticNode{}})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ui/", h)

	for _, path := range []string{"/ui/", "/ui/entity/account/acc-1", "/ui/entity/ghost/g-1", "/ui/api/overview"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		fmt.Println(path, rec.Code, rec.Header().Get("Content-Type"))
	}
	// Output:
	// /ui/ 200 text/html; charset=utf-8
	// /ui/entity/account/acc-1 404 text/html; charset=utf-8
	// /ui/entity/ghost/g-1 404 text/html; charset=utf-8
	// /ui/api/overview 200 application/json
}
