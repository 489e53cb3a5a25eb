package node

import (
	"context"

	"connectrpc.com/connect"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

func (a *api) pluginInfos() []*troupev1.PluginInfo {
	var out []*troupev1.PluginInfo
	for _, in := range a.n.plugins.List() {
		out = append(out, in.Proto())
	}
	return out
}

func (a *api) List(context.Context, *connect.Request[troupev1.ListRequest]) (*connect.Response[troupev1.ListResponse], error) {
	return connect.NewResponse(&troupev1.ListResponse{Plugins: a.pluginInfos()}), nil
}

func (a *api) Reload(ctx context.Context, _ *connect.Request[troupev1.ReloadRequest]) (*connect.Response[troupev1.ReloadResponse], error) {
	resp := &troupev1.ReloadResponse{}
	// Load failures are part of the answer, not an API error: the failing
	// plugins keep their old versions serving.
	if err := a.n.plugins.Reload(ctx); err != nil {
		resp.Error = err.Error()
	}
	resp.Plugins = a.pluginInfos()
	return connect.NewResponse(resp), nil
}
